// Random IPv6 policies and probes, shared with test/integration/ipv6-rules.test.ts.

import { type Net, netFirst, netLast } from '../../lib/net/address.js';
import type { Action, PolicyRule } from '../../lib/policy/decide.js';
import type { Rng } from './rng.js';

export { rng, type Rng } from './rng.js';

/** Addresses in a few /32s, groups drawn mostly from 0, 1 and ffff: zero runs everywhere. */
export function randomAddr(r: Rng): bigint {
  const g = [0x2001, r.pick([0xdb8, 0, 0xdb8])];
  for (let i = 2; i < 8; i++) g.push(r.pick([0, 0, 0, 1, 0xab, 0xffff, r.int(0, 0xffff)]));
  return g.reduce((acc, x) => (acc << 16n) | BigInt(x), 0n);
}
export const netOf = (a: bigint, prefix: number): Net => ({ family: 6, addr: prefix === 0 ? 0n : (a >> BigInt(128 - prefix)) << BigInt(128 - prefix), prefix });

export function randomPolicy6(r: Rng, n: number): PolicyRule[] {
  const out: PolicyRule[] = [];
  const prefixes = [32, 33, 40, 47, 48, 52, 56, 60, 63, 64, 64, 72, 80, 96, 112, 116, 120, 124, 127, 128, 128];
  for (let i = 0; i < n; i++) {
    // Half of them inside another: nesting with other outcomes.
    const inside = out.length && r.next() < 0.5 ? r.pick(out) : null;
    const a = inside ? netFirst(inside.net) + (randomAddr(r) & ((1n << BigInt(128 - inside.net.prefix)) - 1n)) : randomAddr(r);
    const p = r.pick(prefixes.filter((x) => !inside || x > inside.net.prefix).concat(inside ? [] : prefixes));
    out.push({ net: netOf(a, p ?? 128), action: r.pick<Action>(['relay', 'trust', 'deny', 'deny']) });
  }
  return out;
}

/** Probe addresses: each rule's first and last address and their neighbours, and random ones. */
export function probes(r: Rng, rules: readonly PolicyRule[], extra: number): bigint[] {
  const out = new Set<bigint>();
  for (const x of rules) for (const a of [netFirst(x.net), netLast(x.net)]) for (const d of [-1n, 0n, 1n]) out.add(a + d);
  for (let i = 0; i < extra; i++) out.add(randomAddr(r));
  return [...out].filter((a) => a >= 0n && a < 1n << 128n);
}

