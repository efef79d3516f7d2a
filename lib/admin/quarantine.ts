// `qguard quarantine ls|show|restore|prune`: what purge-queue took out of the queue, and the
// way back (`restore`: lib/ops/restore.ts).
// Each returns a view (plain data) for the CLI (lib/cli/render.ts) and the review page.

import path from 'node:path';
import type { RunContext } from '../context.js';
import { PermanentError, errorText } from '../errors.js';
import { type QuarantineRow, getRows, listQuarantine } from '../db/quarantine.js';
import { ENTRY_FILES } from '../io/quarantine.js';
import { parseIds } from '../ops/restore.js';
import { readHead } from '../io/queue-walk.js';
import { type MessageExcerpt, messageExcerpt } from '../qmail/message-excerpt.js';
import { pruneQuarantine } from '../ops/quarantine.js';
import { iso } from '../time.js';
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

export { type RestoreOptions, type RestoreResult, quarantineRestore, restoreVerdict } from '../ops/restore.js';

/** `qguard quarantine prune [--older-than DUR]`: drop this host's old entries (default QGUARD_QUARANTINE_KEEP). */
export async function quarantinePrune(ctx: RunContext, opts: { olderThan?: string }): Promise<{ pruned: number }> {
  const seconds = durationArgument(opts.olderThan, '--older-than') ?? ctx.config.quarantineKeepSeconds;
  const db = await ctx.db();
  const pruned = await pruneQuarantine(db, ctx.config.host, seconds);
  ctx.log.info(`pruned ${pruned} quarantine entries older than ${opts.olderThan ?? 'QGUARD_QUARANTINE_KEEP'}`);
  return { pruned };
}
