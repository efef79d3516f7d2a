// purge-queue's judgement: which messages a policy removes, and the guards that keep mail from
// relay/trust/protected addresses, local mail, mail without a known source and messages still
// being written — checked record by record, and against a brute-force model.

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  type PurgeRecord,
  type SourceVerdict,
  guardOf,
  selectPurge,
  senderMatcher,
} from '../../lib/policy/purge-select.js';
import { decide } from '../../lib/policy/decide.js';
import { mustParseNet } from '../../lib/net/address.js';

const NOW = new Date('2026-12-10T00:00:00Z');
const DAY = 86400_000;

let n = 1_000_000;
function rec(o: Partial<PurgeRecord> = {}): PurgeRecord {
  return {
    id: String(n++),
    state: 'preprocessed',
    kind: 'network',
    forwarded: false,
    sourceIp: '203.0.113.7',
    sender: 'spammer@winbig.test',
    arrival: new Date(NOW.getTime() - DAY),
    ...o,
  };
}

/** Verdicts from real rules through decide(), as purge-queue makes them. */
function verdicts(rules: { cidr: string; action: 'relay' | 'trust' | 'deny'; source?: string }[], protectedNets: string[] = ['127.0.0.0/8', '192.0.2.2/32']) {
  const rs = rules.map((r) => ({ net: mustParseNet(r.cidr), action: r.action, cidr: r.cidr, source: r.source ?? 'manual' }));
  const prot = protectedNets.map(mustParseNet);
  return (ip: string): SourceVerdict | undefined => {
    const d = decide(mustParseNet(ip), rs, prot);
    return { decision: d.decision, protected: d.protected, rule: d.rule ? { cidr: d.rule.cidr, source: d.rule.source } : null };
  };
}

const DEFAULT = { policies: ['denied', 'backscatter'] as const, now: NOW };

describe('the default policies (denied, backscatter)', () => {
  const v = verdicts([
    { cidr: '203.0.113.0/24', action: 'deny', source: 'list:spamhaus' },
    { cidr: '203.0.113.25/32', action: 'trust' },
    { cidr: '10.0.0.0/8', action: 'relay' },
    { cidr: '10.0.0.15/32', action: 'deny' },
    { cidr: '192.0.2.0/24', action: 'deny', source: 'scan' },
  ]);

  it('removes mail from denied addresses, forwarded copies of it, and bounces of it', () => {
    const spam = rec();
    const fwd = rec({ forwarded: true, sender: 'x@forged.example' });
    const bounce = rec({ kind: 'bounce', sender: '' });
    const dbl = rec({ kind: 'double-bounce', sender: '#@[]' });
    const s = selectPurge([spam, fwd, bounce, dbl], v, DEFAULT);
    expect(s.selected.map((c) => [c.record.id, c.basis])).toEqual([
      [spam.id, 'denied'],
      [fwd.id, 'denied'],
      [bounce.id, 'backscatter'],
      [dbl.id, 'backscatter'],
    ]);
    expect(s.selected[0].reason).toBe('from 203.0.113.7, denied by list:spamhaus rule 203.0.113.0/24');
    expect(s.selected[1].reason).toMatch(/^forwarded copy of mail from 203\.0\.113\.7/);
    expect(s.selected[2].reason).toBe('bounce of mail from 203.0.113.7, denied by list:spamhaus rule 203.0.113.0/24');
    expect(s.guarded).toEqual([]);
  });

  it('keeps mail whose source is not denied (default decision), trusted inside a denied /24, or relay', () => {
    const partner = rec({ sourceIp: '198.51.100.150' });
    const trusted = rec({ sourceIp: '203.0.113.25' });
    const intranet = rec({ sourceIp: '10.1.2.3' });
    const s = selectPurge([partner, trusted, intranet], v, DEFAULT);
    expect(s.selected).toEqual([]);
    // Only matched mail is reported as guarded: none of these matched a policy.
    expect(s.guarded).toEqual([]);
  });

  it('a longer deny inside a relay network wins (decide): that relay client is denied', () => {
    const s = selectPurge([rec({ sourceIp: '10.0.0.15' })], v, DEFAULT);
    expect(s.selected.map((c) => c.basis)).toEqual(['denied']);
  });

  it('never removes this machine (protected, even inside a denied network), local mail, or mail without a source', () => {
    const own = rec({ sourceIp: '192.0.2.2' });
    const local = rec({ kind: 'local', sourceIp: null });
    const unknown = rec({ kind: 'unknown', sourceIp: null });
    const bounceOfLocal = rec({ kind: 'bounce', sender: '', sourceIp: null });
    const s = selectPurge([own, local, unknown, bounceOfLocal], v, DEFAULT);
    expect(s.selected).toEqual([]);
  });

  it('only the policies asked for', () => {
    const spam = rec();
    const bounce = rec({ kind: 'bounce', sender: '' });
    expect(selectPurge([spam, bounce], v, { policies: ['denied'], now: NOW }).selected.map((c) => c.record.id)).toEqual([spam.id]);
    expect(selectPurge([spam, bounce], v, { policies: ['backscatter'], now: NOW }).selected.map((c) => c.record.id)).toEqual([bounce.id]);
    expect(selectPurge([spam, bounce], v, { policies: [], now: NOW }).selected).toEqual([]);
  });

  it('never a message qmail-queue is still writing, even from a denied address', () => {
    const s = selectPurge([rec({ state: 'in-flight-intd' }), rec({ state: 'in-flight-mess-only', sender: null })], v, DEFAULT);
    expect(s.selected).toEqual([]);
    expect(s.guarded.map((g) => g.why)).toEqual(['in-flight', 'in-flight']);
  });

  it('oldest arrival first (what a run capped by --max removes first)', () => {
    const a = rec({ arrival: new Date(NOW.getTime() - 1 * DAY) });
    const b = rec({ arrival: new Date(NOW.getTime() - 3 * DAY) });
    const c = rec({ arrival: new Date(NOW.getTime() - 2 * DAY) });
    expect(selectPurge([a, b, c], v, DEFAULT).selected.map((x) => x.record.id)).toEqual([b.id, c.id, a.id]);
  });
});

describe('stale (--older-than)', () => {
  const v = verdicts([{ cidr: '10.0.0.0/8', action: 'relay' }, { cidr: '198.51.100.150/32', action: 'trust' }]);
  const crit = { policies: ['stale'] as const, olderThanSeconds: 5 * 86400, now: NOW };

  it('null-sender messages and double bounces queued at least that long, whatever their source decision', () => {
    const oldBounce = rec({ kind: 'bounce', sender: '', sourceIp: '203.0.113.9', arrival: new Date(NOW.getTime() - 6 * DAY) });
    const oldDouble = rec({ kind: 'double-bounce', sender: '#@[]', sourceIp: '203.0.113.9', arrival: new Date(NOW.getTime() - 5 * DAY) });
    const oldNullSpam = rec({ sender: '', sourceIp: '198.51.100.3', arrival: new Date(NOW.getTime() - 9 * DAY) });
    const young = rec({ kind: 'bounce', sender: '', sourceIp: '203.0.113.9', arrival: new Date(NOW.getTime() - 4 * DAY) });
    const oldNormal = rec({ sender: 'someone@example.com', sourceIp: '203.0.113.9', arrival: new Date(NOW.getTime() - 30 * DAY) });
    const s = selectPurge([oldBounce, oldDouble, oldNullSpam, young, oldNormal], v, crit);
    expect(s.selected.map((c) => c.record.id)).toEqual([oldNullSpam.id, oldBounce.id, oldDouble.id]);
    expect(s.selected.map((c) => c.reason)).toEqual(['null-sender message queued 1w2d', 'null-sender message queued 6d', 'double bounce queued 5d']);
  });

  it('still keeps bounces of relay, trusted and local mail', () => {
    const old = new Date(NOW.getTime() - 20 * DAY);
    const s = selectPurge(
      [
        rec({ kind: 'bounce', sender: '', sourceIp: '10.0.0.15', arrival: old }),
        rec({ kind: 'bounce', sender: '', sourceIp: '198.51.100.150', arrival: old }),
        rec({ kind: 'bounce', sender: '', sourceIp: null, arrival: old }),
      ],
      v,
      crit,
    );
    expect(s.selected).toEqual([]);
    expect(s.guarded.map((g) => [g.basis, g.why])).toEqual([
      ['stale', 'relay'],
      ['stale', 'trust'],
      ['stale', 'no-source'],
    ]);
  });

  it('needs the age', () => {
    expect(() => selectPurge([], v, { policies: ['stale'], now: NOW })).toThrow(/olderThanSeconds/);
  });
});

describe('admin selections', () => {
  const v = verdicts([{ cidr: '10.0.0.0/8', action: 'relay' }]);

  it('--ip selects by network (IPv4 and IPv6), guards still apply', () => {
    const a = rec({ sourceIp: '198.51.100.14' });
    const b = rec({ sourceIp: '198.51.100.200' });
    const c = rec({ sourceIp: '198.51.101.1' });
    const d = rec({ sourceIp: '2001:db8::25' });
    const relay = rec({ sourceIp: '10.0.0.15' });
    const s = selectPurge([a, b, c, d, relay], v, { policies: [], admin: { net: mustParseNet('198.51.100.0/24') }, now: NOW });
    expect(s.selected.map((x) => x.record.id)).toEqual([a.id, b.id]);
    expect(s.selected[0]).toMatchObject({ basis: 'admin', reason: 'selected by --ip 198.51.100.0/24' });
    const s6 = selectPurge([a, d], v, { policies: [], admin: { net: mustParseNet('2001:db8::/32') }, now: NOW });
    expect(s6.selected.map((x) => x.record.id)).toEqual([d.id]);
    const sr = selectPurge([relay], v, { policies: [], admin: { net: mustParseNet('10.0.0.0/8') }, now: NOW });
    expect(sr.selected).toEqual([]);
    expect(sr.guarded[0]).toMatchObject({ basis: 'admin', why: 'relay' });
  });

  it('--sender with wildcards; every given filter must match', () => {
    const a = rec({ sender: 'pharma8746@winbig.test', sourceIp: '203.0.113.7' });
    const b = rec({ sender: 'PROMO@WinBig.Test', sourceIp: '198.51.100.3' });
    const c = rec({ sender: 'alice@example.net', sourceIp: '203.0.113.7' });
    const s = selectPurge([a, b, c], v, { policies: [], admin: { sender: '*@winbig.test' }, now: NOW });
    expect(s.selected.map((x) => x.record.id)).toEqual([a.id, b.id]);
    const both = selectPurge([a, b, c], v, { policies: [], admin: { sender: '*@winbig.test', net: mustParseNet('203.0.113.0/24') }, now: NOW });
    expect(both.selected.map((x) => x.record.id)).toEqual([a.id]);
  });

  it('--id overrides every guard but the in-flight one', () => {
    const local = rec({ kind: 'local', sourceIp: null, sender: 'root@mx.example.net' });
    const relay = rec({ sourceIp: '10.0.0.15' });
    const own = rec({ sourceIp: '127.0.0.1' });
    const flying = rec({ state: 'in-flight-intd' });
    const other = rec();
    const s = selectPurge([local, relay, own, flying, other], verdicts([{ cidr: '10.0.0.0/8', action: 'relay' }]), {
      policies: [],
      admin: { ids: [local.id, relay.id, own.id, flying.id] },
      now: NOW,
    });
    expect(s.selected.map((x) => [x.record.id, x.basis, x.reason])).toEqual([
      [local.id, 'id', 'selected by --id'],
      [relay.id, 'id', 'selected by --id'],
      [own.id, 'id', 'selected by --id'],
    ]);
    expect(s.guarded).toEqual([{ record: flying, basis: 'id', why: 'in-flight' }]);
  });

  it('an admin selection and the policies together: union', () => {
    const denied = rec({ sourceIp: '203.0.113.7' });
    const picked = rec({ sourceIp: '198.51.100.9' });
    const s = selectPurge([denied, picked], verdicts([{ cidr: '203.0.113.7/32', action: 'deny' }]), {
      ...DEFAULT,
      admin: { net: mustParseNet('198.51.100.0/24') },
    });
    expect(s.selected.map((x) => x.basis)).toEqual(['denied', 'admin']);
  });
});

describe('senderMatcher', () => {
  it('globs over the whole address without case; <> is the null sender', () => {
    expect(senderMatcher('*@winbig.test')('a@WINBIG.test')).toBe(true);
    expect(senderMatcher('*@winbig.test')('a@winbig.test.evil')).toBe(false);
    expect(senderMatcher('a?c@x')('abc@x')).toBe(true);
    expect(senderMatcher('a.c@x')('abc@x')).toBe(false);
    expect(senderMatcher('<>')('')).toBe(true);
    expect(senderMatcher('')('')).toBe(true);
    expect(senderMatcher('<>')('a@b')).toBe(false);
    expect(senderMatcher('<x@y>')('x@y')).toBe(true);
    expect(senderMatcher('*')(null)).toBe(false);
    expect(senderMatcher('(a|b)+[x]')('(a|b)+[x]')).toBe(true);
  });
});

describe('against a brute-force model', () => {
  it('the default policies select exactly: network/bounce mail, complete, source decided deny, not protected', () => {
    const ips = ['203.0.113.1', '203.0.113.2', '10.0.0.1', '10.0.0.2', '192.0.2.2', '198.51.100.1', null];
    const recArb = fc.record({
      state: fc.constantFrom('preprocessed', 'todo', 'in-flight-intd', 'in-flight-mess-only') as fc.Arbitrary<PurgeRecord['state']>,
      kind: fc.constantFrom('network', 'local', 'bounce', 'double-bounce', 'unknown') as fc.Arbitrary<PurgeRecord['kind']>,
      forwarded: fc.boolean(),
      sourceIp: fc.constantFrom(...ips),
      sender: fc.constantFrom('', '#@[]', 'a@b', null),
      age: fc.integer({ min: 0, max: 30 }),
    });
    const ruleArb = fc.array(
      fc.record({ cidr: fc.constantFrom('203.0.113.0/24', '203.0.113.1/32', '10.0.0.0/8', '10.0.0.2/32', '192.0.2.0/24', '0.0.0.0/1'), action: fc.constantFrom('relay', 'trust', 'deny') as fc.Arbitrary<'relay' | 'trust' | 'deny'> }),
      { maxLength: 5 },
    );
    fc.assert(
      fc.property(fc.array(recArb, { maxLength: 30 }), ruleArb, (raw, rules) => {
        const v = verdicts(rules);
        const records = raw.map((r) => rec({ ...r, arrival: new Date(NOW.getTime() - r.age * DAY) }));
        const got = new Set(selectPurge(records, v, DEFAULT).selected.map((c) => c.record.id));
        for (const r of records) {
          const verdict = r.sourceIp ? v(r.sourceIp) : undefined;
          const want =
            (r.state === 'preprocessed' || r.state === 'todo') &&
            (r.kind === 'network' || r.kind === 'bounce' || r.kind === 'double-bounce') &&
            verdict !== undefined &&
            verdict.decision === 'deny' &&
            !verdict.protected;
          expect(got.has(r.id), JSON.stringify({ r, verdict, rules })).toBe(want);
          if (want) expect(guardOf(r, verdict)).toBeNull();
        }
      }),
      { numRuns: 300 },
    );
  });
});
