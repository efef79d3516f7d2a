// qguard.job_runs (every cron job's runs, written when the run ends) and the other figures
// `qguard status` reports.

import type { Queryable } from './connect.js';

/** The last success and failure of one job on one mail server. */
export interface JobState {
  host: string;
  job: string;
  lastRunAt: Date;
  lastRunOk: boolean;
  lastOkAt: Date | null;
  lastFailAt: Date | null;
  lastError: string | null;
  lastSummary: unknown;
  runs: number;
}

interface JobRow {
  host: string;
  job: string;
  last_run_at: Date;
  last_run_ok: boolean;
  last_ok_at: Date | null;
  last_fail_at: Date | null;
  last_error: string | null;
  last_summary: unknown;
  runs: number;
}

/** Per host and job: the last run, the last success, the last failure and its error. */
export async function jobStates(db: Queryable): Promise<JobState[]> {
  const r = await db.query<JobRow>(`
    SELECT host, job,
           max(finished_at) AS last_run_at,
           (array_agg(ok ORDER BY finished_at DESC))[1] AS last_run_ok,
           max(finished_at) FILTER (WHERE ok) AS last_ok_at,
           max(finished_at) FILTER (WHERE NOT ok) AS last_fail_at,
           (array_agg(error ORDER BY finished_at DESC) FILTER (WHERE NOT ok))[1] AS last_error,
           (array_agg(summary ORDER BY finished_at DESC))[1] AS last_summary,
           count(*) AS runs
      FROM qguard.job_runs
     GROUP BY host, job
     ORDER BY host, job`);
  return r.rows.map((x) => ({
    host: x.host,
    job: x.job,
    lastRunAt: new Date(x.last_run_at),
    lastRunOk: x.last_run_ok,
    lastOkAt: x.last_ok_at ? new Date(x.last_ok_at) : null,
    lastFailAt: x.last_fail_at ? new Date(x.last_fail_at) : null,
    lastError: x.last_error,
    lastSummary: x.last_summary,
    runs: Number(x.runs),
  }));
}

/** Live rule counts by action and source. */
export async function ruleCounts(db: Queryable): Promise<{ action: string; source: string; count: number }[]> {
  const r = await db.query<{ action: string; source: string; n: number }>(
    'SELECT action, source, count(*) AS n FROM qguard.live_rules GROUP BY action, source ORDER BY action, source',
  );
  return r.rows.map((x) => ({ action: x.action, source: x.source, count: Number(x.n) }));
}

/** Per host: messages still queued (as the last scan saw them) and the oldest arrival. */
export async function queueFigures(db: Queryable): Promise<{ host: string; messages: number; oldest: Date | null; scannedAt: Date | null }[]> {
  const r = await db.query<{ host: string; messages: number; oldest: Date | null; scanned_at: Date | null }>(`
    SELECT s.host, coalesce(m.n, 0) AS messages, m.oldest, s.scanned_at
      FROM qguard.queue_scans s
      LEFT JOIN (SELECT host, count(*) AS n, min(arrival) AS oldest
                   FROM qguard.messages WHERE gone_at IS NULL GROUP BY host) m ON m.host = s.host
     ORDER BY s.host`);
  return r.rows.map((x) => ({
    host: x.host,
    messages: Number(x.messages),
    oldest: x.oldest ? new Date(x.oldest) : null,
    scannedAt: x.scanned_at ? new Date(x.scanned_at) : null,
  }));
}

/**
 * A job's summary as kept in its record: long lists cut to their first 20 entries (the
 * every-minute runs must not store a thousand-entry list each time); the --json output is
 * not affected.
 */
export function summaryForRecord(value: unknown): unknown {
  if (Array.isArray(value)) {
    const head = value.slice(0, 20).map(summaryForRecord);
    return value.length > 20 ? [...head, `... ${value.length - 20} more`] : head;
  }
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, summaryForRecord(v)]));
  }
  return value;
}

/** Record one finished run of a job (and forget runs older than 14 days). */
export async function recordJobRun(
  db: Queryable,
  run: { host: string; job: string; startedAt: Date; exitCode: number; summary: unknown; error: string | null },
): Promise<void> {
  // One statement, one round trip: the DELETE does not see the row inserted beside it.
  await db.query(
    `WITH forgotten AS (DELETE FROM qguard.job_runs WHERE finished_at < now() - interval '14 days')
     INSERT INTO qguard.job_runs (host, job, started_at, ok, exit_code, summary, error)
     VALUES ($1, $2, $3, $4, $5, $6, $7)`,
    [
      run.host,
      run.job,
      run.startedAt,
      run.exitCode === 0,
      run.exitCode,
      run.summary === null ? null : JSON.stringify(summaryForRecord(run.summary)),
      run.error,
    ],
  );
}
