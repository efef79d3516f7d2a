// The decision function against a brute-force oracle on random rule sets (every prefix length,
// IPv4 and IPv6, nested and overlapping), and the whole-space partition against both.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type Family, type Net, FAMILY_BITS, formatNet, parseNet } from '../../lib/net/address.js';
import { type Action, type Decision, decide } from '../../lib/policy/decide.js';
import { lookupSpan, partition } from '../../lib/policy/partition.js';

const net = (s: string): Net => {
  const r = parseNet(s);
  if (!r.ok) throw new Error(r.error);
  return r.net;
};

/** The address as a string of bits: containment is then plain string prefix comparison. */
function bits(family: Family, addr: bigint): string {
  return addr.toString(2).padStart(FAMILY_BITS[family], '0');
}

/** The oracle: written the slow, obvious way, sharing no code with decide(). */
function oracle(ip: Net, rules: { net: Net; action: Action }[], prot: Net[]): Decision {
  const ipBits = bits(ip.family, ip.addr);
  const inside = (n: Net) => n.family === ip.family && ipBits.startsWith(bits(n.family, n.addr).slice(0, n.prefix));
  const isProt = prot.some(inside);
  const rank = { relay: 3, trust: 2, deny: 1 } as const;
  const matching = rules.filter((r) => inside(r.net) && !(isProt && r.action === 'deny'));
  if (matching.length === 0) return 'default';
  const best = Math.max(...matching.map((r) => r.net.prefix));
  const atBest = matching.filter((r) => r.net.prefix === best);
  return atBest.sort((a, b) => rank[b.action] - rank[a.action])[0].action;
}

/**
 * Random networks clustered in a small region so they nest and overlap often: a random base
 * inside a /(bits-12) around a fixed anchor, any prefix length from 1 to full.
 */
const arbNet = (family: Family): fc.Arbitrary<Net> => {
  const width = FAMILY_BITS[family];
  const anchor = family === 4 ? 0xcb007100n : 0x20010db8000000000000000000000000n;
  return fc.tuple(fc.bigInt({ min: 0n, max: (1n << 12n) - 1n }), fc.integer({ min: 1, max: width })).map(([off, prefix]) => {
    const addr = anchor + (off << BigInt(Math.max(0, width - 20)));
    const mask = ((1n << BigInt(width)) - 1n) ^ ((1n << BigInt(width - prefix)) - 1n);
    return { family, addr: addr & mask, prefix };
  });
};
const arbAction = fc.constantFrom<Action>('relay', 'trust', 'deny');
const arbRules = (family: Family) => fc.array(fc.record({ net: arbNet(family), action: arbAction }), { maxLength: 30 });

/** Probe addresses: random ones in the region, plus every rule's edges and their neighbours. */
function probes(family: Family, rules: { net: Net }[], extra: bigint[]): Net[] {
  const width = FAMILY_BITS[family];
  const max = (1n << BigInt(width)) - 1n;
  const out = new Set<bigint>(extra);
  for (const r of rules) {
    const first = r.net.addr;
    const last = first | ((1n << BigInt(width - r.net.prefix)) - 1n);
    for (const a of [first - 1n, first, first + 1n, last - 1n, last, last + 1n]) if (a >= 0n && a <= max) out.add(a);
  }
  return [...out].map((addr) => ({ family, addr, prefix: width }));
}

describe('decide', () => {
  it('examples from the issue', () => {
    const rules = [
      { net: net('203.0.113.0/24'), action: 'deny' as const },
      { net: net('203.0.113.5'), action: 'relay' as const },
    ];
    expect(decide(net('203.0.113.5'), rules).decision).toBe('relay');
    expect(decide(net('203.0.113.6'), rules).decision).toBe('deny');
    expect(decide(net('198.51.100.1'), rules).decision).toBe('default');
  });

  it('equal prefixes: relay > trust > deny, whatever the order', () => {
    const n = net('192.0.2.0/24');
    const ip = net('192.0.2.9');
    expect(decide(ip, [{ net: n, action: 'deny' }, { net: n, action: 'trust' }]).decision).toBe('trust');
    expect(decide(ip, [{ net: n, action: 'trust' }, { net: n, action: 'relay' }, { net: n, action: 'deny' }]).decision).toBe('relay');
  });

  it('the most specific rule wins: one auto-deny inside an allowed /24 overrides the /24', () => {
    const rules = [
      { net: net('10.1.2.0/24'), action: 'relay' as const },
      { net: net('10.1.2.66'), action: 'deny' as const },
    ];
    expect(decide(net('10.1.2.66'), rules).decision).toBe('deny');
    expect(decide(net('10.1.2.67'), rules).decision).toBe('relay');
  });

  it('protected addresses are never deny; the best other rule decides', () => {
    const rules = [
      { net: net('127.0.0.0/8'), action: 'trust' as const },
      { net: net('127.0.0.0/16'), action: 'deny' as const },
    ];
    const prot = [net('127.0.0.0/8')];
    const r = decide(net('127.0.0.1'), rules, prot);
    expect(r.decision).toBe('trust');
    expect(r.protected).toBe(true);
    expect(decide(net('127.0.0.1'), [{ net: net('127.0.0.1'), action: 'deny' }], prot).decision).toBe('default');
  });

  it('IPv4 rules never match IPv6 addresses and back', () => {
    expect(decide(net('::1'), [{ net: net('0.0.0.0/1'), action: 'deny' }]).decision).toBe('default');
    expect(decide(net('1.2.3.4'), [{ net: net('::/1'), action: 'deny' }]).decision).toBe('default');
  });

  for (const family of [4, 6] as const) {
    it(`equals the brute-force oracle on random IPv${family} rule sets`, () => {
      fc.assert(
        fc.property(arbRules(family), fc.array(arbNet(family), { maxLength: 3 }), (rules, prot) => {
          for (const ip of probes(family, rules, [])) {
            const got = decide(ip, rules, prot).decision;
            const want = oracle(ip, rules, prot);
            if (got !== want) throw new Error(`${formatNet(ip)}: decide=${got} oracle=${want}`);
          }
        }),
        { numRuns: 300 },
      );
    });

    it(`partition() gives every IPv${family} address the same decision as decide()`, () => {
      fc.assert(
        fc.property(arbRules(family), fc.array(arbNet(family), { maxLength: 3 }), (rules, prot) => {
          const spans = partition(rules, prot);
          // spans are sorted, disjoint, non-empty and maximal (neighbours differ or have a gap)
          for (let i = 0; i < spans.length; i++) {
            expect(spans[i].first <= spans[i].last).toBe(true);
            if (i > 0 && spans[i - 1].family === spans[i].family) {
              expect(spans[i - 1].last < spans[i].first).toBe(true);
              if (spans[i - 1].last + 1n === spans[i].first) expect(spans[i - 1].decision).not.toBe(spans[i].decision);
            }
          }
          const edges = prot.flatMap((p) => [p.addr - 1n, p.addr, p.addr + 1n]).filter((a) => a >= 0n);
          for (const ip of probes(family, [...rules, ...prot.map((p) => ({ net: p }))], edges)) {
            const got = lookupSpan(spans, family, ip.addr);
            const want = oracle(ip, rules, prot);
            if (got !== want) throw new Error(`${formatNet(ip)}: partition=${got} oracle=${want}`);
          }
        }),
        { numRuns: 300 },
      );
    });
  }

  it('partition handles both families at once and the ends of the space', () => {
    const rules = [
      { net: net('0.0.0.0/8'), action: 'deny' as const },
      { net: net('255.255.255.255'), action: 'deny' as const },
      { net: net('::/16'), action: 'trust' as const },
      { net: net('ffff::/16'), action: 'deny' as const },
    ];
    const spans = partition(rules, []);
    expect(spans.map((s) => `${s.family}:${s.decision}`)).toEqual(['4:deny', '4:deny', '6:trust', '6:deny']);
    expect(lookupSpan(spans, 4, 0xffffffffn)).toBe('deny');
    expect(lookupSpan(spans, 4, 0xfffffffen)).toBe('default');
    expect(lookupSpan(spans, 6, (1n << 128n) - 1n)).toBe('deny');
  });
});
