// The key planner against the decision function: for random nested and overlapping policies,
// a simulated tcpserver lookup (most specific key, static lines first) over the planned keys
// must give decide()'s answer for every address checked. The real tcprules/tcprulescheck run the
// same property in test/integration/sync-rules-property.test.ts.

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { type Net, netFirst, netLast } from '../../lib/net/address.js';
import { type Action, type PolicyRule, decide } from '../../lib/policy/decide.js';
import { partition, lookupSpan } from '../../lib/policy/partition.js';
import {
  ACTION_CODE,
  type Gran,
  type KeyPlan,
  type StaticKey,
  decodeSortKey,
  keyText,
  planKeys,
  ruleSortKey,
  segmentClass,
  v4Number,
  v4Text,
} from '../../lib/net/tcprules-keys.js';

const DEFAULT = 0;
const CLS: Record<Action, number> = { relay: 1, trust: 2, deny: 3 };
const STATIC_ALLOW = 4;
const STATIC_DENY = 5;
const DENY_LIKE = new Set([CLS.deny, STATIC_DENY]);

const net = (addr: number, prefix: number): Net => ({ family: 4, addr: BigInt(addr), prefix });

function input(rules: PolicyRule[], statics: StaticKey[] = [], prot: Net[] = []) {
  const keys = new Float64Array(rules.length);
  rules.forEach((r, i) => {
    keys[i] = ruleSortKey(Number(r.net.addr), r.net.prefix, ACTION_CODE[r.action]);
  });
  return {
    rules: keys,
    ruleCount: rules.length,
    actionClass: [CLS.relay, CLS.trust, CLS.deny] as const,
    defaultClass: DEFAULT,
    denyLike: DENY_LIKE,
    statics,
    protectedRanges: prot.map((p) => ({ first: Number(netFirst(p)), last: Number(netLast(p)) })),
  };
}

/** tcpserver's lookup over the cdb that static lines + planned lines make (first line wins). */
function simulate(plan: KeyPlan, statics: StaticKey[]): (addr: number) => number {
  const cdb = new Map<string, number>();
  for (const s of statics) {
    const k = keyText(s.first, s.gran, 1);
    if (!cdb.has(k)) cdb.set(k, s.cls);
  }
  const { first, gran, count, cls } = plan.lines;
  for (let i = 0; i < plan.lines.length; i++) {
    const step = 2 ** (32 - gran[i]);
    for (let j = 0; j < count[i]; j++) {
      const k = keyText(first[i] + j * step, gran[i], 1);
      if (!cdb.has(k)) cdb.set(k, cls[i]);
    }
  }
  return (addr) => {
    const ip = v4Text(addr);
    if (cdb.has(ip)) return cdb.get(ip)!;
    const parts = ip.split('.');
    for (let n = 3; n >= 1; n--) {
      const k = `${parts.slice(0, n).join('.')}.`;
      if (cdb.has(k)) return cdb.get(k)!;
    }
    return DEFAULT;
  };
}

/** The decision with static keys as rules (they win ties; deny-like ones yield to protection). */
function oracle(rules: PolicyRule[], statics: StaticKey[], prot: Net[]): (addr: number) => number {
  return (addr) => {
    const d = decide(net(addr, 32), rules, prot);
    let prefix = d.rule ? d.rule.net.prefix : -1;
    let cls = d.rule ? CLS[d.rule.action] : DEFAULT;
    let isStatic = false;
    for (const s of statics) {
      if (d.protected && DENY_LIKE.has(s.cls)) continue;
      if (addr < s.first || addr >= s.first + 2 ** (32 - s.gran)) continue;
      // Longer key wins; at equal length a static line beats a rule, and the first static line counts.
      if (s.gran > prefix || (s.gran === prefix && !isStatic)) {
        prefix = s.gran;
        cls = s.cls;
        isStatic = true;
      }
    }
    return cls;
  };
}

function probes(rules: PolicyRule[], statics: StaticKey[], prot: Net[], extra: number[]): number[] {
  const out = new Set<number>(extra);
  const edge = (a: number, b: number) => {
    for (const x of [a - 1, a, a + 1, b - 1, b, b + 1]) if (x >= 0 && x <= 0xffffffff) out.add(x);
  };
  for (const r of rules) edge(Number(netFirst(r.net)), Number(netLast(r.net)));
  for (const s of statics) edge(s.first, s.first + 2 ** (32 - s.gran) - 1);
  for (const p of prot) edge(Number(netFirst(p)), Number(netLast(p)));
  return [...out];
}

// Rules packed into a few small regions so they nest and overlap often.
const BASES = [v4Number('10.0.0.0'), v4Number('10.64.0.0'), v4Number('192.168.0.0'), v4Number('203.0.113.0')];
const addrArb = fc
  .tuple(fc.constantFrom(...BASES), fc.integer({ min: 0, max: 2 ** 17 - 1 }))
  .map(([b, o]) => b + o);
const ruleArb = fc.tuple(addrArb, fc.integer({ min: 8, max: 32 }), fc.constantFrom<Action>('relay', 'trust', 'deny')).map(([a, p, action]) => {
  const mask = p === 0 ? 0 : (0xffffffff << (32 - p)) >>> 0;
  return { net: net((a & mask) >>> 0, p), action } as PolicyRule;
});
const staticArb = fc.tuple(addrArb, fc.constantFrom<Gran>(8, 16, 24, 32), fc.boolean()).map(([a, g, deny]) => {
  const mask = (0xffffffff << (32 - g)) >>> 0;
  return { first: (a & mask) >>> 0, gran: g, cls: deny ? STATIC_DENY : STATIC_ALLOW } as StaticKey;
});
const protArb = fc.tuple(addrArb, fc.integer({ min: 20, max: 32 })).map(([a, p]) => net((a & ((0xffffffff << (32 - p)) >>> 0)) >>> 0, p));

describe('planKeys', () => {
  it('writes a relay /32 inside a denied /24 as two keys', () => {
    const rules: PolicyRule[] = [
      { net: net(v4Number('203.0.113.0'), 24), action: 'deny' },
      { net: net(v4Number('203.0.113.5'), 32), action: 'relay' },
    ];
    const plan = planKeys(input(rules));
    const lines = Array.from(plan.lines.first, (f, i) => `${keyText(f, plan.lines.gran[i], plan.lines.count[i])}=${plan.lines.cls[i]}`);
    expect(lines).toEqual(['203.0.113.=3', '203.0.113.5=1']);
  });

  it('expands a /12 into one range line of 16 keys and a /29 into exact keys', () => {
    const plan = planKeys(
      input([
        { net: net(v4Number('10.16.0.0'), 12), action: 'deny' },
        { net: net(v4Number('192.0.2.8'), 29), action: 'trust' },
      ]),
    );
    const lines = Array.from(plan.lines.first, (f, i) => keyText(f, plan.lines.gran[i], plan.lines.count[i]));
    expect(lines).toEqual(['10.16-31.', '192.0.2.8-15']);
    expect(plan.keysByClass.get(CLS.deny)).toBe(16);
    expect(plan.keysByClass.get(CLS.trust)).toBe(8);
  });

  it('takes the value most children want as the parent key (a /8 deny with holes)', () => {
    const rules: PolicyRule[] = [{ net: net(v4Number('10.0.0.0'), 8), action: 'deny' }];
    for (let i = 0; i < 5; i++) rules.push({ net: net(v4Number(`10.${i}.0.0`), 16), action: 'trust' });
    const plan = planKeys(input(rules));
    const lines = Array.from(plan.lines.first, (f, i) => `${keyText(f, plan.lines.gran[i], plan.lines.count[i])}=${plan.lines.cls[i]}`);
    expect(lines).toEqual(['10.=3', '10.0-4.=2']);
  });

  it('never denies a protected address inside a deny rule', () => {
    const prot = [net(v4Number('10.1.2.3'), 32), net(v4Number('10.9.0.0'), 24)];
    const rules: PolicyRule[] = [
      { net: net(v4Number('10.0.0.0'), 8), action: 'deny' },
      { net: net(v4Number('10.9.0.0'), 16), action: 'trust' },
      { net: net(v4Number('10.9.0.0'), 25), action: 'deny' },
    ];
    const plan = planKeys(input(rules, [], prot));
    const look = simulate(plan, []);
    expect(look(v4Number('10.1.2.3'))).toBe(DEFAULT);
    expect(look(v4Number('10.1.2.4'))).toBe(CLS.deny);
    expect(look(v4Number('10.9.0.1'))).toBe(CLS.trust); // protected: the deny /25 yields to the trust /16
    expect(look(v4Number('10.9.1.1'))).toBe(CLS.trust);
  });

  it('reports an exact static deny of a protected address (nothing can override it)', () => {
    const statics: StaticKey[] = [{ first: v4Number('127.0.0.1'), gran: 32, cls: STATIC_DENY }];
    const plan = planKeys(input([], statics, [net(v4Number('127.0.0.0'), 8)]));
    expect(plan.conflicts).toEqual([{ first: v4Number('127.0.0.1'), cls: STATIC_DENY }]);
  });

  it('overrides a static prefix deny for protected addresses with finer keys', () => {
    const statics: StaticKey[] = [{ first: v4Number('127.0.0.0'), gran: 8, cls: STATIC_DENY }];
    const plan = planKeys(input([], statics, [net(v4Number('127.0.0.0'), 8)]));
    expect(plan.conflicts).toEqual([]);
    expect(simulate(plan, statics)(v4Number('127.0.0.1'))).toBe(DEFAULT);
  });

  it('gives no key to what the default already answers', () => {
    const plan = planKeys(input([]));
    expect(plan.lines.length).toBe(0);
    expect(plan.segments.length).toBe(1);
    expect(plan.segments.cls[0]).toBe(DEFAULT);
  });

  it('sort keys round-trip', () => {
    const k = ruleSortKey(0xffffffff, 32, 2);
    expect(decodeSortKey(k)).toEqual({ addr: 0xffffffff, prefix: 32, order: 32767 });
    expect(Number.isSafeInteger(k)).toBe(true);
  });

  it('segments equal partition() without static keys', () => {
    fc.assert(
      fc.property(fc.array(ruleArb, { maxLength: 40 }), fc.array(protArb, { maxLength: 3 }), (rules, prot) => {
        const plan = planKeys(input(rules, [], prot));
        const spans = partition(rules, prot);
        for (const a of probes(rules, [], prot, [])) {
          const want = lookupSpan(spans, 4, BigInt(a));
          expect(segmentClass(plan.segments, a)).toBe(want === 'default' ? DEFAULT : CLS[want]);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('the most specific key always gives the decision (random nested policies, static keys, protected)', () => {
    fc.assert(
      fc.property(
        fc.array(ruleArb, { maxLength: 60 }),
        fc.array(staticArb, { maxLength: 4 }),
        fc.array(protArb, { maxLength: 3 }),
        fc.array(addrArb, { maxLength: 50 }),
        (rules, statics, prot, extra) => {
          const plan = planKeys(input(rules, statics, prot));
          const look = simulate(plan, statics);
          const want = oracle(rules, statics, prot);
          const conflicts = new Set(plan.conflicts.map((c) => c.first));
          for (const a of probes(rules, statics, prot, extra)) {
            if (conflicts.has(a)) continue;
            const got = look(a);
            if (got !== want(a)) {
              throw new Error(`${v4Text(a)}: keys say ${got}, decision ${want(a)}`);
            }
            expect(segmentClass(plan.segments, a)).toBe(want(a));
          }
        },
      ),
      { numRuns: 400 },
    );
  });

  it('plans a million scattered /32 denies quickly', () => {
    const n = 1_000_000;
    const keys = new Float64Array(n);
    let x = 12345;
    for (let i = 0; i < n; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      keys[i] = ruleSortKey(x, 32, 2);
    }
    const t0 = Date.now();
    const plan = planKeys({ ...input([]), rules: keys, ruleCount: n });
    const ms = Date.now() - t0;
    expect(plan.keysByClass.get(CLS.deny)).toBeGreaterThan(990_000);
    expect(ms).toBeLessThan(15_000);
  });
});
