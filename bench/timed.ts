// Shared by the queue benchmarks: one command timed under /usr/bin/time.
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { performance } from 'node:perf_hooks';

export interface Timed {
  ms: number;
  /** user + system CPU seconds: less disturbed than wall time by the other users of the CPUs. */
  cpuS: number;
  rssMb: number;
  stdout: string;
}

/** Run a command under /usr/bin/time: wall milliseconds, CPU seconds (children included), max RSS in MB. */
export function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd?: string): Timed {
  const t0 = performance.now();
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S %M', cmd, ...args], { env, cwd, encoding: 'utf8', maxBuffer: 256 << 20 });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  const [user, sys, rss] = lines[lines.length - 1].split(' ').map(Number);
  return { ms, cpuS: user + sys, rssMb: rss / 1024, stdout: r.stdout };
}

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ADMIN_URL = process.env.QGUARD_TEST_ADMIN_URL ?? 'postgresql://postgres@127.0.0.1/postgres';

/** An executable of ours, as built. */
export const bin = (name: string) => path.join(ROOT, 'dist/bin', `${name}.js`);

/**
 * A bench's own database NAME on the local server, and the environment its qguard commands run
 * with (host `bench`, state under `work`, no config file, plus `extra`). `fresh()` drops,
 * creates and migrates it; `close()` drops it and ends the admin connection.
 */
export async function benchDatabase(name: string, work: string, extra: Record<string, string>) {
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  const u = new URL(ADMIN_URL);
  u.pathname = `/${name}`;
  const url = u.toString();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    QGUARD_DATABASE_URL: url,
    QGUARD_STATE_DIR: path.join(work, 'state'),
    QGUARD_CONFIG: '/dev/null',
    QGUARD_HOST: 'bench',
    ...extra,
  };
  return {
    url,
    env,
    async fresh(): Promise<void> {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.query(`CREATE DATABASE ${name}`);
      execFileSync(process.execPath, [bin('qguard'), 'db', 'migrate'], { env });
    },
    async close(): Promise<void> {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
      await admin.end();
    },
  };
}
