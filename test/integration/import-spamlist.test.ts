// import-spamlist as cron and shell pipelines run it: the built executable, the real database
// (server, and the embedded one), exit codes, stderr, the --json summary, and "nothing changed"
// for every refused run.

import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { type TestDb, createTestDb, serverAvailable } from '../helpers/db.js';
import { mergeSpamlist } from '../../lib/db/spamlist.js';
import { runCli } from '../helpers/cli.js';
import { haveTools } from '../helpers/tools.js';

interface RuleJson {
  cidr: string;
  action: string;
  source: string;
  reason: string | null;
  expiresAt: string | null;
  host: string | null;
}

/** Helpers bound to one test database. */
function bound(get: () => TestDb) {
  const imp = (args: string[], input: string | Buffer, env: Record<string, string> = {}) =>
    runCli('import-spamlist', args, { env: { ...get().env, ...env }, input });
  const qguard = (args: string[]) => runCli('qguard', args, { env: get().env });
  /** The live rules, optionally of one source, as `cidr action source`. */
  const rules = async (source?: string): Promise<RuleJson[]> => {
    const r = await qguard(['ip', 'ls', '--json', ...(source ? ['--source', source] : [])]);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as RuleJson[];
  };
  const cidrs = async (source?: string) => (await rules(source)).map((r) => r.cidr);
  /** Rules, list entries, audit rows and the change counter: what "nothing changed" is checked against. */
  const footprint = async (): Promise<string> => {
    const db = await get().open();
    try {
      const r = await db.query(
        `SELECT (SELECT count(*) FROM qguard.rules) AS rules, (SELECT count(*) FROM qguard.audit) AS audit,
                (SELECT change_seq FROM qguard.state) AS seq,
                (SELECT string_agg(network::text || action || source || coalesce(expires_at::text, '-'), ',' ORDER BY id) FROM qguard.rules) AS body,
                (SELECT string_agg(list_id || network::text || coalesce(expires_at::text, '-'), ',' ORDER BY list_id, network, expires_at)
                   FROM qguard.list_entries) AS entries,
                (SELECT string_agg(source || coalesce(reason, '-') || coalesce(next_expiry::text, '-'), ',' ORDER BY id) FROM qguard.lists) AS lists`,
      );
      return JSON.stringify(r.rows[0]);
    } finally {
      await db.close();
    }
  };
  return { imp, qguard, rules, cidrs, footprint };
}

const json = (stdout: string) => JSON.parse(stdout) as Record<string, number | string | boolean>;

describe('import-spamlist (PostgreSQL server or the fallback)', () => {
  let t: TestDb;
  const { imp, qguard, rules, cidrs, footprint } = bound(() => t);

  beforeAll(async () => {
    t = await createTestDb();
  });
  afterAll(async () => {
    await t?.drop();
  });

  it('reads every format in one list and stores aggregated deny rules of list:NAME', async () => {
    const list = [
      '\uFEFF; Spamhaus DROP List 2026/11/28 - (c) 2026 The Spamhaus Project',
      '; Last-Modified: Sat, 28 Nov 2026 00:00:00 GMT',
      '100.70.16.0/20 ; SBL256894',
      '{"cidr":"100.71.0.0/24","sblid":"SBL1","rir":"arin"}',
      '{"type":"metadata","timestamp":1700000000,"records":2}',
      '100.72.1.:deny',
      '100.72.2.4-20:deny',
      '100.73.0.1-100.73.0.6',
      '  100.74.0.9  # seen twice',
      '100.74.0.9',
      '100.74.0.8\r',
      '2001:db8:5::/48',
      '',
      '# end',
    ].join('\r\n');
    const r = await imp(['--source', 'drop', '--json'], list);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(json(r.stdout)).toMatchObject({
      read: 14,
      valid: 9,
      invalid: 0,
      comments: 5,
      duplicate: 1,
      aggregated: 1, // 100.74.0.8 and .9 became 100.74.0.8/31
      added: 13,
      removed: 0,
      unchanged: 0,
      refused: 0,
      skipped: 0,
      networks: 13,
      source: 'list:drop',
      dryRun: false,
    });
    expect(await cidrs('list:drop')).toEqual([
      '100.70.16.0/20',
      '100.71.0.0/24',
      '100.72.1.0/24',
      '100.72.2.4/30',
      '100.72.2.8/29',
      '100.72.2.16/30',
      '100.72.2.20/32',
      '100.73.0.1/32',
      '100.73.0.2/31',
      '100.73.0.4/31',
      '100.73.0.6/32',
      '100.74.0.8/31',
      '2001:db8:5::/48',
    ]);
    const all = await rules('list:drop');
    expect(all.every((x) => x.action === 'deny' && x.reason === 'listed by drop' && x.expiresAt === null && x.host === null)).toBe(true);
    // Quiet on success: no --json, nothing printed at all.
    const quiet = await imp(['--source', 'drop'], list);
    expect(quiet).toMatchObject({ code: 0, stdout: '', stderr: '' });
  });

  it('re-importing the same list changes nothing (no write, no audit, no change counter bump)', async () => {
    const list = '100.75.0.0/24\n100.75.1.1\n100.75.1.2\n';
    expect((await imp(['--source', 'again'], list)).code).toBe(0);
    const before = await footprint();
    const r = await imp(['--source', 'again', '--replace', '--json'], list);
    expect(r.code, r.stderr).toBe(0);
    expect(json(r.stdout)).toMatchObject({ added: 0, removed: 0, unchanged: 3, refreshed: 0 });
    expect(await footprint()).toBe(before);
  });

  it('the audit of an import: a summary row per kind of change, listing every network changed, by whom', async () => {
    const db = await t.open();
    const auditRows = async (after: number) =>
      (
        // The networks as README shows how to list them (packed or not: sql/018).
        await db.query<{ op: string; actor: string; source: string; nets: string[] }>(
          `SELECT op, actor, source, ARRAY(SELECT n::text FROM qguard.audit_networks(a) AS n) AS nets
             FROM qguard.audit a WHERE id > $1 AND object = 'rule' ORDER BY id`,
          [after],
        )
      ).rows;
    const last = async () => Number((await db.query<{ m: number }>('SELECT coalesce(max(id), 0) AS m FROM qguard.audit')).rows[0].m);
    try {
      const quads = (from: number, n: number) => Array.from({ length: n }, (_, i) => `100.80.${from + (i >> 8)}.${i & 255}`);
      // 3,000 single addresses, none adjacent to another (every other address), so none aggregate.
      const first = quads(0, 6000).filter((_, i) => i % 2 === 0);
      let mark = await last();
      expect((await imp(['--source', 'audited'], first.join('\n'))).code).toBe(0);
      const ins = await auditRows(mark);
      expect(ins.length).toBeLessThanOrEqual(2);
      expect(ins.every((a) => a.op === 'insert' && a.source === 'list:audited' && / \(import-spamlist\)$/.test(a.actor))).toBe(true);
      expect(ins.flatMap((a) => a.nets).sort()).toEqual(first.map((q) => `${q}/32`).sort());
      // The next day: 100 dropped (--replace), 50 new.
      const second = [...first.slice(100), ...quads(40, 100).filter((_, i) => i % 2 === 0)];
      mark = await last();
      expect((await imp(['--source', 'audited', '--replace'], second.join('\n'))).code).toBe(0);
      const next = await auditRows(mark);
      expect(next.filter((a) => a.op === 'delete').flatMap((a) => a.nets).sort()).toEqual(first.slice(0, 100).map((q) => `${q}/32`).sort());
      expect(next.filter((a) => a.op === 'insert').flatMap((a) => a.nets).sort()).toEqual(second.slice(-50).map((q) => `${q}/32`).sort());
      expect(next.length).toBe(2);
    } finally {
      await db.close();
    }
  });

  it('guards: too broad, everything, protected addresses: refused and reported; the rest imported', async () => {
    const list = [
      '0.0.0.0/0',
      ':deny',
      '100.0.0.0/7',
      '127.0.0.1',
      '100.76.0.0/16', // contains the protected 100.76.5.5
      '100.77.1.1', // inside the protected 100.77.0.0/16
      '100.78.0.1',
      '2001:db8::/31',
    ].join('\n');
    const r = await imp(['--source', 'guards', '--json'], list, { QGUARD_PROTECT: '100.76.5.5,100.77.0.0/16' });
    expect(r.code, r.stderr).toBe(0);
    expect(json(r.stdout)).toMatchObject({ valid: 8, invalid: 0, refused: 7, added: 1 });
    expect(await cidrs('list:guards')).toEqual(['100.78.0.1/32']);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(7);
    expect(lines[0]).toBe('import-spamlist: warning: stdin:1: refused: 0.0.0.0/0 is every address: refused');
    expect(lines[1]).toMatch(/^import-spamlist: warning: stdin:2: refused: 0\.0\.0\.0\/0 is every address/);
    expect(lines[2]).toMatch(/stdin:3: refused: 100\.0\.0\.0\/7 is broader than \/8/);
    expect(lines[3]).toMatch(/stdin:4: refused: 127\.0\.0\.1 is protected/);
    expect(lines[4]).toMatch(/stdin:5: refused: 100\.76\.0\.0\/16 contains protected 100\.76\.5\.5/);
    expect(lines[5]).toMatch(/stdin:6: refused: 100\.77\.1\.1 is protected \(inside 100\.77\.0\.0\/16\)/);
    expect(lines[6]).toMatch(/stdin:8: refused: 2001:db8::\/31 is broader than \/32/);
    // QGUARD_MIN_PREFIX moves the line.
    const wide = await imp(['--source', 'guards2', '--json'], '100.0.0.0/7\n100.80.0.0/12\n', { QGUARD_MIN_PREFIX: '12' });
    expect(json(wide.stdout)).toMatchObject({ refused: 1, added: 1 });
    expect(await cidrs('list:guards2')).toEqual(['100.80.0.0/12']);
  });

  it('aggregation never makes an entry broader than QGUARD_MIN_PREFIX', async () => {
    const r = await imp(['--source', 'floor', '--json'], '100.96.0.0/12\n100.112.0.0/12\n', { QGUARD_MIN_PREFIX: '12' });
    expect(r.code, r.stderr).toBe(0);
    expect(json(r.stdout)).toMatchObject({ aggregated: 0, added: 2 });
    expect(await cidrs('list:floor')).toEqual(['100.96.0.0/12', '100.112.0.0/12']);
  });

  it('entries equal to or inside relay/trust networks are skipped; those containing one are kept', async () => {
    for (const args of [
      ['ip', 'allow', '198.51.100.0/24'],
      ['ip', 'trust', '100.81.0.7'],
    ]) {
      expect((await qguard(args)).code).toBe(0);
    }
    const list = ['198.51.100.0/24', '198.51.100.9', '100.81.0.7', '198.51.0.0/16', '100.81.0.0/24', '100.82.0.1'].join('\n');
    const r = await imp(['--source', 'partners', '--json'], list);
    expect(r.code).toBe(0);
    expect(json(r.stdout)).toMatchObject({ valid: 6, skipped: 3, added: 3 });
    expect(await cidrs('list:partners')).toEqual(['100.81.0.0/24', '100.82.0.1/32', '198.51.0.0/16']);
    expect(r.stderr).toMatch(/^import-spamlist: warning: 3 entries skipped, equal to or inside a relay\/trust network/);
    expect(r.stderr).toMatch(/100\.81\.0\.7 inside 100\.81\.0\.7 \(trust, manual\)/);
    expect(r.stderr).toMatch(/198\.51\.100\.0\/24 inside 198\.51\.100\.0\/24 \(relay, manual\)/);
    const why = async (ip: string) => JSON.parse((await qguard(['ip', 'why', ip, '--json'])).stdout).decision;
    expect(await why('198.51.100.9')).toBe('relay');
    expect(await why('100.81.0.7')).toBe('trust');
    expect(await why('198.51.7.7')).toBe('deny');
    expect(await why('100.81.0.8')).toBe('deny');
  });

  it('--replace: the source holds exactly the new list; other sources keep theirs', async () => {
    const a = Array.from({ length: 10 }, (_, i) => `100.83.${i}.0/30`);
    expect((await imp(['--source', 'alpha'], a.join('\n'))).code).toBe(0);
    // The same network in another source, and a manual rule.
    expect((await imp(['--source', 'beta'], `${a[0]}\n100.84.0.1\n`)).code).toBe(0);
    expect((await qguard(['ip', 'deny', '100.83.1.0/30'])).code).toBe(0);
    // A rule of the source scoped to one mail server: not what the list says, so it goes.
    expect((await qguard(['ip', 'deny', '100.83.2.0/30', '--source', 'list:alpha', '--host', 'test-host'])).code).toBe(0);
    const next = [...a.slice(0, 8), '100.85.0.1'];
    const r = await imp(['--source', 'alpha', '--replace', '--json'], next.join('\n'));
    expect(r.code, r.stderr).toBe(0);
    expect(json(r.stdout)).toMatchObject({ added: 1, removed: 3, unchanged: 8 });
    expect((await rules('list:alpha')).every((x) => x.host === null)).toBe(true);
    expect(await cidrs('list:alpha')).toEqual([...a.slice(0, 8), '100.85.0.1/32']);
    expect(await cidrs('list:beta')).toEqual(['100.83.0.0/30', '100.84.0.1/32']);
    expect(await cidrs('manual')).toContain('100.83.1.0/30');
    // Without --replace entries are only added.
    const add = await imp(['--source', 'alpha', '--json'], '100.85.0.2\n');
    expect(json(add.stdout)).toMatchObject({ added: 1, removed: 0 });
    expect(await cidrs('list:alpha')).toHaveLength(10);
  });

  it('--replace that would remove more than half of the source refuses, unless --force', async () => {
    const ten = Array.from({ length: 10 }, (_, i) => `100.86.${i}.1`);
    expect((await imp(['--source', 'shrink'], ten.join('\n'))).code).toBe(0);
    const before = await footprint();
    const r = await imp(['--source', 'shrink', '--replace', '--json'], ten.slice(0, 4).join('\n'));
    expect(r.code).toBe(100);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(
      'import-spamlist: fatal: --replace would remove 6 of the 10 entries of list:shrink (more than half): refused, nothing changed; use --force if the list really shrank\n',
    );
    expect(await footprint()).toBe(before);
    // Exactly half is allowed.
    const half = await imp(['--source', 'shrink', '--replace', '--dry-run', '--json'], ten.slice(0, 5).join('\n'));
    expect(half.code).toBe(0);
    expect(json(half.stdout)).toMatchObject({ removed: 5, dryRun: true });
    const forced = await imp(['--source', 'shrink', '--replace', '--force', '--json'], ten.slice(0, 4).join('\n'));
    expect(forced.code, forced.stderr).toBe(0);
    expect(json(forced.stdout)).toMatchObject({ removed: 6, unchanged: 4 });
    expect(await cidrs('list:shrink')).toEqual(ten.slice(0, 4).map((x) => `${x}/32`));
  });

  it('zero valid entries never replace anything', async () => {
    // (Each test stands alone: run one with -t and it still holds.)
    expect((await imp(['--source', 'keep'], '100.87.0.1\n100.87.0.2\n')).code).toBe(0);
    expect((await qguard(['ip', 'allow', '198.51.100.0/24'])).code).toBe(0);
    const before = await footprint();
    const cases: [string, string[], RegExp][] = [
      ['0.0.0.0/0\n127.0.0.1\n', [], /no valid entries to import \(2 refused\)/],
      ['not an address\n012.0.0.1\n', ['--max-invalid', '100'], /no valid entries to import/],
      ['198.51.100.77\n', [], /--replace with no entries left to store \(1 inside relay\/trust networks\)/],
    ];
    for (const [input, extra, msg] of cases) {
      const r = await imp(['--source', 'keep', '--replace', '--force', ...extra], input);
      expect(r.code, input).toBe(100);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr).toMatch(/refused, nothing changed/);
    }
    expect(await footprint()).toBe(before);
    expect(await cidrs('list:keep')).toEqual(['100.87.0.1/32', '100.87.0.2/32']);
  });

  it('an HTML page or an empty input is refused outright with 100, nothing changed', async () => {
    const before = await footprint();
    const html = '\n\n<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n<body>100.88.0.1</body></html>\n';
    const inputs: [string, RegExp][] = [
      [html, /stdin:3: looks like an HTML page, not a list \(a failed download\?\): refused, nothing changed/],
      ['\uFEFF<?xml version="1.0"?><error/>', /stdin:1: looks like an HTML page/],
      ['', /stdin: no entries \(empty, or only comments\): refused, nothing changed/],
      ['# Spamhaus DROP\n; nothing today\n\n', /stdin: no entries/],
    ];
    for (const [input, msg] of inputs) {
      const r = await imp(['--source', 'keep', '--replace', '--force', '--max-invalid', '100'], input);
      expect(r.code, input).toBe(100);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(msg);
    }
    expect(await footprint()).toBe(before);
  });

  it('--max-invalid: invalid lines reported with their line, the first 20; too many refuses', async () => {
    const good = Array.from({ length: 98 }, (_, i) => `100.89.${i * 2}.0/24`);
    const list = [...good.slice(0, 10), '012.0.0.1', ...good.slice(10), '100.89.0.5/24'].join('\n');
    const before = await footprint();
    const refused = await imp(['--source', 'inv', '--json'], list);
    expect(refused.code).toBe(100);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toBe(
      [
        'import-spamlist: warning: stdin:11: leading zeros in an IPv4 address (octal-looking): "012.0.0.1"',
        'import-spamlist: warning: stdin:100: host bits set in "100.89.0.5/24": did you mean 100.89.0.0/24?',
        'import-spamlist: fatal: 2 of 100 entry lines are invalid (2.0% > --max-invalid 1%): refused, nothing changed',
        '',
      ].join('\n'),
    );
    expect(await footprint()).toBe(before);
    const ok = await imp(['--source', 'inv', '--json', '--max-invalid', '2'], list);
    expect(ok.code).toBe(0);
    expect(json(ok.stdout)).toMatchObject({ read: 100, valid: 98, invalid: 2, added: 98 });
    expect(ok.stderr.split('\n').filter(Boolean)).toHaveLength(2);
    // Many invalid lines: 20 shown, the rest counted.
    const junk = Array.from({ length: 30 }, (_, i) => `junk-${i}`).join('\n');
    const many = await imp(['--source', 'inv', '--max-invalid', '50', '--json'], `${good.join('\n')}\n${junk}\n`);
    expect(many.code).toBe(0);
    const lines = many.stderr.trim().split('\n');
    expect(lines).toHaveLength(21);
    expect(lines[0]).toMatch(/^import-spamlist: warning: stdin:99: range start: not an IP address: "junk"/);
    expect(lines[20]).toBe('import-spamlist: warning: 10 more invalid lines not shown');
    expect(json(many.stdout)).toMatchObject({ invalid: 30, unchanged: 98 });
  });

  it('--dry-run reports what would change and changes nothing', async () => {
    const list = '100.90.0.0/24\n100.90.2.0/24\n100.90.2.0/24\n';
    const before = await footprint();
    const dry = await imp(['--source', 'dry', '--dry-run', '--json'], list);
    expect(dry.code, dry.stderr).toBe(0);
    const d = json(dry.stdout);
    expect(d).toMatchObject({ added: 2, duplicate: 1, dryRun: true });
    expect(await footprint()).toBe(before);
    const text = await imp(['--source', 'dry', '--dry-run'], list);
    expect(text.stdout).toMatch(/^dry run: list:dry: would add 2, rewrite 0, remove 0, unchanged 0 \(3 lines: 3 valid/);
    const real = await imp(['--source', 'dry', '--json'], list);
    const { durationMs: _a, dryRun: _b, ...realCounts } = json(real.stdout);
    const { durationMs: _c, dryRun: _d, ...dryCounts } = d;
    expect(realCounts).toEqual(dryCounts);
  });

  it('--json prints exactly the documented summary', async () => {
    const r = await imp(['--source', 'shape', '--json'], '100.91.0.1\n100.91.0.1\nbad\n# c\n', {});
    expect(r.code).toBe(100); // 1 of 3 invalid
    const ok = await imp(['--source', 'shape', '--json', '--max-invalid', '50'], '100.91.0.1\n100.91.0.1\nbad\n# c\n');
    const s = json(ok.stdout);
    for (const k of ['read', 'valid', 'invalid', 'duplicate', 'aggregated', 'added', 'removed', 'unchanged', 'refused']) {
      expect(typeof s[k], k).toBe('number');
    }
    expect(s).toMatchObject({ read: 4, valid: 2, invalid: 1, duplicate: 1, aggregated: 0, added: 1, removed: 0, unchanged: 0, refused: 0, comments: 1 });
    expect(ok.stdout.trim().split('\n').length).toBeGreaterThan(1); // one pretty-printed document
    expect(() => JSON.parse(ok.stdout)).not.toThrow();
  });

  it('--for sets the expiry; a re-import renews it once less than half of it is left', async () => {
    const r = await imp(['--source', 'ttl', '--for', '2d', '--json'], '100.92.0.1\n');
    expect(json(r.stdout)).toMatchObject({ added: 1 });
    const [rule] = await rules('list:ttl');
    const left = Date.parse(rule.expiresAt!) - Date.now();
    expect(left).toBeGreaterThan(2 * 86400_000 - 120_000);
    expect(left).toBeLessThanOrEqual(2 * 86400_000);
    // More than half of the 2 days left: the entry stays as it is, nothing is written.
    const before = await footprint();
    const again = await imp(['--source', 'ttl', '--for', '2d', '--json'], '100.92.0.1\n');
    expect(json(again.stdout)).toMatchObject({ added: 0, refreshed: 0, unchanged: 1 });
    expect(await footprint()).toBe(before);
    // Less than half left (a day and a minute have passed): renewed to the full 2 days.
    const db = await t.open();
    try {
      await db.query(
        `UPDATE qguard.list_entries SET expires_at = now() + interval '1 day' - interval '1 minute'
          WHERE list_id = (SELECT id FROM qguard.lists WHERE source = 'list:ttl')`,
      );
    } finally {
      await db.close();
    }
    const renewed = await imp(['--source', 'ttl', '--for', '2d', '--json'], '100.92.0.1\n');
    expect(json(renewed.stdout)).toMatchObject({ added: 0, refreshed: 1, unchanged: 0 });
    const [later] = await rules('list:ttl');
    expect(Date.parse(later.expiresAt!) - Date.now()).toBeGreaterThan(2 * 86400_000 - 120_000);
    // A shorter --for: the stored expiry lies beyond it, so it is brought in at once.
    const shorter = await imp(['--source', 'ttl', '--for', '1h', '--json'], '100.92.0.1\n');
    expect(json(shorter.stdout)).toMatchObject({ refreshed: 1 });
    expect(Date.parse((await rules('list:ttl'))[0].expiresAt!) - Date.now()).toBeLessThanOrEqual(3600_000);
    // Without --for the entry no longer lapses.
    const forever = await imp(['--source', 'ttl', '--json'], '100.92.0.1\n');
    expect(json(forever.stdout)).toMatchObject({ refreshed: 1 });
    expect((await rules('list:ttl'))[0].expiresAt).toBeNull();
  });

  it('rules with and without expiry, IPv4 and IPv6, are each found again, rewritten and removed', async () => {
    const both = '100.94.0.1\n2001:db8:94::/48\n';
    expect(json((await imp(['--source', 'mixed', '--for', '2h', '--json'], both)).stdout)).toMatchObject({ added: 2 });
    // Read back with their expiry: nothing to do.
    expect(json((await imp(['--source', 'mixed', '--for', '2h', '--json'], both)).stdout)).toMatchObject({ unchanged: 2 });
    // Without --for both are rewritten (by id) to never expire; then read back without expiry.
    expect(json((await imp(['--source', 'mixed', '--json'], both)).stdout)).toMatchObject({ refreshed: 2 });
    expect((await rules('list:mixed')).map((r) => r.expiresAt)).toEqual([null, null]);
    expect(json((await imp(['--source', 'mixed', '--json'], both)).stdout)).toMatchObject({ unchanged: 2 });
    // One of each family with an expiry again, then both removed by --replace (by id).
    await imp(['--source', 'mixed', '--for', '2h', '--json'], '100.94.0.2\n2001:db8:95::/48\n');
    const r = await imp(['--source', 'mixed', '--replace', '--force', '--json'], '100.94.0.9\n');
    expect(json(r.stdout)).toMatchObject({ added: 1, removed: 4 });
    expect(await cidrs('list:mixed')).toEqual(['100.94.0.9/32']);
  });

  it('files as arguments, - for stdin, line numbers per file', async () => {
    const fs = await import('node:fs');
    const path = await import('node:path');
    const f1 = path.join(t.stateDir, 'one.txt');
    const f2 = path.join(t.stateDir, 'two.txt');
    fs.writeFileSync(f1, '100.93.0.1\n100.93.0.2\n');
    fs.writeFileSync(f2, `${Array.from({ length: 200 }, (_, i) => `100.93.1.${i}`).join('\n')}\nbad\n`);
    const r = await imp(['--source', 'files', '--json', f1, '-', f2], '100.93.2.1\n');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe(`import-spamlist: warning: ${f2}:201: not an IP address: "bad"\n`);
    expect(json(r.stdout)).toMatchObject({ read: 204, valid: 203, invalid: 1 });
    const missing = await imp(['--source', 'files', path.join(t.stateDir, 'nope.txt')], '');
    expect(missing.code).toBe(100);
    expect(missing.stderr).toMatch(/^import-spamlist: fatal: unable to read .*nope\.txt: ENOENT/);
    // One empty file among good ones refuses the lot (a failed download).
    const empty = path.join(t.stateDir, 'empty.txt');
    fs.writeFileSync(empty, '');
    const partial = await imp(['--source', 'files', f1, empty], '');
    expect(partial.code).toBe(100);
    expect(partial.stderr).toMatch(/empty\.txt: no entries/);
  });

  it('a line too long to be an entry is one invalid line; the next lines keep their numbers', async () => {
    const long = `100.94.1.1${'x'.repeat(200_000)}`;
    const r = await imp(['--source', 'long', '--json', '--max-invalid', '50'], `${long}\n100.94.1.2\nbad\n100.94.1.4\n`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe(
      'import-spamlist: warning: stdin:1: line longer than 4096 characters\nimport-spamlist: warning: stdin:3: not an IP address: "bad"\n',
    );
    expect(json(r.stdout)).toMatchObject({ read: 4, valid: 2, invalid: 2 });
    expect(await cidrs('list:long')).toEqual(['100.94.1.2/32', '100.94.1.4/32']);
    const dir = await imp(['--source', 'long', t.stateDir], '');
    expect(dir.code).toBe(100);
    expect(dir.stderr).toMatch(/^import-spamlist: fatal: unable to read .*: EISDIR/);
  });

  it('usage errors exit 2 and change nothing', async () => {
    const before = await footprint();
    const cases: [string[], RegExp][] = [
      [[], /--source NAME is required/],
      [['--source', 'Bad Name'], /--source: bad source name "list:Bad Name"/],
      [['--source', 'x', '--for', 'soon'], /--for: not a duration/],
      [['--source', 'x', '--max-invalid', '101'], /--max-invalid: a percentage 0-100/],
      [['--source', 'x', '--max-invalid', 'lots'], /--max-invalid/],
      [['--source', 'x', '--bogus'], /unknown option '--bogus'/],
    ];
    for (const [args, msg] of cases) {
      const r = await imp(args, '100.94.0.1\n');
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(msg);
    }
    expect(await footprint()).toBe(before);
  });

  it('database trouble exits 111', async () => {
    const r = await imp(['--source', 'x'], '100.94.0.1\n', { QGUARD_DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/none' });
    expect(r.code).toBe(111);
    expect(r.stderr).toMatch(/^import-spamlist: fatal: unable to connect to database/);
  });

  it('fuzz: random bytes and mutated lists never crash it; every line is counted', async () => {
    const samples = ['100.95.0.1', '100.95.1.0/24 ; SBL1', '{"cidr":"100.95.2.0/24"}', '100.95.3.:deny', '# c', '2001:db8:9::/48'];
    const inputs = fc.sample(
      fc.oneof(
        fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
        fc
          .array(fc.tuple(fc.constantFrom(...samples), fc.string({ unit: 'binary', maxLength: 3 }), fc.nat(20)), { minLength: 1, maxLength: 12 })
          .map((parts) => Buffer.from(parts.map(([s, junk, at]) => s.slice(0, at) + junk + s.slice(at)).join(fc.sample(fc.constantFrom('\n', '\r\n'), 1)[0]))),
      ),
      { numRuns: 12, seed: 5 },
    );
    for (const input of inputs) {
      const r = await imp(['--source', 'fuzz', '--json', '--max-invalid', '100'], input);
      expect([0, 100], r.stderr).toContain(r.code);
      expect(r.stderr).not.toMatch(/internal error/);
      for (const line of r.stderr.split('\n').filter(Boolean)) expect(line).toMatch(/^import-spamlist: (warning|fatal): /);
      if (r.code === 0) {
        const s = json(r.stdout);
        const text = input.toString('utf8');
        const lines = text === '' ? 0 : text.split('\n').length - (text.endsWith('\n') ? 1 : 0);
        expect(s.read).toBe(lines);
        expect((s.valid as number) + (s.invalid as number) + (s.comments as number)).toBe(lines);
      }
    }
  });
});

describe('import-spamlist on the embedded database', () => {
  let t: TestDb;
  const { imp, cidrs, footprint } = bound(() => t);

  beforeAll(async () => {
    t = await createTestDb({ kind: 'embedded' });
  });
  afterAll(async () => {
    await t?.drop();
  });

  it('imports in batches, replaces, and a re-import changes nothing', async () => {
    const big = Array.from({ length: 12_000 }, (_, i) => `100.${96 + Math.floor(i / 65536)}.${Math.floor(i / 256) % 256}.${i % 256}`);
    // Every other address, so aggregation leaves 6,000 networks: more than one batch.
    const list = big.filter((_, i) => i % 2 === 0);
    const r = await imp(['--source', 'emb', '--json'], list.join('\n'));
    expect(r.code, r.stderr).toBe(0);
    expect(json(r.stdout)).toMatchObject({ valid: 6000, added: 6000 });
    const before = await footprint();
    const again = await imp(['--source', 'emb', '--replace', '--json'], list.join('\n'));
    expect(json(again.stdout)).toMatchObject({ added: 0, removed: 0, unchanged: 6000 });
    expect(await footprint()).toBe(before);
    const next = await imp(['--source', 'emb', '--replace', '--json'], [...list.slice(0, 5000), '100.99.0.0/24'].join('\n'));
    expect(json(next.stdout)).toMatchObject({ added: 1, removed: 1000, unchanged: 5000 });
    const stored = await cidrs('list:emb');
    expect(stored).toHaveLength(5001);
    expect(stored).toContain('100.99.0.0/24');
  });
});

// The diff is read once, then only the changes are written. A writer outside import-spamlist
// (`qguard ip deny --source list:NAME`, housekeeping expiring a rule) may change the source in
// between: the import must still leave exactly the list, each change audited once. (A server
// only: the embedded database has one user at a time.)
describe.skipIf(!(await serverAvailable()))('import-spamlist when the source changes between its read and its writes', () => {
  let t: TestDb;
  beforeAll(async () => {
    t = await createTestDb({ kind: 'server' });
  });
  afterAll(async () => {
    await t?.drop();
  });

  it('a network inserted and a rule deleted meanwhile: the list is stored exactly, audited once a change', async () => {
    const db = await t.open();
    const other = await t.open();
    try {
      await db.query(`INSERT INTO qguard.rules (network, action, source, reason) VALUES ('100.95.0.3/32', 'deny', 'list:race', 'old reason')`);
      const auditBefore = Number((await db.query<{ n: number }>('SELECT count(*) AS n FROM qguard.audit')).rows[0].n);
      const keys = Float64Array.from([1, 2, 3], (i) => (0x645f0000 + i) * 64 + 32); // 100.95.0.1-3
      let raced = 0;
      const diff = await mergeSpamlist(db, () => ({ dropped: [], networks: 3, v4: keys, v6: [] }), {
        source: 'list:race',
        reason: 'listed by race',
        ttlSeconds: null,
        replace: true,
        dryRun: false,
        async check(d) {
          // Planned: insert .1 and .2, rewrite .3. Someone adds .2 and deletes .3 first.
          expect(d).toMatchObject({ added: 2, refreshed: 1, existing: 1 });
          raced++;
          await other.query(`INSERT INTO qguard.rules (network, action, source, who) VALUES ('100.95.0.2/32', 'deny', 'list:race', 'admin')`);
          await other.query(`DELETE FROM qguard.rules WHERE network = '100.95.0.3/32'`);
        },
      });
      expect(raced).toBe(1);
      expect(diff).toMatchObject({ added: 2, refreshed: 1 });
      const rows = await db.query<{ cidr: string; reason: string; who: string | null }>(
        `SELECT network::text AS cidr, reason, who FROM qguard.live_rules WHERE source = 'list:race' ORDER BY network`,
      );
      expect(rows.rows).toEqual(
        ['100.95.0.1/32', '100.95.0.2/32', '100.95.0.3/32'].map((cidr) => ({ cidr, reason: 'listed by race', who: null })),
      );
      // Theirs: the insert of .2, the delete of .3. Ours: insert .1 and .3, rewrite .2 — nothing twice.
      // (The import's own changes are summary rows listing their networks: sql/011, sql/018.)
      const audit = await db.query<{ op: string; network: string; actor: string }>(
        `SELECT op, n::text AS network FROM qguard.audit a, qguard.audit_networks(a) AS n WHERE id > $1 ORDER BY id`,
        [auditBefore],
      );
      expect(audit.rows.map((a) => `${a.op} ${a.network}`).sort()).toEqual(
        ['delete 100.95.0.3/32', 'insert 100.95.0.1/32', 'insert 100.95.0.2/32', 'insert 100.95.0.3/32', 'update 100.95.0.2/32'].sort(),
      );
    } finally {
      await other.close();
      await db.close();
    }
  });
});

describe.skipIf(!haveTools('tcprules', 'tcprulescheck'))('import-spamlist, then sync-rules', () => {
  let t: TestDb;
  const { imp, qguard } = bound(() => t);

  beforeAll(async () => {
    t = await createTestDb();
  });
  afterAll(async () => {
    await t?.drop();
  });

  it('denies exactly the listed space minus relay, trust and protected addresses', async () => {
    // 100.101.0.0/21, addresses numbered from its start: 100.101.X.Y is X * 256 + Y.
    const ip = (i: number) => `100.101.${i >> 8}.${i & 255}`;
    const span = (a: string, b = a): [number, number] => {
      const num = (x: string) => {
        const [, , c, d] = x.split('.').map(Number);
        return c * 256 + d;
      };
      return [num(a), num(b)];
    };
    const protect = '100.101.2.64/27';
    const env = { QGUARD_PROTECT: protect };
    for (const args of [
      ['ip', 'allow', '100.101.0.128/25'],
      ['ip', 'trust', '100.101.1.5'],
      ['ip', 'allow', '100.101.3.0/24'],
    ]) {
      expect((await qguard(args)).code).toBe(0);
    }
    const list: [string, [number, number]][] = [
      ['100.101.0.0/24 ; contains the relay /25', span('100.101.0.0', '100.101.0.255')],
      ['100.101.1.0/26', span('100.101.1.0', '100.101.1.63')],
      ['100.101.2.0/26', span('100.101.2.0', '100.101.2.63')],
      ['100.101.2.70 # inside the protected /27', span('100.101.2.70')],
      ['100.101.2.64/28', span('100.101.2.64', '100.101.2.79')],
      ['100.101.3.7', span('100.101.3.7')],
      ['100.101.3.0/24', span('100.101.3.0', '100.101.3.255')],
      ['100.101.4.10-100.101.4.20', span('100.101.4.10', '100.101.4.20')],
      ['100.101.5.:deny', span('100.101.5.0', '100.101.5.255')],
      ['{"cidr":"100.101.6.128/25"}', span('100.101.6.128', '100.101.6.255')],
    ];
    const r = await imp(['--source', 'sync', '--json'], list.map(([l]) => l).join('\n'), env);
    expect(r.code, r.stderr).toBe(0);
    expect(json(r.stdout)).toMatchObject({ valid: 10, refused: 2, skipped: 2 });

    const dir = fs.mkdtempSync(path.join(t.stateDir, 'sync-'));
    fs.mkdirSync(path.join(dir, 'control'));
    const cdb = path.join(dir, 'tcp.smtp.cdb');
    const sync = await runCli('sync-rules', [], {
      env: {
        ...t.env,
        ...env,
        QGUARD_RULES: path.join(dir, 'tcp.smtp'),
        QGUARD_RULES_CDB: cdb,
        QGUARD_RULES_STATIC: path.join(dir, 'tcp.smtp.static'),
        QGUARD_CONTROL: path.join(dir, 'control'),
        QGUARD_QMAIL_NEWMRH: path.join(dir, 'no-qmail-newmrh'),
      },
    });
    expect(sync, sync.stderr).toMatchObject({ code: 0, stderr: '' });

    // The model: listed space minus relay, trust and protected addresses.
    const allowed = [span('100.101.0.128', '100.101.0.255'), span('100.101.1.5'), span('100.101.3.0', '100.101.3.255'), span('100.101.2.64', '100.101.2.95')];
    const inAny = (i: number, spans: [number, number][]) => spans.some(([a, b]) => i >= a && i <= b);
    const listed = list.map(([, s]) => s);
    // Every address of 100.101.0.0/21 and its neighbours, through the real tcprulescheck.
    const probes = Array.from({ length: 2048 + 4 }, (_, k) => k - 2);
    const out = execFileSync(
      'sh',
      [
        '-c',
        'for ip in "$@"; do r=$(TCPREMOTEIP=$ip tcprulescheck "$CDB"); case $r in *"deny connection"*) echo D;; *) echo A;; esac; done',
        'sh',
        ...probes.map((i) => (i < 0 ? `100.100.255.${256 + i}` : i >= 2048 ? `100.101.8.${i - 2048}` : ip(i))),
      ],
      { env: { PATH: process.env.PATH, CDB: cdb }, encoding: 'utf8', maxBuffer: 1 << 20 },
    )
      .trim()
      .split('\n');
    const wrong: string[] = [];
    probes.forEach((i, k) => {
      const want = i >= 0 && i < 2048 && inAny(i, listed) && !inAny(i, allowed) ? 'D' : 'A';
      if (out[k] !== want) wrong.push(`${i < 0 || i >= 2048 ? `probe ${i}` : ip(i)}: ${out[k]} (want ${want})`);
    });
    expect(wrong).toEqual([]);
  });
});
