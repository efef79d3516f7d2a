// `qguard quarantine ls|show|restore|prune`: what purge-queue took out of the queue, and the
// way back. `restore` re-injects a message with its original envelope through qmail-queue
// (QGUARD_QMAIL_QUEUE): the message file on descriptor 0, the envelope on descriptor 1, both
// files opened read-only — so a partner's mail purged by mistake is delivered after all.
// Each returns a view (plain data) for the CLI (lib/cli/render.ts) and the review page.

import fs from 'node:fs';
import path from 'node:path';
import type { RunContext } from '../context.js';
import { PermanentError, TemporaryError, UsageError, errorText } from '../errors.js';
import { type QuarantineRow, getRows, listQuarantine, setRestoreState } from '../db/quarantine.js';
import { ENTRY_FILES, readEntry } from '../io/quarantine.js';
import { readHead } from '../io/queue-walk.js';
import { runProgram } from '../io/run-program.js';
import { parseQmailQueueEnvelope, qmailQueueExit } from '../qmail/qmail-queue-envelope.js';
import { type MessageExcerpt, messageExcerpt } from '../qmail/message-excerpt.js';
import { pruneQuarantine } from '../ops/quarantine.js';
import { iso, shortTime } from '../time.js';
import { durationArgument, netFilter, positiveInt } from './args.js';


/** A quarantined message as JSON (INTERFACE.md: `qguard quarantine ls --json`). */
export function quarantineJson(q: QuarantineRow) {
  return {
    id: String(q.id),
    sourceIp: q.sourceIp,
    sender: q.sender,
    reason: q.reason,
    purgedAt: q.purgedAt.toISOString(),
    policy: q.policy,
    queueId: q.queueId,
    host: q.host,
    state: q.state,
    kind: q.kind,
    forwarded: q.forwarded,
    recipients: q.recipients,
    pending: q.pending,
    recipientCount: q.rcptCount,
    pendingCount: q.pendingCount,
    subject: q.subject,
    size: q.size,
    arrival: iso(q.arrival),
    birth: iso(q.birth),
    line1: q.line1,
    who: q.who,
    path: q.path,
    restoredAt: iso(q.restoredAt),
    restoredBy: q.restoredBy,
  };
}

/** A quarantine entry, as `quarantine ls --json` prints it and the page shows it. */
export type QuarantineView = ReturnType<typeof quarantineJson>;

/** Parse quarantine ids (what `quarantine ls` shows in its first column). */
function parseIds(ids: readonly string[]): number[] {
  return ids.map((id) => {
    if (!/^[1-9]\d{0,15}$/.test(id)) throw new UsageError(`not a quarantine id (the number \`qguard quarantine ls\` shows): ${JSON.stringify(String(id).slice(0, 40))}`);
    return Number(id);
  });
}

export interface QuarantineLsOptions {
  ip?: string;
  allHosts?: boolean;
  limit?: string;
}

/** `qguard quarantine ls [--ip CIDR] [--all-hosts] [--limit N]`: newest first. */
export async function quarantineList(ctx: RunContext, opts: QuarantineLsOptions): Promise<QuarantineView[]> {
  const net = netFilter(opts.ip);
  const limit = positiveInt(opts.limit, '--limit');
  const db = await ctx.db();
  const rows = await listQuarantine(db, { host: opts.allHosts ? null : ctx.config.host, net, limit });
  return rows.map(quarantineJson);
}

async function oneRow(ctx: RunContext, id: number): Promise<QuarantineRow> {
  const db = await ctx.db();
  const [row] = await getRows(db, [id]);
  if (!row) throw new PermanentError(`no quarantine entry ${id}`);
  return row;
}

const SHOW_BYTES = 128 * 1024;

/** A quarantined message: its record, and the excerpt of its text when the file is here. */
export interface QuarantineShowView {
  entry: QuarantineView & { queueState: string };
  excerpt: MessageExcerpt | null;
  /** Why there is no excerpt. */
  missing: string | null;
}

/** `qguard quarantine show ID [--lines N]`: the record, header and start of the body. */
export async function quarantineShow(ctx: RunContext, idText: string, opts: { lines?: string }): Promise<QuarantineShowView> {
  const [id] = parseIds([idText]);
  const bodyLines = positiveInt(opts.lines, '--lines') ?? 40;
  const q = await oneRow(ctx, id);
  let head: Buffer | null = null;
  let size = q.size;
  let missing: string | null = null;
  if (q.host === ctx.config.host) {
    try {
      const h = readHead(path.join(q.path, ENTRY_FILES.mess), SHOW_BYTES);
      head = h.data;
      size = h.size;
    } catch (err) {
      missing = `the message file is missing: ${errorText(err)}`;
    }
  } else missing = `kept on ${q.host}`;
  const excerpt = head ? messageExcerpt(head, size, bodyLines) : null;
  return { entry: { ...quarantineJson(q), queueState: q.queueState }, excerpt, missing };
}

/** `quarantine show --json` (INTERFACE.md). */
export function quarantineShowJson(v: QuarantineShowView) {
  const { queueState: _q, ...entry } = v.entry;
  const ex = v.excerpt;
  return { ...entry, header: ex ? ex.header : null, body: ex ? ex.body : null, truncated: ex?.truncated ?? false, missing: v.missing };
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

/** `qguard quarantine prune [--older-than DUR]`: drop this host's old entries (default QGUARD_QUARANTINE_KEEP). */
export async function quarantinePrune(ctx: RunContext, opts: { olderThan?: string }): Promise<{ pruned: number }> {
  const seconds = durationArgument(opts.olderThan, '--older-than') ?? ctx.config.quarantineKeepSeconds;
  const db = await ctx.db();
  const pruned = await pruneQuarantine(db, ctx.config.host, seconds);
  ctx.log.info(`pruned ${pruned} quarantine entries older than ${opts.olderThan ?? 'QGUARD_QUARANTINE_KEEP'}`);
  return { pruned };
}
