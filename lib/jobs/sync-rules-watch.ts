// sync-rules --watch: a long-running sync-rules that LISTENs for the database's change
// notifications and applies each change within about a second. Each pass is one syncOnce
// (lib/jobs/sync-rules.ts), recorded as a run of its own so `qguard status` sees it working.

import type pg from 'pg';
import type { RunContext } from '../context.js';
import { PermanentError, TemporaryError, UsageError } from '../errors.js';
import { type SyncOptions, syncOnce } from './sync-rules.js';

/**
 * `--watch`: LISTEN for the change counter's notifications and apply within about a second;
 * also wake for the next expiry, and once a minute to notice hand edits and a lost firewall.
 * Holds the job lock while it runs, so cron's runs exit quietly meanwhile. Server only.
 */
export async function watch(ctx: RunContext, opts: SyncOptions): Promise<void> {
  if (opts.json) throw new UsageError('--json cannot be combined with --watch');
  if (opts.dryRun) throw new UsageError('--dry-run cannot be combined with --watch');
  const db = await ctx.db();
  const client = db.pgClient;
  if (!client) {
    throw new PermanentError(
      '--watch needs a PostgreSQL server (LISTEN/NOTIFY); with the embedded database run sync-rules from cron every minute',
    );
  }
  await ctx.jobLock('sync-rules');
  let pending = false;
  let stopping = false;
  let lost: TemporaryError | null = null;
  let wake: (() => void) | null = null;
  const poke = () => {
    pending = true;
    wake?.();
  };
  const onNotify = (m: pg.Notification) => {
    if (m.channel === 'qguard_changed') poke();
  };
  const onEnd = () => {
    lost ??= new TemporaryError(`lost the connection to the database ${db.location}`);
    poke();
  };
  const onSignal = () => {
    stopping = true;
    poke();
  };
  client.on('notification', onNotify);
  client.on('end', onEnd);
  client.on('error', onEnd);
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    await db.query('LISTEN qguard_changed');
    ctx.log.info('watching for changes (LISTEN qguard_changed)');
    while (!stopping) {
      pending = false;
      let next: Date | null = null;
      let retryMs = 0;
      try {
        const r = await syncOnce(ctx, { ...opts, lockHeld: true });
        next = r.nextExpiry;
        if (r.summary.changed) ctx.log.info(`applied change ${r.summary.changeSeq} in ${r.summary.durationMs} ms`);
        // Each pass is a run of its own in the job records: `qguard status` sees --watch working.
        await ctx.jobCheckpoint(0, null);
      } catch (err) {
        if (lost) throw lost;
        if (err instanceof PermanentError) {
          // Refused (a guard, a broken static file): retrying the same input will not help.
          ctx.log.warn(`${err.message} (waiting for the next change)`);
          await ctx.jobCheckpoint(err.exitCode, err.message);
        } else if (err instanceof TemporaryError) {
          ctx.log.warn(`${err.message} (retrying in 10 s)`);
          await ctx.jobCheckpoint(err.exitCode, err.message);
          retryMs = 10_000;
        } else {
          throw err;
        }
      }
      if (lost) throw lost;
      if (stopping) break;
      let ms = 60_000;
      if (next) ms = Math.min(ms, Math.max(0, next.getTime() - Date.now()) + 50);
      if (retryMs) ms = Math.min(ms, retryMs);
      if (!pending) {
        let timer: NodeJS.Timeout | undefined;
        await new Promise<void>((resolve) => {
          wake = resolve;
          timer = setTimeout(resolve, ms);
        });
        wake = null;
        clearTimeout(timer);
      }
      if (lost) throw lost;
      // A burst of changes (an import) usually arrives together: let it finish first.
      if (pending && !stopping) await new Promise((r) => setTimeout(r, 150));
    }
  } finally {
    client.off('notification', onNotify);
    client.off('end', onEnd);
    client.off('error', onEnd);
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
}
