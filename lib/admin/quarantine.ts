// `qguard quarantine ls|show|restore|prune`: what purge-queue took out of the queue, and the
// way back. `restore` re-injects a message with its original envelope through qmail-queue
// (QGUARD_QMAIL_QUEUE): the message file on descriptor 0, the envelope on descriptor 1, both
// files opened read-only — so a partner's mail purged by mistake is delivered after all.
// Everything printed from a message passes through forTerminal.

import fs from 'node:fs';
import path from 'node:path';
import type { RunContext } from '../context.js';
import { PermanentError, TemporaryError, UsageError, errorText } from '../errors.js';
import { parseDuration } from '../duration.js';
import { formatNet, parseNet } from '../net/address.js';
import { currentActor } from '../db/connect.js';
import { type QuarantineRow, getRows, listQuarantine, setRestoreState } from '../db/quarantine.js';
import { ENTRY_FILES, readEntry } from '../io/quarantine.js';
import { readHead } from '../io/queue-walk.js';
import { runProgram } from '../io/run-program.js';
import { parseQmailQueueEnvelope, qmailQueueExit } from '../qmail/qmail-queue-envelope.js';
import { messageExcerpt } from '../qmail/message-excerpt.js';
import { pruneQuarantine } from '../ops/quarantine.js';
import { forTerminal } from '../text.js';


function iso(d: Date | null): string | null {
  return d ? d.toISOString() : null;
}

function shortTime(d: Date | null): string {
  return d ? d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-';
}

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

function positiveInt(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,9}$/.test(value) || Number(value) < 1) throw new UsageError(`${flag}: not a positive whole number: ${JSON.stringify(value.slice(0, 40))}`);
  return Number(value);
}

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
  json?: boolean;
}

/** `qguard quarantine ls [--ip CIDR] [--all-hosts] [--limit N] [--json]`: newest first. */
export async function quarantineList(ctx: RunContext, opts: QuarantineLsOptions): Promise<void> {
  let net: string | undefined;
  if (opts.ip !== undefined) {
    const r = parseNet(opts.ip);
    if (!r.ok) throw new UsageError(`--ip: ${r.error}`);
    net = formatNet(r.net);
  }
  const limit = positiveInt(opts.limit, '--limit');
  const db = await ctx.db();
  const rows = await listQuarantine(db, { host: opts.allHosts ? null : ctx.config.host, net, limit });
  if (opts.json) {
    ctx.printJson(rows.map(quarantineJson));
    return;
  }
  const lines = rows.map((q) =>
    [
      String(q.id).padStart(6),
      shortTime(q.purgedAt),
      q.queueId.padStart(9),
      (q.sourceIp ?? '-').padEnd(15),
      `<${forTerminal(q.sender)}>`,
      q.state === 'removed' ? '' : `[${q.state}]`,
      `-- ${forTerminal(q.reason)}`,
      opts.allHosts ? `@${forTerminal(q.host)}` : '',
    ]
      .filter((p) => p !== '')
      .join(' '),
  );
  if (lines.length) ctx.print(`${lines.join('\n')}\n`);
}

async function oneRow(ctx: RunContext, id: number): Promise<QuarantineRow> {
  const db = await ctx.db();
  const [row] = await getRows(db, [id]);
  if (!row) throw new PermanentError(`no quarantine entry ${id}`);
  return row;
}

const SHOW_BYTES = 128 * 1024;

/** `qguard quarantine show ID [--lines N] [--json]`: the record, header and start of the body. */
export async function quarantineShow(ctx: RunContext, idText: string, opts: { json?: boolean; lines?: string }): Promise<void> {
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
  const ex = head ? messageExcerpt(head, size, bodyLines) : null;
  if (opts.json) {
    ctx.printJson({ ...quarantineJson(q), header: ex ? ex.header : null, body: ex ? ex.body : null, truncated: ex?.truncated ?? false, missing });
    return;
  }
  const out = [
    `quarantine ${q.id}   state: ${q.state}   purged: ${shortTime(q.purgedAt)}${q.who ? ` by ${forTerminal(q.who)}` : ''}   host: ${forTerminal(q.host)}`,
    `queue id: ${q.queueId}   was: ${q.queueState}   size: ${q.size}   arrival: ${shortTime(q.arrival)}`,
    `line 1: ${forTerminal(q.line1)}`,
    `kind: ${q.kind}${q.forwarded ? ' (forwarded copy)' : ''}   source: ${q.sourceIp ?? 'none'}`,
    `reason: ${forTerminal(q.reason)} (${q.policy})`,
    `sender: <${forTerminal(q.sender)}>`,
    ...q.pending.map((r) => `  to: <${forTerminal(r)}> pending`),
    ...(q.pendingCount > q.pending.length ? [`  ... ${q.pendingCount} pending recipients in all`] : []),
    ...(q.restoredAt ? [`restored: ${shortTime(q.restoredAt)} by ${forTerminal(q.restoredBy)}`] : []),
  ];
  if (!ex) out.push(`message: ${forTerminal(missing)}`);
  else {
    out.push('', ex.terminal.header, '', ex.terminal.body);
    if (ex.terminal.note) out.push(ex.terminal.note);
  }
  ctx.print(`${out.join('\n')}\n`);
}

export interface RestoreOptions {
  force?: boolean;
  json?: boolean;
}

interface RestoreResult {
  id: string;
  queueId: string;
  ok: boolean;
  error: string | null;
  permanent: boolean;
}

/**
 * `qguard quarantine restore ID... [--force]`: hand each message back to qmail-queue with its
 * original envelope. Quiet on success; failures are named one by one, the exit code is 100
 * when every failure is permanent, 111 otherwise.
 */
export async function quarantineRestore(ctx: RunContext, idTexts: string[], opts: RestoreOptions): Promise<void> {
  const ids = [...new Set(parseIds(idTexts))];
  const db = await ctx.db();
  const rows = new Map((await getRows(db, ids)).map((r) => [r.id, r]));
  const who = currentActor('qguard');
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
  if (opts.json) ctx.printJson(results.map(({ permanent: _p, ...r }) => r));
  const failed = results.filter((r) => !r.ok);
  if (failed.length === 0) return;
  if (failed.length === 1 && results.length === 1) {
    const f = failed[0];
    throw f.permanent ? new PermanentError(`restore ${f.id}: ${f.error}`) : new TemporaryError(`restore ${f.id}: ${f.error}`);
  }
  for (const f of failed) ctx.log.warn(`restore ${f.id}: ${f.error}`);
  const msg = `${failed.length} of ${results.length} restores failed`;
  throw failed.every((f) => f.permanent) ? new PermanentError(msg) : new TemporaryError(msg);
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
export async function quarantinePrune(ctx: RunContext, opts: { olderThan?: string; json?: boolean }): Promise<void> {
  let seconds = ctx.config.quarantineKeepSeconds;
  if (opts.olderThan !== undefined) {
    const r = parseDuration(opts.olderThan);
    if ('error' in r) throw new UsageError(`--older-than: ${r.error}`);
    seconds = r.seconds;
  }
  const db = await ctx.db();
  const pruned = await pruneQuarantine(db, ctx.config.host, seconds);
  ctx.log.info(`pruned ${pruned} quarantine entries older than ${opts.olderThan ?? 'QGUARD_QUARANTINE_KEEP'}`);
  if (opts.json) ctx.printJson({ pruned });
}
