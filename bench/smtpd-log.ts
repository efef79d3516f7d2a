// Benchmark: reading tcpserver's log (issue 19: ingest a 1 GB log, about 10M lines, at 50% or
// more of `wc -l`'s speed on the same file). Generates a multilog `current` of SIZE_MB (default
// 1024) in the shape `tcpserver -v | multilog t` writes (status, pid, ok or deny, end lines per
// connection; 20,000 client addresses over the last 2 days), then times in one run, warm:
//   floor     `wc -l current`
//   parse     the reader and parser alone, in this process (readLogBytesSince + TcpserverLog +
//             ConnectionCounter: what scan-queue does before the database)
//   command   `scan-queue` with an empty queue and QGUARD_SMTPD_LOG, into a fresh database
//             (counts written: one row per address and ten-minute slot), with its max RSS
//   again     the same command with nothing new in the log
//
// Run (needs the local PostgreSQL server):
//   npm run build:bench && node dist/bench/smtpd-log.js   (SIZE_MB=N, KEEP=1)

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { benchDatabase, bin, timed } from './timed.js';
import { QueueBuilder } from '../test/helpers/queue-builder.js';
import { readLogChunksSince } from '../lib/io/multilog-read.js';
import { ConnectionCounter, TcpserverLog, formatTai64n } from '../lib/qmail/tcpserver-log.js';

const SIZE = Number(process.env.SIZE_MB ?? 1024) * 1024 * 1024;
const NAME = 'qguard_bench_smtpd_log';

/** A log like tcpserver -v | multilog t writes, to `file`, about `size` bytes. Returns lines and connections. */
function generate(file: string, size: number): { lines: number; connections: number } {
  const fd = fs.openSync(file, 'w');
  const end = Date.now() - 60_000;
  const start = end - 2 * 86400_000;
  let bytes = 0;
  let lines = 0;
  let connections = 0;
  let pid = 1000;
  let chunk: string[] = [];
  let chunkLen = 0;
  const estConnections = Math.ceil(size / 330);
  let seed = 42;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  while (bytes < size) {
    const t = start + ((end - start) * connections) / estConnections;
    const at = formatTai64n(Math.floor(Math.min(t, end)));
    // A few busy addresses and a long tail, as on a server under a spam run.
    const n = Math.floor(20_000 * rand() ** 3);
    const ip = `${198 + (n >> 16)}.${51 + ((n >> 8) & 0x7f)}.${n & 0xff}.${(n * 7) & 0xff}`;
    const deny = rand() < 0.1;
    pid = pid >= 4_000_000 ? 1000 : pid + 1;
    const text =
      `${at} tcpserver: status: 3/40\n` +
      `${at} tcpserver: pid ${pid} from ${ip}\n` +
      `${at} tcpserver: ${deny ? 'deny' : 'ok'} ${pid} mx.example.net:192.0.2.1:25 :${ip}::${40000 + (pid % 20000)}\n` +
      `${at} tcpserver: end ${pid} status ${deny ? 256 : 0}\n` +
      `${at} tcpserver: status: 2/40\n`;
    chunk.push(text);
    chunkLen += text.length;
    lines += 5;
    connections++;
    if (chunkLen > 1 << 20) {
      fs.writeSync(fd, chunk.join(''));
      bytes += chunkLen;
      chunk = [];
      chunkLen = 0;
    }
  }
  if (chunk.length) fs.writeSync(fd, chunk.join(''));
  fs.closeSync(fd);
  return { lines, connections };
}

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-bench-log-'));
  const logDir = path.join(work, 'log');
  fs.mkdirSync(logDir);
  const current = path.join(logDir, 'current');
  const emptyQueue = QueueBuilder.create();
  const queue = emptyQueue.dir;
  const bdb = await benchDatabase(NAME, work, { QGUARD_QUEUE: queue, QGUARD_SMTPD_LOG: logDir });
  const env = bdb.env;
  try {
    const t0 = performance.now();
    const g = generate(current, SIZE);
    const mb = fs.statSync(current).size / 1e6;
    execFileSync('sync');
    process.stdout.write(
      `generated ${mb.toFixed(0)} MB, ${g.lines.toLocaleString('en')} lines, ${g.connections.toLocaleString('en')} connections in ${Math.round(performance.now() - t0)} ms; ${os.cpus().length} CPUs, load ${os.loadavg()[0].toFixed(1)}\n`,
    );
    timed('wc', ['-l', current], process.env); // warm the page cache for both sides
    const wc = timed('wc', ['-l', current], process.env);
    process.stdout.write(`floor: wc -l                        ${Math.round(wc.ms).toString().padStart(7)} ms   ${(mb / (wc.ms / 1000)).toFixed(0)} MB/s\n`);

    const p0 = performance.now();
    const parser = new TcpserverLog();
    const counter = new ConnectionCounter();
    let connections = 0;
    const r = readLogChunksSince(logDir, null, (buf, s, e) => {
      connections += parser.chunk(buf, s, e, counter, 0).connections;
      if (counter.size >= 50_000) counter.take();
    });
    const parseMs = performance.now() - p0;
    if (connections !== g.connections || r.bytes !== fs.statSync(current).size) throw new Error(`parse: ${connections} connections of ${g.connections}, ${r.bytes} bytes read`);
    process.stdout.write(
      `ours: read + parse + count          ${Math.round(parseMs).toString().padStart(7)} ms   ${(mb / (parseMs / 1000)).toFixed(0)} MB/s = ${((wc.ms / parseMs) * 100).toFixed(0)}% of wc -l's speed (goal >= 50%)\n`,
    );

    await bdb.fresh();
    // A run reads at most 128 MB: the backlog takes several runs, timed together.
    const cmd = { ms: 0, rssMb: 0 };
    const s = { connections: 0, ms: 0, runs: 0 };
    for (;;) {
      const one = timed(process.execPath, [bin('scan-queue'), '--json', '--no-deny'], env);
      const l = JSON.parse(one.stdout).smtpdLog as { connections: number; ms: number; more: boolean };
      cmd.ms += one.ms;
      cmd.rssMb = Math.max(cmd.rssMb, one.rssMb);
      s.connections += l.connections;
      s.ms += l.ms;
      s.runs++;
      if (!l.more) break;
    }
    if (s.connections !== g.connections) throw new Error(`scan-queue counted ${s.connections} of ${g.connections}`);
    const c2 = new pg.Client({ connectionString: bdb.url });
    await c2.connect();
    const stored = (await c2.query<{ n: string }>('SELECT count(*) AS n FROM qguard.connections')).rows[0].n;
    await c2.end();
    process.stdout.write(
      `ours: scan-queue, whole command     ${Math.round(cmd.ms).toString().padStart(7)} ms   ${(mb / (cmd.ms / 1000)).toFixed(0)} MB/s = ${((wc.ms / cmd.ms) * 100).toFixed(0)}% of wc -l's speed; ` +
        `${s.runs} runs, log part ${s.ms} ms; ${stored} address-slot rows; max RSS ${cmd.rssMb.toFixed(0)} MB\n`,
    );
    const again = timed(process.execPath, [bin('scan-queue'), '--json', '--no-deny'], env);
    process.stdout.write(`ours: scan-queue, nothing new        ${Math.round(again.ms).toString().padStart(7)} ms   (log part ${JSON.parse(again.stdout).smtpdLog.ms} ms)\n`);
  } finally {
    await bdb.close();
    emptyQueue.destroy();
    if (!process.env.KEEP) fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
