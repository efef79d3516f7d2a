// `qguard status [--json] [--all]`: is qguard doing its job? Per job and mail server the last
// success and failure, the rules by action and source, the queue, the quarantine, and a
// verdict with monitoring exit codes (0 OK, 1 WARNING, 2 CRITICAL), usable as a Nagios/Icinga
// check. A database that cannot be reached is itself CRITICAL.

import type { RunContext } from '../context.js';
import { errorText } from '../errors.js';
import { jobStates, queueFigures, ruleCounts } from '../db/jobs.js';
import { type Level, LEVEL_EXIT, assess } from '../policy/health.js';

/** The report, with the monitoring exit code the CLI ends with (the page shows the level). */
export async function status(ctx: RunContext, opts: { all?: boolean }, now = new Date()): Promise<StatusReport> {
  let report: StatusReport;
  try {
    const db = await ctx.db();
    const jobs = await jobStates(db);
    const hosts = opts.all ? [...new Set([ctx.config.host, ...jobs.map((j) => j.host)])].sort() : [ctx.config.host];
    const verdict = assess(jobs, hosts, now);
    const rules = await ruleCounts(db);
    const queues = (await queueFigures(db)).filter((q) => hosts.includes(q.host));
    report = {
      level: verdict.level,
      exitCode: LEVEL_EXIT[verdict.level],
      hosts,
      problems: verdict.problems,
      jobs: jobs
        .filter((j) => hosts.includes(j.host))
        .map((j) => ({
          host: j.host,
          job: j.job,
          lastRunAt: j.lastRunAt.toISOString(),
          lastRunOk: j.lastRunOk,
          lastOkAt: j.lastOkAt?.toISOString() ?? null,
          lastFailAt: j.lastFailAt?.toISOString() ?? null,
          lastError: j.lastError,
          lastSummary: j.lastSummary,
          runs: j.runs,
        })),
      rules: {
        byAction: Object.fromEntries(['relay', 'trust', 'deny'].map((a) => [a, rules.filter((r) => r.action === a).reduce((n, r) => n + r.count, 0)])),
        bySource: rules,
      },
      queue: queues.map((q) => ({
        host: q.host,
        messages: q.messages,
        oldestArrival: q.oldest?.toISOString() ?? null,
        oldestAgeSeconds: q.oldest ? Math.round((now.getTime() - q.oldest.getTime()) / 1000) : null,
        scannedAt: q.scannedAt?.toISOString() ?? null,
      })),
    };
  } catch (err) {
    report = {
      level: 'CRITICAL' as Level,
      exitCode: LEVEL_EXIT.CRITICAL,
      hosts: [ctx.config.host],
      problems: [{ level: 'CRITICAL', host: ctx.config.host, job: 'database', message: `database trouble: ${errorText(err)}` }],
      jobs: [],
      rules: null,
      queue: [],
    };
  }
  return report;
}

export type StatusReport = {
  level: Level;
  exitCode: number;
  hosts: string[];
  problems: { level: string; host: string; job: string; message: string }[];
  jobs: { host: string; job: string; lastRunAt: string; lastOkAt: string | null; lastFailAt: string | null; lastRunOk: boolean; lastError: string | null; lastSummary: unknown; runs: number }[];
  rules: { byAction: Record<string, number>; bySource: { action: string; source: string; count: number }[] } | null;
  queue: { host: string; messages: number; oldestAgeSeconds: number | null; scannedAt: string | null }[];
};
