// One line of a public spam IP list → the networks it lists, nothing, or why it is not an entry.
// Every format the lists in the wild use is recognised per line, so a file may mix them:
// plain addresses and CIDRs, ranges `a.b.c.d-e.f.g.h` (as the fewest CIDRs), Spamhaus DROP
// (`1.2.3.0/24 ; SBL123`), Spamhaus JSON lines (`{"cidr":"1.2.3.0/24",...}`), tcprules lines
// (`1.2.3.:deny`, `1.2.3.4-20:deny`), `#`/`;` comments, CRLF, a UTF-8 BOM, surrounding blanks.
// Strict, never guessing: `012.0.0.1` (octal-looking), `1.2.3`, `10.0.0.5/24` are reported, not
// repaired. Pure: no I/O, no guards (the job applies QGUARD_MIN_PREFIX and protection).

import { type Net, parseIp, parseNet, quoteInput } from '../net/address.js';
import { aggregateNets, rangeToCidrs } from '../net/cidr-set.js';

/** What one line says. */
export type LineResult =
  /** Blank, a comment, or list metadata: not an entry and not a problem. */
  | { kind: 'skip' }
  /** One or more networks (a range or a tcprules range gives several). */
  | { kind: 'nets'; nets: Net[] }
  /** Not an entry we can read; `reason` names what is wrong (without the line number). */
  | { kind: 'invalid'; reason: string };

const SKIP: LineResult = { kind: 'skip' };

/** Longer lines are not list entries (and are not kept whole in memory by the reader). */
export const MAX_LINE = 4096;

const invalid = (reason: string): LineResult => ({ kind: 'invalid', reason });

/**
 * Fast path for the common case, a plain dotted quad with an optional prefix (`1.2.3.4`,
 * `10.0.0.0/8`). Returns the network address as a number and the prefix, or null when the text
 * is anything else (leading zeros, host bits, junk): the caller then asks parseNet, which gives
 * the same answer for every text this accepts (a property test holds it to that) and the
 * message for every text it does not.
 */
export function quickDottedQuad(text: string): { addr: number; prefix: number } | null {
  const n = text.length;
  if (n < 7 || n > 18) return null;
  let addr = 0;
  let i = 0;
  for (let part = 0; part < 4; part++) {
    const start = i;
    let v = 0;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c < 48 || c > 57) break;
      v = v * 10 + (c - 48);
      i++;
    }
    const len = i - start;
    if (len === 0 || len > 3 || v > 255) return null;
    if (len > 1 && text.charCodeAt(start) === 48) return null; // leading zero: let parseNet explain
    addr = addr * 256 + v;
    if (part < 3) {
      if (i >= n || text.charCodeAt(i) !== 46) return null;
      i++;
    }
  }
  if (i === n) return { addr, prefix: 32 };
  if (text.charCodeAt(i) !== 47) return null;
  i++;
  const start = i;
  let p = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) return null;
    p = p * 10 + (c - 48);
    i++;
  }
  const len = i - start;
  if (len === 0 || len > 2 || p > 32 || (len > 1 && text.charCodeAt(start) === 48)) return null;
  // Host bits set: parseNet refuses it and names the network meant.
  const size = 2 ** (32 - p);
  if (addr % size !== 0) return null;
  return { addr, prefix: p };
}

/** What quickLineBytes says of a blank or comment line. */
export const QUICK_SKIP = -2;

/**
 * The reader's hot path over the bytes `buf[start, end)` of one line, in one pass and without
 * making a string: a plain IPv4 entry (`1.2.3.4`, `1.2.3.0/24`, blanks around it, a trailing
 * `;`/`#` comment as in Spamhaus DROP) as one number, address * 64 + prefix; QUICK_SKIP for a
 * blank or comment line; -1 for anything else, which parseLine then reads. The rules are
 * quickDottedQuad's (no leading zeros, no host bits); whenever this answers, parseLine answers
 * the same (a property test holds it to that). Blanks are those String.prototype.trim removes
 * in ASCII: space, tab, CR, VT, FF.
 */
export function quickLineBytes(buf: Uint8Array, start: number, end: number): number {
  if (end - start > MAX_LINE) return -1; // parseLine reports it, comment or not
  let i = start;
  let c = 0;
  while (i < end && ((c = buf[i]) === 32 || c === 9 || c === 13 || c === 11 || c === 12)) i++;
  if (i === end || c === 35 /* # */ || c === 59 /* ; */) return QUICK_SKIP;
  let addr = 0;
  for (let part = 0; part < 4; part++) {
    const first = i;
    let v = 0;
    while (i < end && (c = buf[i]) >= 48 && c <= 57) {
      v = v * 10 + (c - 48);
      i++;
    }
    const len = i - first;
    if (len === 0 || len > 3 || v > 255 || (len > 1 && buf[first] === 48)) return -1; // leading zero: parseNet explains
    addr = addr * 256 + v;
    if (part < 3) {
      if (i === end || buf[i] !== 46 /* . */) return -1;
      i++;
    }
  }
  let prefix = 32;
  if (i < end && buf[i] === 47 /* / */) {
    const first = ++i;
    prefix = 0;
    while (i < end && (c = buf[i]) >= 48 && c <= 57) {
      prefix = prefix * 10 + (c - 48);
      i++;
    }
    const len = i - first;
    if (len === 0 || len > 2 || prefix > 32 || (len > 1 && buf[first] === 48)) return -1;
    // Host bits set: parseNet refuses it and names the network meant. (Bit operations see the
    // address as a 32-bit integer; `>>> 32` would shift by nothing, hence the /32 test first.)
    if (prefix < 32 && (addr & (0xffffffff >>> prefix)) !== 0) return -1;
  }
  while (i < end && ((c = buf[i]) === 32 || c === 9 || c === 13 || c === 11 || c === 12)) i++;
  if (i < end && c !== 35 && c !== 59) return -1;
  return addr * 64 + prefix;
}

function v4Net(addr: number, prefix: number): Net {
  return { family: 4, addr: BigInt(addr), prefix };
}

/** An address, a CIDR or a range, as the text of a list entry (comments already removed). */
export function parseEntryText(text: string): LineResult {
  const quick = quickDottedQuad(text);
  if (quick) return { kind: 'nets', nets: [v4Net(quick.addr, quick.prefix)] };
  const dash = text.indexOf('-');
  if (dash >= 0) return parseRange(text, dash);
  if (/\s/.test(text)) {
    return invalid(`more than one word (only an address, a CIDR or a range per line): ${quoteInput(text)}`);
  }
  const r = parseNetJunkFirst(text);
  return r.ok ? { kind: 'nets', nets: [r.net] } : invalid(r.error);
}

/**
 * parseNet, answering junk itself: an address part (before any `/`) without a colon that holds
 * anything but digits and dots is no address, and parseNet would say so only after ipaddr's
 * IPv4 check has thrown and caught an exception inside (some 30-50 µs a line). Same answer
 * for every text: a property test holds it to parseNet.
 */
export function parseNetJunkFirst(text: string): ReturnType<typeof parseNet> {
  const t = text.trim();
  if (t !== '' && t.length <= 100) {
    const slash = t.indexOf('/');
    const addr = slash < 0 ? t : t.slice(0, slash);
    if (!addr.includes(':') && /[^\d.]/.test(addr)) return { ok: false, error: `not an IP address: ${quoteInput(addr)}` };
  }
  return parseNet(text);
}

/** A plain dotted quad without a prefix, as parseIp reads it; null for anything else. */
function quickIp(text: string): { ok: true; net: Net } | null {
  if (text.includes('/')) return null;
  const quick = quickDottedQuad(text);
  return quick ? { ok: true, net: v4Net(quick.addr, 32) } : null;
}

/** `a.b.c.d-e.f.g.h`, `a::1-a::ff`, or the short IPv4 form `a.b.c.d-h` (last part only). */
function parseRange(text: string, dash: number): LineResult {
  const left = text.slice(0, dash).trim();
  const right = text.slice(dash + 1).trim();
  const lo = quickIp(left) ?? parseIp(left);
  if (!lo.ok) return invalid(`range start: ${lo.error}`);
  let hi;
  if (/^\d+$/.test(right) && lo.net.family === 4) {
    // `1.2.3.4-20`: the end differs from the start in the last part only.
    if (!/^(0|[1-9]\d{0,2})$/.test(right) || Number(right) > 255) {
      return invalid(`range end is not a number 0-255: ${quoteInput(text)}`);
    }
    hi = { ok: true as const, net: { family: 4 as const, addr: (lo.net.addr & ~0xffn) | BigInt(right), prefix: 32 } };
  } else {
    hi = quickIp(right) ?? parseIp(right);
    if (!hi.ok) return invalid(`range end: ${hi.error}`);
  }
  if (hi.net.family !== lo.net.family) return invalid(`range mixes IPv4 and IPv6: ${quoteInput(text)}`);
  if (hi.net.addr < lo.net.addr) return invalid(`range ends before it starts: ${quoteInput(text)}`);
  return { kind: 'nets', nets: rangeToCidrs({ family: lo.net.family, first: lo.net.addr, last: hi.net.addr }) };
}

/** `KEY:deny[,...]`; a key never holds blanks or comment marks (then it is a comment's text). */
const TCPRULES_LINE = /^([^:\s#;]*):(deny|allow)(,.*)?$/;

/**
 * A tcprules line. Only `deny` lines are listings; the key is what tcpserver would match:
 * `1.2.3.4` (exact), `1.2.3.` / `1.2.` / `1.` (prefix), the first `-` expanding one part
 * (`1.2.3.4-20`, `10.2-3.`), and the empty key (everyone). Keys tcpserver never matches
 * (`1.2`, leading zeros, a second range) are reported, as are host-name and `user@ip` keys.
 */
function parseTcprules(key: string, action: string): LineResult {
  const shown = quoteInput(`${key}:${action}`);
  if (action !== 'deny') return invalid(`tcprules ${action} line is not a listing: ${shown}`);
  if (key === '') return { kind: 'nets', nets: [{ family: 4, addr: 0n, prefix: 0 }] };
  if (key.startsWith('=') || key.includes('@')) {
    return invalid(`tcprules host-name or user@ip key is not an IP listing: ${shown}`);
  }
  if (!/^[\d.-]+$/.test(key)) return invalid(`not a tcprules IPv4 key: ${shown}`);
  const isPrefix = key.endsWith('.');
  const parts = (isPrefix ? key.slice(0, -1) : key).split('.');
  if (isPrefix ? parts.length > 3 : parts.length !== 4) {
    return invalid(
      isPrefix
        ? `tcprules prefix key with four parts never matches: ${shown}`
        : `tcprules key needs four parts or a trailing dot (never matches as written): ${shown}`,
    );
  }
  let rangeAt = -1;
  let lo = 0;
  let hi = 0;
  const fixed: number[] = [];
  const num = (s: string) => (/^(0|[1-9]\d{0,2})$/.test(s) && Number(s) <= 255 ? Number(s) : -1);
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i];
    const d = p.indexOf('-');
    if (d >= 0) {
      if (rangeAt >= 0) return invalid(`tcprules expands only the first range in a line (never matches): ${shown}`);
      lo = num(p.slice(0, d));
      hi = num(p.slice(d + 1));
      if (lo < 0 || hi < 0) return invalid(`tcprules range part is not 0-255 without leading zeros: ${shown}`);
      if (hi < lo) return invalid(`tcprules range ends before it starts: ${shown}`);
      rangeAt = i;
      fixed.push(0);
    } else {
      const v = num(p);
      if (v < 0) {
        return invalid(
          /^0\d/.test(p)
            ? `leading zeros in a tcprules key (octal-looking, never matches): ${shown}`
            : `tcprules key part is not a number 0-255: ${shown}`,
        );
      }
      fixed.push(v);
    }
  }
  const prefix = 8 * parts.length;
  const base = (vals: number[]) => {
    let a = 0;
    for (let i = 0; i < 4; i++) a = a * 256 + (vals[i] ?? 0);
    return a;
  };
  if (rangeAt < 0) return { kind: 'nets', nets: [v4Net(base(fixed), prefix)] };
  const nets: Net[] = [];
  for (let v = lo; v <= hi; v++) {
    fixed[rangeAt] = v;
    nets.push(v4Net(base(fixed), prefix));
  }
  return { kind: 'nets', nets: aggregateNets(nets) };
}

/** A Spamhaus JSON line (`drop_v4.json`, `drop_v6.json`): `{"cidr":...}` or the metadata line. */
function parseJsonLine(text: string): LineResult {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return invalid(`not valid JSON: ${quoteInput(text)}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return invalid(`JSON line is not an object: ${quoteInput(text)}`);
  }
  const obj = value as Record<string, unknown>;
  if (typeof obj.cidr === 'string') {
    return parseEntryText(obj.cidr.trim());
  }
  // Spamhaus ends its JSON lists with {"type":"metadata","timestamp":...,"records":N,...}.
  if (obj.type === 'metadata') return SKIP;
  return invalid(`JSON line without a "cidr" field: ${quoteInput(text)}`);
}

/** True when a line is markup: the start of an HTML (or XML) page, never a list entry. */
export function isMarkupLine(line: string): boolean {
  const t = line.replace(/^\uFEFF/, '').trimStart();
  return t.startsWith('<');
}

/** Read one line of a spam list (without its `\n`; a trailing `\r` and a BOM are fine). */
export function parseLine(raw: string): LineResult {
  let line = raw;
  if (line.charCodeAt(0) === 0xfeff) line = line.slice(1);
  if (line.length > MAX_LINE) return invalid(`line longer than ${MAX_LINE} characters`);
  line = line.trim();
  if (line === '') return SKIP;
  const c = line.charCodeAt(0);
  if (c === 35 /* # */ || c === 59 /* ; */) return SKIP;
  if (c === 123 /* { */) return parseJsonLine(line);
  if (c === 60 /* < */) return invalid(`markup, not a list entry (an HTML page?): ${quoteInput(line)}`);
  // The common case first: a bare address or CIDR.
  const quick = quickDottedQuad(line);
  if (quick) return { kind: 'nets', nets: [v4Net(quick.addr, quick.prefix)] };
  if (line.includes(':deny') || line.includes(':allow')) {
    const m = TCPRULES_LINE.exec(line);
    if (m) return parseTcprules(m[1], m[2]);
  }
  // Trailing comments: Spamhaus DROP `1.2.3.0/24 ; SBL123`, `1.2.3.4 # note`.
  const hash = line.indexOf('#');
  const semi = line.indexOf(';');
  const cut = hash < 0 ? semi : semi < 0 ? hash : Math.min(hash, semi);
  if (cut >= 0) line = line.slice(0, cut).trim();
  if (line === '') return SKIP;
  return parseEntryText(line);
}
