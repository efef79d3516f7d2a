// `purge-queue --requests` (cron, every minute): carry out what operators asked for on the
// review page, which runs unprivileged and cannot touch the queue or the quarantine. A purge
// request is a purge of one address or network's queued messages, through the same path as
// `purge-queue --ip NET --policy none` (qmail-send stopped, its lock held, every message
// quarantined first, the same guards: relay/trust/protected mail stays). A restore request
// hands one quarantined message back to qmail-queue. Each request ends done (with a count) or
// failed (with the reason); nothing to do costs one query and prints nothing.

import type { RunContext } from '../context.js';
import { errorText } from '../errors.js';
import { claimRequests, finishRequest } from '../db/web.js';
import { quarantineRestore } from '../ops/restore.js';
import { type PurgeOptions, parsePurgeOptions, purgeWith } from './purge-queue.js';

export async function purgeRequests(ctx: RunContext, opts: PurgeOptions): Promise<void> {
  // The purge's lock: never two purges at once. Not recorded as a daily purge-queue run.
  await ctx.jobLock('purge-queue', { record: false });
  const db = await ctx.db();
  const requests = await claimRequests(db, ctx.config.host);
  const results: { id: number; kind: string; ok: boolean; count: number; error: string | null }[] = [];
  for (const r of requests) {
    let outcome: { ok: boolean; count: number; error: string | null };
    try {
      if (r.kind === 'purge') {
        const plan = parsePurgeOptions({ ip: r.network!, policy: 'none', stopWait: opts.stopWait });
        const summary = await purgeWith(ctx, plan, { json: false });
        outcome = { ok: true, count: summary.removed, error: null };
      } else {
        const [res] = await quarantineRestore(ctx, [String(r.quarantineId)], {});
        outcome = { ok: res.ok, count: res.ok ? 1 : 0, error: res.error };
      }
    } catch (err) {
      outcome = { ok: false, count: 0, error: errorText(err) };
    }
    await finishRequest(db, r.id, outcome);
    const what = r.kind === 'purge' ? `purge ${r.network}` : `restore quarantine ${r.quarantineId}`;
    if (outcome.ok) ctx.log.info(`request ${r.id} by ${r.requestedBy}: ${what}: ${outcome.count} done`);
    else ctx.log.warn(`request ${r.id} by ${r.requestedBy}: ${what} failed: ${outcome.error}`);
    results.push({ id: r.id, kind: r.kind, ...outcome });
  }
  if (opts.json) ctx.printJson({ requests: results });
}
