import { describe, expect, it } from 'vitest';
import { type Net, mustParseNet, netContains } from '../../lib/net/address.js';
import { type PolicyRule, decide } from '../../lib/policy/decide.js';
import { netOf, probes, randomAddr, randomPolicy6, rng } from '../helpers/ipv6-policy.js';
import { MAX_KEYS_PER_NETWORK, lookupKeys, planKeys6, tcpserverText6 } from '../../lib/net/tcprules-keys6.js';

const addr = (text: string) => mustParseNet(text).addr;

describe("the IPv6 tcpserver's TCPREMOTEIP", () => {
  it('is the text its tcpserver printed for these addresses (test/integration/ipv6-rules.test.ts asks it again)', () => {
    const seen: [string, string][] = [
      ['2001:db8::5', '2001:db8::5'],
      ['2001:db8:0:0:1::5', '2001:db8::1:0:0:5'],
      ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2:3:4:5:6'],
      ['2001:db8:a::', '2001:db8:a::'],
      ['2001:db8:0:ab:0:0:1:0', '2001:db8:0:ab::1:0'],
      ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
      ['2001:db8:0:1:1:1:1:1', '2001:db8::1:1:1:1:1'],
      ['2001:0:0:1:0:0:1:1', '2001::1:0:0:1:1'],
      ['0:0:1:0:0:1:0:0', '::1:0:0:1:0:0'],
      ['1:0:1:0:1:0:1:0', '1::1:0:1:0:1:0'],
      ['1:2:3:4:5:6:7:0', '1:2:3:4:5:6:7::'],
      ['::1.2.3.4', '::102:304'],
      ['::1', '::1'],
    ];
    expect(tcpserverText6((0xffffn << 32n) | 0x0a010203n)).toBe('10.1.2.3'); // ::ffff:10.1.2.3
    for (const [a, text] of seen) expect(tcpserverText6(addr(a)), a).toBe(text);
  });
});

describe('IPv6 keys', () => {
  const cls = { relay: 0, trust: 1, deny: 2 } as const;
  const DEFAULT = 3;
  const input = (rules: PolicyRule[], prot: Net[] = []) => ({ rules, actionClass: [0, 1, 2] as const, defaultClass: DEFAULT, protectedNets: prot });
  const answer = (keys: Map<string, number>, a: bigint) => lookupKeys(keys, tcpserverText6(a), DEFAULT);
  const want = (rules: PolicyRule[], a: bigint, prot: Net[] = []) => {
    const d = decide({ family: 6, addr: a, prefix: 128 }, rules, prot).decision;
    return d === 'default' ? DEFAULT : cls[d];
  };

  it('a network whose fixed groups are not zero (but maybe the last) is exact, nested ones too', () => {
    const rules: PolicyRule[] = [
      { net: mustParseNet('2001:db8::/32'), action: 'deny' },
      { net: mustParseNet('2001:db8:ab::/48'), action: 'relay' },
      { net: mustParseNet('2001:db8:ab:1::/64'), action: 'deny' },
      { net: mustParseNet('2001:db8:ab:1::7/128'), action: 'trust' },
      { net: mustParseNet('2001:db8:abcd::/56'), action: 'trust' },
      { net: mustParseNet('2001:db8::/48'), action: 'relay' },
    ];
    const p = planKeys6(input(rules));
    expect(p.unwritten).toEqual([]);
    expect(p.keys.get('2001:db8:')).toBe(cls.deny);
    expect(p.keys.get('2001:db8:0:')).toBe(cls.relay);
    expect(p.keys.get('2001:db8::')).toBe(cls.relay);
    expect(p.keys.get('2001:db8:abcd:ff:')).toBe(cls.trust); // a /56: 256 keys of its 64-bit blocks
    expect(p.keys.get('2001:db8:abcd::')).toBe(cls.trust); // its block 2001:db8:abcd:0::/64 written both ways
    expect(p.keys.size).toBe(1 + 2 + 1 + 1 + 1 + 257);
    const r = rng(1);
    for (const a of probes(r, rules, 3000)) expect(answer(p.keys, a), tcpserverText6(a)).toBe(want(rules, a));
  });

  it('a network tcp.smtp cannot express is left out, and so is any around it with another outcome: the default answers, never another outcome', () => {
    const rules: PolicyRule[] = [
      { net: mustParseNet('2001:db8::/32'), action: 'relay' },
      { net: mustParseNet('2001:db8:0:1::/64'), action: 'deny' }, // zero group 3: 2001:db8::1:… is ambiguous
      { net: mustParseNet('2001:db9::/32'), action: 'deny' },
      { net: mustParseNet('2001:db9:0:1::/64'), action: 'deny' }, // same outcome as around it: answered by 2001:db9:
    ];
    const p = planKeys6(input(rules));
    expect(p.unwritten.map((u) => [u.net.prefix, u.why])).toEqual([
      [32, expect.stringContaining('it holds 2001:db8:0:1::/64')],
      [64, expect.stringContaining('group 3 is zero')],
    ]);
    expect(p.keys.has('2001:db8:')).toBe(false); // no relay for 2001:db8:0:1::/64's addresses
    expect(p.keys.get('2001:db9:')).toBe(cls.deny);
    for (const a of probes(rng(2), rules, 3000)) expect([want(rules, a), DEFAULT]).toContain(answer(p.keys, a));
  });

  it('protected addresses inside a deny rule get what the other rules give them', () => {
    const rules: PolicyRule[] = [
      { net: mustParseNet('fd00::/16'), action: 'deny' },
      { net: mustParseNet('fd00:1::/32'), action: 'trust' },
      { net: mustParseNet('fd00:1::2/128'), action: 'deny' },
    ];
    const prot = [mustParseNet('fd00::2/128'), mustParseNet('fd00:1::2/128'), mustParseNet('::1/128')];
    const p = planKeys6(input(rules, prot));
    expect(p.keys.get('fd00::2')).toBe(DEFAULT);
    expect(p.keys.get('fd00:1::2')).toBe(cls.trust); // the deny does not count: trust, as from fd00:1:
    for (const a of [addr('fd00::2'), addr('fd00:1::2'), addr('fd00::3'), addr('fd00:1::3')]) expect(answer(p.keys, a)).toBe(want(rules, a, prot));
  });

  it('single addresses are exact, except where their text ends with a :: that prefixes others', () => {
    const rules: PolicyRule[] = [
      { net: mustParseNet('2001:db8::/128'), action: 'relay' },
      { net: mustParseNet('2001:db8::5/128'), action: 'deny' },
      { net: mustParseNet('2001:db8:1:2:3:4:5:0/128'), action: 'trust' },
      { net: mustParseNet('2001:db8:1:2:3:4:5:0/124'), action: 'deny' },
    ];
    const p = planKeys6(input(rules));
    expect(p.keys.has('2001:db8::')).toBe(false);
    expect(p.unwritten.map((u) => tcpserverText6(u.net.addr))).toEqual(['2001:db8::']);
    expect(p.keys.get('2001:db8::5')).toBe(cls.deny);
    expect(p.keys.get('2001:db8:1:2:3:4:5::')).toBe(cls.trust);
    expect(p.keys.get('2001:db8:1:2:3:4:5:f')).toBe(cls.deny);
    expect([...p.keys.keys()].filter((k) => k.startsWith('2001:db8:1:2:3:4:5:'))).toHaveLength(16);
  });

  it('ranges far from a group boundary and IPv4-mapped ones are left out, with why', () => {
    const p = planKeys6(input([{ net: mustParseNet('2001:db8:8000::/33'), action: 'deny' }, { net: { family: 6, addr: 0xffffn << 32n, prefix: 104 }, action: 'deny' }]));
    expect(p.unwritten.map((u) => u.why)).toEqual([expect.stringContaining('IPv4-mapped'), expect.stringContaining(`${2 ** 15} keys`)]);
    expect(2 ** 15).toBeGreaterThan(MAX_KEYS_PER_NETWORK);
  });

  it('random nested policies: every address gets its decision, or the default where a network was left out', () => {
    let exact = 0;
    let left = 0;
    for (let seed = 10; seed < 40; seed++) {
      const r = rng(seed);
      const rules = randomPolicy6(r, r.int(5, 40));
      const prot = [netOf(randomAddr(r), 128)];
      const p = planKeys6(input(rules, prot));
      for (const a of probes(r, rules, 500)) {
        const got = answer(p.keys, a);
        const d = want(rules, a, prot);
        if (got === d) {
          exact++;
          continue;
        }
        left++;
        expect(got, `seed ${seed} ${tcpserverText6(a)}`).toBe(DEFAULT);
        // ... and only inside a network reported as left out
        expect(p.unwritten.some((u) => netContains(u.net, { family: 6, addr: a, prefix: 128 })), `seed ${seed} ${tcpserverText6(a)}`).toBe(true);
      }
    }
    // the policies are made to hit both cases
    expect(exact).toBeGreaterThan(left / 2);
    expect(left).toBeGreaterThan(0);
  });
});
