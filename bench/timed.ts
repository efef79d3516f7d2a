// Shared by the queue benchmarks: one command timed under /usr/bin/time.
import { spawnSync } from 'node:child_process';
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
