// Benchmark: what a fleet of mail servers sharing one PostgreSQL costs the database per minute.
// HOSTS simulated mail servers (each its own QGUARD_HOST, state directory and tcp.smtp; all
// scan one generated queue of COUNT messages, read-only) run cron's minute — `scan-queue;
// sync-rules` — against one database of RULES deny rules. Their connections go through a
// counting proxy (statements and bytes each way, from the wire protocol); rows come from
// pg_stat_database. Three minutes are measured:
//   first   every host's first run: its queue recorded, its tcp.smtp built
//   fillingN the next minutes, while the review page's readable copies go in (at most 15% of
//           each scan's time), until a minute writes almost nothing
//   steady  nothing changed anywhere: the cost of every ordinary minute
//   change  one rule added (a login's relay permission): every host rebuilds its files
//
// Run (needs the local PostgreSQL server):
//   npm run build:bench && node dist/bench/fleet.js
// Options: HOSTS=N (8), COUNT=N queued messages (100000), RULES=N (1000000), QUEUE=DIR (use an
// existing queue instead of generating one), QGUARD_TEST_ADMIN_URL.

import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { generateQueue } from './gen-queue.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ADMIN_URL = process.env.QGUARD_TEST_ADMIN_URL ?? 'postgresql://postgres@127.0.0.1/postgres';
const HOSTS = Number(process.env.HOSTS ?? 8);
const COUNT = Number(process.env.COUNT ?? 100_000);
const RULES = Number(process.env.RULES ?? 1_000_000);
const NAME = 'qguard_bench_fleet';

/** What crossed the proxy: frontend messages by kind, and bytes each way. */
interface Wire {
  statements: number; // simple queries (Q) and executes of extended ones (E)
  copies: number; // COPY data messages sent (d)
  toServer: number;
  fromServer: number;
  connections: number;
}
const wire: Wire = { statements: 0, copies: 0, toServer: 0, fromServer: 0, connections: 0 };

/** A TCP proxy to the server that parses the frontend's messages (no TLS: sslmode=disable). */
function startProxy(target: { host: string; port: number }): Promise<number> {
  const server = net.createServer((client) => {
    wire.connections++;
    const upstream = net.connect(target);
    let buf = Buffer.alloc(0);
    let started = false;
    client.on('data', (chunk: Buffer) => {
      wire.toServer += chunk.length;
      upstream.write(chunk);
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        if (!started) {
          if (buf.length < 4) break;
          const len = buf.readInt32BE(0);
          if (buf.length < len) break;
          buf = buf.subarray(len);
          started = true;
          continue;
        }
        if (buf.length < 5) break;
        const len = buf.readInt32BE(1);
        if (buf.length < 1 + len) break;
        const type = String.fromCharCode(buf[0]);
        if (type === 'Q' || type === 'E') wire.statements++;
        else if (type === 'd') wire.copies++;
        buf = buf.subarray(1 + len);
      }
    });
    upstream.on('data', (chunk: Buffer) => {
      wire.fromServer += chunk.length;
      client.write(chunk);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  });
  server.unref();
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
}

interface Rows {
  xact: number;
  returned: number;
  fetched: number;
  inserted: number;
  updated: number;
  deleted: number;
  blksRead: number;
  blksHit: number;
}

async function dbRows(admin: pg.Client): Promise<Rows> {
  await admin.query('SELECT pg_stat_clear_snapshot()');
  const r = await admin.query<Record<string, string>>(
    `SELECT xact_commit + xact_rollback AS xact, tup_returned AS returned, tup_fetched AS fetched, tup_inserted AS inserted,
            tup_updated AS updated, tup_deleted AS deleted, blks_read AS "blksRead", blks_hit AS "blksHit"
       FROM pg_stat_database WHERE datname = $1`,
    [NAME],
  );
  return Object.fromEntries(Object.entries(r.rows[0]).map(([k, v]) => [k, Number(v)])) as unknown as Rows;
}

/** Rows read per table (sequential and by index), to say where a minute's reads go. */
async function tableReads(db: pg.Client): Promise<Map<string, number>> {
  await db.query('SELECT pg_stat_clear_snapshot()');
  const r = await db.query<{ t: string; n: string }>(
    `SELECT relname AS t, coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) AS n FROM pg_stat_user_tables WHERE schemaname = 'qguard'`,
  );
  return new Map(r.rows.map((x) => [x.t, Number(x.n)]));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mb = (b: number) => `${(b / 1048576).toFixed(2)} MB`;

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-bench-fleet-'));
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  let fill: pg.Client | undefined;
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${NAME} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${NAME}`);
    const direct = new URL(ADMIN_URL);
    direct.pathname = `/${NAME}`;
    const port = await startProxy({ host: direct.hostname || '127.0.0.1', port: Number(direct.port || 5432) });
    const viaProxy = new URL(direct.toString());
    viaProxy.hostname = '127.0.0.1';
    viaProxy.port = String(port);
    viaProxy.searchParams.set('sslmode', 'disable');
    const bin = (name: string) => path.join(ROOT, 'dist/bin', `${name}.js`);
    const baseEnv = { ...process.env, QGUARD_CONFIG: '/dev/null', QGUARD_DATABASE_URL: direct.toString() };
    execFileSync(process.execPath, [bin('qguard'), 'db', 'migrate'], { env: baseEnv });

    fill = new pg.Client({ connectionString: direct.toString() });
    fill.on('error', () => undefined);
    await fill.connect();
    await fill.query(`INSERT INTO qguard.lists (source) VALUES ('list:bench');
       INSERT INTO qguard.list_entries (list_id, network)
       SELECT (SELECT id FROM qguard.lists WHERE source = 'list:bench'), n FROM (SELECT DISTINCT ('0.0.0.0'::inet + ((i::bigint * 2654435761) % 4294967296))::cidr AS n
         FROM generate_series(1, ${RULES}) i
        WHERE NOT ('0.0.0.0'::inet + ((i::bigint * 2654435761) % 4294967296)) <<= ANY('{127.0.0.0/8,10.0.0.0/8,192.0.2.0/24}'::inet[])) s ORDER BY n`);
    await fill.query('ANALYZE qguard.rules, qguard.list_entries');
    const rules = Number((await fill.query('SELECT count(*) AS n FROM qguard.live_rules')).rows[0].n);

    const queue = process.env.QUEUE ?? path.join(work, 'queue');
    if (!process.env.QUEUE) {
      generateQueue(queue, { count: COUNT });
      execFileSync('sync');
    }
    const hosts = Array.from({ length: HOSTS }, (_, i) => {
      const dir = path.join(work, `host${i + 1}`);
      fs.mkdirSync(dir, { recursive: true });
      return {
        ...process.env,
        QGUARD_CONFIG: '/dev/null',
        QGUARD_DATABASE_URL: viaProxy.toString(),
        QGUARD_HOST: `mx${i + 1}.bench`,
        QGUARD_STATE_DIR: path.join(dir, 'state'),
        QGUARD_QUEUE: queue,
        QGUARD_RULES: path.join(dir, 'tcp.smtp'),
        QGUARD_RULES_CDB: path.join(dir, 'tcp.smtp.cdb'),
        QGUARD_RULES_STATIC: path.join(dir, 'tcp.smtp.static'),
      };
    });
    process.stdout.write(
      `${HOSTS} hosts, ${rules} rules, a queue of ${COUNT} messages per host; ${os.cpus().length} CPUs, load ${os.loadavg()[0].toFixed(1)}\n\n`,
    );
    // The proxy runs in this process: the commands run asynchronously so that it can serve them.
    const run = promisify(execFile);
    const cronMinute = async () => {
      for (const env of hosts) {
        for (const cmd of [['scan-queue', '--no-deny'], ['sync-rules']]) {
          await run(process.execPath, [bin(cmd[0]), ...cmd.slice(1)], { env, maxBuffer: 1 << 24 }).catch((e: { code?: number; stderr?: string }) => {
            throw new Error(`${cmd.join(' ')} (${env.QGUARD_HOST}): exit ${e.code}: ${e.stderr}`);
          });
        }
      }
    };
    const measure = async (what: string, before: () => Promise<void> | void) => {
      await before();
      await sleep(2500); // scan-queue trusts a directory's signature only once it is 2 s old
      const w0 = { ...wire };
      const r0 = await dbRows(admin);
      const t0reads = await tableReads(fill!);
      const t0 = performance.now();
      await cronMinute();
      const ms = performance.now() - t0;
      await sleep(1200); // backends report their counts as they exit
      const r1 = await dbRows(admin);
      const t1reads = await tableReads(fill!);
      const byTable = [...t1reads]
        .map(([t, n]) => [t, n - (t0reads.get(t) ?? 0)] as const)
        .filter(([, n]) => n > 0)
        .sort((x, y) => y[1] - x[1])
        .map(([t, n]) => `${t} ${Math.round(n / HOSTS).toLocaleString('en')}`)
        .join(', ');
      const d = (k: keyof Wire) => wire[k] - w0[k];
      const rows = (k: keyof Rows) => r1[k] - r0[k];
      const per = (n: number) => Math.round(n / HOSTS).toLocaleString('en');
      process.stdout.write(
        `${what.padEnd(9)} all ${HOSTS} hosts: ${d('statements')} statements, ${d('connections')} connections, ` +
          `${mb(d('toServer'))} to the server, ${mb(d('fromServer'))} back; rows returned ${rows('returned')}, fetched ${rows('fetched')}, ` +
          `inserted ${rows('inserted')}, updated ${rows('updated')}, deleted ${rows('deleted')}; ${Math.round(ms)} ms of commands\n` +
          `        per host: ${per(d('statements'))} statements, ${mb(d('toServer') / HOSTS)} up, ${mb(d('fromServer') / HOSTS)} down, ` +
          `${per(rows('returned') + rows('fetched'))} rows read, ${per(rows('inserted') + rows('updated') + rows('deleted'))} rows written\n` +
          `        rows read per host by table: ${byTable || 'none'}\n`,
      );
      return (rows('inserted') + rows('updated') + rows('deleted')) / HOSTS;
    };
    await measure('first', () => undefined);
    // The review page's readable copies go in over several minutes (each run spends at most
    // 15% of its scan's time on them): the minutes until they are all in, then a settled one.
    for (let i = 2; i <= 12; i++) if ((await measure(`filling${i}`, () => undefined)) < 100) break;
    await measure('steady', () => undefined);
    await measure('change', async () => {
      await fill!.query(`INSERT INTO qguard.rules (network, action, source, expires_at) VALUES ('100.64.9.9/32', 'relay', 'login:bench', now() + interval '1 hour')`);
    });
  } finally {
    await fill?.end().catch(() => undefined);
    await admin.query(`DROP DATABASE IF EXISTS ${NAME} WITH (FORCE)`).catch(() => undefined);
    await admin.end();
    if (!process.env.KEEP) fs.rmSync(work, { recursive: true, force: true });
  }
}

await main();
