// What the firewall blocks: exactly the addresses whose decision is `deny`, as the fewest
// CIDRs per family, and the assertion every rendered set passes before it can reach the
// kernel (never everything, never a protected address). Shared by the nft and ipset
// renderers. Pure: no I/O.

import { PermanentError } from '../errors.js';
import { type Family, type Net, formatNet, formatNetShort, netFirst, netLast } from '../net/address.js';
import { type Range, mergeRanges, netToRange, rangeToCidrs } from '../net/cidr-set.js';
import type { PolicyRule } from '../policy/decide.js';
import { partition } from '../policy/partition.js';

/** The kernel set's content: disjoint CIDRs, sorted, per family. */
export interface DenySet {
  v4: Net[];
  v6: Net[];
}

/**
 * The deny spans of the one decision (longest prefix, relay > trust > deny, protected never
 * deny), aggregated into the fewest CIDRs. An allowed address inside a denied /24 splits it.
 */
export function denySet(rules: readonly PolicyRule[], protectedNets: readonly Net[]): DenySet {
  const out: DenySet = { v4: [], v6: [] };
  for (const span of partition(rules, protectedNets)) {
    if (span.decision !== 'deny') continue;
    const cidrs = rangeToCidrs(span);
    const list = span.family === 4 ? out.v4 : out.v6;
    for (const c of cidrs) list.push(c);
  }
  return out;
}

/** The set's elements as nft and ipset write them (`192.0.2.7`, `198.51.100.0/24`). */
export function elementTexts(nets: readonly Net[]): string[] {
  return nets.map(formatNetShort);
}

/**
 * Refuse, as a bug, a set that would block everything or a protected address. The policy
 * already keeps these out (partition, guards); this is the last check before the kernel, so
 * a bug elsewhere cannot lock the admin out. Throws PermanentError (exit 100).
 */
export function assertSafeSet(set: DenySet, protectedNets: readonly Net[]): void {
  const prot: Record<Family, Range[]> = { 4: [], 6: [] };
  for (const r of mergeRanges(protectedNets.map(netToRange))) prot[r.family].push(r);
  const check = (family: Family, nets: readonly Net[]) => {
    const ranges = prot[family];
    for (const net of nets) {
      if (net.family !== family) {
        throw new PermanentError(`firewall: refusing the set: ${formatNet(net)} is in the IPv${family} list (a bug)`);
      }
      if (net.prefix === 0) {
        throw new PermanentError(`firewall: refusing a set that contains ${formatNet(net)}, every address (a bug)`);
      }
      // Binary search: the first protected range that ends at or after this network's start.
      const first = netFirst(net);
      const last = netLast(net);
      let lo = 0;
      let hi = ranges.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (ranges[mid].last < first) lo = mid + 1;
        else hi = mid;
      }
      if (lo < ranges.length && ranges[lo].first <= last) {
        throw new PermanentError(
          `firewall: refusing a set where ${formatNetShort(net)} blocks a protected address (a bug)`,
        );
      }
    }
  };
  check(4, set.v4);
  check(6, set.v6);
}
