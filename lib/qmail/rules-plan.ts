// What sync-rules will publish, computed from a rules snapshot and the settings, before any
// file is touched: the tcp.smtp text (static lines first, then the generated keys, overlaps
// resolved so tcpserver's most-specific-key lookup gives decide()'s answer), the addresses
// whose compiled answer is checked with tcprulescheck before the cdb goes live, and the
// rcpthosts files. Pure.

import crypto from 'node:crypto';
import { PermanentError } from '../errors.js';
import { type Net, netFirst, netLast } from '../net/address.js';
import type { Action, PolicyRule } from '../policy/decide.js';
import { type KeyPlan, STATIC_MAX, planKeys, v4Text } from '../net/tcprules-keys.js';
import { type Keys6Plan, planKeys6 } from '../net/tcprules-keys6.js';
import { type Outcomes, type RuleLine, parseInstruction, refusesClient, renderRulesBuffer, staticKeys } from './tcprules-file.js';
import { renderRcpthosts } from './rcpthosts.js';

/** The rules that apply on this host, as sync-rules reads them (lib/db/rules-snapshot.ts). */
export interface RulesSnapshot {
  changeSeq: number;
  /** IPv4 rules as sort keys (lib/net/tcprules-keys.ts), the first v4Count of them valid. */
  v4: Float64Array;
  v4Count: number;
  v6: PolicyRule[];
  counts: Record<Action, number>;
  /** Keys the deny rules expand to on their own: what the guard counts. */
  denyKeys: number;
  /** Domains for rcpthosts, or null when rcpthosts is not managed. */
  domains: string[] | null;
}

/** The admin's static file, parsed (lib/io reads it). */
export interface StaticRules {
  text: string;
  hash: string;
  rules: RuleLine[];
}

const sha1 = (data: string | Buffer) => crypto.createHash('sha1').update(data).digest('hex');

/** What will be published. */
export interface RulesPlan {
  text: Buffer;
  hash: string;
  keys: number;
  denyKeys: number;
  classText: string[];
  plan: KeyPlan;
  /** The IPv6 keys, when the installed tcprules takes them (QGUARD_TCPRULES_IPV6); null: none written. */
  v6: Keys6Plan | null;
  rcpt: ReturnType<typeof renderRcpthosts> | null;
}

/**
 * Plan the files. `staticFile` names the static file in messages; `splitMore`: qmail-newmrh is
 * installed (rcpthosts may overflow into morercpthosts).
 */
export function planRules(
  snap: RulesSnapshot,
  stat: StaticRules,
  outcomes: Outcomes,
  prot: readonly Net[],
  opts: { staticFile: string; splitMore: boolean; ipv6?: boolean },
): RulesPlan {
  const classText: string[] = [];
  const classIds = new Map<string, number>();
  const classOf = (t: string): number => {
    let c = classIds.get(t);
    if (c === undefined) {
      c = classText.length;
      classText.push(t);
      classIds.set(t, c);
    }
    return c;
  };
  const staticDefault = stat.rules.find((r) => r.kind === 'default') ?? null;
  const defaultClass = classOf(staticDefault ? staticDefault.instructionText : outcomes.default);
  const actionClass = [classOf(outcomes.relay), classOf(outcomes.trust), classOf(outcomes.deny)] as const;
  const statics = staticKeys(stat.rules, classOf);
  if (statics.length > STATIC_MAX) {
    throw new PermanentError(`${opts.staticFile}: more than ${STATIC_MAX} address keys; put IP rules in the database (qguard ip)`);
  }
  const denyLike = new Set<number>([actionClass[2]]);
  classText.forEach((t, c) => {
    const i = parseInstruction(t);
    if ('instruction' in i && refusesClient(i.instruction)) denyLike.add(c);
  });
  const protectedRanges = prot
    .filter((n) => n.family === 4)
    .map((n) => ({ first: Number(netFirst(n)), last: Number(netLast(n)) }));
  const plan = planKeys({ rules: snap.v4, ruleCount: snap.v4Count, actionClass, defaultClass, denyLike, statics, protectedRanges });
  if (plan.conflicts.length > 0) {
    const c = plan.conflicts[0];
    const line = stat.rules.find((r) => r.kind === 'ip' && r.blocks.some((b) => b.gran === 32 && b.first === c.first));
    throw new PermanentError(
      `${opts.staticFile}: line ${line?.line ?? '?'}: refuses ${v4Text(c.first)}, a protected address, and tcpserver reads that key before any generated one: remove the line`,
    );
  }
  const v6 = opts.ipv6 ? planKeys6({ rules: snap.v6, actionClass, defaultClass, protectedNets: prot }) : null;
  let keys = v6 ? v6.keys.size : 0;
  for (const n of plan.keysByClass.values()) keys += n;
  const denyKeys = snap.denyKeys;
  const text = renderRulesBuffer({
    staticFile: opts.staticFile,
    staticText: stat.text,
    lines: plan.lines,
    classText,
    staticDefaultLine: staticDefault?.line ?? null,
    defaultInstruction: outcomes.default,
    counts: { keys, ...snap.counts },
    v6Keys: v6?.keys,
  });
  const rcpt = snap.domains ? renderRcpthosts(snap.domains, { splitMore: opts.splitMore }) : null;
  return { text, hash: sha1(text), keys, denyKeys, classText, plan, v6, rcpt };
}

/** A few addresses of every outcome, and what tcprulescheck must say about each. */
export function checkSamples(p: RulesPlan): { ip: string; expect: string[] }[] {
  const seg = p.plan.segments;
  const picks = new Map<number, number[]>();
  const add = (i: number) => {
    const list = picks.get(seg.cls[i]) ?? [];
    if (list.length < 3) list.push(seg.start[i], seg.end[i]);
    picks.set(seg.cls[i], list);
  };
  for (let i = 0; i < seg.length; i++) {
    const have = picks.get(seg.cls[i]);
    if (!have || have.length < 2) add(i);
  }
  for (const i of [0.25, 0.5, 0.75].map((f) => Math.floor((seg.length - 1) * f))) add(i);
  const out: { ip: string; expect: string[] }[] = [];
  const expectOf = (cls: number): string[] | null => {
    const parsed = parseInstruction(p.classText[cls]);
    if (!('instruction' in parsed)) return null;
    const i = parsed.instruction;
    return i.verdict === 'deny' ? ['deny connection'] : [...i.vars.map((v) => `set environment variable ${v.name}=${v.value}`), 'allow connection'];
  };
  for (const [cls, addrs] of picks) {
    const expect = expectOf(cls);
    if (expect) for (const a of new Set(addrs)) out.push({ ip: v4Text(a), expect });
  }
  for (const s of p.v6?.samples ?? []) {
    const expect = expectOf(s.cls);
    if (expect) out.push({ ip: s.ip, expect });
  }
  return out;
}
