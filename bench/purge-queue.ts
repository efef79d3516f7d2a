// Benchmark: purge-queue removing 10,000 messages from a 100,000-message queue (issue 7), with a
// fake qmail-send holding queue/lock/sendmutex (stopped by the configured stop command, as on a
// real server). In one run:
//   floor    the same file work with plain tools on a copy of the 10,000 messages: hard-link
//            each mess file into a directory, unlink every file of each message, one
//            `sync -f` (no database, no quarantine meta, no checks);
//   dry-run  purge-queue --dry-run: selection from the database and a fresh read of each;
//   purge    purge-queue: stop, lock, fresh read, quarantine entries, two syncs per batch of
//            1000, unlink, rows — the whole command, wall time, CPU and max RSS.
// Figures are noisy on a shared machine: compare with the floor measured in the same run.
//
// Run (needs the local PostgreSQL server):
//   npm run build:bench && node dist/bench/purge-queue.js      (COUNT=N PURGE=M to scale; KEEP=1;
//   PROF=DIR writes a CPU profile of the purge)

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { generateQueue } from './gen-queue.js';
import { timed, type Timed } from './timed.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ADMIN_URL = process.env.QGUARD_TEST_ADMIN_URL ?? 'postgresql://postgres@127.0.0.1/postgres';
const COUNT = Number(process.env.COUNT ?? 100_000);
const PURGE = Number(process.env.PURGE ?? 10_000);
const NAME = 'qguard_bench_purge';

function mutexHeld(queue: string): boolean {
  return spawnSync('flock', ['-n', '-E', '75', path.join(queue, 'lock', 'sendmutex'), 'true']).status === 75;
}

async function main(): Promise<void> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-bench-purge-'));
  const queue = path.join(work, 'queue');
  const state = path.join(work, 'state');
  fs.mkdirSync(state);
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${NAME} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${NAME}`);
  const u = new URL(ADMIN_URL);
  u.pathname = `/${NAME}`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    QGUARD_DATABASE_URL: u.toString(),
    QGUARD_STATE_DIR: state,
    QGUARD_CONFIG: '/dev/null',
    QGUARD_HOST: 'bench',
    QGUARD_QUEUE: queue,
    QGUARD_CONTROL: path.join(work, 'control'),
  };
  const bin = (name: string) => path.join(ROOT, 'dist/bin', `${name}.js`);
  try {
    let t0 = performance.now();
    generateQueue(queue, { count: COUNT });
    process.stdout.write(`queue: ${COUNT} messages generated in ${Math.round(performance.now() - t0)} ms\n`);
    execFileSync(process.execPath, [bin('qguard'), 'db', 'migrate'], { env });
    t0 = performance.now();
    execFileSync(process.execPath, [bin('scan-queue'), '--no-deny'], { env, stdio: 'inherit' });
    process.stdout.write(`scan-queue: ${Math.round(performance.now() - t0)} ms\n`);

    // Deny the smallest senders until about PURGE messages (their own and their backscatter) are selected.
    const db = new pg.Client({ connectionString: u.toString() });
    await db.connect();
    const counts = await db.query<{ ip: string; n: number }>(
      `SELECT host(source_ip) AS ip, count(*)::int AS n FROM qguard.messages
        WHERE gone_at IS NULL AND source_ip IS NOT NULL AND state IN ('preprocessed', 'todo') AND kind IN ('network', 'bounce', 'double-bounce')
        GROUP BY source_ip ORDER BY count(*), source_ip`,
    );
    const deny: string[] = [];
    let selected = 0;
    for (const row of counts.rows) {
      if (selected >= PURGE) break;
      if (selected + row.n > PURGE * 1.001 && deny.length > 0) continue;
      deny.push(row.ip);
      selected += row.n;
    }
    await db.query("INSERT INTO qguard.rules (network, action, source, reason) SELECT unnest($1::cidr[]), 'deny', 'bench', 'bench'", [deny]);
    await db.end();
    process.stdout.write(`rules: ${deny.length} addresses denied, ${selected} messages to purge\n`);

    // Dry run (selection + fresh reads), and the ids it lists for the floor.
    const dry = timed(process.execPath, [bin('purge-queue'), '--dry-run', '--json'], env);
    const plan = JSON.parse(dry.stdout) as { selected: number; messages: { id: string }[]; guarded: object; skippedWhy: object };
    process.stdout.write(`dry run: ${plan.selected} selected, ${plan.messages.length} to remove; guarded ${JSON.stringify(plan.guarded)}, skipped ${JSON.stringify(plan.skippedWhy)}\n`);
    const ids = plan.messages.map((m) => m.id);

    // Floor: the same files, copied into a scratch queue of the same layout.
    const scratch = path.join(work, 'scratch');
    const files: string[] = [];
    for (const id of ids) {
      const s = String(Number(id) % 23);
      for (const rel of [`mess/${s}/${id}`, `info/${s}/${id}`, `local/${s}/${id}`, `remote/${s}/${id}`, `todo/${id}`, `intd/${id}`, `bounce/${id}`]) {
        if (fs.existsSync(path.join(queue, rel))) files.push(rel);
      }
    }
    fs.mkdirSync(scratch);
    execFileSync('sh', ['-c', 'cd "$1" && xargs -0 cp --parents -t "$2"', 'sh', queue, scratch], { input: `${files.join('\0')}\0` });
    fs.mkdirSync(path.join(scratch, 'linked'));
    fs.writeFileSync(path.join(work, 'mess.list'), `${files.filter((f) => f.startsWith('mess/')).join('\0')}\0`);
    fs.writeFileSync(path.join(work, 'all.list'), `${files.join('\0')}\0`);
    execFileSync('sync');
    const floor = timed(
      'sh',
      ['-c', `xargs -0 -a "$1" cp --backup=numbered --link -t linked && xargs -0 -a "$2" rm -f && sync -f .`, 'sh', path.join(work, 'mess.list'), path.join(work, 'all.list')],
      env,
      scratch,
    );

    // The purge, qmail-send "running".
    const pidFile = path.join(work, 'fake.pid');
    const stop = path.join(work, 'qmail-stop');
    fs.writeFileSync(stop, `#!/bin/sh\nkill -TERM -$(cat '${pidFile}')\n`, { mode: 0o755 });
    const fake = spawn('flock', ['-o', path.join(queue, 'lock', 'sendmutex'), 'sleep', '3600'], { detached: true, stdio: 'ignore' });
    fake.unref();
    fs.writeFileSync(pidFile, String(fake.pid));
    while (!mutexHeld(queue)) await new Promise((r) => setTimeout(r, 10));
    execFileSync('sync');
    const prof = process.env.PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.PROF] : [];
    const purge = timed(process.execPath, [...prof, bin('purge-queue'), '--json', '--stop', stop, '--start', 'true'], env);
    const s = JSON.parse(purge.stdout) as { selected: number; removed: number; stoppedQmail: boolean; durationMs: number };
    if (s.removed !== plan.messages.length || !s.stoppedQmail) throw new Error(`unexpected summary: ${purge.stdout}`);

    const f = (t: Timed) => `${(t.ms / 1000).toFixed(2)} s wall, ${t.cpuS.toFixed(2)} s CPU, ${Math.round(t.rssMb)} MB RSS`;
    process.stdout.write(
      `\npurge of ${s.removed} of ${COUNT} messages (${files.length} queue files):\n` +
        `  floor   (cp --link + rm + sync -f)  ${f(floor)}\n` +
        `  dry-run (select + fresh reads)      ${f(dry)}\n` +
        `  purge-queue                         ${f(purge)}  (its own measure: ${s.durationMs} ms)\n`,
    );
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${NAME} WITH (FORCE)`).catch(() => {});
    await admin.end();
    if (!process.env.KEEP) fs.rmSync(work, { recursive: true, force: true });
    else process.stdout.write(`kept ${work}\n`);
  }
}

await main();
