// The verdict of `qguard status`, as a monitoring plugin gives it: OK, WARNING or CRITICAL,
// with the reasons. Pure: job states and the clock in, verdict out.
//
//   - sync-rules is the protection itself: no success for 5 minutes (or never) is CRITICAL;
//   - scan-queue, purge-queue and import-spamlist are checked once they have run on a host:
//     no success within their rhythm (10 minutes, 26 hours, 50 hours) is a WARNING;
//   - the last run of any job failed: WARNING (the next run may mend it).

export type Level = 'OK' | 'WARNING' | 'CRITICAL';

export const LEVEL_EXIT: Record<Level, number> = { OK: 0, WARNING: 1, CRITICAL: 2 };

export interface JobHealthInput {
  host: string;
  job: string;
  lastRunOk: boolean;
  lastOkAt: Date | null;
  lastError: string | null;
}

export interface Problem {
  level: Exclude<Level, 'OK'>;
  host: string;
  job: string;
  message: string;
}

/** Longest time without a success, per job, in seconds, and the level it earns. */
export const JOB_LIMITS: Record<string, { maxAge: number; level: Exclude<Level, 'OK'>; always: boolean }> = {
  'sync-rules': { maxAge: 5 * 60, level: 'CRITICAL', always: true },
  'scan-queue': { maxAge: 10 * 60, level: 'WARNING', always: false },
  'purge-queue': { maxAge: 26 * 3600, level: 'WARNING', always: false },
  'import-spamlist': { maxAge: 50 * 3600, level: 'WARNING', always: false },
};

/** "12m", "3h5m", "2d": how long ago, for people. */
export function ago(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60) ? `${Math.floor((s % 3600) / 60)}m` : ''}`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600) ? `${Math.floor((s % 86400) / 3600)}h` : ''}`;
}

/** Judge the jobs of the given hosts. */
export function assess(jobs: readonly JobHealthInput[], hosts: readonly string[], now: Date): { level: Level; problems: Problem[] } {
  const problems: Problem[] = [];
  for (const host of hosts) {
    for (const [job, limit] of Object.entries(JOB_LIMITS)) {
      const state = jobs.find((j) => j.host === host && j.job === job);
      if (!state) {
        if (limit.always) problems.push({ level: limit.level, host, job, message: `${job} has never run on ${host}` });
        continue;
      }
      const age = state.lastOkAt ? (now.getTime() - state.lastOkAt.getTime()) / 1000 : null;
      const why = state.lastError ? ` (last error: ${state.lastError})` : '';
      if (age === null) {
        problems.push({ level: limit.level, host, job, message: `${job} has never succeeded on ${host}${why}` });
      } else if (age > limit.maxAge) {
        problems.push({ level: limit.level, host, job, message: `${job} has not succeeded on ${host} for ${ago(age)}${why}` });
      } else if (!state.lastRunOk) {
        problems.push({ level: 'WARNING', host, job, message: `the last ${job} run on ${host} failed${why}` });
      }
    }
  }
  const level: Level = problems.some((p) => p.level === 'CRITICAL') ? 'CRITICAL' : problems.length ? 'WARNING' : 'OK';
  return { level, problems };
}
