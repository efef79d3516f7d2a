// "The live rules for these addresses, then decide()": the one way scan-queue, purge-queue,
// `qguard queue top` and the review page learn what qguard means for the source IPs they list.
// One query for all the addresses (lib/db/messages.ts rulesForIps), then the pure decision
// (lib/policy/decide.ts) per address and per mail server asked about.

import { type Net, parseIp, parseNet } from '../net/address.js';
import { type DecisionResult, decide, rulesOnHost } from '../policy/decide.js';
import type { Queryable } from '../db/connect.js';
import { rulesForIps } from '../db/messages.js';
import type { Rule } from '../db/rules.js';

/** What is known of one address: its live rules, and the decision on any mail server. */
export interface IpRules {
  net: Net;
  /** Every live rule containing the address, on any host. */
  rules: Rule[];
  /** The decision on mail server `host` (rules scoped elsewhere do not count). */
  on(host: string): DecisionResult<Rule>;
  /** The mail servers with a rule of their own for the address. */
  scopedHosts(): string[];
}

/** A list entry found for an address, as kept between runs (JSON). */
export interface KeptEntry {
  cidr: string;
  source: string;
  reason: string | null;
  createdAt: string;
  expiresAt: string | null;
}

/** The lists' entries among the rules found (id 0, sql/018), per address, to keep. */
export function entriesFound(verdicts: Map<string, IpRules>): Record<string, KeptEntry[]> {
  const out: Record<string, KeptEntry[]> = {};
  for (const [ip, v] of verdicts) {
    const mine = v.rules.filter((r) => r.id === 0 && r.source.startsWith('list:'));
    if (mine.length === 0) continue;
    out[ip] = mine.map((r) => ({ cidr: r.cidr, source: r.source, reason: r.reason, createdAt: r.createdAt.toISOString(), expiresAt: r.expiresAt?.toISOString() ?? null }));
  }
  return out;
}

/** Kept entries as rules again, without those whose time is up. */
function keptRules(kept: Record<string, KeptEntry[]>): Map<string, Rule[]> {
  const now = Date.now();
  const out = new Map<string, Rule[]>();
  for (const [ip, list] of Object.entries(kept)) {
    const rules: Rule[] = [];
    for (const e of list) {
      const net = parseNet(e.cidr);
      if (!net.ok || (e.expiresAt !== null && Date.parse(e.expiresAt) <= now)) continue;
      rules.push({
        id: 0,
        net: net.net,
        cidr: e.cidr,
        action: 'deny',
        source: e.source,
        reason: e.reason,
        who: null,
        createdAt: new Date(e.createdAt),
        expiresAt: e.expiresAt === null ? null : new Date(e.expiresAt),
        host: null,
      });
    }
    out.set(ip, rules);
  }
  return out;
}

/**
 * IpRules for each address that parses (others are left out). `entries` says how the lists'
 * entries are found: 'all' read (a scan of them per 2,000 addresses); 'underAllow' for a
 * caller that asks only whether the decision is relay or trust (read only where a relay/trust
 * rule contains the address; rules() and any other decision may then lack them); or the
 * entries a previous run found (entriesFound) while no list's entries changed since: not read.
 */
export async function rulesAndVerdicts(
  db: Queryable,
  ips: readonly string[],
  protectedNets: readonly Net[],
  entries: 'all' | 'underAllow' | Record<string, KeptEntry[]> = 'all',
): Promise<Map<string, IpRules>> {
  const unique = [...new Set(ips)];
  const rules = await rulesForIps(db, unique, { entries: typeof entries === 'string' ? entries : 'none' });
  if (typeof entries !== 'string') {
    for (const [ip, kept] of keptRules(entries)) {
      if (rules.has(ip)) rules.set(ip, [...kept, ...rules.get(ip)!]);
    }
  }
  const out = new Map<string, IpRules>();
  for (const ip of unique) {
    const p = parseIp(ip);
    if (!p.ok) continue;
    const mine = rules.get(ip) ?? [];
    out.set(ip, {
      net: p.net,
      rules: mine,
      on: (host) => decide(p.net, rulesOnHost(mine, host), protectedNets),
      scopedHosts: () => [...new Set(mine.map((r) => r.host).filter((h): h is string => h !== null))],
    });
  }
  return out;
}
