// sync-rules' incremental snapshot (lib/db/rules-snapshot.ts): a copy of the rules patched
// with the rules that changed since must be exactly what reading all of them gives. Seeded
// random rounds of changes of every kind — inserts, updates of action, host, network and
// expiry, deletes, expiry by housekeeping, rules that lapse by time alone, domain changes
// (the counter moves, no rule does), several statements in one transaction, a change too
// large to list — each followed by a patched read (through the file format) and a full read,
// compared. On the server and on the embedded database. QGUARD_TEST_SEED=N reproduces a run.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Rng, rng } from '../helpers/rng.js';
import { type TestDb, createTestDb } from '../helpers/db.js';
import type { Db } from '../../lib/db/connect.js';
import { type RulesCopy, readSnapshot } from '../../lib/db/rules-snapshot.js';
import zlib from 'node:zlib';
import { decodeCopy, encodeCopy, jsCrc32 } from '../../lib/io/rules-copy.js';
import { formatNet } from '../../lib/net/address.js';
import type { RulesSnapshot } from '../../lib/qmail/rules-plan.js';
import { SQL_SORT_KEY } from '../../lib/net/tcprules-keys.js';

const SEED = Number(process.env.QGUARD_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));
const HOST = 'test-host';

/** What a snapshot says, in a form to compare: sorted keys, sorted IPv6 rules, counts. */
function view(s: RulesSnapshot) {
  return {
    v4: Array.from(s.v4.subarray(0, s.v4Count)).sort((a, b) => a - b),
    v6: s.v6.map((r) => `${formatNet(r.net)} ${r.action}`).sort(),
    counts: s.counts,
    denyKeys: s.denyKeys,
    changeSeq: s.changeSeq,
  };
}

const quad = (n: number) => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;

/** A random rule as SQL values: network, action, host, expiry. */
function ruleValues(r: Rng, tag: number): string {
  const v6 = r.next() < 0.2;
  const prefix = v6 ? r.pick([48, 64, 128]) : r.int(16, 32);
  const net = v6
    ? `'2001:db8:${r.int(0, 0xffff).toString(16)}::/${prefix}'::cidr`
    : `set_masklen('${quad((45 << 24) + r.int(0, 2 ** 20) * 16)}'::inet, ${prefix})::cidr`;
  const action = r.pick(['relay', 'trust', 'deny', 'deny', 'deny']);
  const host = r.pick(['NULL', 'NULL', `'${HOST}'`, "'other-host'"]);
  const exp = r.pick(['NULL', 'NULL', "now() + interval '1 day'", "now() - interval '1 hour'", "now() + interval '1500 milliseconds'"]);
  return `(${net}, '${action}', 'manual', ${host}, ${exp}, 'prop ${tag}')`;
}

const INSERT = 'INSERT INTO qguard.rules (network, action, source, host, expires_at, reason) VALUES';
const ON_CONFLICT = 'ON CONFLICT ON CONSTRAINT rules_unique DO NOTHING';

/** One random change: a statement (or a transaction of a few). */
async function change(db: Db, r: Rng, tag: number): Promise<string> {
  const ids = (await db.query<{ id: string }>('SELECT id::text FROM qguard.rules ORDER BY random() LIMIT 5')).rows.map((x) => x.id);
  const some = `{${ids.join(',')}}`;
  switch (r.int(0, 9)) {
    case 0:
    case 1: {
      const n = r.int(1, 30);
      await db.query(`${INSERT} ${Array.from({ length: n }, () => ruleValues(r, tag)).join(', ')} ${ON_CONFLICT}`);
      return `insert ${n}`;
    }
    case 2:
      await db.query(`UPDATE qguard.rules SET action = CASE action WHEN 'deny' THEN 'relay' ELSE 'deny' END WHERE id = ANY($1::bigint[])`, [some]);
      return 'update action';
    case 3:
      await db.query(`UPDATE qguard.rules SET host = CASE WHEN host IS NULL THEN 'other-host' WHEN host = 'other-host' THEN '${HOST}' ELSE NULL END WHERE id = ANY($1::bigint[])`, [some]).catch(() => {});
      return 'update host';
    case 4:
      await db
        .query(`UPDATE qguard.rules SET network = set_masklen(network, masklen(network) - 1)::cidr WHERE id = ANY($1::bigint[]) AND masklen(network) > 16 AND family(network) = 4`, [some])
        .catch(() => {}); // may collide with an existing rule: no change
      return 'update network';
    case 5:
      await db.query(`UPDATE qguard.rules SET expires_at = ${r.pick(['NULL', "now() - interval '1 minute'", "now() + interval '2 days'"])} WHERE id = ANY($1::bigint[])`, [some]);
      return 'update expiry';
    case 6:
      await db.query('DELETE FROM qguard.rules WHERE id = ANY($1::bigint[])', [some]);
      return 'delete';
    case 7:
      await db.query('SELECT qguard.expire_rules()');
      return 'expire';
    case 8:
      await db.query(`INSERT INTO qguard.domains (name) VALUES ('d${tag}.example') ON CONFLICT DO NOTHING`);
      return 'domain';
    default:
      await db.transaction(async (tx) => {
        await tx.query(`${INSERT} ${ruleValues(r, tag)}, ${ruleValues(r, tag)} ${ON_CONFLICT}`);
        await tx.query('DELETE FROM qguard.rules WHERE id = ANY($1::bigint[])', [some]);
        await tx.query(`UPDATE qguard.rules SET reason = 'touched ${tag}' WHERE id = ANY($1::bigint[])`, [some]);
      });
      return 'transaction';
  }
}

describe('the copy file', () => {
  it("the JavaScript CRC-32 (for Node before 20.15) equals zlib's, also in parts", () => {
    const r = rng(SEED);
    for (let t = 0; t < 20; t++) {
      const data = Buffer.from(Array.from({ length: r.int(0, 3000) }, () => r.int(0, 255)));
      const cut = r.int(0, data.length);
      expect(jsCrc32(data)).toBe(zlib.crc32(data));
      expect(jsCrc32(data.subarray(cut), jsCrc32(data.subarray(0, cut)))).toBe(zlib.crc32(data));
    }
  });
});

for (const kind of ['server', 'embedded'] as const) {
  describe(`incremental snapshot (${kind})`, () => {
    let tdb: TestDb;
    let db: Db;
    beforeAll(async () => {
      tdb = await createTestDb(kind === 'embedded' ? { kind } : {});
      db = await tdb.open();
    }, 120_000);
    afterAll(async () => {
      await db?.close();
      await tdb?.drop();
    });

    /** A patched read of `copy` (through the file format) and a full read must agree. */
    async function compare(copy: RulesCopy | null) {
      const through = copy ? decodeCopy(encodeCopy(copy)) : null;
      if (copy) expect(through).not.toBeNull();
      const p = await readSnapshot(db, HOST, false, through);
      const full = await readSnapshot(db, HOST, false, null);
      expect(full.patched).toBe(false);
      expect(view(p.snapshot)).toEqual(view(full.snapshot));
      return p;
    }

    it(`random changes, patched = full (seed ${SEED})`, async (t) => {
      // No server here (outside CI, where it must be there): said as a skip, the embedded run covers the rest.
      if (kind === 'server' && tdb.kind !== 'server') t.skip();
      const r = rng(SEED + (kind === 'server' ? 0 : 1));
      await db.query(`${INSERT} ${Array.from({ length: 200 }, () => ruleValues(r, 0)).join(', ')} ${ON_CONFLICT}`);
      let copy = (await compare(null)).copy;
      let patchedRounds = 0;
      for (let round = 1; round <= 40; round++) {
        const did: string[] = [];
        for (let k = r.int(0, 3); k > 0; k--) did.push(await change(db, r, round));
        if (round === 20) {
          // Rules that lapse by time alone, between two reads, with no change recorded.
          await new Promise((res) => setTimeout(res, 1600));
          did.push('time');
        }
        const p = await compare(copy);
        expect(p.patched, `round ${round}: ${did.join(', ')}`).toBe(true);
        patchedRounds++;
        copy = p.copy;
      }
      expect(patchedRounds).toBe(40);
      // A change of more than 10,000 rules is not listed: the next read is a full one, and right.
      await db.query(
        `INSERT INTO qguard.rules (network, action, source) SELECT set_masklen('100.64.0.0'::inet + g * 256, 24)::cidr, 'deny', 'list:big' FROM generate_series(0, 10500) g`,
      );
      const big = await compare(copy);
      expect(big.patched).toBe(false);
      expect(big.snapshot.counts.deny).toBeGreaterThan(10_000);
      // ... after which patching goes on.
      await change(db, r, 99);
      await db.query(`${INSERT} ${ruleValues(r, 100)} ${ON_CONFLICT}`);
      expect((await compare(big.copy)).patched).toBe(true);
    }, 120_000);

    it("the lists' entries are in it as deny rules of every host, read apart from the rules; a change of them is read in full", async (t) => {
      if (kind === 'server' && tdb.kind !== 'server') t.skip();
      // No rule of the rounds above may lapse between two reads of this test or the next.
      await db.query("DELETE FROM qguard.rules WHERE expires_at > now() AND expires_at < now() + interval '1 minute'");
      const before = await compare(null);
      await db.exec(`
        INSERT INTO qguard.lists (source, reason) VALUES ('list:snap', 'snap');
        INSERT INTO qguard.list_entries (list_id, network, expires_at)
          SELECT (SELECT id FROM qguard.lists WHERE source = 'list:snap'), n::cidr, e FROM (VALUES
            ('46.1.0.0/16', NULL), ('46.2.3.4/32', NULL), ('46.3.0.0/24', now() + interval '1 day'),
            ('46.4.0.0/24', now() - interval '1 hour'), ('2001:db8:46::/48', NULL),
            ('2001:db8:47::/48', now() + interval '1 day'), ('2001:db8:48::/48', now() - interval '1 hour')) AS v(n, e)`);
      const after = await compare(before.copy);
      expect(after.patched).toBe(false); // entries changed: no ids to patch with
      const keys = await db.query<{ k: string }>(
        `SELECT (${SQL_SORT_KEY})::text AS k FROM (SELECT network, 'deny'::text AS action FROM qguard.list_entries
          WHERE family(network) = 4 AND (expires_at IS NULL OR expires_at > now())) x`,
      );
      const got = view(after.snapshot);
      const was = view(before.snapshot);
      const added = got.v4.filter((k) => !was.v4.includes(k));
      expect(added.sort((a, b) => a - b)).toEqual(keys.rows.map((r) => Number(r.k)).sort((a, b) => a - b));
      expect(added.length).toBe(3);
      expect(got.v6.filter((r) => !was.v6.includes(r))).toEqual(['2001:db8:46::/48 deny', '2001:db8:47::/48 deny']);
      expect(got.counts.deny).toBe(was.counts.deny + 5);
      // The entries' copy is patched on with a rule change as before.
      await db.query(`${INSERT} ('45.9.9.0/24', 'deny', 'manual', NULL, NULL, 'after entries') ${ON_CONFLICT}`);
      expect((await compare(after.copy)).patched).toBe(true);
      await db.exec("DELETE FROM qguard.list_entries; DELETE FROM qguard.lists WHERE source = 'list:snap'");
    });

    it('reads in full when the copy is of another database, host or time, or older than the changes kept', async (t) => {
      if (kind === 'server' && tdb.kind !== 'server') t.skip();
      await db.query(`${INSERT} ('45.1.2.0/24', 'deny', 'manual', NULL, NULL, 'x') ${ON_CONFLICT}`);
      const base = (await readSnapshot(db, HOST, false, null)).copy;
      await db.query(`${INSERT} ('45.1.3.0/24', 'deny', 'manual', NULL, NULL, 'y') ${ON_CONFLICT}`);
      expect((await compare(base)).patched).toBe(true);
      expect((await compare({ ...base, instance: '00000000-0000-0000-0000-000000000000' })).patched).toBe(false);
      expect((await compare({ ...base, host: 'other-host' })).patched).toBe(false);
      expect((await compare({ ...base, fullAt: base.fullAt - 3600_001 })).patched).toBe(false);
      expect((await compare({ ...base, changeSeq: base.changeSeq + 1000 })).patched).toBe(false);
      // Changes older than a day are forgotten (every 64th change looks): a copy from before is read again.
      await db.query(`UPDATE qguard.rule_changes SET at = now() - interval '2 days'`);
      for (let i = 0; i < 64; i++) await db.query(`UPDATE qguard.rules SET reason = 'r${i}' WHERE network = '45.1.2.0/24'`);
      const after = Number((await db.query<{ a: string }>('SELECT changes_after::text AS a FROM qguard.state')).rows[0].a);
      expect(after).toBeGreaterThan(base.changeSeq);
      expect((await compare(base)).patched).toBe(false);
      // A broken file is no copy.
      const bytes = encodeCopy(base);
      expect(decodeCopy(bytes)).not.toBeNull();
      expect(decodeCopy(bytes.subarray(0, bytes.length - 8))).toBeNull();
      // A byte that changed (a crash before the data reached the disk): the CRC says so.
      const flipped = Buffer.from(bytes);
      flipped[flipped.length - 12] ^= 1;
      expect(decodeCopy(flipped)).toBeNull();
      expect(decodeCopy(Buffer.from('not a copy'))).toBeNull();
    }, 120_000);
  });
}
