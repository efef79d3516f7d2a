// Benchmark of sync-rules (issue 3), each figure beside its floor measured in the same run:
//   1. full rebuild at 1,000,000 deny /32 + 50,000 mixed CIDRs (all three actions, /8-/31,
//      nested): the whole `sync-rules` command, versus the floor `psql COPY (SELECT ...) TO
//      STDOUT` of the same rows plus `tcprules` on the same text (goal: at most 2x the floor);
//   2. the unchanged run at that size versus the unchanged run at 10 rules (goal: the same cost,
//      at most 0.3 s), with node's own start-up and `sync-rules --version` as the floor.
// The machine may be shared: figures are medians of several runs; compare them with the floor
// printed next to them, not with another machine's.
//
// Run: npm run build:bench && node dist/bench/sync-rules.js   (RULES=N, MIXED=N to resize; KEEP=1 keeps
// the databases and files, and prints their settings)

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

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ADMIN_URL = process.env.QGUARD_TEST_ADMIN_URL ?? 'postgresql://postgres@127.0.0.1/postgres';
const RULES = Number(process.env.RULES ?? 1_000_000);
const MIXED = Number(process.env.MIXED ?? 50_000);

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function timed(file: string, args: string[], env: Record<string, string>, input?: Buffer): number {
  const t0 = process.hrtime.bigint();
  execFileSync(file, args, { env: { ...process.env, ...env }, input, stdio: [input ? 'pipe' : 'ignore', 'ignore', 'inherit'], maxBuffer: 1 << 30 });
  return ms(t0);
}

/** The command's max RSS in MB (one more run under /usr/bin/time, not timed). */
function maxRssMb(file: string, args: string[], env: Record<string, string>): number {
  const out = path.join(os.tmpdir(), `qguard-bench-rss-${process.pid}`);
  execFileSync('/usr/bin/time', ['-f', '%M', '-o', out, file, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
  const kb = Number(fs.readFileSync(out, 'utf8').trim().split('\n').pop());
  fs.rmSync(out, { force: true });
  return kb / 1024;
}

async function freshDb(name: string): Promise<string> {
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const u = new URL(ADMIN_URL);
  u.pathname = `/${name}`;
  return u.toString();
}

async function dropDb(name: string): Promise<void> {
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.end();
}

interface Setup {
  name: string;
  url: string;
  dir: string;
  env: Record<string, string>;
}

async function setup(name: string, fill: string): Promise<Setup> {
  const url = await freshDb(name);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `qguard-bench-${name}-`));
  const env = {
    QGUARD_DATABASE_URL: url,
    QGUARD_STATE_DIR: path.join(dir, 'state'),
    QGUARD_CONFIG: '/dev/null',
    QGUARD_HOST: 'bench',
    QGUARD_RULES: path.join(dir, 'tcp.smtp'),
    QGUARD_RULES_CDB: path.join(dir, 'tcp.smtp.cdb'),
    QGUARD_RULES_STATIC: path.join(dir, 'tcp.smtp.static'),
  };
  const config = resolveConfig({ flags: {}, env, file: null, hostname: 'bench' });
  const db = await openDb(config, 'bench', lockFile);
  await migrate(db);
  const t0 = process.hrtime.bigint();
  await db.exec(fill);
  const n = (await db.query<{ n: number }>('SELECT count(*) AS n FROM qguard.live_rules')).rows[0].n;
  await db.close();
  console.log(`${name}: ${n} rules filled in ${(ms(t0) / 1000).toFixed(1)} s`);
  return { name, url, dir, env };
}

async function main() {
  const node = process.execPath;
  const bin = path.join(ROOT, 'dist/bin/sync-rules.js');

  // 1,000,000 distinct /32 denies spread over the space (an odd multiplier is a bijection mod 2^32),
  // plus mixed CIDRs /8-/31 of every action, many of them nested in or over the /32s.
  const big = await setup(
    'qguard_bench_sync',
    `INSERT INTO qguard.lists (source) VALUES ('list:bench');
       INSERT INTO qguard.list_entries (list_id, network)
       SELECT (SELECT id FROM qguard.lists WHERE source = 'list:bench'), n FROM (SELECT DISTINCT ('0.0.0.0'::inet + ((i::bigint * 2654435761) % 4294967296))::cidr AS n
         FROM generate_series(1, ${RULES}) i) s ORDER BY n;
     INSERT INTO qguard.rules (network, action, source)
       SELECT DISTINCT ON (n) n, a, 'list:mixed' FROM (
         SELECT set_masklen(('0.0.0.0'::inet + ((i::bigint * 2246822519) % 4294967296)), 8 + (i * 7) % 24)::cidr AS n,
                (ARRAY['relay', 'trust', 'deny', 'deny'])[1 + i % 4] AS a
           FROM generate_series(1, ${MIXED}) i) q
       ORDER BY n;
     ANALYZE qguard.rules, qguard.list_entries;`,
  );
  const small = await setup(
    'qguard_bench_sync10',
    `INSERT INTO qguard.rules (network, action) SELECT ('198.51.100.0'::inet + i)::cidr, (ARRAY['relay', 'trust', 'deny'])[1 + i % 3] FROM generate_series(1, 10) i;`,
  );

  // ---- 1. full rebuild vs the floor
  const full: number[] = [];
  for (let i = 0; i < 3; i++) {
    fs.rmSync(big.env.QGUARD_STATE_DIR, { recursive: true, force: true });
    fs.rmSync(big.env.QGUARD_RULES, { force: true });
    fs.rmSync(big.env.QGUARD_RULES_CDB, { force: true });
    full.push(timed(node, [bin], big.env));
  }
  fs.rmSync(big.env.QGUARD_STATE_DIR, { recursive: true, force: true });
  fs.rmSync(big.env.QGUARD_RULES, { force: true });
  fs.rmSync(big.env.QGUARD_RULES_CDB, { force: true });
  const fullRss = maxRssMb(node, [bin], big.env);
  const text = fs.readFileSync(big.env.QGUARD_RULES);
  const keys = text.toString('latin1').split('\n').filter((l) => l && !l.startsWith('#')).length;
  // The rules and the lists' entries straight from their tables (not through live_rules' join
  // with qguard.lists, which sync-rules does not pay either).
  const copySql = `COPY (SELECT network, action FROM qguard.rules
                          WHERE family(network) = 4 AND (host IS NULL OR host = 'bench') AND (expires_at IS NULL OR expires_at > now())
                         UNION ALL
                         SELECT network, 'deny' FROM qguard.list_entries
                          WHERE family(network) = 4 AND (expires_at IS NULL OR expires_at > now())) TO STDOUT`;
  const floorCopy: number[] = [];
  const floorRules: number[] = [];
  const floorCdb = path.join(big.dir, 'floor.cdb');
  for (let i = 0; i < 3; i++) {
    floorCopy.push(timed('psql', ['-X', '-q', '-d', big.url, '-c', copySql], {}));
    floorRules.push(timed('tcprules', [floorCdb, `${floorCdb}.tmp`], {}, text));
  }
  const floor = median(floorCopy) + median(floorRules);
  console.log('');
  console.log(`full rebuild at ${RULES} /32 + ${MIXED} mixed CIDRs (${(text.length / 1e6).toFixed(1)} MB text, ${keys} lines):`);
  console.log(`  sync-rules (whole command):        median ${median(full).toFixed(0)} ms  [${full.map((x) => x.toFixed(0)).join(', ')}]`);
  console.log(`  max RSS of a full rebuild:         ${fullRss.toFixed(0)} MB (goal < 300 MB)`);
  console.log(`  floor: psql COPY of the rules      median ${median(floorCopy).toFixed(0)} ms`);
  console.log(`       + tcprules on the same text   median ${median(floorRules).toFixed(0)} ms`);
  console.log(`       = ${floor.toFixed(0)} ms  -> ratio ${(median(full) / floor).toFixed(2)}x (goal <= 2x)`);

  // ---- 2. the unchanged run, 1M vs 10 rules, with the start-up floor
  timed(node, [bin], small.env); // first run of the small one publishes
  const reps = 9;
  const unchangedBig: number[] = [];
  const unchangedSmall: number[] = [];
  const nodeFloor: number[] = [];
  const versionFloor: number[] = [];
  const mtime = fs.statSync(big.env.QGUARD_RULES_CDB).mtimeMs;
  for (let i = 0; i < reps; i++) {
    unchangedBig.push(timed(node, [bin], big.env));
    unchangedSmall.push(timed(node, [bin], small.env));
    nodeFloor.push(timed(node, ['-e', '0'], {}));
    versionFloor.push(timed(node, [bin, '--version'], {}));
  }
  if (fs.statSync(big.env.QGUARD_RULES_CDB).mtimeMs !== mtime) throw new Error('the unchanged run rewrote the cdb');
  console.log('');
  console.log(`unchanged run (median of ${reps}):`);
  console.log(`  at ${RULES + MIXED} rules:  ${median(unchangedBig).toFixed(0)} ms   (goal <= 300 ms)`);
  console.log(`  at 10 rules:          ${median(unchangedSmall).toFixed(0)} ms`);
  console.log(`  floor: node -e 0      ${median(nodeFloor).toFixed(0)} ms;  sync-rules --version ${median(versionFloor).toFixed(0)} ms`);
  console.log(`  load average now: ${os.loadavg().map((x) => x.toFixed(1)).join(' ')} on ${os.cpus().length} CPUs`);

  for (const s of [big, small]) {
    if (process.env.KEEP) {
      console.log(`kept ${s.name}: ${Object.entries(s.env).map(([k, v]) => `${k}=${v}`).join(' ')}`);
      continue;
    }
    await dropDb(s.name);
    fs.rmSync(s.dir, { recursive: true, force: true });
  }
}

await main();
