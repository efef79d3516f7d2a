// `qguard status [--json] [--all]`: is qguard doing its job? Per job and mail server the last
// success and failure, the rules by action and source, the queue, the quarantine, and a
// verdict with monitoring exit codes (0 OK, 1 WARNING, 2 CRITICAL), usable as a Nagios/Icinga
// check. A database that cannot be reached is itself CRITICAL.

import type { RunContext } from '../context.js';
import { SilentExit, errorText } from '../errors.js';
import { jobStates, queueFigures, ruleCounts } from '../db/jobs.js';
import { type Level, LEVEL_EXIT, ago, assess } from '../policy/health.js';
import { forTerminal } from '../text.js';

export async function status(ctx: RunContext, opts: { json?: boolean; all?: boolean }): Promise<void> {
  const now = new Date();
  let report: Report & { exitCode: number };
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
  if (opts.json) ctx.printJson(report);
  else ctx.print(render(report, now));
  if (report.exitCode !== 0) throw new SilentExit(report.exitCode);
}

type Report = {
  level: Level;
  exitCode?: number;
  hosts: string[];
  problems: { level: string; host: string; job: string; message: string }[];
  jobs: { host: string; job: string; lastRunAt: string; lastOkAt: string | null; lastFailAt: string | null; lastRunOk: boolean; lastError: string | null; lastSummary: unknown; runs: number }[];
  rules: { byAction: Record<string, number>; bySource: { action: string; source: string; count: number }[] } | null;
  queue: { host: string; messages: number; oldestAgeSeconds: number | null; scannedAt: string | null }[];
};

function since(iso: string | null, now: Date): string {
  return iso ? `${ago((now.getTime() - Date.parse(iso)) / 1000)} ago` : 'never';
}

/** The human form: a plugin's first line, then the details. */
function render(r: Report, now: Date): string {
  const headline = r.problems.length ? r.problems.map((p) => p.message).join('; ') : `all jobs on ${r.hosts.join(', ')} are current`;
  const lines = [`QGUARD ${r.level} - ${forTerminal(headline)}`];
  if (r.jobs.length) {
    lines.push('jobs:');
    for (const j of r.jobs) {
      lines.push(
        `  ${forTerminal(j.host)} ${j.job.padEnd(15)} last ok ${since(j.lastOkAt, now)}, last failure ${since(j.lastFailAt, now)}${
          j.lastRunOk ? '' : ' (last run failed)'
        }, ${j.runs} runs`,
      );
    }
  }
  if (r.rules) {
    const part = (action: string) => {
      const src = r.rules!.bySource.filter((s) => s.action === action).map((s) => `${s.source} ${s.count}`);
      return `${action} ${r.rules!.byAction[action]}${src.length ? ` (${src.join(', ')})` : ''}`;
    };
    lines.push(`rules: ${['deny', 'relay', 'trust'].map(part).join('; ')}`);
  }
  for (const q of r.queue) {
    lines.push(
      `queue: ${forTerminal(q.host)} ${q.messages} messages${q.oldestAgeSeconds !== null ? `, oldest ${ago(q.oldestAgeSeconds)}` : ''}, scanned ${since(q.scannedAt, now)}`,
    );
  }
  return `${lines.join('\n')}\n`;
}
