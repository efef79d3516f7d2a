// The decision: what qguard means for one address, given the live rules that contain it.
// Every part of qguard (tcp.smtp, the firewall set, `qguard ip why`, scan-queue's exemptions,
// purge-queue's selection) asks this one function, so they cannot disagree. Pure.
//
//   - among the rules whose network contains the address, the longest prefix wins
//     (tcpserver picks the most specific key the same way);
//   - equal prefixes: relay > trust > deny (a partner or a logged-in user beats a list);
//   - no rule: `default` (accepted, may send only to rcpthosts);
//   - protected addresses (loopback, this machine, QGUARD_PROTECT) are never `deny`:
//     for them deny rules do not count, and the best remaining rule (or default) decides.

import { type Net, netContains } from '../net/address.js';

export type Action = 'relay' | 'trust' | 'deny';
export type Decision = Action | 'default';

export const ACTIONS: readonly Action[] = ['relay', 'trust', 'deny'];

/** The least a rule must carry for the decision. Callers add their own fields. */
export interface PolicyRule {
  net: Net;
  action: Action;
}

const RANK: Record<Action, number> = { relay: 3, trust: 2, deny: 1 };

/**
 * Precedence order between two rules that both contain an address: negative when `a` wins.
 * Longest prefix first, then relay > trust > deny. Stable for equal rules (returns 0).
 */
export function comparePrecedence(a: PolicyRule, b: PolicyRule): number {
  if (a.net.prefix !== b.net.prefix) return b.net.prefix - a.net.prefix;
  return RANK[b.action] - RANK[a.action];
}

export interface DecisionResult<R extends PolicyRule> {
  decision: Decision;
  /** The winning rule, or null for `default`. */
  rule: R | null;
  /** True when the address is protected (deny rules were set aside for it). */
  protected: boolean;
}

/** True when any protected network contains the address (given as a single-address Net). */
export function isProtected(ip: Net, protectedNets: readonly Net[]): boolean {
  for (const p of protectedNets) if (netContains(p, ip)) return true;
  return false;
}

/**
 * Decide for one address. `rules` may hold any rules: those not containing `ip` are ignored,
 * so callers can pass SQL candidates (`network >>= ip`) or a whole rule set alike. Among equal
 * winners the first in `rules` order wins.
 */
export function decide<R extends PolicyRule>(
  ip: Net,
  rules: readonly R[],
  protectedNets: readonly Net[] = [],
): DecisionResult<R> {
  const prot = isProtected(ip, protectedNets);
  let best: R | null = null;
  for (const r of rules) {
    if (prot && r.action === 'deny') continue;
    if (!netContains(r.net, ip)) continue;
    if (best === null || comparePrecedence(r, best) < 0) best = r;
  }
  return { decision: best ? best.action : 'default', rule: best, protected: prot };
}

/** The rules that apply on one mail server: those for every server and those scoped to it. */
export function rulesOnHost<R extends PolicyRule & { host: string | null }>(rules: readonly R[], host: string): R[] {
  return rules.filter((r) => r.host === null || r.host === host);
}
