// The schema, the rule queries and the intranet's door on a real PostgreSQL server and on the
// embedded PGlite: same migrations, same answers.

import fc from 'fast-check';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../lib/db/connect.js';
import { latestMigration, migrate, schemaVersion } from '../../lib/db/migrate.js';
import {
  changeCounter,
  deleteRules,
  expireRules,
  listRules,
  nextExpiry,
  rulesContaining,
  upsertRule,
} from '../../lib/db/rules.js';
import { type Net, formatNet, parseNet } from '../../lib/net/address.js';
import { type Action, decide } from '../../lib/policy/decide.js';
import { type TestDb, createTestDb, serverAvailable } from '../helpers/db.js';

const net = (s: string): Net => {
  const r = parseNet(s);
  if (!r.ok) throw new Error(r.error);
  return r.net;
};

const kinds: ('server' | 'embedded')[] = ['embedded'];
if (await serverAvailable()) kinds.unshift('server');

describe.each(kinds)('foundation schema on the %s database', (kind) => {
  let t: TestDb;
  let db: Db;

  beforeAll(async () => {
    t = await createTestDb({ kind });
    db = await t.open();
  });
  afterAll(async () => {
    await db?.close();
    await t?.drop();
  });

  it('migrates once; a second migrate changes nothing', async () => {
    expect(await schemaVersion(db)).toBe(latestMigration());
    const again = await migrate(db);
    expect(again.applied).toEqual([]);
    expect(again.to).toBe(latestMigration());
  });

  it('SQL candidates (network >>= ip, live, host scope) + decide() equal decide() over every rule', async () => {
    const arbRule = fc.record({
      base: fc.integer({ min: 0, max: 255 }),
      prefix: fc.integer({ min: 8, max: 32 }),
      action: fc.constantFrom<Action>('relay', 'trust', 'deny'),
      host: fc.constantFrom<string | null>(null, null, null, 'test-host', 'other-host'),
      expired: fc.boolean(),
      v6: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(arbRule, { minLength: 1, maxLength: 25 }), async (specs) => {
        await db.query('DELETE FROM qguard.rules');
        const live: { net: Net; action: Action }[] = [];
        for (const [i, s] of specs.entries()) {
          const n = s.v6
            ? (parseNet(`2001:db8:${s.base.toString(16)}::/${s.prefix + 32}`, { allowHostBits: true }) as { net: Net }).net
            : (() => {
                const addr = (0xc6336400n + BigInt(s.base) * 8n) & ~((1n << BigInt(32 - s.prefix)) - 1n);
                return { family: 4 as const, addr, prefix: s.prefix };
              })();
          await upsertRule(db, {
            net: n,
            action: s.action,
            source: `list:s${i}`,
            reason: null,
            who: null,
            ttlSeconds: s.expired ? null : 3600,
            host: s.host,
          });
          if (s.expired) {
            await db.query("UPDATE qguard.rules SET expires_at = now() - interval '1 second' WHERE source = $1", [`list:s${i}`]);
          } else if (s.host === null || s.host === 'test-host') {
            live.push({ net: n, action: s.action });
          }
        }
        for (let b = 0; b < 256; b += 7) {
          for (const ip of [
            { family: 4 as const, addr: 0xc6336400n + BigInt(b) * 8n + 3n, prefix: 32 },
            net(`2001:db8:${b.toString(16)}::5`),
          ]) {
            const fromSql = decide(ip, await rulesContaining(db, ip, 'test-host')).decision;
            const fromAll = decide(ip, live).decision;
            if (fromSql !== fromAll) throw new Error(`${formatNet(ip)}: sql=${fromSql} all=${fromAll}`);
          }
        }
      }),
      { numRuns: kind === 'embedded' ? 8 : 25 },
    );
    await db.query('DELETE FROM qguard.rules');
  });

  it('finds every rule through the index in a table of mixed IPv4 and IPv6 rules', async () => {
    // The set on which SP-GiST inet_ops (PostgreSQL 15) missed every IPv6 row: the index
    // must answer like a sequential scan.
    const fs = await import('node:fs');
    const path = await import('node:path');
    const list = fs
      .readFileSync(path.join(import.meta.dirname, '../fixtures/mixed-family-rules.txt'), 'utf8')
      .split('\n')
      .filter(Boolean);
    expect(list.filter((c) => c.includes(':')).length).toBeGreaterThan(0);
    await db.query(
      "INSERT INTO qguard.rules (network, action, source) SELECT c::cidr, 'deny', 'list:mixed' FROM unnest($1::text[]) c",
      [list],
    );
    await db.query('ANALYZE qguard.rules');
    await db.query('SET enable_seqscan = off');
    try {
      for (const cidr of list) {
        const found = await rulesContaining(db, net(cidr), 'test-host');
        expect(found.map((r) => r.cidr), cidr).toContain(cidr);
      }
    } finally {
      await db.query('SET enable_seqscan = on');
      await db.query("DELETE FROM qguard.rules WHERE source = 'list:mixed'");
    }
  });

  it('keeps one network per source: removing one list leaves the other', async () => {
    const n = net('192.0.2.0/24');
    await upsertRule(db, { net: n, action: 'deny', source: 'list:a', reason: null, who: null, ttlSeconds: null, host: null });
    await upsertRule(db, { net: n, action: 'deny', source: 'list:b', reason: null, who: null, ttlSeconds: null, host: null });
    expect((await listRules(db, { net: n })).map((r) => r.source)).toEqual(['list:a', 'list:b']);
    await deleteRules(db, { net: n, source: 'list:a' });
    expect((await listRules(db, { net: n })).map((r) => r.source)).toEqual(['list:b']);
    await deleteRules(db, { net: n });
    expect(await listRules(db, { net: n })).toEqual([]);
  });

  it('audits every insert, update, delete and expiry; bumps the counter only on change', async () => {
    await db.query("SELECT set_config('qguard.actor', 'tester', false)");
    const n = net('100.64.50.0/24');
    const before = await changeCounter(db);
    const { created } = await upsertRule(db, { net: n, action: 'deny', source: 'manual', reason: 'r1', who: 'w', ttlSeconds: null, host: null });
    expect(created).toBe(true);
    const c1 = await changeCounter(db);
    expect(c1).toBe(before + 1);
    // the same again: nothing changed, no audit row, no bump
    await upsertRule(db, { net: n, action: 'deny', source: 'manual', reason: 'r1', who: 'w', ttlSeconds: null, host: null });
    expect(await changeCounter(db)).toBe(c1);
    await upsertRule(db, { net: n, action: 'trust', source: 'manual', reason: 'r2', who: 'w', ttlSeconds: 1, host: null });
    await new Promise((r) => setTimeout(r, 1100));
    expect(await listRules(db, { net: n })).toEqual([]); // expired: gone for every read at once
    expect((await nextExpiry(db)) !== null).toBe(true);
    expect(await expireRules(db)).toBe(1);
    const audit = await db.query<{ op: string; actor: string; action: string; reason: string | null; old: { action?: string } | null }>(
      'SELECT op, actor, action, reason, old FROM qguard.audit WHERE network = $1 ORDER BY id',
      [formatNet(n)],
    );
    expect(audit.rows.map((r) => r.op)).toEqual(['insert', 'update', 'expire']);
    expect(audit.rows.every((r) => r.actor === 'tester')).toBe(true);
    expect(audit.rows[1].old?.action).toBe('deny');
    expect(audit.rows[1].action).toBe('trust');
    expect(await changeCounter(db)).toBe(c1 + 2);
  });

  it('refuses everything and the IPv4-mapped spelling at the database too', async () => {
    await expect(db.query("INSERT INTO qguard.rules (network, action) VALUES ('0.0.0.0/0', 'deny')")).rejects.toThrow(/rules_not_everything/);
    await expect(db.query("INSERT INTO qguard.rules (network, action) VALUES ('::ffff:1.2.3.4/128', 'deny')")).rejects.toThrow(/rules_no_mapped/);
    await expect(db.query("INSERT INTO qguard.rules (network, action) VALUES ('1.2.3.4', 'block')")).rejects.toThrow();
  });

  describe('allow_login', () => {
    const login = (ip: string, user: string | null, ttl: string) =>
      db.query<{ e: Date }>('SELECT qguard.allow_login($1::inet, $2, $3::interval) AS e', [ip, user, ttl]);

    it('grants relay to one address, for its TTL, audited as the user', async () => {
      await login('203.0.113.77', 'alice', '1 hour');
      const rules = await rulesContaining(db, net('203.0.113.77'), 'test-host');
      expect(rules).toHaveLength(1);
      expect(rules[0]).toMatchObject({ cidr: '203.0.113.77/32', action: 'relay', source: 'login', who: 'alice', host: null });
      const left = rules[0].expiresAt!.getTime() - Date.now();
      expect(left).toBeGreaterThan(3500_000);
      expect(left).toBeLessThanOrEqual(3600_000);
      const a = await db.query<{ actor: string }>("SELECT actor FROM qguard.audit WHERE network = '203.0.113.77/32' ORDER BY id DESC LIMIT 1");
      expect(a.rows[0].actor).toBe('login:alice');
    });

    it('extends, never shortens, and caps the TTL at login_ttl_max', async () => {
      await login('203.0.113.78', 'bob', '2 hours');
      await login('203.0.113.78', 'bob', '1 minute');
      let r = (await rulesContaining(db, net('203.0.113.78'), 'x'))[0];
      expect(r.expiresAt!.getTime() - Date.now()).toBeGreaterThan(7000_000);
      await login('203.0.113.78', 'bob', '365 days');
      r = (await rulesContaining(db, net('203.0.113.78'), 'x'))[0];
      const days = (r.expiresAt!.getTime() - Date.now()) / 86400_000;
      expect(days).toBeGreaterThan(6.99);
      expect(days).toBeLessThanOrEqual(7);
    });

    it('stores ::ffff:a.b.c.d as IPv4 and refuses networks, bad users and bad TTLs', async () => {
      await login('::ffff:203.0.113.79', 'carol', '1 hour');
      expect((await rulesContaining(db, net('203.0.113.79'), 'x'))[0].cidr).toBe('203.0.113.79/32');
      await expect(login('203.0.113.0/24', 'eve', '1 hour')).rejects.toThrow(/single address/);
      await expect(login('203.0.113.80', null, '1 hour')).rejects.toThrow(/user name/);
      await expect(login('203.0.113.80', '  ', '1 hour')).rejects.toThrow(/user name/);
      await expect(login('203.0.113.80', 'eve', '-1 hour')).rejects.toThrow(/ttl/);
      await expect(login('0.0.0.0', 'eve', '1 hour')).rejects.toThrow(/not a client/);
      expect(await rulesContaining(db, net('203.0.113.80'), 'x')).toEqual([]);
    });

    it('lapses after its TTL', async () => {
      await login('203.0.113.81', 'dave', '1 second');
      expect(decide(net('203.0.113.81'), await rulesContaining(db, net('203.0.113.81'), 'x')).decision).toBe('relay');
      await new Promise((r) => setTimeout(r, 1200));
      expect(decide(net('203.0.113.81'), await rulesContaining(db, net('203.0.113.81'), 'x')).decision).toBe('default');
    });
  });
});

describe.skipIf(!(await serverAvailable()))('the qguard_login role (server)', () => {
  let t: TestDb;
  const role = `qguard_t_intranet_${process.pid}`;

  beforeAll(async () => {
    t = await createTestDb({ kind: 'server' });
    const db = await t.open();
    await db.query(`CREATE ROLE ${role} LOGIN IN ROLE qguard_login`);
    await db.close();
  });
  afterAll(async () => {
    const db = await t.open();
    await db.query(`DROP ROLE IF EXISTS ${role}`).catch(() => {});
    await db.close();
    await t.drop();
  });

  it('may execute allow_login and nothing else', async () => {
    const u = new URL(t.url!);
    u.username = role;
    const c = new pg.Client({ connectionString: u.toString() });
    await c.connect();
    try {
      const r = await c.query("SELECT qguard.allow_login('192.0.2.44', 'alice', '1 hour') AS e");
      expect(r.rows[0].e).toBeInstanceOf(Date);
      await expect(c.query("INSERT INTO qguard.rules (network, action) VALUES ('192.0.2.45', 'relay')")).rejects.toThrow(/permission denied/);
      await expect(c.query('SELECT * FROM qguard.rules')).rejects.toThrow(/permission denied/);
      await expect(c.query("UPDATE qguard.settings SET value = '100 years'")).rejects.toThrow(/permission denied/);
      await expect(c.query('SELECT qguard.expire_rules()')).rejects.toThrow(/permission denied/);
      await expect(c.query("SELECT qguard.allow_login('192.0.2.0/24', 'alice', '1 hour')")).rejects.toThrow(/single address/);
    } finally {
      await c.end();
    }
  });
});
