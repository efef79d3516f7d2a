// The tcprules text format of ucspi-tcp 0.88 (what `tcprules rules.cdb rules.tmp` reads),
// parsed and rendered. Used on the admin's static file, on the env values of the config
// (QGUARD_RELAY_ENV, QGUARD_TRUST_ENV, QGUARD_DENY_MESSAGE, QGUARD_DEFAULT_RULE) and to write
// tcp.smtp. Stricter than tcprules on purpose: whatever tcprules would refuse (CRLF, `Allow`,
// `VAR=` with nothing after it) and whatever it would accept but never match (leading
// whitespace, `1.2` without a dot, leading zeros, a second range, IPv6 keys) is reported as a
// `{line, reason}` problem, and so is an open relay (RELAYCLIENT on the default line, `=host`,
// `=.domain` or `user@` keys: all of those are chosen by the client). Pure: no I/O.
//
// Size: the whole tcprules text format (parse, check, render) in one place, as tcprules(1) reads it.

import type { Gran, KeyLines, StaticKey } from '../net/tcprules-keys.js';

/** One `,NAME=<d>value<d>` item. */
export interface EnvVar {
  name: string;
  value: string;
  delim: string;
}

/** What follows the colon: `allow` or `deny`, then variables. */
export interface Instruction {
  verdict: 'allow' | 'deny';
  vars: EnvVar[];
}

/** A problem with a line of a rules text. `line` is 1-based (0 for a config value). */
export interface Problem {
  line: number;
  reason: string;
}

export type KeyKind = 'default' | 'host' | 'info' | 'ip';

/** A rule line of a rules text. */
export interface RuleLine {
  line: number;
  key: string;
  kind: KeyKind;
  instruction: Instruction;
  /** The instruction text exactly as written (after trailing blanks are cut, as tcprules does). */
  instructionText: string;
  /** For address keys: the key blocks tcprules makes of it (a range gives several). */
  blocks: { first: number; gran: Gran }[];
}

const VAR_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
// Any other delimiter is legal for tcprules but almost always a typo (`X=abc` reads as value "bc"...).
const DELIMS = `"'/|%#!^~+:;`;

const show = (s: string) => JSON.stringify(s.length > 60 ? `${s.slice(0, 60)}…` : s);

/**
 * Parse `NAME=<d>value<d>` items, each preceded by a comma (as after `allow`). `text` is what
 * follows the verdict. Mirrors tcprules: the character after `=` is the delimiter, the value runs
 * to its next occurrence.
 */
export function parseVars(text: string): { vars: EnvVar[] } | { error: string } {
  const vars: EnvVar[] = [];
  let x = text;
  while (x.length > 0) {
    if (x[0] !== ',') {
      return { error: `unexpected ${show(x)} (instructions are ,NAME="value" after allow or deny; no spaces, no comments)` };
    }
    const eq = x.indexOf('=');
    if (eq < 0) return { error: `${show(x)}: expected NAME="value"` };
    const name = x.slice(1, eq);
    if (!VAR_NAME.test(name)) return { error: `bad variable name ${show(name)}` };
    x = x.slice(eq + 1);
    if (x.length === 0) return { error: `${name}= needs a delimited value such as ${name}=""` };
    const d = x[0];
    if (!DELIMS.includes(d)) {
      return { error: `${name}=${show(x)}: the value must be delimited by a character such as " (found ${show(d)})` };
    }
    const close = x.indexOf(d, 1);
    if (close < 0) return { error: `${name}: value not closed with its delimiter ${d}` };
    const value = x.slice(1, close);
    if (/[\0\r\n]/.test(value)) return { error: `${name}: control character in the value` };
    vars.push({ name, value, delim: d });
    x = x.slice(close + 1);
  }
  return { vars };
}

/** Parse an instruction (`allow,RELAYCLIENT=""`, `deny`). */
export function parseInstruction(text: string): { instruction: Instruction } | { error: string } {
  let verdict: 'allow' | 'deny';
  let rest: string;
  if (text.startsWith('allow')) {
    verdict = 'allow';
    rest = text.slice(5);
  } else if (text.startsWith('deny')) {
    verdict = 'deny';
    rest = text.slice(4);
  } else {
    return { error: `expected allow or deny, found ${show(text)}` };
  }
  const v = parseVars(rest);
  if ('error' in v) return v;
  return { instruction: { verdict, vars: v.vars } };
}

/** Render variables as `,NAME="value"...`. */
export function renderVars(vars: readonly EnvVar[]): string {
  return vars.map((v) => `,${v.name}=${v.delim}${v.value}${v.delim}`).join('');
}

/** Render an instruction. */
export function renderInstruction(i: Instruction): string {
  return i.verdict + renderVars(i.vars);
}

/**
 * True when the instruction refuses the client: `deny`, or a non-empty RBLSMTPD (rblsmtpd then
 * answers 451, or 553 with a leading `-`). Protected addresses never get one of these.
 */
export function refusesClient(i: Instruction): boolean {
  return i.verdict === 'deny' || i.vars.some((v) => v.name === 'RBLSMTPD' && v.value !== '');
}

/** True when the instruction lets the client relay (RELAYCLIENT set at all, even empty). */
export function relays(i: Instruction): boolean {
  return i.verdict === 'allow' && i.vars.some((v) => v.name === 'RELAYCLIENT');
}

const OCTET = /^(0|[1-9]\d{0,2})$/;

/**
 * The key blocks of an address key the way tcprules expands it: `a.`, `a.b.`, `a.b.c.` (prefix
 * keys), `a.b.c.d` (exact), one `x-y` range in one part. Anything else never matches an IPv4
 * address and is an error here.
 */
export function parseAddressKey(key: string): { blocks: { first: number; gran: Gran }[] } | { error: string } {
  if (key.includes(':')) {
    return { error: `IPv6 key ${show(key)} never matches in ucspi-tcp 0.88: IPv6 is blocked by the firewall (QGUARD_FIREWALL)` };
  }
  const prefixKey = key.endsWith('.');
  const parts = (prefixKey ? key.slice(0, -1) : key).split('.');
  if (prefixKey ? parts.length > 3 : parts.length !== 4) {
    return {
      error: `address key ${show(key)} never matches: write a.b.c.d for one address, or a. a.b. a.b.c. (with the dot) for a prefix`,
    };
  }
  if ((key.match(/-/g) ?? []).length > 1) {
    return { error: `address key ${show(key)}: tcprules expands only the first range of a line; the second never matches` };
  }
  let lo = 0;
  let hi = 0;
  let rangeAt = -1;
  const octets: number[] = [];
  for (let p = 0; p < parts.length; p++) {
    const part = parts[p];
    const r = /^([^-]*)-([^-]*)$/.exec(part);
    if (r) {
      if (!OCTET.test(r[1]) || !OCTET.test(r[2]) || Number(r[1]) > 255 || Number(r[2]) > 255) {
        return { error: `address key ${show(key)}: bad range ${show(part)} (numbers 0-255 without leading zeros)` };
      }
      lo = Number(r[1]);
      hi = Number(r[2]);
      if (lo > hi) return { error: `address key ${show(key)}: empty range ${show(part)}` };
      rangeAt = p;
      octets.push(0);
      continue;
    }
    if (!OCTET.test(part) || Number(part) > 255) {
      return {
        error: `address key ${show(key)} never matches: ${show(part)} is not a number 0-255 without leading zeros`,
      };
    }
    octets.push(Number(part));
  }
  const gran = (parts.length * 8) as Gran;
  const at = (o: number[]) => o.reduce((acc, v, i) => acc + v * 2 ** (24 - 8 * i), 0);
  if (rangeAt < 0) return { blocks: [{ first: at(octets), gran }] };
  const blocks: { first: number; gran: Gran }[] = [];
  for (let v = lo; v <= hi; v++) {
    const o = [...octets];
    o[rangeAt] = v;
    blocks.push({ first: at(o), gran });
  }
  return { blocks };
}

function keyKind(key: string): KeyKind {
  if (key === '') return 'default';
  if (key.startsWith('=')) return 'host';
  if (key.includes('@')) return 'info';
  return 'ip';
}

const OPEN_RELAY: Record<Exclude<KeyKind, 'ip'>, string> = {
  default: 'RELAYCLIENT on the default rule lets everyone relay (an open relay): refused',
  host: 'RELAYCLIENT on a =host key trusts the client\'s own reverse DNS (an open relay): refused',
  info: 'RELAYCLIENT on a user@ key trusts the client\'s own ident answer (an open relay): refused',
};

/** Parse one non-comment line (already without its newline). */
export function parseRuleLine(raw: string, lineNo: number): { rule: RuleLine | null } | { problem: Problem } {
  const bad = (reason: string) => ({ problem: { line: lineNo, reason } });
  if (raw.includes('\r')) return bad('carriage return (CRLF line end): tcprules refuses it; convert the file (dos2unix)');
  if (raw.includes('\0')) return bad('NUL byte');
  if (raw.startsWith('#')) return { rule: null };
  // tcprules cuts trailing blanks.
  const text = raw.replace(/[ \t]+$/, '');
  if (text === '') return { rule: null };
  if (/^[ \t]/.test(text)) return bad('leading whitespace becomes part of the address and never matches');
  let colon = -1;
  for (let i = text.indexOf(':'); i >= 0; i = text.indexOf(':', i + 1)) {
    const after = text.slice(i + 1);
    if (after.startsWith('allow') || after.startsWith('deny')) {
      colon = i;
      break;
    }
  }
  if (colon < 0) {
    if (!text.includes(':')) return bad(`no colon: tcprules ignores this line silently (${show(text)})`);
    const m = /:(allow|deny)/i.exec(text);
    if (m) return bad(`instructions are lower case: allow or deny, not ${show(m[1])}`);
    return bad(`expected ADDRESS:allow or ADDRESS:deny, found ${show(text)}`);
  }
  const key = text.slice(0, colon);
  const instructionText = text.slice(colon + 1);
  const parsed = parseInstruction(instructionText);
  if ('error' in parsed) return bad(parsed.error);
  const kind = keyKind(key);
  if (/\s/.test(key)) return bad(`whitespace in the address ${show(key)}: it never matches`);
  let blocks: { first: number; gran: Gran }[] = [];
  if (kind === 'ip') {
    const r = parseAddressKey(key);
    if ('error' in r) return bad(r.error);
    blocks = r.blocks;
  } else if (parsed.instruction.vars.some((v) => v.name === 'RELAYCLIENT')) {
    return bad(OPEN_RELAY[kind]);
  }
  return { rule: { line: lineNo, key, kind, instruction: parsed.instruction, instructionText, blocks } };
}

/** Parse a whole rules text (the static file). Every bad line is reported, not only the first. */
export function parseRulesText(text: string): { rules: RuleLine[]; problems: Problem[] } {
  const rules: RuleLine[] = [];
  const problems: Problem[] = [];
  const lines = text.split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  lines.forEach((raw, i) => {
    const r = parseRuleLine(raw, i + 1);
    if ('problem' in r) problems.push(r.problem);
    else if (r.rule) rules.push(r.rule);
  });
  return { rules, problems };
}

/** Settings of the outcome texts, from the config. */
export interface OutcomeSettings {
  relayEnv: string;
  trustEnv: string;
  denyMode: 'deny' | 'rblsmtpd';
  denyMessage: string;
  defaultRule: string;
}

/** The instruction text of each outcome. */
export interface Outcomes {
  relay: string;
  trust: string;
  deny: string;
  /** QGUARD_DEFAULT_RULE's instruction (the static file's own default line, when it has one, wins in the cdb). */
  default: string;
}

function envSetting(value: string, what: string): { vars: EnvVar[] } | { error: string } {
  const t = value.trim();
  if (t === '') return { vars: [] };
  const r = parseVars(t.startsWith(',') ? t : `,${t}`);
  if ('error' in r) return { error: `${what}: ${r.error}` };
  return r;
}

/**
 * The instruction texts of relay, trust, deny and default from the config, validated: env
 * values in tcprules syntax, no RELAYCLIENT for trust or the default, no refusal hidden in the
 * relay/trust env, a deny message that fits in one delimited value.
 */
export function outcomeInstructions(s: OutcomeSettings): { outcomes: Outcomes } | { error: string } {
  const relayEnv = envSetting(s.relayEnv, 'QGUARD_RELAY_ENV');
  if ('error' in relayEnv) return relayEnv;
  const trustEnv = envSetting(s.trustEnv, 'QGUARD_TRUST_ENV');
  if ('error' in trustEnv) return trustEnv;
  if (relayEnv.vars.some((v) => v.name === 'RELAYCLIENT')) {
    return { error: 'QGUARD_RELAY_ENV: RELAYCLIENT is always set for relay rules; do not repeat it' };
  }
  if (trustEnv.vars.some((v) => v.name === 'RELAYCLIENT')) {
    return { error: 'QGUARD_TRUST_ENV: RELAYCLIENT would make trust relay (use qguard ip allow for relay): refused' };
  }
  for (const [what, env] of [['QGUARD_RELAY_ENV', relayEnv], ['QGUARD_TRUST_ENV', trustEnv]] as const) {
    if (env.vars.some((v) => v.name === 'RBLSMTPD' && v.value !== '')) {
      return { error: `${what}: a non-empty RBLSMTPD would refuse the client; only RBLSMTPD="" (skip DNS blocklists) fits here` };
    }
  }
  let deny = 'deny';
  if (s.denyMode === 'rblsmtpd') {
    const msg = s.denyMessage.trim();
    if (msg === '') return { error: 'QGUARD_DENY_MESSAGE: empty (QGUARD_DENY_MODE=rblsmtpd needs a message)' };
    if (msg.length > 200) return { error: 'QGUARD_DENY_MESSAGE: longer than 200 characters' };
    if (!/^[\x20-\x7e]+$/.test(msg) || msg.includes('"')) {
      return { error: 'QGUARD_DENY_MESSAGE: printable ASCII without double quotes only' };
    }
    deny = `allow,RBLSMTPD="-${msg.replace(/^-/, '')}"`;
  }
  const def = parseRuleLine(s.defaultRule.trim(), 0);
  if ('problem' in def) return { error: `QGUARD_DEFAULT_RULE: ${def.problem.reason}` };
  if (!def.rule || def.rule.kind !== 'default') {
    return { error: `QGUARD_DEFAULT_RULE: must be a default rule starting with a colon, such as :allow (found ${show(s.defaultRule)})` };
  }
  return {
    outcomes: {
      relay: `allow,RELAYCLIENT=""${renderVars(relayEnv.vars)}`,
      trust: `allow${renderVars(trustEnv.vars)}`,
      deny,
      default: def.rule.instructionText,
    },
  };
}

/** The static file's address keys for the key planner (class given per instruction text). */
export function staticKeys(rules: readonly RuleLine[], classOf: (instructionText: string) => number): StaticKey[] {
  const out: StaticKey[] = [];
  for (const r of rules) {
    if (r.kind !== 'ip') continue;
    const cls = classOf(r.instructionText);
    for (const b of r.blocks) out.push({ first: b.first, gran: b.gran, cls });
  }
  return out;
}

/** Header of the generated file; fixed text (no dates: an unchanged policy gives the same bytes). */
export function rulesHeader(staticFile: string): string {
  return [
    '# Generated by qguard sync-rules from the qguard database. Do not edit: the next run',
    '# overwrites this file and tcp.smtp.cdb (and warns about the edit).',
    `# Hand-written rules and environment go in ${staticFile.replace(/[\r\n]/g, '?')}`,
    '# (copied verbatim first, then checked); IP rules go in the database (qguard ip ...).',
    '',
  ].join('\n');
}

/** First line of every file we write: how a run recognises its own file. */
export const HEADER_FIRST_LINE = '# Generated by qguard sync-rules';

export interface RulesTextParts {
  staticFile: string;
  /** The static file's text, verbatim. */
  staticText: string;
  lines: KeyLines;
  /** Instruction text per class. */
  classText: readonly string[];
  /** Line number in the static file of its own default line, if any. */
  staticDefaultLine: number | null;
  /** The configured default instruction (QGUARD_DEFAULT_RULE). */
  defaultInstruction: string;
  counts: { keys: number; relay: number; trust: number; deny: number };
  /** IPv6 keys (lib/net/tcprules-keys6.ts) and their classes, for the IPv6 tcprules; none: empty. */
  v6Keys?: ReadonlyMap<string, number>;
}

// Decimal digits of 0..255 as bytes, for writing keys without making a string per line.
const OCTET_BYTES: readonly Buffer[] = Array.from({ length: 256 }, (_, i) => Buffer.from(String(i), 'latin1'));
const DOT = 46;
const DASH = 45;

/** Write the generated key lines into one buffer: a million lines, no string per line. */
function renderKeyLines(lines: KeyLines, classText: readonly string[]): Buffer {
  const suffix = classText.map((t) => Buffer.from(`:${t}\n`, 'utf8'));
  const longestSuffix = Math.max(1, ...suffix.map((b) => b.length));
  // The longest key: 255.255.255.255-255 (19 bytes).
  const out = Buffer.allocUnsafe(lines.length * (20 + longestSuffix));
  let at = 0;
  const put = (b: Buffer) => {
    for (let k = 0; k < b.length; k++) out[at++] = b[k];
  };
  const { first, gran, count, cls } = lines;
  for (let i = 0; i < lines.length; i++) {
    const f = first[i];
    const parts = gran[i] >> 3;
    const o0 = Math.floor(f / 16777216);
    const oct = [o0, (f >>> 16) & 255, (f >>> 8) & 255, f & 255];
    for (let q = 0; q < parts; q++) {
      put(OCTET_BYTES[oct[q]]);
      if (q === parts - 1 && count[i] > 1) {
        out[at++] = DASH;
        put(OCTET_BYTES[oct[q] + count[i] - 1]);
      }
      if (q < 3) out[at++] = DOT;
    }
    put(suffix[cls[i]]);
  }
  return out.subarray(0, at);
}

/** The whole tcp.smtp: header, static file, generated keys, default line (as bytes). */
export function renderRulesBuffer(p: RulesTextParts): Buffer {
  let head = rulesHeader(p.staticFile);
  if (p.staticText !== '') {
    head += `# ---- static rules (${p.staticFile.replace(/[\r\n]/g, '?')}) ----\n`;
    head += p.staticText.endsWith('\n') ? p.staticText : `${p.staticText}\n`;
  }
  head += `# ---- generated: ${p.counts.keys} keys for ${p.counts.relay} relay, ${p.counts.trust} trust, ${p.counts.deny} deny rules ----\n`;
  let tail = '# ---- default ----\n';
  tail +=
    p.staticDefaultLine !== null ? `# the default rule is line ${p.staticDefaultLine} of the static file\n` : `:${p.defaultInstruction}\n`;
  let v6 = '';
  if (p.v6Keys && p.v6Keys.size > 0) {
    // The IPv6 tcprules ends the address at the first colon before `allow` or `deny`: the key
    // `2001:db8:` is the line `2001:db8::allow`. Sorted, so the text is the same for the same keys.
    v6 = `# ---- IPv6 (the IPv6 ucspi-tcp): ${p.v6Keys.size} keys ----\n`;
    for (const k of [...p.v6Keys.keys()].sort()) v6 += `${k}:${p.classText[p.v6Keys.get(k)!]}\n`;
  }
  return Buffer.concat([Buffer.from(head, 'utf8'), renderKeyLines(p.lines, p.classText), Buffer.from(v6 + tail, 'utf8')]);
}

/** The whole tcp.smtp text: header, static file, generated keys, default line. */
export function renderRulesText(p: RulesTextParts): string {
  return renderRulesBuffer(p).toString('utf8');
}
