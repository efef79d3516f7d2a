// Benchmark: what contrib/qmail/qguard-queue (the QMAILQUEUE program) adds per message, and how
// fast scan-queue reads its spool (issue 19: "almost nothing per message").
//
//   floor     N runs of a stand-in qmail-queue (/bin/true) as qmail-smtpd runs it (fork, exec,
//             message on 0, envelope on 1), in a dash loop: the cost qmail already pays
//   ours      the same N runs through qguard-queue, which appends its line and execs the stand-in
//   spool     scan-queue reading a spool of LINES lines (default 1,000,000) into a fresh
//             database, beside `wc -l` of the same file
//
// Run (needs the local PostgreSQL server):
//   npm run build:bench && node dist/bench/qmailqueue.js   (N=2000, LINES=1000000, KEEP=1)

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { performance } from 'node:perf_hooks';
import { ROOT, benchDatabase, bin, timed } from './timed.js';
import { QueueBuilder } from '../test/helpers/queue-builder.js';
import { readBootClock } from '../lib/io/accepted-spool.js';
import { formatAcceptedUptimeLine } from '../lib/qmail/accepted-spool.js';

const N = Number(process.env.N ?? 2000);
const LINES = Number(process.env.LINES ?? 1_000_000);
const PROGRAM = path.join(ROOT, 'contrib/qmail/qguard-queue');

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'qg-bench-qq-'));
const msg = path.join(work, 'msg');
const env = path.join(work, 'env');
fs.writeFileSync(msg, 'Subject: x\n\nbody\n');
fs.writeFileSync(env, 'Fa@example.org\0Tb@example.net\0\0');
const spool = path.join(work, 'spool');
fs.mkdirSync(spool);

/** N runs of `prog` in one dash loop, as qmail-smtpd would start them: milliseconds per run. */
function perRun(prog: string): number {
  const t = timed('dash', ['-c', `i=0; while [ $i -lt ${N} ]; do "$0" <${msg} 1<${env} || exit 1; i=$((i+1)); done`, prog], {
    PATH: '/usr/bin:/bin',
    TCPREMOTEIP: '203.0.113.5',
    QGUARD_ACCEPTED_SPOOL: spool,
    QGUARD_QMAIL_QUEUE: '/bin/true',
  });
  return t.ms / N;
}

const rounds: { floor: number; ours: number }[] = [];
for (let r = 0; r < 3; r++) rounds.push({ floor: perRun('/bin/true'), ours: perRun(PROGRAM) });
const med = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const floor = med(rounds.map((r) => r.floor));
const ours = med(rounds.map((r) => r.ours));
const written = fs.readFileSync(path.join(spool, 'current'), 'latin1').split('\n').length - 1;
if (written !== 3 * N) throw new Error(`the spool has ${written} lines, not ${3 * N}`);
console.log(`per message (${N} runs, median of 3): qmail-queue stand-in ${floor.toFixed(3)} ms; through qguard-queue ${ours.toFixed(3)} ms; added ${(ours - floor).toFixed(3)} ms`);

// ---- the spool read by scan-queue
fs.rmSync(path.join(spool, 'current'));
// As the program writes them on Linux, in time order over the last day, from 20,000 addresses
// of which a few send most (a square law: address k sends about as much as 1/sqrt(k)).
const clock = readBootClock()!;
const now = Date.now();
const parts: string[] = [];
let seed = 7;
const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
for (let i = 0; i < LINES; i++) {
  const k = Math.floor(20_000 * rand() ** 2);
  const at = now - 86_400_000 + Math.floor((i / LINES) * 86_400_000);
  parts.push(formatAcceptedUptimeLine(Math.max(0, at - clock.bootMs), clock.bootId, `198.51.${k >> 8}.${k & 255}`));
}
fs.writeFileSync(path.join(spool, 'current'), parts.join(''));
const bytes = fs.statSync(path.join(spool, 'current')).size;
const queue = QueueBuilder.create();
const db = await benchDatabase('qguard_bench_qq', work, { QGUARD_QUEUE: queue.dir, QGUARD_ACCEPTED_SPOOL: spool, QGUARD_COPY_BYTES: '0' });
try {
  await db.fresh();
  const t0 = performance.now();
  const wc = timed('wc', ['-l', path.join(spool, 'current')], {});
  const cmd = timed(process.execPath, [bin('scan-queue'), '--json'], db.env);
  const s = JSON.parse(cmd.stdout) as { acceptedSpool: { accepted: number; ms: number } };
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  const rows = (await c.query<{ n: number }>('SELECT count(*)::int AS n FROM qguard.connections')).rows[0].n;
  await c.end();
  if (s.acceptedSpool.accepted !== LINES) throw new Error(`counted ${s.acceptedSpool.accepted} of ${LINES}`);
  const again = timed(process.execPath, [bin('scan-queue'), '--json'], db.env);
  console.log(
    `spool ${LINES} lines (${(bytes / 1e6).toFixed(1)} MB): wc -l ${wc.ms.toFixed(0)} ms; scan-queue ${cmd.ms.toFixed(0)} ms ` +
      `(spool part ${s.acceptedSpool.ms} ms, ${(bytes / 1e6 / (s.acceptedSpool.ms / 1000)).toFixed(0)} MB/s), max RSS ${cmd.rssMb.toFixed(0)} MB, ${rows} rows; ` +
      `nothing new ${again.ms.toFixed(0)} ms (${((performance.now() - t0) / 1000).toFixed(1)} s in all)`,
  );
} finally {
  await db.close();
  queue.destroy();
  if (!process.env.KEEP) fs.rmSync(work, { recursive: true, force: true });
}
