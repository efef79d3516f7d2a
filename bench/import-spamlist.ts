// Benchmark: import-spamlist on a generated 1,000,000-line list (IPv4 addresses, CIDRs,
// Spamhaus DROP lines, ranges, tcprules lines, some IPv6, comments, blank lines, some junk)
// against the floor measured in the same run: `psql \copy` of the same networks into a plain
// table of one cidr column. Prints both, the ratio, and the importer's max RSS (the list is
// streamed: memory stays bounded, far below the list's size as text).
//
// Run (needs the local PostgreSQL server):
//   npm run build:bench && node dist/bench/import-spamlist.js
// Options: LINES=N (default 1000000), RUNS=N (repeat everything on a fresh database, then print
// the ranges; default 1), KEEP=1 (keep the generated list), QGUARD_TEST_ADMIN_URL (default
// postgresql://postgres@127.0.0.1/postgres).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = fs.existsSync(path.join(ROOT, 'dist/bin')) ? path.join(ROOT, 'dist/bin') : path.join(ROOT, 'bin');
const ADMIN_URL = process.env.QGUARD_TEST_ADMIN_URL ?? 'postgresql://postgres@127.0.0.1/postgres';
const LINES = Number(process.env.LINES ?? 1_000_000);
const RUNS = Number(process.env.RUNS ?? 1);

/** A small deterministic PRNG (mulberry32), so every run imports the same list. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const quad = (n: number) => `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;

/** Write the list and, beside it, the networks it names in plain CIDR form (the floor's input). */
function generate(dir: string): { list: string; list2: string; plain: string; bytes: number } {
  const rnd = prng(42);
  const change = prng(7);
  const list = path.join(dir, 'list.txt');
  const list2 = path.join(dir, 'list2.txt');
  const plain = path.join(dir, 'plain.txt');
  const lf = fs.openSync(list, 'w');
  const l2f = fs.openSync(list2, 'w');
  const pf = fs.openSync(plain, 'w');
  let lbuf: string[] = [];
  let pbuf: string[] = [];
  let l2buf: string[] = [];
  const flush = () => {
    fs.writeSync(lf, lbuf.join(''));
    fs.writeSync(pf, pbuf.join(''));
    // The next day's list: about 1% of the lines replaced by other addresses.
    fs.writeSync(l2f, l2buf.join(''));
    lbuf = [];
    pbuf = [];
    l2buf = [];
  };
  // Public-looking space only: 1.0.0.0 - 126.255.255.255 and 128.0.0.0 - 223.255.255.255.
  const addr = () => {
    const first = 1 + Math.floor(rnd() * 222);
    const a = first === 127 ? 128 : first;
    return ((a << 24) >>> 0) + Math.floor(rnd() * 16777216);
  };
  lbuf.push('# generated spam list for bench/import-spamlist.ts\r\n; Spamhaus-style header\n');
  for (let i = 0; i < LINES - 1; i++) {
    const r = rnd();
    if (r < 0.8) {
      const a = addr();
      lbuf.push(`${quad(a)}\n`);
      pbuf.push(`${quad(a)}/32\n`);
    } else if (r < 0.88) {
      const p = 20 + Math.floor(rnd() * 10);
      const a = addr() & ~(2 ** (32 - p) - 1);
      const n = `${quad(a >>> 0)}/${p}`;
      lbuf.push(`${n}\n`);
      pbuf.push(`${n}\n`);
    } else if (r < 0.92) {
      const a = addr() & ~255;
      const n = `${quad(a >>> 0)}/24`;
      lbuf.push(`${n} ; SBL${Math.floor(rnd() * 1e6)}\r\n`);
      pbuf.push(`${n}\n`);
    } else if (r < 0.93) {
      const a = addr() & ~255;
      lbuf.push(`${quad(a >>> 0)}-${quad((a | 15) >>> 0)}\n`);
      pbuf.push(`${quad(a >>> 0)}/28\n`);
    } else if (r < 0.94) {
      const a = addr() & ~255;
      lbuf.push(`${quad(a >>> 0).replace(/0$/, '')}:deny\n`);
      pbuf.push(`${quad(a >>> 0)}/24\n`);
    } else if (r < 0.95) {
      const h = Math.floor(rnd() * 65536).toString(16);
      lbuf.push(`2001:db8:${h}::/48\n`);
      pbuf.push(`2001:db8:${h}::/48\n`);
    } else if (r < 0.98) {
      lbuf.push(`# comment ${i}\n`);
    } else if (r < 0.995) {
      lbuf.push('\n');
    } else {
      lbuf.push(rnd() < 0.5 ? `0${quad(addr()).slice(1)}x\n` : `junk line ${i}\n`);
    }
    const line = lbuf[lbuf.length - 1];
    l2buf.push(change() < 0.01 ? `${quad(((1 + Math.floor(change() * 126)) << 24) + Math.floor(change() * 16777216))}\n` : line);
    if (lbuf.length >= 10_000) flush();
  }
  flush();
  fs.closeSync(lf);
  fs.closeSync(l2f);
  fs.closeSync(pf);
  return { list, list2, plain, bytes: fs.statSync(list).size };
}

/** Run a command under /usr/bin/time: wall seconds, max RSS in MB, its output. */
function timed(cmd: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}) {
  const t0 = process.hrtime.bigint();
  const stdin = opts.input ? fs.openSync(opts.input, 'r') : 'ignore';
  const r = spawnSync('/usr/bin/time', ['-f', '%M', cmd, ...args], {
    stdio: [stdin, 'pipe', 'pipe'],
    env: opts.env ?? process.env,
    maxBuffer: 256 * 1024 * 1024,
    encoding: 'utf8',
  });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (typeof stdin === 'number') fs.closeSync(stdin);
  const lines = r.stderr.trim().split('\n');
  const rssMb = Number(lines[lines.length - 1]) / 1024;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return { seconds, rssMb, stdout: r.stdout, stderr: lines.slice(0, -1).join('\n') };
}

interface Figure {
  label: string;
  seconds: number;
  floor: number;
  rssMb: number;
}

/** One run of every case on a fresh database; the floor measured again before each case. */
function runOnce(g: ReturnType<typeof generate>, dir: string, round: number): Figure[] {
  const dbName = `qguard_bench_${process.pid}_${round}`;
  const u = new URL(ADMIN_URL);
  u.pathname = `/${dbName}`;
  const url = u.toString();
  const psql = (db: string, sql: string) => execFileSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', db, '-c', sql], { encoding: 'utf8' });
  const figures: Figure[] = [];
  try {
    psql(ADMIN_URL, `CREATE DATABASE ${dbName}`);
    const env = { ...process.env, QGUARD_DATABASE_URL: url, QGUARD_STATE_DIR: dir, QGUARD_CONFIG: '/dev/null' };
    execFileSync(process.execPath, [path.join(BIN, 'qguard.js'), 'db', 'migrate'], { env });

    // The floor: psql \copy of the same networks into a plain table. Measured again before
    // each of our runs, since other work on the machine comes and goes.
    let n = 0;
    const floor = () => {
      const table = `plain_${n++}`;
      psql(url, `CREATE TABLE ${table} (network cidr NOT NULL)`);
      const f = timed('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', url, '-c', `\\copy ${table} (network) FROM '${g.plain}'`]);
      psql(url, `DROP TABLE ${table}`);
      return f;
    };
    const imp = (label: string, input: string, args: string[]) => {
      const f = floor();
      const r = timed(process.execPath, [path.join(BIN, 'import-spamlist.js'), '--source', 'bench', '--json', ...args], { input, env });
      const s = JSON.parse(r.stdout) as Record<string, number>;
      console.log(
        `${label.padEnd(40)} ${r.seconds.toFixed(2).padStart(6)} s  floor ${f.seconds.toFixed(2)} s = ${(r.seconds / f.seconds).toFixed(1).padStart(5)}x  max RSS ${r.rssMb.toFixed(0)} MB` +
          `  (added ${s.added}, removed ${s.removed}, unchanged ${s.unchanged}, refreshed ${s.refreshed})`,
      );
      figures.push({ label, seconds: r.seconds, floor: f.seconds, rssMb: r.rssMb });
      return s;
    };
    const first = imp('first import (all new)', g.list, []);
    console.log(
      `  (${first.read} lines: valid ${first.valid}, invalid ${first.invalid}, comments ${first.comments}, duplicate ${first.duplicate}, aggregated ${first.aggregated}, networks ${first.networks})`,
    );
    imp('same list again, right after', g.list, []);
    psql(url, 'VACUUM ANALYZE qguard.rules');
    imp('same list again, after VACUUM', g.list, []);
    imp('next day: 1% changed, --replace', g.list2, ['--replace']);
    imp('--replace --dry-run', g.list, ['--replace', '--dry-run']);
    imp('--replace --for 2d (rewrites all)', g.list, ['--replace', '--for', '2d']);
    imp('--replace --for 2d, next run', g.list, ['--replace', '--for', '2d']);
  } finally {
    try {
      psql(ADMIN_URL, `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    } catch {
      // already gone
    }
  }
  return figures;
}

function main(): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-bench-'));
  try {
    const g = generate(dir);
    console.log(`list: ${LINES} lines, ${(g.bytes / 1e6).toFixed(1)} MB (${dir})`);
    const all: Figure[] = [];
    for (let round = 1; round <= RUNS; round++) {
      console.log(`run ${round} of ${RUNS}`);
      all.push(...runOnce(g, dir, round));
    }
    if (RUNS > 1) {
      console.log('ranges over the runs (ours, the floor of the same moment, the ratio):');
      const range = (xs: number[], d: number) => `${Math.min(...xs).toFixed(d)}-${Math.max(...xs).toFixed(d)}`;
      for (const label of [...new Set(all.map((f) => f.label))]) {
        const fs_ = all.filter((f) => f.label === label);
        console.log(
          `  ${label.padEnd(40)} ${range(fs_.map((f) => f.seconds), 2).padStart(12)} s  floor ${range(fs_.map((f) => f.floor), 2)} s  ${range(fs_.map((f) => f.seconds / f.floor), 1)}x  max RSS ${Math.max(...fs_.map((f) => f.rssMb)).toFixed(0)} MB`,
        );
      }
    }
    console.log('(the machine is shared: figures are noisy; compare with the floor of the same moment)');
  } finally {
    if (process.env.KEEP) console.log(`kept ${dir}`);
    else fs.rmSync(dir, { recursive: true, force: true });
  }
}

main();
