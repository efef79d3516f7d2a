// scan-queue: who is filling the queue. Every minute (cron), read each queued message once,
// find the IP that sent it (only from our own two Received lines, lib/qmail/received.ts),
// record it in qguard.messages, count messages per IP over every mail server sharing the
// database, and deny an IP that reaches the threshold ("20 messages in 3 days").
//
//   look    stat every queue directory (about 100 of them); a directory whose signature
//           (inode, mtime, ctime) equals the one stored at the last scan holds the same files,
//           so its messages are not even listed. The split groups (mess/S, info/S, local/S,
//           remote/S) that changed are listed and their recorded messages' files stat()ed;
//           one more group per run, in rotation, is re-checked whatever its directories say
//           (qmail-send rewrites local/ and remote/ files in place, which no directory
//           records). lib/jobs/scan-queue-groups.ts reads a group.
//   read    only messages whose files changed: the envelope alone when mess/ is the same file,
//           the head of mess/ too when it is new (inode reuse: line 1 tells a new message). A
//           message not recorded yet is read without a stat first (each file opened once).
//   record  batched and pipelined: new messages by COPY on a server database (unnest on the
//           embedded one), gone messages marked, old gone rows pruned. A host's first scan of
//           a large queue reads its groups in reader threads (lib/jobs/scan-queue-groups.ts); a
//           large load is VACUUMed after.
//   count   queued messages per source IP within the window, every host; candidates reaching
//           the threshold are checked with decide() (relay/trust never denied), protection,
//           QGUARD_SCAN_EXEMPT and ruleRefusal(); the rest get a `deny` rule of source `scan`.
// All of it in ONE transaction: a database failure leaves nothing half-written (exit 111);
// --dry-run runs everything and rolls back. The queue itself is never written.
//
// Size: one job: the walk over the queue's groups, the batching and the auto-deny are steps of one run.

import path from 'node:path';
import type pg from 'pg';
import type { RunContext } from '../context.js';
import { TemporaryError } from '../errors.js';
import type { Queryable } from '../db/connect.js';
import { formatDuration } from '../duration.js';
import { type Net, formatNetShort, netContains } from '../net/address.js';
import { type IpRules, type KeptEntry, entriesFound, rulesAndVerdicts } from '../ops/verdicts.js';
import { ruleRefusal } from '../policy/guards.js';
import { upsertRule } from '../db/rules.js';
import {
  type StoredSignature,
  countLive,
  groupsWithFlatFiles,
  liveGroup,
  loadScanState,
  overThreshold,
  pruneGone,
  resplit,
  saveScanState,
  countSignature,
  lastCount,
  saveLastCount,
} from '../db/messages.js';
import { MessageWriter, hostHasRows } from '../db/message-writer.js';
import { keepCopies } from '../ops/message-copies.js';
import { dirSignature, flatDirs, groupDirs, listIds, openQueue } from '../io/queue-walk.js';
import {
  type QueueDirName,
  type QueueLayout,
  splitOf,
} from '../qmail/queued-message.js';
import { LogReadError } from '../io/multilog-read.js';
import { acceptedOverThreshold, connectionsOverLimit } from '../db/connections.js';
import { type AcceptedSpoolSummary, type SmtpdLogSummary, ingestAcceptedSpool, ingestSmtpdLog } from './smtpd-log.js';
import { type GroupResult, type GroupSink, readGroup, readGroupsInThreads, readerThreads } from './scan-queue-groups.js';

/** Flags of the scan-queue command (threshold and window come through the config). */
export interface ScanOptions {
  dryRun?: boolean;
  json?: boolean;
  /** commander's --no-deny sets this false: record and count only. */
  deny?: boolean;
}

/** An IP over the threshold that was not denied, and why. */
export interface NotDenied {
  ip: string;
  count: number;
  why: string;
}

/** The --json summary (INTERFACE.md), with a few extra fields. */
export interface ScanSummary {
  scanned: number;
  new: number;
  unchanged: number;
  gone: number;
  skipped: number;
  errors: number;
  denied: string[];
  durationMs: number;
  /** Re-read because their files changed. */
  updated: number;
  dryRun: boolean;
  threshold: number;
  window: string;
  /** IPs at or over the threshold, however they were handled. */
  overThreshold: number;
  /** Over the threshold but left alone (relay/trust, protected, exempt, refused). */
  notDenied: NotDenied[];
  /** Over the threshold and already denied by a live rule. */
  alreadyDenied: number;
  /**
   * No messages recorded anywhere and no setting changed since this host's last count (less
   * than 10 minutes ago): the queued count was not run again (sql/016). Its result is reported
   * as it was, or, when the rules changed, its addresses were decided on again.
   */
  countReused: boolean;
  /** Split groups whose files were listed this run (of `split`). */
  groupsRead: number;
  split: number;
  pruned: number;
  /** Where the time went (ms): directory look, listing, stat, reading and parsing, waiting for the database, counting and denying. */
  phasesMs: { look: number; list: number; stat: number; read: number; db: number; count: number; copy: number };
  /** Readable copies written for the review page (QGUARD_COPY_BYTES). */
  copied: number;
  /** What was read of tcpserver's log (QGUARD_SMTPD_LOG); null when it is not configured or could not be read. */
  smtpdLog: SmtpdLogSummary | null;
  /** What was read of the spool of accepted messages (QGUARD_ACCEPTED_SPOOL); null likewise. */
  acceptedSpool: AcceptedSpoolSummary | null;
  /** What the threshold counted (QGUARD_COUNT). */
  count: 'queued' | 'accepted' | 'both';
  /** Addresses at or over QGUARD_CONNECTION_LIMIT, however they were handled (0 when it is off). */
  overConnectionLimit: number;
}

/**
 * A log or spool, in a savepoint: one that cannot be read is warned about and leaves the queue
 * scan (and the other source) whole.
 */
async function countSource<T>(ctx: RunContext, tx: Queryable, key: string, what: string, read: () => Promise<T>): Promise<T | null> {
  await tx.exec('SAVEPOINT log_source');
  try {
    const s = await read();
    await tx.exec('RELEASE SAVEPOINT log_source');
    return s;
  } catch (err) {
    if (!(err instanceof LogReadError)) throw err;
    await tx.exec('ROLLBACK TO SAVEPOINT log_source');
    ctx.log.warn(`${key}: ${err.message}; ${what} not counted this run`);
    return null;
  }
}

/** Thrown inside the transaction to roll a dry run back (a TemporaryError passes through the db layer untouched). */
class DryRunRollback extends TemporaryError {
  constructor(readonly summary: ScanSummary) {
    super('dry run: rolled back');
  }
}

/** A directory whose ctime is this recent may still change within its timestamp tick: look again next time. */
const SETTLE_MS = 2000;
/** A scan that recorded this many new messages vacuums the table after it (see scanQueue). */
const VACUUM_AFTER = 10_000;
/** Gone rows are kept this much longer than the window (review, purge provenance). */
const PRUNE_MARGIN_SECONDS = 86400;

/** Run scan-queue. */
export async function scanQueue(ctx: RunContext, opts: ScanOptions): Promise<void> {
  const started = performance.now();
  const dryRun = Boolean(opts.dryRun);
  // A database server: load the driver and connect while the lock is taken (the embedded
  // database is single-process: it is opened only under the lock). Its failure, if any, is
  // thrown below, after a busy lock has ended the run quietly.
  const early = ctx.config.databaseUrl !== null ? ctx.db() : null;
  early?.catch(() => {});
  await ctx.jobLock('scan-queue', { record: !dryRun });
  const layout = openQueue(path.resolve(ctx.config.queueDir));
  const db = await (early ?? ctx.db());
  let summary: ScanSummary;
  try {
    summary = await db.transaction(async (tx) => {
      const run = { dryRun, deny: opts.deny !== false, started, pgClient: db.pgClient };
      const s = await scanInto(ctx, tx, layout, run);
      const { smtpdLog, acceptedSpool } = ctx.config;
      if (smtpdLog !== null) {
        const dir = path.resolve(smtpdLog);
        s.smtpdLog = await countSource(ctx, tx, 'QGUARD_SMTPD_LOG', 'connections', () => ingestSmtpdLog(ctx, tx, dir));
      }
      if (acceptedSpool !== null) {
        const dir = path.resolve(acceptedSpool);
        s.acceptedSpool = await countSource(ctx, tx, 'QGUARD_ACCEPTED_SPOOL', 'accepted messages', () => ingestAcceptedSpool(ctx, tx, dir));
      }
      // ---- count and deny: the queue, the log and the spool all read
      const t0 = performance.now();
      await denyOverThreshold(ctx, tx, s, run);
      await denyOverConnectionLimit(ctx, tx, s, run);
      s.phasesMs.count = performance.now() - t0;
      if (dryRun) throw new DryRunRollback(s);
      return s;
    });
  } catch (err) {
    if (!(err instanceof DryRunRollback)) throw err;
    summary = err.summary;
  }
  if (!dryRun) {
    const t0 = performance.now();
    summary.copied = await keepCopies(ctx, db, layout, t0 - started);
    summary.phasesMs.copy += performance.now() - t0;
  }
  if (!dryRun && summary.new >= VACUUM_AFTER) {
    // A large load (a host's first scan): mark the new rows all-visible now, as autovacuum
    // would within minutes, so that the next scans count with index-only scans instead of
    // visiting every row. Cheap on rows just written; failure only costs speed.
    const t0 = performance.now();
    try {
      await db.exec('VACUUM qguard.messages');
    } catch (err) {
      ctx.log.info(`VACUUM qguard.messages after ${summary.new} new messages: ${(err as Error).message}`);
    }
    summary.phasesMs.db += performance.now() - t0;
  }
  summary.durationMs = Math.round(performance.now() - started);
  for (const k of Object.keys(summary.phasesMs) as (keyof ScanSummary['phasesMs'])[]) summary.phasesMs[k] = Math.round(summary.phasesMs[k]);
  ctx.log.info(
    `${layout.dir}: ${summary.scanned} messages: ${summary.new} new, ${summary.updated} updated, ${summary.unchanged} unchanged, ` +
      `${summary.gone} gone, ${summary.skipped} skipped, ${summary.errors} odd; ${summary.groupsRead}/${summary.split} groups read; ` +
      `${summary.overThreshold} IPs at ${summary.threshold}+ in ${summary.window}; ${dryRun ? 'would deny' : 'denied'} ` +
      `${summary.denied.length ? summary.denied.join(' ') : 'none'} (${summary.durationMs} ms: ` +
      `${Object.entries(summary.phasesMs).map(([k, v]) => `${k} ${v}`).join(', ')})` +
      (summary.smtpdLog
        ? `; ${summary.smtpdLog.dir}: ${summary.smtpdLog.bytes} bytes, ${summary.smtpdLog.connections} connections (${summary.smtpdLog.denied} denied) in ${summary.smtpdLog.ms} ms`
        : '') +
      (summary.acceptedSpool ? `; ${summary.acceptedSpool.dir}: ${summary.acceptedSpool.accepted} accepted messages in ${summary.acceptedSpool.ms} ms` : ''),
  );
  ctx.jobSummary(summary);
  if (opts.json) ctx.printJson(summary);
}

/** About how many messages the groups hold: the first one's mess/ listing times their number. */
function estimateMessages(layout: QueueLayout, groups: readonly number[]): number {
  const first = groupDirs(layout, groups[0]).find((d) => d.dir === 'mess');
  return first ? listIds(first.path).ids.length * groups.length : 0;
}

async function scanInto(
  ctx: RunContext,
  tx: Queryable,
  layout: QueueLayout,
  run: { dryRun: boolean; deny: boolean; started: number; pgClient: pg.Client | null },
): Promise<ScanSummary> {
  const { config, log } = ctx;
  const host = config.host;
  const summary: ScanSummary = {
    scanned: 0,
    new: 0,
    unchanged: 0,
    gone: 0,
    skipped: 0,
    errors: 0,
    denied: [],
    durationMs: 0,
    updated: 0,
    dryRun: run.dryRun,
    threshold: config.threshold,
    window: formatDuration(config.windowSeconds),
    overThreshold: 0,
    notDenied: [],
    alreadyDenied: 0,
    countReused: false,
    groupsRead: 0,
    split: layout.split,
    pruned: 0,
    phasesMs: { look: 0, list: 0, stat: 0, read: 0, db: 0, count: 0, copy: 0 },
    copied: 0,
    smtpdLog: null,
    acceptedSpool: null,
    count: ctx.config.count,
    overConnectionLimit: 0,
  };
  const ms = summary.phasesMs;
  const lookStart = performance.now();

  // ---- look: which directories changed since the last scan
  const prev = await loadScanState(tx, host);
  let prevDirs: Record<string, string> = prev?.dirs ?? {};
  if (prev && (prev.queueDir !== layout.dir || prev.split !== layout.split)) {
    log.info(`queue changed (${prev.queueDir} split ${prev.split} -> ${layout.dir} split ${layout.split}): reading all of it`);
    prevDirs = {};
    if (prev.split !== layout.split) await resplit(tx, host, layout.split);
  }
  const settledBefore = Date.now() - SETTLE_MS;
  const nowDirs: Record<string, string> = {};
  const look = (key: string, p: string): boolean => {
    const s = dirSignature(p);
    const sig = s ? s.sig : 'missing';
    nowDirs[key] = s && s.ctimeMs >= settledBefore ? '' : sig;
    return prevDirs[key] !== sig;
  };
  const groups = new Set<number>();
  /** Groups whose own directories changed (the others may be read for the rotation or todo/). */
  const changedDirs = new Set<number>();
  for (let s = 0; s < layout.split; s++) {
    let changed = false;
    for (const d of groupDirs(layout, s)) if (look(`${d.dir}/${s}`, d.path)) changed = true;
    if (changed) {
      groups.add(s);
      changedDirs.add(s);
    }
  }
  let flatChanged = false;
  for (const d of flatDirs(layout)) if (look(d.dir, d.path)) flatChanged = true;
  const rotation = (prev?.rotation ?? 0) % layout.split;
  groups.add(rotation);
  ms.look = performance.now() - lookStart;

  // The unsplit directories (todo/, intd/, bounce/) are listed whenever any group is read:
  // they say which messages of a group are still in todo or have a bounce pending.
  const flat = new Map<string, QueueDirName[]>();
  if (flatChanged) for (const g of await groupsWithFlatFiles(tx, host)) groups.add(g);
  for (const d of flatDirs(layout)) {
    const t0 = performance.now();
    const { ids, odd } = listIds(d.path);
    ms.list += performance.now() - t0;
    if (odd.length) log.info(`${d.dir}/: ${odd.length} names that are not queue ids (e.g. ${JSON.stringify(odd[0].slice(0, 40))})`);
    for (const id of ids) {
      const list = flat.get(id);
      if (list) list.push(d.dir);
      else flat.set(id, [d.dir]);
      if (flatChanged) groups.add(splitOf(id, layout.split));
    }
  }

  // ---- read the changed groups
  // A host without any row yet (its first scan) cannot have stored rows to compare with, nor
  // rows a new message could collide with: no per-group lookups, COPY straight into the table.
  const copyClient = run.pgClient;
  const fresh = !(await hostHasRows(tx, host));
  const buf = new MessageWriter(tx, host, copyClient ? { client: copyClient, fresh } : null);
  const sink: GroupSink = {
    insert: (m) => buf.insert(m),
    update: (rowId, m) => buf.update(rowId, m),
    envelope: (rowId, envelope, sig) => buf.envelope(rowId, envelope, sig),
    flushIfFull: () => buf.flushIfFull(),
    odd: (what) => {
      summary.errors++;
      log.info(what);
    },
    info: (what) => log.info(what),
  };
  const order = [...groups].sort((a, b) => a - b);
  /** A group's result: its gone rows, its counts, and whether to look at it again next run. */
  const finish = (s: number, r: GroupResult, stored: ReadonlyMap<string, readonly StoredSignature[]>) => {
    summary.groupsRead++;
    summary.new += r.new;
    summary.updated += r.updated;
    summary.skipped += r.skipped;
    ms.list += r.ms.list;
    ms.stat += r.ms.stat;
    ms.read += r.ms.read;
    ms.db += r.ms.db;
    for (const rows of stored.values()) {
      for (const row of rows) {
        if (r.keep.has(row.rowId)) continue;
        buf.markGone(row.rowId);
        summary.gone++;
      }
    }
    if (r.unsettle) for (const d of groupDirs(layout, s)) nowDirs[`${d.dir}/${s}`] = '';
  };
  const threads = fresh && copyClient && order.length > 1 ? readerThreads(estimateMessages(layout, order)) : 0;
  if (threads > 0) {
    // The first scan of a large queue: nothing to compare with, so the groups are read in
    // reader threads, two at a time, each new message sent back as COPY text.
    const none = new Map<string, StoredSignature[]>();
    log.info(`first scan of this host: ${order.length} groups read in ${threads} threads`);
    await readGroupsInThreads(layout, order, flat, host, threads, {
      take: async (blocks, rows) => {
        buf.insertEncoded(blocks, rows);
        const t0 = performance.now();
        await buf.flushIfFull();
        ms.db += performance.now() - t0;
      },
      note: (odd, text) => (odd ? sink.odd(text) : sink.info(text)),
      done: (s, r) => finish(s, r, none),
    });
  } else {
    const noRows = new Map<string, StoredSignature[]>();
    const storedOf = (g: number) => (fresh ? Promise.resolve(noRows) : liveGroup(tx, host, g));
    // A group's stored rows are asked for before its directories are listed, and the next
    // group's before this group's writes are sent: the answers come while we list and read.
    let nextStored: Promise<Map<string, StoredSignature[]>> | null = order.length ? storedOf(order[0]) : null;
    nextStored?.catch(() => {}); // awaited (and thrown) by readGroup, once the group is listed
    for (let gi = 0; gi < order.length; gi++) {
      const s = order[gi];
      const storedRows = nextStored!;
      const r = await readGroup(layout, s, flat, storedRows, sink, { keepStrings: !buf.encodesAtOnce, dirsUnchanged: !changedDirs.has(s) });
      finish(s, r, await storedRows);
      if (gi + 1 < order.length) {
        nextStored = storedOf(order[gi + 1]);
        nextStored.catch(() => {}); // awaited (and thrown) at the next group, as above
      }
      const t0 = performance.now();
      await buf.flush();
      ms.db += performance.now() - t0;
    }
  }
  let t0 = performance.now();
  await buf.flush();
  await buf.settle();
  summary.pruned = await pruneGone(tx, config.windowSeconds + PRUNE_MARGIN_SECONDS);
  summary.scanned = await countLive(tx, host);
  summary.unchanged = summary.scanned - summary.new - summary.updated;

  ms.db += performance.now() - t0;

  await saveScanState(tx, {
    host,
    queueDir: layout.dir,
    split: layout.split,
    dirs: nowDirs,
    rotation: (rotation + 1) % layout.split,
    durationMs: performance.now() - run.started,
    messages: summary.scanned,
    changed: summary.new + summary.updated + summary.gone + summary.pruned > 0,
  });
  return summary;
}

/** Why an address over the threshold must not be denied automatically, or null. */
function exemption(
  ip: Net,
  decisions: { host: string; decision: string; rule: { cidr: string; source: string } | null }[],
  ctx: RunContext,
): string | null {
  for (const d of decisions) {
    if (d.decision === 'relay' || d.decision === 'trust') {
      return `${d.decision} on ${d.host}${d.rule ? ` (${d.rule.cidr}, source ${d.rule.source})` : ''}`;
    }
  }
  const exempt = ctx.config.scanExempt.find((n) => netContains(n, ip));
  if (exempt) return `inside ${formatNetShort(exempt)} (QGUARD_SCAN_EXEMPT)`;
  return ruleRefusal(ip, 'deny', { protectedNets: ctx.protectedNets(), minPrefix: ctx.config.minPrefix });
}

/** An address that passed a counting rule, and the reason its deny rule would give. */
interface Candidate {
  ip: string;
  count: number;
  reason: string;
}

/** The threshold (QGUARD_THRESHOLD in QGUARD_WINDOW) over what QGUARD_COUNT counts. */
async function thresholdCandidates(ctx: RunContext, tx: Queryable, window: string): Promise<Candidate[]> {
  const { windowSeconds, threshold, count } = ctx.config;
  const queued = count === 'accepted' ? [] : await overThreshold(tx, windowSeconds, threshold);
  const accepted = count === 'queued' ? [] : await acceptedOverThreshold(tx, windowSeconds, threshold);
  if (count === 'queued') return queued.map((q) => ({ ip: q.ip, count: q.count, reason: `${q.count} queued messages in ${window}` }));
  if (count === 'accepted') return accepted.map((a) => ({ ip: a.ip, count: a.count, reason: `${a.count} accepted messages in ${window}` }));
  // both: either count (not their sum: a message still queued was accepted too)
  const byIp = new Map<string, { q: number; a: number }>();
  for (const q of queued) byIp.set(q.ip, { q: q.count, a: 0 });
  for (const a of accepted) byIp.set(a.ip, { q: byIp.get(a.ip)?.q ?? 0, a: a.count });
  return [...byIp]
    .map(([ip, { q, a }]) => ({
      ip,
      count: Math.max(q, a),
      reason: [q >= threshold ? `${q} queued messages` : '', a >= threshold ? `${a} accepted messages` : ''].filter(Boolean).join(', ') + ` in ${window}`,
    }))
    .sort((x, y) => y.count - x.count || (x.ip < y.ip ? -1 : 1));
}

/**
 * What this host's last queued count found (sql/016). While no messages were recorded anywhere
 * and the settings are the same, its addresses over the threshold are still the ones: with
 * the rules unchanged too, its result is reported again; with the rules changed, only the
 * decisions on those addresses are made again (a relay permission, a trust rule removed).
 */
interface LastCount {
  /** Every host's recorded number and the settings. */
  sig: string;
  /** The change counter the decisions saw. */
  changeSeq: string;
  /** When it counted (ms since 1970). */
  at: number;
  over: Candidate[];
  alreadyDenied: number;
  notDenied: NotDenied[];
  /** The lists' entries' change number the decisions saw, and the entries they found. */
  entriesSeq?: string;
  entries?: Record<string, KeptEntry[]>;
}

/** A count older than this is run again, whatever changed (counts fall as messages leave the window). */
const RECOUNT_MS = 10 * 60_000;

async function denyOverThreshold(ctx: RunContext, tx: Queryable, summary: ScanSummary, run: { dryRun: boolean; deny: boolean }): Promise<void> {
  const { config } = ctx;
  // Only the queued count is kept: the log and the spool bring new counts every minute.
  if (config.count !== 'queued' || run.dryRun) {
    const over = await thresholdCandidates(ctx, tx, summary.window);
    summary.overThreshold = over.length;
    await denyCandidates(ctx, tx, summary, run, over);
    return;
  }
  const inputs = [run.deny, config.windowSeconds, config.threshold, config.minPrefix, config.scanExempt, ctx.protectedNets()].map((v) =>
    JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x)),
  );
  // Read before counting: a host that commits meanwhile makes the next run's differ.
  const now = await countSignature(tx);
  const sig = `${now.recorded}/${inputs.join('/')}`;
  const last = await lastCount<LastCount>(tx, config.host);
  const age = last ? Date.now() - last.at : -1;
  const fresh = last !== null && last.sig === sig && Array.isArray(last.over) && age >= 0 && age < RECOUNT_MS;
  if (fresh && last.changeSeq === now.changeSeq) {
    summary.overThreshold = last.over.length;
    summary.alreadyDenied += last.alreadyDenied;
    summary.notDenied.push(...last.notDenied);
    summary.countReused = true;
    ctx.log.info(`queued count as at ${new Date(last.at).toISOString()}: nothing it depends on changed since`);
    return;
  }
  let over: Candidate[];
  if (fresh) {
    over = last.over;
    summary.countReused = true;
    ctx.log.info(`queued count as at ${new Date(last.at).toISOString()} (no messages recorded since): the rules changed, deciding again`);
  } else {
    over = await thresholdCandidates(ctx, tx, summary.window);
  }
  summary.overThreshold = over.length;
  const before = { already: summary.alreadyDenied, notDenied: summary.notDenied.length };
  // The same candidates and no list's entries changed since: the entries they were found in
  // are those (a million entries are not read again because a login was granted).
  const kept = fresh && last.entriesSeq === now.entriesSeq && last.entries ? last.entries : 'all';
  const verdicts = await denyCandidates(ctx, tx, summary, run, over, kept);
  const found: LastCount = {
    sig,
    changeSeq: now.changeSeq,
    at: fresh ? last.at : Date.now(),
    over,
    alreadyDenied: summary.alreadyDenied - before.already,
    notDenied: summary.notDenied.slice(before.notDenied),
    entriesSeq: now.entriesSeq,
    entries: entriesFound(verdicts),
  };
  await saveLastCount(tx, config.host, found);
}

/** QGUARD_CONNECTION_LIMIT: an address that keeps connecting, refused or not — for the firewall to take over. */
async function denyOverConnectionLimit(ctx: RunContext, tx: Queryable, summary: ScanSummary, run: { dryRun: boolean; deny: boolean }): Promise<void> {
  const limit = ctx.config.connectionLimit;
  if (limit === null) return;
  const over = await connectionsOverLimit(tx, limit.seconds, limit.connections);
  summary.overConnectionLimit = over.length;
  const period = formatDuration(limit.seconds);
  await denyCandidates(
    ctx,
    tx,
    summary,
    run,
    over.map((o) => ({ ip: o.ip, count: o.connections, reason: `${o.connections} connections in ${period}${o.denied ? ` (${o.denied} refused by tcp.smtp)` : ''}` })),
  );
}

async function denyCandidates(
  ctx: RunContext,
  tx: Queryable,
  summary: ScanSummary,
  run: { dryRun: boolean; deny: boolean },
  over: readonly Candidate[],
  entries: Parameters<typeof rulesAndVerdicts>[3] = 'all',
): Promise<Map<string, IpRules>> {
  const { config, log } = ctx;
  if (over.length === 0) return new Map();
  const verdicts = await rulesAndVerdicts(tx, over.map((o) => o.ip), ctx.protectedNets(), entries);
  for (const o of over) {
    const v = verdicts.get(o.ip);
    if (!v) continue;
    if (summary.denied.includes(o.ip)) continue; // by the other rule, this run
    const ip = v.net;
    // The decision here and on every host that has a rule of its own for this address: a
    // partner trusted on one mail server is not denied for the whole fleet.
    const hosts = [config.host, ...v.scopedHosts().filter((h) => h !== config.host)];
    const decisions = hosts.map((h) => ({ host: h, ...v.on(h) }));
    const here = decisions[0];
    if (here.decision === 'deny' && here.rule?.host === null) {
      summary.alreadyDenied++;
      continue;
    }
    const why = exemption(ip, decisions, ctx);
    if (why) {
      summary.notDenied.push({ ip: o.ip, count: o.count, why });
      log.info(`not denying ${o.ip} (${o.reason}): ${why}`);
      continue;
    }
    if (!run.deny) {
      summary.notDenied.push({ ip: o.ip, count: o.count, why: '--no-deny' });
      continue;
    }
    if (!run.dryRun) {
      await upsertRule(tx, {
        net: ip,
        action: 'deny',
        source: 'scan',
        reason: o.reason,
        who: `scan-queue (${config.host})`.slice(0, 200),
        ttlSeconds: config.scanBanSeconds,
        host: null,
      });
    }
    summary.denied.push(o.ip);
    log.info(`${run.dryRun ? 'would deny' : 'denied'} ${o.ip}: ${o.reason}`);
  }
  return verdicts;
}
