// Benchmark: the review page on a 100,000-message queue (issue 17). In one run:
//   scan-queue cold with copies off (QGUARD_COPY_BYTES=0) and, on a fresh database, with
//   copies on (the default 64 KiB): what keeping readable copies costs the scan;
//   the pages, server-side through fastify.inject (no network, no browser): the queue by IP
//   (first page, by count), the IP page of the address with the most messages, a message
//   page, each the median of 10; then 50 concurrent operators loading the queue page, 10
//   times each: the p99.
//
// Run (needs the local PostgreSQL server):
//   npm run build:bench && node dist/bench/web.js   (COUNT=N, QUEUE=DIR to reuse one)

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { generateQueue } from './gen-queue.js';
import { timed } from './timed.js';
import { resolveConfig } from '../lib/config.js';
import { openDb } from '../lib/db/connect.js';
import { lockFile } from '../lib/io/lock.js';
import { createLogger } from '../lib/log.js';
import { buildWebApp } from '../lib/web/server.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ADMIN_URL = process.env.QGUARD_TEST_ADMIN_URL ?? 'postgresql://postgres@127.0.0.1/postgres';
const COUNT = Number(process.env.COUNT ?? 100_000);
const NAME = 'qguard_bench_web';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil((p / 100) * xs.length) - 1)];

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-bench-web-'));
  const queueDir = process.env.QUEUE ?? path.join(work, 'queue');
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  const url = new URL(ADMIN_URL);
  url.pathname = `/${NAME}`;
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    QGUARD_DATABASE_URL: url.toString(),
    QGUARD_STATE_DIR: path.join(work, 'state'),
    QGUARD_CONFIG: '/dev/null',
    QGUARD_HOST: 'bench',
    QGUARD_QUEUE: queueDir,
  };
  const bin = (name: string) => path.join(ROOT, 'dist/bin', `${name}.js`);
  const fresh = async () => {
    await admin.query(`DROP DATABASE IF EXISTS ${NAME} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${NAME}`);
    execFileSync(process.execPath, [bin('qguard'), 'db', 'migrate'], { env });
  };
  try {
    if (!process.env.QUEUE) {
      generateQueue(queueDir, { count: COUNT });
      execFileSync('sync');
    }
    process.stdout.write(`queue: ${COUNT} messages, ${os.cpus().length} CPUs, load ${os.loadavg()[0].toFixed(1)}\n`);
    const scan = (extra: Record<string, string>) => {
      const r = timed(process.execPath, [bin('scan-queue'), '--json', '--no-deny'], { ...env, ...extra });
      return { ...r, summary: JSON.parse(r.stdout) as { copied: number; phasesMs: Record<string, number> } };
    };
    execFileSync('sh', ['-c', 'find mess -type f -print0 | xargs -0 head -c 4096 >/dev/null'], { cwd: queueDir });
    await fresh();
    await new Promise((r) => setTimeout(r, 2500));
    const off = scan({ QGUARD_COPY_BYTES: '0' });
    await fresh();
    const on = scan({});
    const on2 = scan({});
    const row = (what: string, r: typeof off) =>
      `${what.padEnd(40)} ${String(Math.round(r.ms)).padStart(7)} ms   max RSS ${r.rssMb.toFixed(0)} MB   copied ${r.summary.copied} (copy phase ${r.summary.phasesMs.copy} ms)\n`;
    process.stdout.write(row('scan-queue cold, copies off', off));
    process.stdout.write(row('scan-queue cold, copies on', on));
    process.stdout.write(row('scan-queue next run (rest of the copies)', on2));
    process.stdout.write(`copies on / off, first run: ${(on.ms / off.ms).toFixed(2)}x (goal <= 1.15x)\n`);

    execFileSync(process.execPath, [bin('qguard'), 'web', 'user', 'add', 'bench'], { env, input: 'bench password 1234\n' });
    const config = resolveConfig({ flags: {}, env, file: null, hostname: 'bench' });
    const app = await buildWebApp({
      config,
      log: createLogger('qguard web', { verbose: false, syslog: false }),
      openDb: () => openDb(config, 'qguard web', lockFile),
      interfaceNets: () => [],
      tls: null,
      behindProxy: false,
    });
    await app.ready();
    const loginPage = await app.inject({ method: 'GET', url: '/login' });
    const loginToken = /name="_login" value="([^"]+)"/.exec(loginPage.body)![1];
    const lc = loginPage.cookies.find((c) => c.name === 'qguard_login')!.value;
    const res = await app.inject({
      method: 'POST',
      url: '/login',
      headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: `qguard_login=${lc}` },
      payload: new URLSearchParams({ _login: loginToken, user: 'bench', password: 'bench password 1234', next: '/' }).toString(),
    });
    const cookie = `qguard_session=${res.cookies.find((c) => c.name === 'qguard_session')!.value}`;
    const get = async (u: string) => {
      const t0 = performance.now();
      const r = await app.inject({ method: 'GET', url: u, headers: { cookie } });
      if (r.statusCode !== 200) throw new Error(`${u}: ${r.statusCode}`);
      return performance.now() - t0;
    };
    const c = await openDb(config, 'bench', lockFile);
    const top = (await c.query<{ ip: string; n: string }>(`SELECT host(source_ip) AS ip, count(*) AS n FROM qguard.messages WHERE gone_at IS NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 1`)).rows[0];
    const msg = (await c.query<{ id: string; n: number }>(`SELECT message_id AS id, length(data) AS n FROM qguard.message_copies ORDER BY length(data) DESC LIMIT 1`)).rows[0];
    await c.close();
    const times = async (u: string, pause = 0) => {
      await get(u);
      const xs: number[] = [];
      for (let i = 0; i < 10; i++) {
        if (pause) await new Promise((r) => setTimeout(r, pause));
        xs.push(await get(u));
      }
      return median(xs);
    };
    // Operators share a computed queue table for 3 s (lib/web/server.ts): wait it out, so
    // each sample computes the table.
    process.stdout.write(`queue by IP, first page by count:   ${(await times('/queue', 3100)).toFixed(0)} ms computed (goal <= 300)\n`);
    process.stdout.write(`IP page of ${top.ip} (${top.n} messages): ${(await times(`/ip/${top.ip}`)).toFixed(0)} ms (goal <= 300)\n`);
    process.stdout.write(`message page (a ${msg.n}-byte copy):   ${(await times(`/message/${msg.id}`)).toFixed(0)} ms (goal <= 100)\n`);
    const all: number[] = [];
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: 50 }, async () => {
        for (let i = 0; i < 10; i++) all.push(await get('/queue'));
      }),
    );
    process.stdout.write(
      `50 concurrent operators x 10 queue pages: p50 ${pct(all, 50).toFixed(0)} ms, p99 ${pct(all, 99).toFixed(0)} ms (goal <= 1000), ${(500 / ((performance.now() - t0) / 1000)).toFixed(0)} pages/s\n`,
    );
    await app.close();
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${NAME} WITH (FORCE)`).catch(() => {});
    await admin.end();
    if (!process.env.KEEP) fs.rmSync(work, { recursive: true, force: true });
  }
}

await main();
