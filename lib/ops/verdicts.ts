// "The live rules for these addresses, then decide()": the one way scan-queue, purge-queue,
// `qguard queue top` and the review page learn what qguard means for the source IPs they list.
// One query for all the addresses (lib/db/messages.ts rulesForIps), then the pure decision
// (lib/policy/decide.ts) per address and per mail server asked about.

import { type Net, parseIp } from '../net/address.js';
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

/**
 * IpRules for each address that parses (others are left out). `onlyAllow`: the caller asks
 * only whether the decision is relay or trust (rulesForIps' 'underAllow': the lists' entries
 * are read only where a relay/trust rule contains the address); its rules() and any other
 * decision may then lack the entries.
 */
export async function rulesAndVerdicts(
  db: Queryable,
  ips: readonly string[],
  protectedNets: readonly Net[],
  onlyAllow = false,
): Promise<Map<string, IpRules>> {
  const unique = [...new Set(ips)];
  const rules = await rulesForIps(db, unique, { entries: onlyAllow ? 'underAllow' : 'all' });
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
