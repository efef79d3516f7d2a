// Restoring quarantined messages: each is handed back to qmail-queue (QGUARD_QMAIL_QUEUE)
// with its original envelope — the message file on descriptor 0, the envelope on descriptor
// 1, both opened read-only — so a partner's mail purged by mistake is delivered after all.
// Used by `qguard quarantine restore` and by the review page's restore requests
// (`purge-queue --requests`).

import fs from 'node:fs';
import path from 'node:path';
import type { RunContext } from '../context.js';
import { PermanentError, TemporaryError, UsageError, errorText } from '../errors.js';
import { type QuarantineRow, getRows, setRestoreState } from '../db/quarantine.js';
import { ENTRY_FILES, readEntry } from '../io/quarantine.js';
import { runProgram } from '../io/run-program.js';
import { parseQmailQueueEnvelope, qmailQueueExit } from '../qmail/qmail-queue-envelope.js';
import { shortTime } from '../time.js';

/** Parse quarantine ids (what `quarantine ls` shows in its first column). */
export function parseIds(ids: readonly string[]): number[] {
  return ids.map((id) => {
    if (!/^[1-9]\d{0,15}$/.test(id)) throw new UsageError(`not a quarantine id (the number \`qguard quarantine ls\` shows): ${JSON.stringify(String(id).slice(0, 40))}`);
    return Number(id);
  });
}

export interface RestoreOptions {
  force?: boolean;
}

export interface RestoreResult {
  id: string;
  queueId: string;
  ok: boolean;
  error: string | null;
  permanent: boolean;
}

/** The error a set of restore outcomes exits with (failures logged one by one), or null. */
export function restoreVerdict(ctx: RunContext, results: RestoreResult[]): PermanentError | TemporaryError | null {
  const failed = results.filter((r) => !r.ok);
  if (failed.length === 0) return null;
  if (failed.length === 1 && results.length === 1) {
    const f = failed[0];
    return f.permanent ? new PermanentError(`restore ${f.id}: ${f.error}`) : new TemporaryError(`restore ${f.id}: ${f.error}`);
  }
  for (const f of failed) ctx.log.warn(`restore ${f.id}: ${f.error}`);
  const msg = `${failed.length} of ${results.length} restores failed`;
  return failed.every((f) => f.permanent) ? new PermanentError(msg) : new TemporaryError(msg);
}

/**
 * `qguard quarantine restore ID... [--force]`: hand each message back to qmail-queue with its
 * original envelope, noting the outcome of each. Quiet on success; restoreVerdict gives the
 * exit: 100 when every failure is permanent, 111 otherwise.
 */
export async function quarantineRestore(ctx: RunContext, idTexts: string[], opts: RestoreOptions): Promise<RestoreResult[]> {
  const ids = [...new Set(parseIds(idTexts))];
  const db = await ctx.db();
  const rows = new Map((await getRows(db, ids)).map((r) => [r.id, r]));
  const who = ctx.actor;
  const results: RestoreResult[] = [];
  for (const id of ids) {
    const row = rows.get(id);
    try {
      if (!row) throw new PermanentError(`no quarantine entry ${id}`);
      await restoreOne(ctx, row, who, Boolean(opts.force));
      results.push({ id: String(id), queueId: row.queueId, ok: true, error: null, permanent: false });
      ctx.log.info(`restored quarantine ${id} (was queue id ${row.queueId}) through ${ctx.config.qmailQueue}`);
    } catch (err) {
      results.push({ id: String(id), queueId: row?.queueId ?? '', ok: false, error: errorText(err), permanent: !(err instanceof TemporaryError) });
    }
  }
  return results;
}

async function restoreOne(ctx: RunContext, row: QuarantineRow, who: string, force: boolean): Promise<void> {
  if (row.host !== ctx.config.host) throw new PermanentError(`it was quarantined on ${row.host}: restore it there`);
  if (row.state === 'removing') throw new PermanentError('its purge did not finish: run purge-queue first');
  if (row.state === 'restored' && !force) {
    throw new PermanentError(`already restored ${shortTime(row.restoredAt)} by ${row.restoredBy ?? '?'} (--force queues it again)`);
  }
  if (row.state === 'restoring' && !force) {
    throw new PermanentError('an earlier restore of it was interrupted and may have queued it: check the queue, then use --force');
  }
  let entry: ReturnType<typeof readEntry>;
  try {
    entry = readEntry(row.path);
  } catch (err) {
    throw new PermanentError(`its quarantine files in ${row.path} are unreadable: ${errorText(err)}`);
  }
  const env = parseQmailQueueEnvelope(entry.envelope);
  if (!env.ok) throw new PermanentError(`${path.join(row.path, ENTRY_FILES.envelope)}: ${env.error}`);
  if (env.envelope.recipients.length === 0) throw new PermanentError('it has no pending recipients: nothing to deliver');
  const db = await ctx.db();
  if (!(await setRestoreState(db, row.id, [row.state], 'restoring', who))) {
    throw new TemporaryError('its state changed meanwhile (another restore?): try again');
  }
  let fd0: number | null = null;
  let fd1: number | null = null;
  let exit: number;
  try {
    fd0 = fs.openSync(entry.messPath, 'r');
    fd1 = fs.openSync(path.join(row.path, ENTRY_FILES.envelope), 'r');
    const r = await runProgram(ctx.config.qmailQueue, [], {
      stdinFd: fd0,
      stdoutFd: fd1,
      okExitCodes: Array.from({ length: 256 }, (_, i) => i),
      timeoutMs: 600_000,
    });
    exit = r.exitCode;
  } catch (err) {
    await setRestoreState(db, row.id, ['restoring'], row.state, who);
    if (err instanceof TemporaryError) throw err;
    throw new TemporaryError(errorText(err));
  } finally {
    if (fd0 !== null) fs.closeSync(fd0);
    if (fd1 !== null) fs.closeSync(fd1);
  }
  const outcome = qmailQueueExit(exit);
  if (outcome.outcome === 'ok') {
    await setRestoreState(db, row.id, ['restoring'], 'restored', who);
    return;
  }
  await setRestoreState(db, row.id, ['restoring'], row.state, who);
  const msg = `${ctx.config.qmailQueue} refused it: ${outcome.text}`;
  throw outcome.outcome === 'permanent' ? new PermanentError(msg) : new TemporaryError(msg);
}

