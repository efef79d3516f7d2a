// Benchmark: `qguard ip why` at 1,000,000 rules (issue 2; goal: under 50 ms of query time).
// Fills a fresh database on the local PostgreSQL server with 1,000,000 mixed rules (IPv4 /32
// denies, /24 and /16 denies, relay and trust addresses, IPv6 /64 denies), then times the
// lookup (rulesContaining: the rules by their index, a scan of the list entries) for random addresses in-process, shows
// its plan, and times the whole command as an admin runs it.
//
// Run: npm run build:bench && node dist/bench/ip-why.js   (RULES=N to change the size; KEEP=1 keeps the database)

import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { resolveConfig } from '../lib/config.js';
import { openDb } from '../lib/db/connect.js';
import { lockFile } from '../lib/io/lock.js';
import { migrate } from '../lib/db/migrate.js';
import { rulesContaining } from '../lib/db/rules.js';
import { decide } from '../lib/policy/decide.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ADMIN_URL = process.env.QGUARD_TEST_ADMIN_URL ?? 'postgresql://postgres@127.0.0.1/postgres';
const RULES = Number(process.env.RULES ?? 1_000_000);
const NAME = 'qguard_bench_why';

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];

async function main() {
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${NAME} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${NAME}`);
  await admin.end();
  const u = new URL(ADMIN_URL);
  u.pathname = `/${NAME}`;
  const url = u.toString();
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-bench-'));
  const config = resolveConfig({ flags: {}, env: { QGUARD_DATABASE_URL: url, QGUARD_STATE_DIR: stateDir }, file: null, hostname: 'bench' });
  let db = await openDb(config, 'bench', lockFile);
  await migrate(db);

  // The mix: 93% single-address denies, 5% /24 denies, 0.5% /16 denies, 1% relay, 0.5% trust
  // (some of them inside denied networks), the rest IPv6 /64 denies.
  const n32 = Math.floor(RULES * 0.93);
  const n24 = Math.floor(RULES * 0.05);
  const n16 = Math.floor(RULES * 0.005);
  const nRelay = Math.floor(RULES * 0.01);
  const nTrust = Math.floor(RULES * 0.005);
  const n6 = RULES - n32 - n24 - n16 - nRelay - nTrust;
  let t0 = process.hrtime.bigint();
  await db.exec(`
    INSERT INTO qguard.lists (source) VALUES ('list:bench');
    INSERT INTO qguard.list_entries (list_id, network)
      SELECT (SELECT id FROM qguard.lists WHERE source = 'list:bench'), n FROM (SELECT ('0.0.0.0'::inet + (16777216::bigint + i::bigint * 2503))::cidr AS n FROM generate_series(1, ${n32}) i) s ORDER BY n;
    INSERT INTO qguard.lists (source) VALUES ('list:bench24');
    INSERT INTO qguard.list_entries (list_id, network)
      SELECT (SELECT id FROM qguard.lists WHERE source = 'list:bench24'), n FROM (SELECT set_masklen(('0.0.0.0'::inet + (16777216::bigint + i::bigint * 256 * 37)), 24)::cidr AS n FROM generate_series(1, ${n24}) i) s ORDER BY n;
    INSERT INTO qguard.lists (source) VALUES ('list:bench16');
    INSERT INTO qguard.list_entries (list_id, network)
      SELECT (SELECT id FROM qguard.lists WHERE source = 'list:bench16'), n FROM (SELECT set_masklen(('0.0.0.0'::inet + (16777216::bigint + i::bigint * 65536 * 7)), 16)::cidr AS n FROM generate_series(1, ${n16}) i) s ORDER BY n;
    INSERT INTO qguard.rules (network, action, source, expires_at)
      SELECT ('0.0.0.0'::inet + (16777216::bigint + i::bigint * 9473 + 5))::cidr, 'relay', 'login', now() + interval '1 day' FROM generate_series(1, ${nRelay}) i;
    INSERT INTO qguard.rules (network, action, source)
      SELECT ('0.0.0.0'::inet + (16777216::bigint + i::bigint * 7919 + 3))::cidr, 'trust', 'manual' FROM generate_series(1, ${nTrust}) i;
    INSERT INTO qguard.lists (source) VALUES ('list:bench6');
    INSERT INTO qguard.list_entries (list_id, network)
      SELECT (SELECT id FROM qguard.lists WHERE source = 'list:bench6'), n FROM (SELECT set_masklen(('2001:db8::'::inet + (i::bigint << 20)), 64)::cidr AS n FROM generate_series(1, ${n6}) i) s ORDER BY n;
    ANALYZE qguard.rules, qguard.list_entries;`);
  // As the tables are when an admin asks, not in the minute after a load: vacuumed (hint bits
  // and visibility set; autovacuum does it soon after an import). NOVACUUM=1 measures at once.
  if (!process.env.NOVACUUM) {
    await db.exec('VACUUM qguard.rules, qguard.list_entries');
    await db.exec('CHECKPOINT'); // the load's dirty pages written now, not during the lookups
  }
  // A new session, as every command opens: in the session that ran the migration and the load,
  // PostgreSQL's parallel workers took 150 ms more to start for every lookup (measured; likely
  // the catalog cache file the migration's DDL invalidated, which a new session writes again).
  await db.close();
  db = await openDb(config, 'bench', lockFile);
  const count = (await db.query<{ n: number }>('SELECT count(*) AS n FROM qguard.live_rules')).rows[0].n;
  console.log(`filled ${count} rules in ${(ms(t0) / 1000).toFixed(1)} s`);

  // Random addresses across the filled space: most match one to three rules, some none.
  const ips: string[] = [];
  for (let i = 0; i < 500; i++) {
    const v = 16777216 + Math.floor(Math.random() * 2503 * n32);
    ips.push(`${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`);
  }
  for (let i = 1; i <= 20; i++) {
    const v = 16777216 + i * 2503; // exact /32 hits
    ips.push(`${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`);
  }
  const times: number[] = [];
  const decisions: Record<string, number> = {};
  for (const ip of ips) {
    const parsed = (await import('../lib/net/address.js')).parseIp(ip);
    if (!parsed.ok) throw new Error(parsed.error);
    t0 = process.hrtime.bigint();
    const rules = await rulesContaining(db, parsed.net, 'bench');
    times.push(ms(t0));
    const d = decide(parsed.net, rules).decision;
    decisions[d] = (decisions[d] ?? 0) + 1;
  }
  const plan = await db.query<{ 'QUERY PLAN': string }>(
    `EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM qguard.live_rules
      WHERE network = ANY(qguard.covering($1::inet)) AND network >>= $1::inet AND (host IS NULL OR host = 'bench') ORDER BY id`,
    [ips[0]],
  );
  await db.close();

  console.log('candidate query plan:');
  for (const row of plan.rows) console.log(`  ${row['QUERY PLAN']}`);
  console.log(`decisions of the probes: ${JSON.stringify(decisions)}`);
  console.log(
    `ip why query time over ${times.length} addresses at ${count} rules: median ${pct(times, 50).toFixed(2)} ms, p95 ${pct(times, 95).toFixed(2)} ms, max ${Math.max(...times).toFixed(2)} ms (goal < 50 ms)`,
  );

  // The whole command, as an admin types it (node start-up, connect, schema check, query).
  const cli: number[] = [];
  for (let i = 0; i < 7; i++) {
    t0 = process.hrtime.bigint();
    execFileSync(process.execPath, [path.join(ROOT, 'dist/bin/qguard.js'), 'ip', 'why', ips[i], '--json'], {
      env: { ...process.env, QGUARD_DATABASE_URL: url, QGUARD_STATE_DIR: stateDir, QGUARD_CONFIG: '/dev/null' },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    cli.push(ms(t0));
  }
  console.log(`qguard ip why --json, whole command: median ${pct(cli, 50).toFixed(0)} ms (node start-up included)`);

  const a2 = new pg.Client({ connectionString: ADMIN_URL });
  await a2.connect();
  if (!process.env.KEEP) await a2.query(`DROP DATABASE IF EXISTS ${NAME} WITH (FORCE)`);
  await a2.end();
  fs.rmSync(stateDir, { recursive: true, force: true });
}

await main();
