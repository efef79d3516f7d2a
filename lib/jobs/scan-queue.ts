// scan-queue: who is filling the queue. Every minute (cron), read each queued message once,
// find the IP that sent it (only from our own two Received lines, lib/qmail/received.ts),
// record it in qguard.messages, count messages per IP over every mail server sharing the
// database, and deny an IP that reaches the threshold ("20 messages in 3 days").
//
//   look    stat every queue directory (about 100 of them); a directory whose signature
//           (inode, mtime, ctime) equals the one stored at the last scan holds the same files,
//           so its messages are not even listed. The split groups (mess/S, info/S, local/S,
//           remote/S) that changed are listed and their files stat()ed; one more group per
//           run, in rotation, is re-checked whatever its directories say (qmail-send rewrites
//           local/ and remote/ files in place, which no directory records).
//   read    only messages whose files changed: the envelope alone when mess/ is the same file,
//           the head of mess/ too when it is new (inode reuse: line 1 tells a new message).
//   record  batched writes (unnest), gone messages marked, old gone rows pruned.
//   count   queued messages per source IP within the window, every host; candidates reaching
//           the threshold are checked with decide() (relay/trust never denied), protection,
//           QGUARD_SCAN_EXEMPT and ruleRefusal(); the rest get a `deny` rule of source `scan`.
// All of it in ONE transaction: a database failure leaves nothing half-written (exit 111);
// --dry-run runs everything and rolls back. The queue itself is never written.

import path from 'node:path';
import type pg from 'pg';
import type { RunContext } from '../cli/run-main.js';
import { TemporaryError } from '../errors.js';
import type { Queryable } from '../db/connect.js';
import { formatDuration } from '../duration.js';
import { type Net, formatNetShort, netContains, parseIp } from '../net/address.js';
import { decide } from '../policy/decide.js';
import { ruleRefusal } from '../policy/guards.js';
import { upsertRule } from '../db/rules.js';
import {
  BATCH,
  type RecordRow,
  type StoredSignature,
  messageRow,
  copyHostField,
  copyLine,
  copyMessages,
  countLive,
  groupsWithFlatFiles,
  hostHasRows,
  insertMessages,
  liveGroup,
  loadScanState,
  markGone,
  ownRow,
  overThreshold,
  pruneGone,
  resplit,
  rulesForIps,
  saveScanState,
  updateEnvelopes,
  updateMessages,
} from '../db/messages.js';
import {
  type EnvelopeState,
  type QueueDirName,
  type QueueLayout,
  type QueuedMessage,
  type ReadOutcome,
  QueueChanged,
  dirSignature,
  flatDirs,
  groupDirs,
  listIds,
  messageSignature,
  openQueue,
  readEnvelope,
  readListedMessage,
  readMessageWith,
  splitOf,
  statMessage,
} from '../io/queue-walk.js';

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
  /** Split groups whose files were listed this run (of `split`). */
  groupsRead: number;
  split: number;
  pruned: number;
  /** Where the time went (ms): directory look, listing, stat, reading and parsing, waiting for the database, counting and denying. */
  phasesMs: { look: number; list: number; stat: number; read: number; db: number; count: number };
}

/** Thrown inside the transaction to roll a dry run back (a TemporaryError passes through the db layer untouched). */
class DryRunRollback extends TemporaryError {
  constructor(readonly summary: ScanSummary) {
    super('dry run: rolled back');
  }
}

/** A directory whose ctime is this recent may still change within its timestamp tick: look again next time. */
const SETTLE_MS = 2000;
/** Gone rows are kept this much longer than the window (review, purge provenance). */
const PRUNE_MARGIN_SECONDS = 86400;

/** Run scan-queue. */
export async function scanQueue(ctx: RunContext, opts: ScanOptions): Promise<void> {
  const started = performance.now();
  const dryRun = Boolean(opts.dryRun);
  await ctx.jobLock('scan-queue', { record: !dryRun });
  const layout = openQueue(path.resolve(ctx.config.queueDir));
  const db = await ctx.db();
  let summary: ScanSummary;
  try {
    summary = await db.transaction(async (tx) => {
      const s = await scanInto(ctx, tx, layout, { dryRun, deny: opts.deny !== false, started, pgClient: db.pgClient });
      if (dryRun) throw new DryRunRollback(s);
      return s;
    });
  } catch (err) {
    if (!(err instanceof DryRunRollback)) throw err;
    summary = err.summary;
  }
  summary.durationMs = Math.round(performance.now() - started);
  for (const k of Object.keys(summary.phasesMs) as (keyof ScanSummary['phasesMs'])[]) summary.phasesMs[k] = Math.round(summary.phasesMs[k]);
  ctx.log.info(
    `${layout.dir}: ${summary.scanned} messages: ${summary.new} new, ${summary.updated} updated, ${summary.unchanged} unchanged, ` +
      `${summary.gone} gone, ${summary.skipped} skipped, ${summary.errors} odd; ${summary.groupsRead}/${summary.split} groups read; ` +
      `${summary.overThreshold} IPs at ${summary.threshold}+ in ${summary.window}; ${dryRun ? 'would deny' : 'denied'} ` +
      `${summary.denied.length ? summary.denied.join(' ') : 'none'} (${summary.durationMs} ms: ` +
      `${Object.entries(summary.phasesMs).map(([k, v]) => `${k} ${v}`).join(', ')})`,
  );
  ctx.jobSummary(summary);
  if (opts.json) ctx.printJson(summary);
}

/** COPY text is sent in pieces of this size (and a batch is sent when it reaches it). */
const COPY_BLOCK = 1 << 20;
const COPY_BATCH_BYTES = 4 << 20;

/**
 * Batched writes of the scan, pipelined: a batch goes to the database while the next one is
 * read from the queue (PostgreSQL works on its CPU while we parse on ours). At most one batch
 * is in flight; its failure surfaces at the next flush or at the end. New messages are
 * encoded as COPY text the moment they are read on a server database (nothing of them is
 * held but bytes), and kept as rows for unnest() on the embedded one.
 */
class Writer {
  private inserts: RecordRow[] = [];
  private updates: { rowId: number; message: RecordRow }[] = [];
  private envelopes: { rowId: number; envelope: EnvelopeState; sig: string }[] = [];
  private gone: number[] = [];
  private copied: Buffer[] = [];
  private block: Buffer | null = null;
  private used = 0;
  private copyBytes = 0;
  private copyRows = 0;
  private inFlight: Promise<void> | null = null;
  private readonly hostField: string;

  constructor(
    private readonly tx: Queryable,
    private readonly host: string,
    /** COPY on a server database; `fresh`: the host has no rows yet (see copyMessages). */
    private readonly copy: { client: pg.Client; fresh: boolean } | null,
  ) {
    this.hostField = copyHostField(host);
  }

  /** Whether what is read may point into the text of the message it was read from (see readListedMessage). */
  get encodesAtOnce(): boolean {
    return this.copy !== null;
  }

  insert(m: QueuedMessage): void {
    const row = messageRow(m);
    if (!this.copy) {
      this.inserts.push(row);
      return;
    }
    const line = copyLine(this.hostField, row);
    // At most 3 bytes of UTF-8 per UTF-16 unit.
    if (this.block === null || this.block.length - this.used < line.length * 3) {
      this.endBlock();
      this.block = Buffer.allocUnsafe(Math.max(COPY_BLOCK, line.length * 3));
    }
    const n = this.block.write(line, this.used, 'utf8');
    this.used += n;
    this.copyBytes += n;
    this.copyRows++;
  }

  update(rowId: number, m: QueuedMessage): void {
    this.updates.push({ rowId, message: ownRow(messageRow(m)) });
  }

  envelope(rowId: number, envelope: EnvelopeState, sig: string): void {
    this.envelopes.push({ rowId, envelope, sig });
  }

  markGone(rowId: number): void {
    this.gone.push(rowId);
  }

  private endBlock(): void {
    if (this.block !== null && this.used > 0) this.copied.push(this.block.subarray(0, this.used));
    this.block = null;
    this.used = 0;
  }

  private get size(): number {
    return this.inserts.length + this.updates.length + this.envelopes.length + this.gone.length + this.copyRows;
  }

  /** Bound memory: send a full batch now (a group larger than a batch). */
  async flushIfFull(): Promise<void> {
    if (this.size >= BATCH || this.copyBytes >= COPY_BATCH_BYTES) await this.flush();
  }

  /** Send what is buffered (after the batch in flight, if any, has finished). */
  async flush(): Promise<void> {
    if (this.size === 0) return;
    this.endBlock();
    const batch = { inserts: this.inserts, updates: this.updates, envelopes: this.envelopes, gone: this.gone, copied: this.copied };
    this.inserts = [];
    this.updates = [];
    this.envelopes = [];
    this.gone = [];
    this.copied = [];
    this.copyBytes = 0;
    this.copyRows = 0;
    await this.settle();
    this.inFlight = this.write(batch);
    // Handled here; the error is thrown again by settle().
    this.inFlight.catch(() => {});
  }

  /** Wait for the batch in flight; throw its error. */
  async settle(): Promise<void> {
    const p = this.inFlight;
    this.inFlight = null;
    if (p) await p;
  }

  private async write(b: { inserts: RecordRow[]; updates: Writer['updates']; envelopes: Writer['envelopes']; gone: number[]; copied: Buffer[] }) {
    if (b.copied.length) await copyMessages(this.copy!.client, this.tx, b.copied, this.copy!.fresh);
    if (b.inserts.length) await insertMessages(this.tx, this.host, b.inserts);
    if (b.updates.length) await updateMessages(this.tx, b.updates);
    if (b.envelopes.length) await updateEnvelopes(this.tx, b.envelopes);
    if (b.gone.length) await markGone(this.tx, b.gone);
  }
}

/** Let the event loop run (the database's replies, and the rest of a COPY waiting for the socket). */
const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));
/** Messages read between two yields. */
const YIELD_EVERY = 256;

function errCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
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
    groupsRead: 0,
    split: layout.split,
    pruned: 0,
    phasesMs: { look: 0, list: 0, stat: 0, read: 0, db: 0, count: 0 },
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
  for (let s = 0; s < layout.split; s++) {
    let changed = false;
    for (const d of groupDirs(layout, s)) if (look(`${d.dir}/${s}`, d.path)) changed = true;
    if (changed) groups.add(s);
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
  const buf = new Writer(tx, host, copyClient ? { client: copyClient, fresh } : null);
  const keepStrings = !buf.encodesAtOnce;
  const odd = (what: string) => {
    summary.errors++;
    log.info(what);
  };
  const noRows = new Map<string, StoredSignature[]>();
  const storedOf = (g: number) => (fresh ? Promise.resolve(noRows) : liveGroup(tx, host, g));
  const order = [...groups].sort((a, b) => a - b);
  // The stored rows of the next group are asked for before this group's writes are sent, so
  // they come back at once and the writes run in the database while we read the next group.
  let nextStored: Promise<Map<string, StoredSignature[]>> | null = order.length ? storedOf(order[0]) : null;
  for (let gi = 0; gi < order.length; gi++) {
    const s = order[gi];
    summary.groupsRead++;
    let unsettle = false;
    const present = new Map<string, QueueDirName[]>();
    const orphans: string[] = [];
    for (const d of groupDirs(layout, s)) {
      const t0 = performance.now();
      const { ids, odd: oddNames } = listIds(d.path);
      ms.list += performance.now() - t0;
      if (oddNames.length) log.info(`${d.dir}/${s}: ${oddNames.length} names that are not queue ids (e.g. ${JSON.stringify(oddNames[0].slice(0, 40))})`);
      let misplaced: string | null = null;
      let nMisplaced = 0;
      for (const id of ids) {
        // A mess file in the wrong subdirectory is not where qmail looks for it, nor where we
        // read: without this, its id would be read (from its right place) in two groups.
        if (d.dir === 'mess' && splitOf(id, layout.split) !== s) {
          misplaced ??= id;
          nMisplaced++;
          continue;
        }
        const list = present.get(id);
        if (list === undefined) present.set(id, [d.dir]);
        else if (d.dir === 'mess') list.unshift('mess');
        else list.push(d.dir);
      }
      if (misplaced !== null) log.info(`${d.dir}/${s}: ${nMisplaced} file(s) in the wrong subdirectory (e.g. ${misplaced})`);
    }
    for (const [id, dirs] of flat) if (splitOf(id, layout.split) === s) present.set(id, [...(present.get(id) ?? []), ...dirs]);
    let t0 = performance.now();
    const stored = await nextStored!;
    ms.db += performance.now() - t0;
    const keep = new Set<number>();
    let sinceYield = 0;

    /** Record what a full read found (rows: the stored rows of this id). */
    const record = (outcome: ReadOutcome, rows: readonly StoredSignature[]): void => {
      if (outcome.status === 'vanished') {
        summary.skipped++;
        return;
      }
      if (outcome.status === 'unstable') {
        summary.skipped++;
        unsettle = true;
        for (const r of rows) keep.add(r.rowId);
        return;
      }
      if (outcome.status === 'unreadable') {
        odd(outcome.error);
        unsettle = true;
        for (const r of rows) keep.add(r.rowId);
        return;
      }
      const m = outcome.message;
      const inFlight = m.state.startsWith('in-flight');
      if (m.line1 === '' && inFlight) {
        // qmail-queue has not written line 1 yet: nothing to record; intd/todo will follow.
        summary.skipped++;
        return;
      }
      if (m.problems.length && !inFlight) odd(`${m.files[0]}: ${m.problems.join('; ')}`);
      const match = rows.find((r) => r.line1 === m.line1);
      if (match) {
        buf.update(match.rowId, m);
        keep.add(match.rowId);
        summary.updated++;
      } else {
        buf.insert(m);
        summary.new++;
      }
    };

    for (const [id, dirs] of present) {
      if (dirs[0] !== 'mess') {
        // Files of a message without mess/: qmail-send is finishing it, or they are leftovers.
        orphans.push(id);
        continue;
      }
      if (id.length > 18 && BigInt(id) > 9223372036854775807n) {
        odd(`mess/${s}/${id}: id too large`);
        continue;
      }
      if (++sinceYield === YIELD_EVERY) {
        // Sync reads hold the event loop: let it send the COPY in flight and take replies.
        sinceYield = 0;
        await yieldToLoop();
      }
      const rows = stored.get(id);
      if (rows === undefined) {
        // Not recorded: nothing to compare, so no stat first; each file is opened once.
        t0 = performance.now();
        record(readListedMessage(layout, id, dirs, { keep: keepStrings }), []);
        ms.read += performance.now() - t0;
        t0 = performance.now();
        await buf.flushIfFull();
        ms.db += performance.now() - t0;
        continue;
      }
      let stats;
      try {
        t0 = performance.now();
        stats = statMessage(layout, id, dirs);
        ms.stat += performance.now() - t0;
      } catch (err) {
        odd(`mess/${s}/${id}: ${(err as Error).message}`);
        unsettle = true;
        continue;
      }
      if (!stats.mess) {
        summary.skipped++; // delivered while we looked
        continue;
      }
      const { sig, messSig } = messageSignature(stats);
      const same = rows.find((r) => r.sig === sig);
      if (same) {
        summary.unchanged++;
        keep.add(same.rowId);
        continue;
      }
      const messSame = rows.find((r) => r.messSig === messSig && r.line1 !== '');
      if (messSame) {
        try {
          t0 = performance.now();
          const envelope = readEnvelope(layout, id, stats);
          ms.read += performance.now() - t0;
          buf.envelope(messSame.rowId, envelope, sig);
          keep.add(messSame.rowId);
          summary.updated++;
          if (envelope.problems.length && !envelope.state.startsWith('in-flight')) odd(`message ${id}: ${envelope.problems.join('; ')}`);
          t0 = performance.now();
          await buf.flushIfFull();
          ms.db += performance.now() - t0;
          continue;
        } catch (err) {
          // Changed under us (todo/ removed mid-read): read it in full below.
          if (!(err instanceof QueueChanged) && errCode(err) !== 'ENOENT') {
            odd(`message ${id}: ${(err as Error).message}`);
            unsettle = true;
            keep.add(messSame.rowId);
            continue;
          }
        }
      }
      t0 = performance.now();
      record(readMessageWith(layout, id, stats, { keep: keepStrings }), rows);
      ms.read += performance.now() - t0;
      t0 = performance.now();
      await buf.flushIfFull();
      ms.db += performance.now() - t0;
    }
    if (orphans.length) log.info(`group ${s}: ${orphans.length} message(s) with files but no mess/ (e.g. ${orphans[0]})`);
    for (const rows of stored.values()) for (const r of rows) if (!keep.has(r.rowId)) buf.markGone(r.rowId);
    summary.gone += [...stored.values()].reduce((n, rows) => n + rows.filter((r) => !keep.has(r.rowId)).length, 0);
    if (unsettle) for (const d of groupDirs(layout, s)) nowDirs[`${d.dir}/${s}`] = '';
    if (gi + 1 < order.length) {
      nextStored = storedOf(order[gi + 1]);
      nextStored.catch(() => {}); // awaited (and thrown) at the next group
    }
    t0 = performance.now();
    await buf.flush();
    ms.db += performance.now() - t0;
  }
  let t0 = performance.now();
  await buf.flush();
  await buf.settle();
  summary.pruned = await pruneGone(tx, config.windowSeconds + PRUNE_MARGIN_SECONDS);
  summary.scanned = await countLive(tx, host);
  summary.unchanged = summary.scanned - summary.new - summary.updated;

  // ---- count and deny
  ms.db += performance.now() - t0;
  t0 = performance.now();
  await denyOverThreshold(ctx, tx, summary, run);
  ms.count = performance.now() - t0;

  await saveScanState(tx, {
    host,
    queueDir: layout.dir,
    split: layout.split,
    dirs: nowDirs,
    rotation: (rotation + 1) % layout.split,
    durationMs: performance.now() - run.started,
    messages: summary.scanned,
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

async function denyOverThreshold(
  ctx: RunContext,
  tx: Queryable,
  summary: ScanSummary,
  run: { dryRun: boolean; deny: boolean },
): Promise<void> {
  const { config, log } = ctx;
  const over = await overThreshold(tx, config.windowSeconds, config.threshold);
  summary.overThreshold = over.length;
  if (over.length === 0) return;
  const rules = await rulesForIps(tx, over.map((o) => o.ip));
  const prot = ctx.protectedNets();
  for (const o of over) {
    const parsed = parseIp(o.ip);
    if (!parsed.ok) continue;
    const ip = parsed.net;
    const mine = rules.get(o.ip) ?? [];
    // The decision here and on every host that has a rule of its own for this address: a
    // partner trusted on one mail server is not denied for the whole fleet.
    const hosts = [config.host, ...new Set(mine.map((r) => r.host).filter((h): h is string => h !== null && h !== config.host))];
    const decisions = hosts.map((h) => {
      const d = decide(ip, mine.filter((r) => r.host === null || r.host === h), prot);
      return { host: h, decision: d.decision, rule: d.rule, protected: d.protected };
    });
    const here = decisions[0];
    if (here.decision === 'deny' && here.rule?.host === null) {
      summary.alreadyDenied++;
      continue;
    }
    const why = exemption(ip, decisions, ctx);
    if (why) {
      summary.notDenied.push({ ip: o.ip, count: o.count, why });
      log.info(`not denying ${o.ip} (${o.count} queued messages): ${why}`);
      continue;
    }
    if (!run.deny) {
      summary.notDenied.push({ ip: o.ip, count: o.count, why: '--no-deny' });
      continue;
    }
    const reason = `${o.count} queued messages in ${summary.window}`;
    if (!run.dryRun) {
      await upsertRule(tx, {
        net: ip,
        action: 'deny',
        source: 'scan',
        reason,
        who: `scan-queue (${config.host})`.slice(0, 200),
        ttlSeconds: config.scanBanSeconds,
        host: null,
      });
    }
    summary.denied.push(o.ip);
    log.info(`${run.dryRun ? 'would deny' : 'denied'} ${o.ip}: ${reason}`);
  }
}
