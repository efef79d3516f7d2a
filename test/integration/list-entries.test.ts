// The public lists' entries in their own table (sql/018): moved there from qguard.rules by the
// migration without changing the policy, seen by every reader of the rules, expired and removed
// with an audit row like any rule. On the server and on the embedded database.

import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../lib/db/connect.js';
import { listMigrations, migrate } from '../../lib/db/migrate.js';
import { rulesForIps } from '../../lib/db/messages.js';
import { changeCounter, deleteRules, expireRules, listRules, nextExpiry, rulesContaining, upsertRule } from '../../lib/db/rules.js';
import { rulesAndVerdicts } from '../../lib/ops/verdicts.js';
import { mergeSpamlist } from '../../lib/db/spamlist.js';
import { type Net, formatNet, parseNet } from '../../lib/net/address.js';
import { type TestDb, createTestDb, serverAvailable } from '../helpers/db.js';

const net = (s: string): Net => {
  const r = parseNet(s);
  if (!r.ok) throw new Error(r.error);
  return r.net;
};
const key = (cidr: string) => {
  const n = net(cidr);
  return Number(n.addr) * 64 + n.prefix;
};

const kinds: ('server' | 'embedded')[] = ['embedded'];
if (await serverAvailable()) kinds.unshift('server');

/** The policy as every reader sees it (ids aside). */
const policy = async (db: Db) =>
  (
    await db.query<{ r: string }>(
      `SELECT network::text || ' ' || action || ' ' || source || ' ' || coalesce(reason, '-') || ' ' || coalesce(host, '*')
              || ' ' || coalesce(who, '-') || ' ' || coalesce(expires_at::text, 'never') AS r
         FROM qguard.live_rules ORDER BY 1`,
    )
  ).rows.map((x) => x.r);

/** Import `cidrs` as list `source` the way import-spamlist does (IPv4 only). */
async function importList(db: Db, source: string, cidrs: string[], ttlSeconds: number | null, v6: Net[] = []) {
  const v4 = Float64Array.from(cidrs.map(key).sort((a, b) => a - b));
  return mergeSpamlist(db, () => ({ dropped: [], networks: v4.length + v6.length, v4, v6 }), {
    source,
    reason: `listed by ${source}`,
    ttlSeconds,
    replace: true,
    dryRun: false,
    check() {},
  });
}

describe.each(kinds)('list entries on the %s database', (kind) => {
  let t: TestDb;
  let db: Db;

  beforeAll(async () => {
    t = await createTestDb({ kind, migrate: false });
    db = await t.open();
  });
  afterAll(async () => {
    await db?.close();
    await t?.drop();
  });

  it('migration 018 moves the plain rules of a list into its entries; the rest stays a rule; the policy reads the same', async () => {
    // The schema as it was before 018, with a list stored as rules.
    await db.exec('CREATE SCHEMA IF NOT EXISTS qguard; CREATE TABLE qguard.migrations (id integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
    for (const m of listMigrations().filter((m) => m.id < 18)) {
      await db.transaction(async (tx) => {
        await tx.query('INSERT INTO qguard.migrations (id, name) VALUES ($1, $2)', [m.id, m.name]);
        await tx.exec(fs.readFileSync(m.file, 'utf8'));
      });
    }
    await db.exec(`
      INSERT INTO qguard.rules (network, action, source, reason, expires_at, host, who) VALUES
        ('100.70.0.0/24', 'deny', 'list:a', 'listed by a', NULL, NULL, NULL),
        ('100.70.1.5/32', 'deny', 'list:a', 'listed by a', now() + interval '2 hours', NULL, NULL),
        ('2001:db8:70::/48', 'deny', 'list:a', 'listed by a', NULL, NULL, NULL),
        ('100.70.9.0/24', 'deny', 'list:a', 'listed by a', now() - interval '1 hour', NULL, NULL),
        ('100.70.2.0/24', 'deny', 'list:a', 'listed by a', NULL, 'other-host', NULL),
        ('100.70.3.3/32', 'relay', 'list:a', 'listed by a', NULL, NULL, NULL),
        ('100.70.4.4/32', 'deny', 'list:a', 'listed by a', NULL, NULL, 'admin'),
        ('100.70.5.0/24', 'deny', 'list:a', 'another reason', NULL, NULL, NULL),
        ('100.70.6.0/24', 'deny', 'manual', NULL, NULL, NULL, NULL),
        ('100.70.0.0/24', 'deny', 'list:b', NULL, NULL, NULL, NULL)`);
    const before = await policy(db);
    const seq = await changeCounter(db);
    const auditBefore = (await db.query<{ n: number }>('SELECT count(*) AS n FROM qguard.audit')).rows[0].n;

    expect((await migrate(db)).applied.map((m) => m.id)).toContain(18);

    expect(await policy(db)).toEqual(before);
    const entries = await db.query<{ source: string; network: string }>(
      `SELECT l.source, e.network::text AS network FROM qguard.list_entries e JOIN qguard.lists l ON l.id = e.list_id ORDER BY 1, 2`,
    );
    expect(entries.rows.map((r) => `${r.source} ${r.network}`)).toEqual([
      'list:a 100.70.0.0/24',
      'list:a 100.70.1.5/32',
      'list:a 100.70.9.0/24',
      'list:a 2001:db8:70::/48',
      'list:b 100.70.0.0/24',
    ]);
    const rules = await db.query<{ r: string }>(`SELECT network::text || ' ' || source AS r FROM qguard.rules ORDER BY 1`);
    expect(rules.rows.map((r) => r.r)).toEqual([
      '100.70.2.0/24 list:a',
      '100.70.3.3/32 list:a',
      '100.70.4.4/32 list:a',
      '100.70.5.0/24 list:a',
      '100.70.6.0/24 manual',
    ]);
    // A move, not a change: no audit rows; but every sync-rules reads everything again.
    expect((await db.query<{ n: number }>('SELECT count(*) AS n FROM qguard.audit')).rows[0].n).toBe(auditBefore);
    expect(await changeCounter(db)).toBeGreaterThan(seq);
    // The earliest expiry of the list is where housekeeping looks (the expired one).
    const next = (await db.query<{ t: Date }>("SELECT next_expiry AS t FROM qguard.lists WHERE source = 'list:a'")).rows[0].t;
    expect(new Date(next).getTime()).toBeLessThan(Date.now());
    expect(await expireRules(db)).toBe(1);
    expect((await nextExpiry(db))!.getTime() - Date.now()).toBeGreaterThan(3600_000);
  });

  it('an import writes entries, not rules; every reader of the rules finds them', async () => {
    await importList(db, 'list:c', ['100.71.0.0/24', '100.71.1.7/32'], null, [net('2001:db8:71::/48')]);
    expect((await db.query<{ n: number }>("SELECT count(*) AS n FROM qguard.rules WHERE source = 'list:c'")).rows[0].n).toBe(0);
    const ip = net('100.71.0.9');
    expect((await rulesContaining(db, ip, 'test-host')).map((r) => `${r.cidr} ${r.action} ${r.source} ${r.reason}`)).toEqual([
      '100.71.0.0/24 deny list:c listed by list:c',
    ]);
    expect((await rulesContaining(db, net('2001:db8:71::5'), 'test-host')).map((r) => r.cidr)).toEqual(['2001:db8:71::/48']);
    const batch = await rulesForIps(db, ['100.71.0.9', '100.71.1.7', '100.71.2.1']);
    expect(batch.get('100.71.0.9')!.map((r) => r.source)).toEqual(['list:c']);
    expect(batch.get('100.71.1.7')!.map((r) => r.cidr)).toEqual(['100.71.1.7/32']);
    expect(batch.get('100.71.2.1')).toEqual([]);
    expect((await listRules(db, { source: 'list:c' })).map((r) => r.cidr)).toEqual(['100.71.0.0/24', '100.71.1.7/32', '2001:db8:71::/48']);
    // The audit lists what the import added (IPv4 packed, IPv6 as networks).
    const audit = await db.query<{ nets: string[] }>(
      `SELECT ARRAY(SELECT n::text FROM qguard.audit_networks(a) n ORDER BY 1) AS nets
         FROM qguard.audit a WHERE source = 'list:c' AND op = 'insert'`,
    );
    expect(audit.rows.flatMap((r) => r.nets).sort()).toEqual(['100.71.0.0/24', '100.71.1.7/32', '2001:db8:71::/48']);
  });

  it('a large import arrives whole: every network of several COPY chunks stored exactly (IPv4 and IPv6, with an expiry)', async () => {
    // 25,000 networks of mixed prefixes (about 10,000 rows a 256 kB chunk on a server), sorted as an import sorts them.
    const cidrs = Array.from({ length: 25_000 }, (_, i) => `100.${100 + Math.floor(i / 4096)}.${Math.floor(i / 16) % 256}.${(i % 16) * 16}/${28 + (i % 5)}`);
    const v6 = [net('2001:db8:77::/48'), net('2001:db8:78:1::/64')];
    expect(await importList(db, 'list:big', cidrs, 3600, v6)).toMatchObject({ added: 25_002 });
    const stored = await db.query<{ n: string; exp: boolean }>(
      `SELECT e.network::text AS n, e.expires_at BETWEEN now() + interval '3590 seconds' AND now() + interval '3610 seconds' AS exp
         FROM qguard.list_entries e JOIN qguard.lists l ON l.id = e.list_id WHERE l.source = 'list:big'`,
    );
    const want = [...cidrs.map((c) => net(c)), ...v6].map(formatNet);
    expect(stored.rows.map((r) => r.n).sort()).toEqual(want.sort());
    expect(stored.rows.every((r) => r.exp)).toBe(true);
    await db.query("DELETE FROM qguard.list_entries e USING qguard.lists l WHERE l.id = e.list_id AND l.source = 'list:big'");
  });

  it('an entry whose time is up is deleted by housekeeping, audited as expire; the next expiry follows', async () => {
    await importList(db, 'list:d', ['100.72.0.0/24', '100.72.1.0/24'], 3600);
    const next = await nextExpiry(db);
    expect(Math.abs(next!.getTime() - (Date.now() + 3600_000))).toBeLessThan(120_000);
    // An hour passes for one of them.
    await db.exec(`
      UPDATE qguard.list_entries SET expires_at = now() - interval '1 second' WHERE network = '100.72.0.0/24';
      UPDATE qguard.lists SET next_expiry = now() - interval '1 second' WHERE source = 'list:d'`);
    expect((await rulesContaining(db, net('100.72.0.1'), 'test-host')).length).toBe(0); // expired: gone at once
    const seq = await changeCounter(db);
    expect(await expireRules(db)).toBe(1);
    expect(await changeCounter(db)).toBeGreaterThan(seq);
    expect((await listRules(db, { source: 'list:d' })).map((r) => r.cidr)).toEqual(['100.72.1.0/24']);
    const audit = await db.query<{ op: string; actor: string; nets: string[] }>(
      `SELECT op, actor, ARRAY(SELECT n::text FROM qguard.audit_networks(a) n) AS nets FROM qguard.audit a
        WHERE source = 'list:d' ORDER BY id DESC LIMIT 1`,
    );
    expect(audit.rows[0]).toMatchObject({ op: 'expire', nets: ['100.72.0.0/24'] });
    const left = (await db.query<{ t: Date }>("SELECT next_expiry AS t FROM qguard.lists WHERE source = 'list:d'")).rows[0].t;
    expect(new Date(left).getTime()).toBeGreaterThan(Date.now() + 3000_000);
    // Nothing more is due: housekeeping changes nothing.
    const quiet = await changeCounter(db);
    expect(await expireRules(db)).toBe(0);
    expect(await changeCounter(db)).toBe(quiet);
  });

  it("asked only \"relay or trust?\" (the page's copies), the entries are read where a relay/trust rule contains the address, with the same answers", async () => {
    await importList(db, 'list:g', ['100.74.0.5/32', '100.74.1.0/24'], null);
    await upsertRule(db, { net: net('100.74.0.0/24'), action: 'relay', source: 'manual', reason: null, who: null, ttlSeconds: null, host: null });
    const ips = ['100.74.0.5', '100.74.0.6', '100.74.1.9', '100.74.2.1'];
    const full = await rulesAndVerdicts(db, ips, []);
    const few = await rulesAndVerdicts(db, ips, [], 'underAllow');
    const allowed = (m: typeof full, ip: string) => ['relay', 'trust'].includes(m.get(ip)!.on('test-host').decision);
    expect(ips.map((ip) => full.get(ip)!.on('test-host').decision)).toEqual(['deny', 'relay', 'deny', 'default']);
    expect(ips.map((ip) => allowed(few, ip))).toEqual(ips.map((ip) => allowed(full, ip)));
    // Under the relay network the entry was read (and wins: longer prefix); elsewhere not at all.
    expect(few.get('100.74.0.5')!.rules.map((r) => r.source).sort()).toEqual(['list:g', 'manual']);
    expect(few.get('100.74.1.9')!.rules).toEqual([]);
  });

  it("a new reason is the list's: one row changed and audited, the entries left as they are", async () => {
    const v4 = Float64Array.from([key('100.75.0.0/24'), key('100.75.1.0/24')]);
    const merge = (reason: string) =>
      mergeSpamlist(db, () => ({ dropped: [], networks: 2, v4, v6: [] }), { source: 'list:h', reason, ttlSeconds: null, replace: true, dryRun: false, check() {} });
    await merge('first reason');
    const before = (await db.query<{ x: string }>("SELECT string_agg(ctid::text, ',' ORDER BY ctid) AS x FROM qguard.list_entries")).rows[0].x;
    expect(await merge('second reason')).toMatchObject({ refreshed: 2, added: 0, removed: 0 });
    expect((await db.query<{ x: string }>("SELECT string_agg(ctid::text, ',' ORDER BY ctid) AS x FROM qguard.list_entries")).rows[0].x).toBe(before);
    expect((await rulesContaining(db, net('100.75.1.1'), 'test-host')).map((r) => r.reason)).toEqual(['second reason']);
    const audit = await db.query<{ op: string; reason: string; old: { reason: string } }>(
      "SELECT op, reason, old FROM qguard.audit WHERE source = 'list:h' ORDER BY id DESC LIMIT 1",
    );
    expect(audit.rows[0]).toMatchObject({ op: 'update', reason: 'second reason', old: { reason: 'first reason' } });
  });

  it('`qguard ip rm` removes a list entry (not when one host is named), audited as a delete', async () => {
    await importList(db, 'list:e', ['100.73.0.0/24'], null);
    await importList(db, 'list:f', ['100.73.0.0/24'], null);
    expect(await deleteRules(db, { net: net('100.73.0.0/24'), host: 'test-host' })).toEqual([]);
    const gone = await deleteRules(db, { net: net('100.73.0.0/24'), source: 'list:e' });
    expect(gone.map((r) => `${r.cidr} ${r.source}`)).toEqual(['100.73.0.0/24 list:e']);
    expect((await rulesContaining(db, net('100.73.0.1'), 'test-host')).map((r) => r.source)).toEqual(['list:f']);
    const audit = await db.query<{ op: string; network: string }>(
      `SELECT op, network::text AS network FROM qguard.audit WHERE source = 'list:e' ORDER BY id DESC LIMIT 1`,
    );
    expect(audit.rows[0]).toEqual({ op: 'delete', network: '100.73.0.0/24' });
    // Removing a rule that is no entry leaves the entries' change number alone (sync-rules
    // then reads the changed rule, not every entry again).
    await upsertRule(db, { net: net('100.77.0.0/24'), action: 'deny', source: 'cli', reason: null, ttlSeconds: null, host: null, who: null });
    const seq = async () => (await db.query<{ s: string }>('SELECT entries_seq::text AS s FROM qguard.state')).rows[0].s;
    const entriesSeq = await seq();
    expect((await deleteRules(db, { net: net('100.77.0.0/24') })).map((r) => r.source)).toEqual(['cli']);
    expect(await seq()).toBe(entriesSeq);
    // The next import of list:e puts it back, like any entry the list names.
    expect(await importList(db, 'list:e', ['100.73.0.0/24'], null)).toMatchObject({ added: 1 });
  });

  it('a change of the entries is numbered and marked "read everything"; changes older than a day are forgotten, as for rules', async () => {
    const state = async () =>
      (await db.query<{ seq: string; entries: string; after: string }>('SELECT change_seq::text AS seq, entries_seq::text AS entries, changes_after::text AS after FROM qguard.state')).rows[0];
    const before = await state();
    await importList(db, 'list:k', ['100.76.0.0/24'], null);
    const now = await state();
    expect(Number(now.seq)).toBeGreaterThan(Number(before.seq));
    expect(now.entries).toBe(now.seq);
    const mark = await db.query<{ ids: string[] | null }>('SELECT ids FROM qguard.rule_changes WHERE seq = $1', [now.seq]);
    expect(mark.rows).toEqual([{ ids: null }]);
    // Every 64th change looks for changes of more than a day ago: written by the entries alone here.
    await db.query(`UPDATE qguard.rule_changes SET at = now() - interval '2 days'`);
    for (let i = 0; i < 64; i++) await db.query(`UPDATE qguard.list_entries SET expires_at = NULL WHERE network = '100.76.0.0/24'`);
    const after = await state();
    expect(Number(after.after)).toBeGreaterThanOrEqual(Number(now.seq));
    expect((await db.query<{ n: number }>("SELECT count(*)::int AS n FROM qguard.rule_changes WHERE at < now() - interval '1 day'")).rows[0].n).toBe(0);
  });
});
