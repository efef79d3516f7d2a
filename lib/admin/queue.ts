// `qguard queue ls|top|show|stats`: the seed's review page as commands. `ls`, `top` and the
// counts of `stats` read what scan-queue recorded (every mail server sharing the database,
// as of their last scan); `show` and the file counts of `stats` read this server's queue
// directly, never writing it. Each returns a view (plain data): the CLI prints it as JSON or
// text (lib/cli/render.ts), the review page as HTML; both escape what came from a message.

import path from 'node:path';
import type { RunContext } from '../context.js';
import { PermanentError, UsageError } from '../errors.js';
import { formatNetShort, netContains } from '../net/address.js';
import { rulesAndVerdicts } from '../ops/verdicts.js';
import { ruleJson } from '../db/rules.js';
import { connectionsOfMany } from '../db/connections.js';
import { type MessageRow, listMessages, loadScanState, messageStats, topSources } from '../db/messages.js';
import { type MessageExcerpt, messageExcerpt } from '../qmail/message-excerpt.js';
import { listIds, openQueue, readHead, readMessage } from '../io/queue-walk.js';
import { QUEUE_DIRS, absPath } from '../qmail/queued-message.js';
import { iso } from '../time.js';
import { kindFilter, netFilter, positiveInt } from './args.js';

/** A recorded message as JSON (INTERFACE.md: `qguard queue ls --json`). */
export function messageJson(m: MessageRow) {
  return {
    id: m.id,
    recordId: m.recordId,
    hasCopy: m.hasCopy,
    sourceIp: m.sourceIp,
    sender: m.sender,
    recipients: m.recipients,
    pending: m.pending,
    kind: m.kind,
    host: m.host,
    state: m.state,
    forwarded: m.forwarded,
    chain: m.chain,
    arrival: iso(m.arrival),
    birth: iso(m.birth),
    size: m.size,
    subject: m.subject,
    helo: m.helo,
    remoteHost: m.remoteHost,
    remoteInfo: m.remoteInfo,
    sourceRecorded: m.sourceRecorded,
    recipientCount: m.rcptCount,
    pendingCount: m.pendingCount,
    bouncePending: m.bouncePending,
    problems: m.problems,
    firstSeen: iso(m.firstSeen),
    goneAt: iso(m.goneAt),
  };
}

export interface QueueLsOptions {
  ip?: string;
  kind?: string;
  all?: boolean;
  allHosts?: boolean;
  limit?: string;
}

/** One recorded message, as `queue ls --json` prints it and the page shows it. */
export type MessageView = ReturnType<typeof messageJson>;

/** `qguard queue ls [--ip IP|CIDR] [--kind K] [--all] [--all-hosts]`: recorded messages, newest first. */
export async function queueList(ctx: RunContext, opts: QueueLsOptions): Promise<MessageView[]> {
  const net = netFilter(opts.ip);
  const { kind, forwardedOnly } = kindFilter(opts.kind);
  const limit = positiveInt(opts.limit, '--limit');
  const db = await ctx.db();
  let rows = await listMessages(db, {
    host: opts.allHosts ? null : ctx.config.host,
    net,
    kind,
    includeGone: Boolean(opts.all),
    limit: forwardedOnly ? undefined : limit,
  });
  if (forwardedOnly) rows = rows.filter((m) => m.forwarded).slice(0, limit ?? Infinity);
  return rows.map(messageJson);
}

export interface QueueTopOptions {
  limit?: string;
  /** The review page's narrowing: one host, one kind, one decision; order; page (from 1). */
  host?: string;
  kind?: string;
  decision?: string;
  sort?: string;
  page?: string;
}

const SORTS = ['count', 'last', 'first', 'ip'] as const;
const DECISIONS = ['deny', 'relay', 'trust', 'default'] as const;
/** With a decision filter, at most this many sources are looked at (decided in memory). */
const DECISION_SCAN = 5000;

/** `queue top`: the sources, with the window and threshold they were counted against. */
export interface QueueTopView {
  windowSeconds: number;
  threshold: number;
  /** What the threshold counts (QGUARD_COUNT). */
  count: 'queued' | 'accepted' | 'both';
  sources: SourceView[];
  /** The page shown (from 1), and whether there are more. */
  page: number;
  more: boolean;
  filters: { host: string | null; kind: string | null; decision: string | null; sort: string };
}

export interface SourceView {
  ip: string;
  count: number;
  decision: string;
  sample: string | null;
  rule: ReturnType<typeof ruleJson> | null;
  protected: boolean;
  scanExempt: string | null;
  overThreshold: boolean;
  byKind: Record<string, number>;
  hosts: string[];
  firstArrival: string | null;
  lastArrival: string | null;
  /** In the window, every mail server: messages accepted (QGUARD_ACCEPTED_SPOOL), connections and refused ones (QGUARD_SMTPD_LOG). */
  accepted: number;
  connections: number;
  deniedConnections: number;
}

/** `qguard queue top [--limit N]`: the screen an admin reads before denying. */
export async function queueTop(ctx: RunContext, opts: QueueTopOptions): Promise<QueueTopView> {
  const limit = positiveInt(opts.limit, '--limit') ?? 50;
  const page = positiveInt(opts.page, 'page') ?? 1;
  const sort = (opts.sort ?? 'count') as (typeof SORTS)[number];
  if (!SORTS.includes(sort)) throw new UsageError(`sort: one of ${SORTS.join(', ')}: ${JSON.stringify(String(opts.sort).slice(0, 40))}`);
  const decision = opts.decision || null;
  if (decision !== null && !(DECISIONS as readonly string[]).includes(decision)) {
    throw new UsageError(`decision: one of ${DECISIONS.join(', ')}: ${JSON.stringify(decision.slice(0, 40))}`);
  }
  const { kind } = kindFilter(opts.kind || undefined);
  const host = opts.host || null;
  const windowSeconds = ctx.config.windowSeconds;
  const db = await ctx.db();
  // One more than a page tells whether there is a next one.
  const top =
    decision === null
      ? await topSources(db, windowSeconds, limit + 1, { host: host ?? undefined, kind, sort, offset: (page - 1) * limit })
      : await topSources(db, windowSeconds, DECISION_SCAN, { host: host ?? undefined, kind, sort });
  const verdicts = await rulesAndVerdicts(db, top.map((t) => t.ip), ctx.protectedNets());
  const seen = await connectionsOfMany(db, top.map((t) => t.ip), windowSeconds);
  const { threshold, count } = ctx.config;
  let sources = top.map((t): SourceView => {
    const c = seen.get(t.ip);
    const accepted = c?.accepted ?? 0;
    const v = verdicts.get(t.ip);
    const d = v ? v.on(ctx.config.host) : { decision: 'default' as const, rule: null, protected: false };
    const exempt = v ? ctx.config.scanExempt.find((n) => netContains(n, v.net)) : undefined;
    return {
      ip: t.ip,
      count: t.count,
      decision: d.decision,
      sample: t.sample,
      rule: d.rule ? ruleJson(d.rule) : null,
      protected: d.protected,
      scanExempt: exempt ? formatNetShort(exempt) : null,
      overThreshold: (count !== 'accepted' && t.count >= threshold) || (count !== 'queued' && accepted >= threshold),
      byKind: t.byKind,
      hosts: t.hosts,
      firstArrival: iso(t.firstArrival),
      lastArrival: iso(t.lastArrival),
      accepted,
      connections: c?.connections ?? 0,
      deniedConnections: c?.denied ?? 0,
    };
  });
  if (decision !== null) sources = sources.filter((s) => s.decision === decision).slice((page - 1) * limit);
  const more = sources.length > limit;
  return {
    windowSeconds,
    threshold: ctx.config.threshold,
    count: ctx.config.count,
    sources: sources.slice(0, limit),
    page,
    more,
    filters: { host, kind: opts.kind || null, decision, sort },
  };
}

export interface QueueShowOptions {
  lines?: string;
}

/** How much of a message `queue show` reads: the header and the start of the body. */
const SHOW_BYTES = 128 * 1024;

/** `queue show`: the message as read from the queue, and the excerpt of its text. */
export async function queueShow(ctx: RunContext, id: string, opts: QueueShowOptions) {
  if (!/^[1-9]\d{0,19}$/.test(id ?? '')) throw new UsageError(`not a queue id (the number qmail-qread shows): ${JSON.stringify(String(id).slice(0, 40))}`);
  const bodyLines = positiveInt(opts.lines, '--lines') ?? 40;
  const layout = openQueue(path.resolve(ctx.config.queueDir));
  const r = readMessage(layout, id);
  if (r.status === 'vanished') throw new PermanentError(`no message ${id} in ${layout.dir}`);
  if (r.status !== 'ok') throw new PermanentError(r.status === 'unreadable' ? r.error : `message ${id} keeps changing: try again`);
  const m = r.message;
  let head: Buffer;
  try {
    head = readHead(absPath(layout, 'mess', id), SHOW_BYTES).data;
  } catch (err) {
    throw new PermanentError(`no message ${id} in ${layout.dir}: ${(err as Error).message}`);
  }
  const excerpt: MessageExcerpt = messageExcerpt(head, m.size, bodyLines);
  return {
    message: {
      id: m.id,
      state: m.state,
      kind: m.origin.kind,
      forwarded: m.origin.forwarded,
      chain: m.origin.chain,
      sourceIp: m.origin.sourceIp,
      sourceRecorded: m.origin.sourceIpRecorded,
      helo: m.origin.smtp?.helo ?? null,
      remoteHost: m.origin.smtp?.remoteHost ?? null,
      remoteInfo: m.origin.smtp?.remoteInfo ?? null,
      smtp: m.origin.smtp !== null,
      sender: m.sender,
      envelopeComplete: m.envelopeComplete,
      recipients: m.recipients,
      bounceReport: m.bounceReport,
      files: m.files,
      size: m.size,
      arrival: iso(m.arrival),
      birth: iso(m.birth),
      line1: m.line1,
      subject: m.origin.subject,
      problems: m.problems,
    },
    excerpt,
  };
}

export type QueueShowView = Awaited<ReturnType<typeof queueShow>>;

/** `queue show --json`: the message and its excerpt's exact text (INTERFACE.md). */
export function queueShowJson(v: QueueShowView) {
  const { smtp: _smtp, envelopeComplete: _e, ...m } = v.message;
  return { ...m, header: v.excerpt.header, body: v.excerpt.body, truncated: v.excerpt.truncated };
}

/** `qguard queue stats`: like qmail-qstat, with kinds and sources. */
export async function queueStats(ctx: RunContext) {
  const host = ctx.config.host;
  let files: Record<string, number> | null = null;
  let layoutInfo: { dir: string; split: number } | null = null;
  try {
    const layout = openQueue(path.resolve(ctx.config.queueDir));
    layoutInfo = { dir: layout.dir, split: layout.split };
    files = {};
    for (const d of QUEUE_DIRS) {
      let n = 0;
      if (layout.splitDirs[d]) for (let s = 0; s < layout.split; s++) n += listIds(path.join(layout.dir, d, String(s))).ids.length;
      else n = listIds(path.join(layout.dir, d)).ids.length;
      files[d] = n;
    }
  } catch (err) {
    ctx.log.warn(`queue not readable here, showing recorded counts only: ${(err as Error).message}`);
  }
  const db = await ctx.db();
  const st = await messageStats(db, host);
  const scan = await loadScanState(db, host);
  return {
    host,
    queue: layoutInfo?.dir ?? path.resolve(ctx.config.queueDir),
    split: layoutInfo?.split ?? null,
    messages: files ? files.mess : null,
    unprocessed: files ? files.todo : null,
    files,
    lastScan: scan?.scannedAt ? iso(scan.scannedAt) : null,
    recorded: st.total,
    byKind: st.byKind,
    byState: st.byState,
    sources: st.sources,
    noSource: st.noSource,
  };
}

export type QueueStatsView = Awaited<ReturnType<typeof queueStats>>;
