// The firewall's pure half: which addresses go in the set, the safety assertion, the nft and
// ipset/iptables texts, and the readers of nft/ipset/iptables output used to decide whether
// anything must be written. Inline fixtures; the kernel itself is exercised in
// test/integration/firewall-netns.test.ts.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PermanentError } from '../../lib/errors.js';
import { type Net, formatNetShort, netContains, parseNet } from '../../lib/net/address.js';
import { type Action, type PolicyRule, decide } from '../../lib/policy/decide.js';
import { assertSafeSet, denySet } from '../../lib/firewall/deny-set.js';
import { checkNftRuleset, countNftElements, renderNftRemove, renderNftScript } from '../../lib/firewall/nft-script.js';
import {
  checkIpsets,
  checkIptablesSave,
  iptablesChainRules,
  ipsetSizing,
  parseIpsetHeaders,
  renderIptablesRestore,
  renderIpsetRestore,
} from '../../lib/firewall/ipset-script.js';

const net = (s: string): Net => {
  const r = parseNet(s);
  if (!r.ok) throw new Error(r.error);
  return r.net;
};
const rule = (cidr: string, action: Action): PolicyRule => ({ net: net(cidr), action });
const texts = (nets: Net[]) => nets.map(formatNetShort);
const LOOPBACK = [net('127.0.0.0/8'), net('::1')];
const DROP = { ports: [25, 110], action: 'drop' as const };

describe('denySet', () => {
  it('keeps an allowed address inside a denied /24 out, with the fewest CIDRs', () => {
    const s = denySet([rule('203.0.113.0/24', 'deny'), rule('203.0.113.7', 'relay')], LOOPBACK);
    expect(texts(s.v4)).toEqual([
      '203.0.113.0/30',
      '203.0.113.4/31',
      '203.0.113.6',
      '203.0.113.8/29',
      '203.0.113.16/28',
      '203.0.113.32/27',
      '203.0.113.64/26',
      '203.0.113.128/25',
    ]);
    expect(s.v6).toEqual([]);
  });

  it('aggregates adjacent denials and leaves out protected addresses', () => {
    const s = denySet(
      [rule('198.51.100.0/25', 'deny'), rule('198.51.100.128/25', 'deny'), rule('2001:db8::/32', 'deny'), rule('192.0.2.1', 'deny')],
      [...LOOPBACK, net('192.0.2.1'), net('2001:db8::25')],
    );
    expect(texts(s.v4)).toEqual(['198.51.100.0/24']);
    expect(s.v6).toHaveLength(96); // a /32 minus one address: one CIDR per bit below the prefix
    expect(s.v6.some((n) => netContains(n, net('2001:db8::25')))).toBe(false);
    expect(s.v6.some((n) => netContains(n, net('2001:db8::24')))).toBe(true);
  });

  it('holds exactly the addresses whose decision is deny (property, against decide())', () => {
    const v4Net = fc
      .tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 20, max: 32 }))
      .map(([c, d, p]) => {
        const addr = (10n << 24n) | (BigInt(c) << 8n) | BigInt(d);
        const mask = ((1n << 32n) - 1n) ^ ((1n << BigInt(32 - p)) - 1n);
        return { family: 4 as const, addr: addr & mask, prefix: p };
      });
    const ruleArb = fc.record({ net: v4Net, action: fc.constantFrom<Action>('relay', 'trust', 'deny') });
    fc.assert(
      fc.property(fc.array(ruleArb, { maxLength: 25 }), fc.array(fc.integer({ min: 0, max: 65535 }), { minLength: 40, maxLength: 40 }), (rules, probes) => {
        const prot = [net('10.0.0.1'), net('10.0.128.0/30')];
        const s = denySet(rules, prot);
        assertSafeSet(s, prot);
        for (let i = 1; i < s.v4.length; i++) expect(s.v4[i - 1].addr < s.v4[i].addr).toBe(true);
        for (const p of [...probes, 1, 0x8000, 0x8001]) {
          const ip: Net = { family: 4, addr: (10n << 24n) | BigInt(p), prefix: 32 };
          const inSet = s.v4.some((n) => netContains(n, ip));
          expect(inSet).toBe(decide(ip, rules, prot).decision === 'deny');
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('assertSafeSet', () => {
  const refuses = (v4: string[], v6: string[], prot: Net[] = LOOPBACK) => {
    try {
      assertSafeSet({ v4: v4.map(net), v6: v6.map(net) }, prot);
    } catch (err) {
      expect(err).toBeInstanceOf(PermanentError);
      expect((err as PermanentError).exitCode).toBe(100);
      return (err as Error).message;
    }
    throw new Error('accepted');
  };

  it('refuses everything, a protected address, or a network around one', () => {
    expect(refuses(['0.0.0.0/0'], [])).toMatch(/0\.0\.0\.0\/0.*bug/);
    expect(refuses([], ['::/0'])).toMatch(/::\/0/);
    expect(refuses(['127.0.0.5'], [])).toMatch(/127\.0\.0\.5.*protected/);
    expect(refuses(['192.0.2.0/24'], [], [...LOOPBACK, net('192.0.2.77')])).toMatch(/192\.0\.2\.0\/24/);
    expect(refuses([], ['2001:db8::/48'], [...LOOPBACK, net('2001:db8::25')])).toMatch(/2001:db8::\/48/);
    expect(refuses([], ['::1'])).toMatch(/::1/);
  });

  it('accepts a set that only touches the neighbours of protected addresses', () => {
    expect(() =>
      assertSafeSet({ v4: [net('126.255.255.255'), net('128.0.0.0/2'), net('192.0.2.76'), net('192.0.2.78/31')], v6: [net('::2/127')] }, [...LOOPBACK, net('192.0.2.77')]),
    ).not.toThrow();
  });

  it('is enforced by both renderers', () => {
    const bad = { v4: [net('127.0.0.0/24')], v6: [] };
    expect(() => renderNftScript(bad, DROP, LOOPBACK)).toThrow(PermanentError);
    expect(() => renderIpsetRestore(bad, LOOPBACK, new Set())).toThrow(PermanentError);
    expect(() => renderNftScript({ v4: [], v6: [net('::/0')] }, DROP, [])).toThrow(/every address/);
  });
});

describe('renderNftScript', () => {
  const set = { v4: [net('192.0.2.7'), net('198.51.100.0/24')], v6: [net('2001:db8:bad::/48')] };

  it('declares, flushes and refills table inet qguard, and names no other table', () => {
    const script = renderNftScript(set, DROP, LOOPBACK);
    expect(script).toBe(
      [
        'table inet qguard {',
        '\tset deny_v4 { type ipv4_addr; flags interval; }',
        '\tset deny_v6 { type ipv6_addr; flags interval; }',
        '\tchain input { type filter hook input priority -10; policy accept; }',
        '}',
        'flush chain inet qguard input',
        'flush set inet qguard deny_v4',
        'flush set inet qguard deny_v6',
        'add rule inet qguard input tcp dport { 25, 110 } ip saddr @deny_v4 drop',
        'add rule inet qguard input tcp dport { 25, 110 } ip6 saddr @deny_v6 drop',
        'add element inet qguard deny_v4 { 192.0.2.7, 198.51.100.0/24 }',
        'add element inet qguard deny_v6 { 2001:db8:bad::/48 }',
        '',
      ].join('\n'),
    );
    for (const line of script.split('\n')) {
      if (/\b(table|chain|set|rule|element)\b/.test(line) && !line.startsWith('\t') && line !== '}') {
        expect(line).toMatch(/^(table|flush \w+|add \w+) inet qguard\b/);
      }
    }
  });

  it('fresh (no table a moment ago): creates the table, refused whole if it exists, and flushes nothing', () => {
    const script = renderNftScript(set, DROP, LOOPBACK, { fresh: true });
    const lines = script.split('\n');
    expect(lines[0]).toBe('create table inet qguard');
    expect(script).not.toContain('flush');
    // Otherwise the same script: the same declarations, rules and elements.
    const usual = renderNftScript(set, DROP, LOOPBACK).split('\n').filter((l) => !l.startsWith('flush'));
    expect(lines.slice(1)).toEqual(usual);
  });

  it('sends a TCP reset with QGUARD_FIREWALL_ACTION=reject', () => {
    const script = renderNftScript(set, { ports: [587], action: 'reject' }, LOOPBACK);
    expect(script).toContain('add rule inet qguard input tcp dport { 587 } ip saddr @deny_v4 reject with tcp reset');
    expect(script).not.toMatch(/\bdrop\b/);
  });

  it('chunks big element lists and keeps every element once', () => {
    const many: Net[] = [];
    for (let i = 0; i < 4500; i++) many.push({ family: 4, addr: (11n << 24n) + BigInt(i * 2), prefix: 32 });
    const script = renderNftScript({ v4: many, v6: [] }, DROP, LOOPBACK, { chunk: 2000 });
    const adds = script.split('\n').filter((l) => l.startsWith('add element'));
    expect(adds).toHaveLength(3);
    const elements = adds.flatMap((l) => l.replace(/^.*\{ (.*) \}$/, '$1').split(', '));
    expect(elements).toEqual(many.map(formatNetShort));
  });

  it('with an empty set still makes the table, chain and rules (flushing the old set)', () => {
    const script = renderNftScript({ v4: [], v6: [] }, DROP, LOOPBACK);
    expect(script).toContain('flush set inet qguard deny_v4');
    expect(script).not.toContain('add element');
  });

  it('removes only our table, whether or not it exists', () => {
    expect(renderNftRemove()).toBe('table inet qguard\ndelete table inet qguard\n');
  });
});

// What `nft -t -j list ruleset inet` printed (nftables 1.0.6) after renderNftScript, plus a
// table of someone else's.
const nftJson = (rules: string, extra = '') =>
  `{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, ${extra}{"table": {"family": "inet", "name": "qguard", "handle": 25}}, {"set": {"family": "inet", "name": "deny_v4", "table": "qguard", "type": "ipv4_addr", "handle": 2, "flags": ["interval"]}}, {"set": {"family": "inet", "name": "deny_v6", "table": "qguard", "type": "ipv6_addr", "handle": 3, "flags": ["interval"]}}, {"chain": {"family": "inet", "table": "qguard", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": -10, "policy": "accept"}}${rules}]}`;
const nftRule = (proto: 'ip' | 'ip6', right: string, verdict: string) =>
  `, {"rule": {"family": "inet", "table": "qguard", "chain": "input", "handle": 4, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": ${right}}}, {"match": {"op": "==", "left": {"payload": {"protocol": "${proto}", "field": "saddr"}}, "right": "@deny_${proto === 'ip' ? 'v4' : 'v6'}"}}, ${verdict}]}}`;
const OTHER = '{"table": {"family": "inet", "name": "filter", "handle": 1}}, {"chain": {"family": "inet", "table": "filter", "name": "input", "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}}, ';

describe('checkNftRuleset', () => {
  const both = (right: string, verdict: string) => nftRule('ip', right, verdict) + nftRule('ip6', right, verdict);

  it('finds our table intact, ignoring other tables', () => {
    const json = nftJson(both('{"set": [25, 110]}', '{"drop": null}'), OTHER);
    expect(checkNftRuleset(json, DROP)).toEqual({ present: true, intact: true, problem: null });
    expect(checkNftRuleset(nftJson(both('25', '{"reject": {"type": "tcp reset"}}')), { ports: [25], action: 'reject' }).intact).toBe(true);
  });

  it('notices a missing table, a missing rule, other ports or another verdict', () => {
    expect(checkNftRuleset(`{"nftables": [{"metainfo": {}}, ${OTHER.slice(0, -2)}]}`, DROP)).toMatchObject({ present: false, intact: false, problem: 'table inet qguard is missing' });
    expect(checkNftRuleset(nftJson(nftRule('ip', '{"set": [25, 110]}', '{"drop": null}')), DROP)).toMatchObject({ present: true, intact: false });
    expect(checkNftRuleset(nftJson(both('{"set": [25, 110]}', '{"drop": null}')), { ports: [25, 110, 587], action: 'drop' }).intact).toBe(false);
    expect(checkNftRuleset(nftJson(both('{"set": [25, 110]}', '{"drop": null}')), { ports: [25, 110], action: 'reject' }).intact).toBe(false);
    expect(checkNftRuleset(nftJson(both('{"set": [25, 110]}', '{"accept": null}')), DROP).intact).toBe(false);
    expect(checkNftRuleset('not json', DROP)).toMatchObject({ intact: false, problem: 'unreadable nft JSON output' });
  });

  it('reads ports given as a range', () => {
    expect(checkNftRuleset(nftJson(both('{"set": [{"range": [25, 26]}, 110]}', '{"drop": null}')), { ports: [110, 26, 25], action: 'drop' }).intact).toBe(true);
  });

  it('counts the elements of a listed set', () => {
    const listed =
      '{"nftables": [{"metainfo": {}}, {"set": {"family": "inet", "name": "deny_v4", "table": "qguard", "type": "ipv4_addr", "flags": ["interval"], "elem": [{"prefix": {"addr": "1.2.3.0", "len": 24}}, "5.6.7.8"]}}]}';
    expect(countNftElements(listed)).toBe(2);
    expect(countNftElements(listed.replace(/, "elem": \[.*\]\}\}/, '}}'))).toBe(0);
  });
});

describe('ipset and iptables texts', () => {
  const set = { v4: [net('192.0.2.7'), net('198.51.100.0/24')], v6: [net('2001:db8:bad::/48')] };

  it('fills a temporary set, swaps it in and destroys the old content', () => {
    const text = renderIpsetRestore(set, LOOPBACK, new Set(['qguard4', 'qguard6']));
    expect(text).toBe(
      [
        'create qguard4-tmp hash:net family inet hashsize 1024 maxelem 65536',
        'add qguard4-tmp 192.0.2.7',
        'add qguard4-tmp 198.51.100.0/24',
        'swap qguard4-tmp qguard4',
        'destroy qguard4-tmp',
        'create qguard6-tmp hash:net family inet6 hashsize 1024 maxelem 65536',
        'add qguard6-tmp 2001:db8:bad::/48',
        'swap qguard6-tmp qguard6',
        'destroy qguard6-tmp',
        '',
      ].join('\n'),
    );
  });

  it('renames when there is no live set yet, and clears a stale temporary set first', () => {
    const text = renderIpsetRestore(set, LOOPBACK, new Set(['qguard4-tmp', 'someone-else']));
    const lines = text.split('\n');
    expect(lines[0]).toBe('destroy qguard4-tmp');
    expect(lines).toContain('rename qguard4-tmp qguard4');
    expect(lines).toContain('rename qguard6-tmp qguard6');
    expect(text).not.toContain('swap');
    expect(text).not.toContain('someone-else');
    // Nothing names a live set before its swap/rename.
    for (const l of lines) if (!/^(swap|rename) /.test(l)) expect(l).not.toMatch(/qguard[46](?!-tmp)/);
  });

  it('sizes sets to their entry count', () => {
    expect(ipsetSizing(0)).toEqual({ hashsize: 1024, maxelem: 65536 });
    const big = ipsetSizing(100_000);
    expect(big.maxelem).toBeGreaterThanOrEqual(100_000);
    expect(big.hashsize).toBe(32768);
    expect(ipsetSizing(3_000_000).maxelem).toBeGreaterThanOrEqual(3_000_000);
  });

  it('renders the QGUARD chain with multiport, at most 15 ports a rule', () => {
    expect(renderIptablesRestore(4, DROP)).toBe(
      '*filter\n:QGUARD - [0:0]\n-A QGUARD -p tcp -m multiport --dports 25,110 -m set --match-set qguard4 src -j DROP\nCOMMIT\n',
    );
    expect(iptablesChainRules(6, { ports: [25], action: 'reject' })).toEqual([
      '-A QGUARD -p tcp -m multiport --dports 25 -m set --match-set qguard6 src -j REJECT --reject-with tcp-reset',
    ]);
    const ports = Array.from({ length: 20 }, (_, i) => 1000 + i);
    const rules = iptablesChainRules(4, { ports, action: 'drop' });
    expect(rules).toHaveLength(2);
    expect(rules[0]).toContain(`--dports ${ports.slice(0, 15).join(',')} `);
    expect(rules[1]).toContain(`--dports ${ports.slice(15).join(',')} `);
  });

  // `ipset list -t` (ipset 7.17)
  const IPSET_T = `Name: qguard4
Type: hash:net
Revision: 7
Header: family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xe5c35cb4
Size in memory: 552
References: 1
Number of entries: 2

Name: qguard6
Type: hash:net
Revision: 7
Header: family inet6 hashsize 1024 maxelem 65536 bucketsize 12 initval 0x2b58bdfd
Size in memory: 1240
References: 1
Number of entries: 1
`;

  it('reads ipset headers and compares entry counts with the last apply', () => {
    const h = parseIpsetHeaders(IPSET_T);
    expect(h.get('qguard4')).toEqual({ name: 'qguard4', type: 'hash:net', family: 'inet', maxelem: 65536, entries: 2 });
    expect(checkIpsets(h, { v4: 2, v6: 1 })).toEqual({ present: true, intact: true, problem: null });
    expect(checkIpsets(h, { v4: 3, v6: 1 })).toMatchObject({ intact: false, problem: 'ipset qguard4 holds 2 entries, the last apply put 3' });
    expect(checkIpsets(h, null).intact).toBe(true);
    expect(checkIpsets(new Map(), null)).toMatchObject({ present: false, problem: 'ipset qguard4 is missing' });
    const wrong = parseIpsetHeaders(IPSET_T.replace('Type: hash:net', 'Type: hash:ip'));
    expect(checkIpsets(wrong, null).problem).toMatch(/not a hash:net/);
  });

  // `iptables-save -t filter` (iptables 1.8.9, nf_tables)
  const SAVE = (rules: string) => `# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:QGUARD - [0:0]
${rules}COMMIT
# Completed
`;
  const OURS = '-A QGUARD -p tcp -m multiport --dports 25,110 -m set --match-set qguard4 src -j DROP\n';

  it('reads our chain and counts the jumps in iptables-save output', () => {
    expect(checkIptablesSave(SAVE(`-A INPUT -s 10.0.0.0/8 -j ACCEPT\n-A INPUT -j QGUARD\n${OURS}`), 4, DROP)).toEqual({ chain: true, jumps: 1, intact: true, problem: null });
    expect(checkIptablesSave(SAVE(OURS), 4, DROP)).toMatchObject({ jumps: 0, intact: false, problem: 'iptables INPUT has 0 jumps to QGUARD, not one' });
    expect(checkIptablesSave(SAVE(`-A INPUT -j QGUARD\n-A INPUT -j QGUARD\n${OURS}`), 4, DROP)).toMatchObject({ jumps: 2, intact: false });
    expect(checkIptablesSave(SAVE('-A INPUT -j QGUARD\n'), 4, DROP).problem).toBe('iptables chain QGUARD holds other rules than expected');
    expect(checkIptablesSave(SAVE(`-A INPUT -j QGUARD\n${OURS}`), 4, { ports: [25], action: 'drop' }).intact).toBe(false);
    expect(checkIptablesSave('', 6, DROP)).toMatchObject({ chain: false, jumps: 0, problem: 'ip6tables chain QGUARD is missing' });
  });
});
