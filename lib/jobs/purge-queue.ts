// purge-queue: the seed's daily job — clear spam out of the qmail queue with judgement, with
// qmail-send stopped and its lock held, every removed message kept in the quarantine first.
//
//   plan     the candidates are what scan-queue recorded for this host (qguard.messages, plus
//            a fresh read for --id messages it has not seen); each source IP's decision comes
//            from the live rules through decide() (with the protected networks); the policy
//            choice is lib/policy/purge-select.ts. --max refuses an oversized selection (exit
//            100) before anything is touched; --dry-run reads each chosen message again and
//            lists what would go.
//   stop     whether qmail-send runs = whether queue/lock/sendmutex is locked (it holds
//            flock(LOCK_EX) on it). Free: nothing is stopped or started. Held: run
//            QGUARD_QMAIL_STOP, then wait (bounded) for the lock; not obtained → nothing is
//            removed, what we stopped is started, exit 111. The lock is held for the whole
//            removal. A marker file in the state directory remembers that we stopped
//            qmail-send, so a run killed meanwhile is followed by one that starts it again.
//   repair   rows left in state 'removing' by a killed run are finished first (their copies
//            are durable); quarantine directories without a row (never committed) are deleted.
//   apply    in batches: a fresh read of each message (same id AND same line 1, else the inode
//            was reused: skip), its quarantine entry written, one sync, the rows inserted
//            ('removing': the commit point), the queue files unlinked in the safe order
//            (lib/io/queue-remove.ts), one sync, the rows marked 'removed'.
//   finish   release the lock, start qmail-send if we stopped it, drop quarantine entries older
//            than QGUARD_QUARANTINE_KEEP, record the run.
// kill -9 anywhere leaves every removed message in the quarantine; the next run leaves the
// queue without orphans.
//
// Size: one job with its safety steps (plan, stop qmail-send, repair, quarantine, remove, restart) in the order they happen.

import fs from 'node:fs';
import path from 'node:path';
import type { RunContext } from '../context.js';
import { PermanentError, TemporaryError, UsageError, errorText } from '../errors.js';
import { forTerminal } from '../text.js';
import { parseDuration } from '../duration.js';
import { parseNet } from '../net/address.js';
import {
  type AdminSelection,
  type Chosen,
  type KeepReason,
  type PurgePolicy,
  type PurgeRecord,
  DEFAULT_POLICIES,
  PURGE_POLICIES,
  type SourceVerdict,
  selectPurge,
} from '../policy/purge-select.js';
import { markGone } from '../db/messages.js';
import { keepCopyWithQuarantine } from '../db/web.js';
import { rulesAndVerdicts } from '../ops/verdicts.js';
import { pruneQuarantine } from '../ops/quarantine.js';
import {
  type CandidateRow,
  type NewQuarantineRow,
  allocateIds,
  deleteRows,
  existingIds,
  insertRemoving,
  markMessagesGone,
  markRemoved,
  purgeCandidates,
  rowsInState,
} from '../db/quarantine.js';
import type { Queryable } from '../db/connect.js';
import { currentActor } from '../db/connect.js';
import { openQueue, readMessage } from '../io/queue-walk.js';
import { type QueueLayout, type QueuedMessage, kindOf } from '../qmail/queued-message.js';
import { removeMessageFiles } from '../io/queue-remove.js';
import {
  type QuarantineMeta,
  type WrittenEntry,
  ensureQuarantineDir,
  entryComplete,
  listEntries,
  removeEntry,
  syncPaths,
  writeEntry,
} from '../io/quarantine.js';
import { readIfExists } from '../io/read-optional.js';
import { type QmailControl, owedOnly, stopAndLock } from '../io/qmail-send.js';
import {
  type VirtualDomains,
  parseVirtualDomains,
  renderQmailQueueEnvelope,
  stripVdomPrepend,
} from '../qmail/qmail-queue-envelope.js';

/** Flags of the purge-queue command. */
export interface PurgeOptions {
  dryRun?: boolean;
  json?: boolean;
  /** Comma-separated policies (denied, backscatter, stale). */
  policy?: string;
  olderThan?: string;
  ip?: string;
  sender?: string;
  id?: string[];
  max?: string;
  force?: boolean;
  /** How long to wait for qmail-send to let go of its lock after the stop command. */
  stopWait?: string;
  /** Carry out the review page's requests (purge an IP's messages, restore) instead. */
  requests?: boolean;
}

/** One message a dry run would remove. */
export interface PlannedRemoval {
  id: string;
  sourceIp: string | null;
  sender: string | null;
  kind: string;
  policy: string;
  reason: string;
  arrival: string;
}

/** The --json summary (INTERFACE.md), with a few extra fields. */
export interface PurgeSummary {
  selected: number;
  removed: number;
  quarantined: number;
  skipped: number;
  stoppedQmail: boolean;
  durationMs: number;
  dryRun: boolean;
  policies: string[];
  /** Selected beyond --max (with --force): left for the next run. */
  deferred: number;
  /** Matched a policy or selection but kept by a guard, by guard. */
  guarded: Partial<Record<KeepReason, number>>;
  /** Selected but not removed, by why (gone, replaced, in-flight, unreadable, envelope). */
  skippedWhy: Record<string, number>;
  /** Removals of a killed run finished by this one. */
  repaired: number;
  /** Quarantine entries dropped by the retention (QGUARD_QUARANTINE_KEEP). */
  pruned: number;
  quarantineDir: string;
  /** Dry run: what would go. */
  messages?: PlannedRemoval[];
}

/** The selection a run works with, from the flags. */
export interface PurgePlan {
  dryRun: boolean;
  policies: PurgePolicy[];
  olderThanSeconds: number | null;
  admin: AdminSelection | null;
  max: number;
  force: boolean;
  stopWaitSeconds: number;
}

export const DEFAULT_MAX = 100_000;
const DEFAULT_STOP_WAIT = 300;
/** Messages per batch: one sync and two statements each. */
export const PURGE_BATCH = 1000;
/** The marker: we stopped qmail-send and owe it a start. */
const MARKER = 'purge-queue.qmail-stopped';

function durationFlag(flag: string, v: string): number {
  const r = parseDuration(v);
  if ('error' in r) throw new UsageError(`${flag}: ${r.error}`);
  return r.seconds;
}

/** Flags → plan; bad flags are usage errors (exit 2). */
export function parsePurgeOptions(opts: PurgeOptions): PurgePlan {
  const olderThanSeconds = opts.olderThan !== undefined ? durationFlag('--older-than', opts.olderThan) : null;
  const admin: AdminSelection = {};
  if (opts.ip !== undefined) {
    const r = parseNet(opts.ip);
    if (!r.ok) throw new UsageError(`--ip: ${r.error}`);
    admin.net = r.net;
  }
  if (opts.sender !== undefined) admin.sender = opts.sender;
  if (opts.id !== undefined && opts.id.length > 0) {
    for (const id of opts.id) {
      if (!/^[1-9]\d{0,19}$/.test(id)) throw new UsageError(`--id: not a queue id (the number qmail-qread shows): ${JSON.stringify(id.slice(0, 40))}`);
    }
    admin.ids = [...new Set(opts.id)];
  }
  const hasAdmin = admin.net !== undefined || admin.sender !== undefined || admin.ids !== undefined;
  let policies: PurgePolicy[];
  if (opts.policy !== undefined) {
    policies = [];
    for (const p of opts.policy.split(/[\s,]+/).filter(Boolean)) {
      if (p === 'none') continue;
      if (!(PURGE_POLICIES as readonly string[]).includes(p)) {
        throw new UsageError(`--policy: unknown policy ${JSON.stringify(p.slice(0, 40))} (denied, backscatter, stale, none)`);
      }
      if (!policies.includes(p as PurgePolicy)) policies.push(p as PurgePolicy);
    }
  } else {
    // An admin selection says exactly what to remove; otherwise the daily default.
    policies = hasAdmin ? [] : [...DEFAULT_POLICIES];
  }
  if (olderThanSeconds !== null && !policies.includes('stale')) policies.push('stale');
  if (policies.includes('stale') && olderThanSeconds === null) throw new UsageError('--policy stale needs --older-than DUR');
  let max = DEFAULT_MAX;
  if (opts.max !== undefined) {
    if (!/^\d{1,9}$/.test(opts.max) || Number(opts.max) < 1) throw new UsageError(`--max: not a positive whole number: ${JSON.stringify(opts.max.slice(0, 40))}`);
    max = Number(opts.max);
  }
  const stopWaitSeconds = opts.stopWait !== undefined ? durationFlag('--stop-wait', opts.stopWait) : DEFAULT_STOP_WAIT;
  return { dryRun: Boolean(opts.dryRun), policies, olderThanSeconds, admin: hasAdmin ? admin : null, max, force: Boolean(opts.force), stopWaitSeconds };
}

/** A candidate: the recorded message (or a fresh read of an --id one scan-queue has not seen). */
interface Candidate extends PurgeRecord {
  rowId: number | null;
  line1: string;
}

/** Run purge-queue. */
export async function purgeQueue(ctx: RunContext, opts: PurgeOptions): Promise<void> {
  if (opts.requests) return (await import('./purge-requests.js')).purgeRequests(ctx, opts);
  const plan = parsePurgeOptions(opts);
  await ctx.jobLock('purge-queue', { record: !plan.dryRun });
  await purgeWith(ctx, plan, opts);
}

/**
 * One purge with the job lock held: plan, then (not a dry run) stop qmail-send, repair,
 * quarantine and remove, start it again, prune the quarantine. Returns the summary.
 */
export async function purgeWith(ctx: RunContext, plan: PurgePlan, opts: PurgeOptions): Promise<PurgeSummary> {
  const started = performance.now();
  const { config, log } = ctx;
  const layout = openQueue(path.resolve(config.queueDir));
  const db = await ctx.db();
  const summary: PurgeSummary = {
    selected: 0,
    removed: 0,
    quarantined: 0,
    skipped: 0,
    stoppedQmail: false,
    durationMs: 0,
    dryRun: plan.dryRun,
    policies: plan.policies,
    deferred: 0,
    guarded: {},
    skippedWhy: {},
    repaired: 0,
    pruned: 0,
    quarantineDir: path.resolve(config.quarantineDir),
  };

  // Removals a killed run left unfinished: finished below (under the lock), never chosen twice.
  const repairs = plan.dryRun ? [] : await rowsInState(db, config.host, ['removing']);
  const repairing = new Set(repairs.map((r) => `${r.queueId} ${r.line1}`));

  // ---- plan
  const candidates = (await loadCandidates(ctx, db, layout, plan)).filter((c) => !repairing.has(`${c.id} ${c.line1}`));
  const verdicts = await sourceVerdicts(ctx, db, candidates);
  const sel = selectPurge(candidates, (ip) => verdicts.get(ip), {
    policies: plan.policies,
    olderThanSeconds: plan.olderThanSeconds,
    admin: plan.admin,
    now: new Date(),
  });
  for (const g of sel.guarded) summary.guarded[g.why] = (summary.guarded[g.why] ?? 0) + 1;
  summary.selected = sel.selected.length;
  let chosen = sel.selected;
  if (chosen.length > plan.max) {
    if (!plan.force) {
      throw new PermanentError(
        `${chosen.length} messages selected, more than --max ${plan.max}: nothing removed (narrow the selection, raise --max, or add --force to remove the oldest ${plan.max} now)`,
      );
    }
    summary.deferred = chosen.length - plan.max;
    chosen = chosen.slice(0, plan.max);
  }

  if (plan.dryRun) {
    summary.messages = dryRunList(layout, chosen, summary);
    finish(ctx, summary, started, opts);
    if (!opts.json) printPlan(ctx, summary);
    return summary;
  }

  // ---- repair, apply
  const qdir = ensureQuarantineDir(config.quarantineDir);
  summary.quarantineDir = qdir;
  await dropUncommitted(ctx, db, qdir);
  const marker = path.join(config.stateDir, MARKER);
  const owed = fs.existsSync(marker);
  if (chosen.length > 0 || repairs.length > 0 || owed) {
    const gate = chosen.length > 0 || repairs.length > 0 ? await stopAndLock(qmailControl(ctx), layout.dir, plan.stopWaitSeconds, marker, owed) : owedOnly(qmailControl(ctx), marker);
    summary.stoppedQmail = gate.stopped;
    let failure: unknown = null;
    try {
      if (repairs.length > 0) summary.repaired = await repair(ctx, db, layout, repairs);
      if (chosen.length > 0) await removeAll(ctx, db, layout, qdir, chosen, summary);
    } catch (err) {
      failure = err;
    }
    try {
      await gate.release();
    } catch (err) {
      if (failure === null) failure = err;
      else log.warn(errorText(err));
    }
    if (failure !== null) throw failure;
  }

  // ---- retention
  summary.pruned = await pruneQuarantine(db, config.host, config.quarantineKeepSeconds);
  finish(ctx, summary, started, opts);
  return summary;
}

function finish(ctx: RunContext, summary: PurgeSummary, started: number, opts: PurgeOptions): void {
  summary.durationMs = Math.round(performance.now() - started);
  const g = Object.entries(summary.guarded)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  ctx.log.info(
    `${summary.selected} selected (${summary.policies.join(', ') || 'admin selection'}), ${summary.dryRun ? 'would remove' : 'removed'} ` +
      `${summary.dryRun ? (summary.messages?.length ?? 0) : summary.removed}, skipped ${summary.skipped}` +
      `${summary.deferred ? `, ${summary.deferred} left for the next run (--max)` : ''}${g ? `; kept by guards: ${g}` : ''}` +
      `${summary.repaired ? `; finished ${summary.repaired} interrupted removals` : ''}${summary.pruned ? `; pruned ${summary.pruned} old quarantine entries` : ''}` +
      `${summary.stoppedQmail ? '; qmail-send was stopped and started' : ''} (${summary.durationMs} ms)`,
  );
  ctx.jobSummary(summary);
  if (opts.json) ctx.printJson(summary);
}

function printPlan(ctx: RunContext, summary: PurgeSummary): void {
  const lines = (summary.messages ?? []).map(
    (m) => `${m.id.padStart(9)} ${(m.sourceIp ?? '-').padEnd(15)} <${forTerminal(m.sender ?? '?')}> ${forTerminal(m.reason)}`,
  );
  if (lines.length) ctx.print(`${lines.join('\n')}\n`);
}

// ---------------------------------------------------------------------------------------
// Plan

async function loadCandidates(ctx: RunContext, db: Queryable, layout: QueueLayout, plan: PurgePlan): Promise<Candidate[]> {
  const rows: CandidateRow[] = await purgeCandidates(db, ctx.config.host);
  const out: Candidate[] = rows.map((r) => ({
    rowId: r.rowId,
    id: r.id,
    line1: r.line1,
    state: r.state,
    kind: r.kind,
    forwarded: r.forwarded,
    sourceIp: r.sourceIp,
    sender: r.sender,
    arrival: r.arrival,
  }));
  // --id names messages scan-queue may not have seen yet: read those from the queue.
  const ids = plan.admin?.ids;
  if (ids) {
    const known = new Set(out.map((c) => c.id));
    for (const id of ids) {
      if (known.has(id)) continue;
      const r = readMessage(layout, id);
      if (r.status !== 'ok') {
        ctx.log.warn(`--id ${id}: ${r.status === 'unreadable' ? r.error : 'no such message in the queue'}`);
        continue;
      }
      out.push(fromFreshRead(r.message));
    }
  }
  return out;
}

function fromFreshRead(m: QueuedMessage): Candidate {
  return {
    rowId: null,
    id: m.id,
    line1: m.line1,
    state: m.state,
    kind: kindOf(m),
    forwarded: m.origin.forwarded,
    sourceIp: m.origin.sourceIp,
    sender: m.sender,
    arrival: m.arrival,
  };
}

/** The decision for every source IP among the candidates, on this mail server. */
async function sourceVerdicts(ctx: RunContext, db: Queryable, candidates: readonly Candidate[]): Promise<Map<string, SourceVerdict>> {
  const ips = candidates.map((c) => c.sourceIp).filter((ip): ip is string => ip !== null);
  const out = new Map<string, SourceVerdict>();
  for (const [ip, v] of await rulesAndVerdicts(db, ips, ctx.protectedNets())) {
    const d = v.on(ctx.config.host);
    out.set(ip, { decision: d.decision, protected: d.protected, rule: d.rule ? { cidr: d.rule.cidr, source: d.rule.source } : null });
  }
  return out;
}

/** Why a fresh read does not allow removing the chosen message, or null. */
function freshProblem(c: Candidate, m: QueuedMessage): string | null {
  if (m.line1 !== c.line1) return 'replaced';
  if (m.state === 'in-flight-intd' || m.state === 'in-flight-mess-only') return 'in-flight';
  if (m.origin.sourceIp !== c.sourceIp) return 'changed';
  return null;
}

function skip(summary: PurgeSummary, why: string): void {
  summary.skipped++;
  summary.skippedWhy[why] = (summary.skippedWhy[why] ?? 0) + 1;
}

function dryRunList(layout: QueueLayout, chosen: readonly Chosen<Candidate>[], summary: PurgeSummary): PlannedRemoval[] {
  const out: PlannedRemoval[] = [];
  for (const c of chosen) {
    const r = readMessage(layout, c.record.id);
    if (r.status !== 'ok') {
      skip(summary, r.status === 'vanished' ? 'gone' : 'unreadable');
      continue;
    }
    const p = freshProblem(c.record, r.message);
    if (p) {
      skip(summary, p);
      continue;
    }
    out.push({
      id: c.record.id,
      sourceIp: c.record.sourceIp,
      sender: r.message.sender,
      kind: c.record.kind,
      policy: c.basis,
      reason: c.reason,
      arrival: c.record.arrival.toISOString(),
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Stopping qmail-send and holding its lock

const qmailControl = (ctx: RunContext): QmailControl => ({ stop: ctx.config.qmailStop, start: ctx.config.qmailStart, log: ctx.log });

// ---------------------------------------------------------------------------------------
// Repair

/** Delete quarantine directories no row knows: written by a run killed before its commit. */
async function dropUncommitted(ctx: RunContext, db: Queryable, qdir: string): Promise<void> {
  const { ids, partial } = listEntries(qdir);
  for (const p of partial) removeEntry(p);
  if (ids.length === 0) return;
  const known = await existingIds(db, ids);
  for (const id of ids) {
    if (known.has(id)) continue;
    ctx.log.info(`removing uncommitted quarantine entry ${id} (its message never left the queue)`);
    removeEntry(path.join(qdir, String(id)));
  }
}

/** Finish the removals a killed run left in state 'removing'. Returns how many. */
async function repair(ctx: RunContext, db: Queryable, layout: QueueLayout, rows: Awaited<ReturnType<typeof rowsInState>>): Promise<number> {
  const done: number[] = [];
  const lost: number[] = [];
  const touched = new Set<string>();
  for (const row of rows) {
    if (!entryComplete(row.path)) {
      // Somebody deleted the copy: do not take more of the message out of the queue.
      ctx.log.warn(`quarantine entry ${row.id} (queue id ${row.queueId}) is missing from ${row.path}: its message is left as it is in the queue`);
      lost.push(row.id);
      continue;
    }
    const r = readMessage(layout, row.queueId);
    // mess/N goes last: when it is gone, so is everything else of the message; when line 1
    // differs, id N now belongs to a new message and ours is gone.
    if (r.status === 'ok' && r.message.line1 === row.line1) {
      const files = removeMessageFiles(layout, row.queueId, touched);
      ctx.log.info(`finished removing ${row.queueId} (quarantine ${row.id}): ${files.join(' ') || 'nothing left'}`);
    } else if (r.status === 'unreadable' || r.status === 'unstable') {
      throw new TemporaryError(`cannot finish removing ${row.queueId} (quarantine ${row.id}): ${r.status === 'unreadable' ? r.error : 'it keeps changing'}`);
    }
    done.push(row.id);
  }
  await syncPaths([...touched]);
  await markRemoved(db, done);
  if (lost.length) await deleteRows(db, lost);
  const finished = new Set(done);
  await markMessagesGone(
    db,
    ctx.config.host,
    rows.filter((r) => finished.has(r.id)).map((r) => ({ queueId: r.queueId, line1: r.line1 })),
  );
  return done.length;
}

// ---------------------------------------------------------------------------------------
// Apply

function readVirtualDomains(ctx: RunContext): VirtualDomains {
  const file = path.join(ctx.config.controlDir, 'virtualdomains');
  const text = readIfExists(file, 'utf8');
  if (text === null) return new Map();
  const r = parseVirtualDomains(text);
  for (const p of r.problems) ctx.log.warn(`${file}: ${p}`);
  return r.map;
}

interface Staged {
  qid: number;
  choice: Chosen<Candidate>;
  message: QueuedMessage;
  entry: WrittenEntry;
  row: NewQuarantineRow;
}

async function removeAll(
  ctx: RunContext,
  db: Queryable,
  layout: QueueLayout,
  qdir: string,
  chosen: readonly Chosen<Candidate>[],
  summary: PurgeSummary,
): Promise<void> {
  const vdoms = readVirtualDomains(ctx);
  const who = currentActor('purge-queue');
  for (let i = 0; i < chosen.length; i += PURGE_BATCH) {
    const batch = chosen.slice(i, i + PURGE_BATCH);
    const qids = await allocateIds(db, batch.length);
    const staged: Staged[] = [];
    batch.forEach((choice, k) => {
      const s = stage(ctx, layout, qdir, choice, qids[k], vdoms, who, summary);
      if (s) staged.push(s);
    });
    if (staged.length === 0) continue;
    // Barrier 1: the copies are durable before any row says they exist.
    await syncPaths([qdir], staged.flatMap((s) => [...s.entry.files, s.entry.path]));
    await insertRemoving(
      db,
      staged.map((s) => s.row),
    );
    // The readable copy (the review page's) goes with the quarantine entry.
    await keepCopyWithQuarantine(
      db,
      staged.flatMap((s) => (s.choice.record.rowId !== null ? [{ messageId: s.choice.record.rowId, quarantineId: s.qid }] : [])),
    );
    summary.quarantined += staged.length;
    const touched = new Set<string>();
    for (const s of staged) {
      const files = removeMessageFiles(layout, s.message.id, touched);
      ctx.log.info(
        `removed ${s.message.id} from ${s.choice.record.sourceIp ?? '-'} <${forTerminal(s.message.sender ?? '')}>: ${forTerminal(s.choice.reason)} ` +
          `(quarantine ${s.qid}; ${files.length} files)`,
      );
    }
    // Barrier 2: the unlinks are durable before the rows say the messages are gone.
    await syncPaths([...touched]);
    await markRemoved(
      db,
      staged.map((s) => s.qid),
    );
    const rowIds = staged.map((s) => s.choice.record.rowId).filter((x): x is number => x !== null);
    if (rowIds.length) await markGone(db, rowIds);
    summary.removed += staged.length;
  }
}

/** Fresh read, identity check, quarantine entry written (not yet durable). Null = skipped. */
function stage(
  ctx: RunContext,
  layout: QueueLayout,
  qdir: string,
  choice: Chosen<Candidate>,
  qid: number,
  vdoms: VirtualDomains,
  who: string,
  summary: PurgeSummary,
): Staged | null {
  const c = choice.record;
  const r = readMessage(layout, c.id);
  if (r.status !== 'ok') {
    if (r.status === 'unreadable') ctx.log.warn(`${c.id}: ${r.error}: not removed`);
    skip(summary, r.status === 'vanished' ? 'gone' : 'unreadable');
    return null;
  }
  const m = r.message;
  const problem = freshProblem(c, m);
  if (problem) {
    ctx.log.info(`${c.id}: not removed: ${problem === 'replaced' ? 'a new message now has this id' : problem}`);
    skip(summary, problem);
    return null;
  }
  const sender = m.sender ?? '';
  const pending = m.recipients.filter((x) => !x.done).map((x) => (x.queue === 'local' ? stripVdomPrepend(x.address, vdoms) : x.address));
  const env = renderQmailQueueEnvelope({ sender, recipients: pending });
  if (!env.ok) {
    ctx.log.warn(`${c.id}: not removed: its envelope could not be restored through qmail-queue: ${env.error}`);
    skip(summary, 'envelope');
    return null;
  }
  const purgedAt = new Date();
  const meta: QuarantineMeta = {
    version: 1,
    id: qid,
    host: ctx.config.host,
    queueId: m.id,
    line1: m.line1,
    birth: m.birth ? m.birth.toISOString() : null,
    arrival: m.arrival.toISOString(),
    queueState: m.state,
    kind: c.kind,
    forwarded: m.origin.forwarded,
    sourceIp: m.origin.sourceIp,
    sourceRecorded: m.origin.sourceIpRecorded,
    sender,
    recipients: m.recipients.map((x) => ({ address: x.address, queue: x.queue, done: x.done })),
    envelopeRecipients: pending,
    bounceReport: m.bounceReport ? m.bounceReport.map((b) => `<${b.address}>:\n${b.reason}\n`).join('\n') : null,
    subject: m.origin.subject,
    size: m.size,
    policy: choice.basis,
    reason: choice.reason,
    who,
    purgedAt: purgedAt.toISOString(),
    files: m.files,
    queueDir: layout.dir,
  };
  let entry: WrittenEntry;
  try {
    entry = writeEntry(qdir, qid, { messFrom: m.paths.mess!, envelope: env.bytes, meta });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      skip(summary, 'gone');
      return null;
    }
    throw err;
  }
  const all = m.recipients.map((x) => x.address);
  return {
    qid,
    choice,
    message: m,
    entry,
    row: {
      id: qid,
      host: ctx.config.host,
      queueId: m.id,
      line1: m.line1,
      birth: m.birth,
      arrival: m.arrival,
      queueState: m.state,
      kind: c.kind,
      forwarded: m.origin.forwarded,
      sourceIp: m.origin.sourceIp,
      sender,
      recipients: all,
      pending,
      rcptCount: all.length,
      pendingCount: pending.length,
      subject: m.origin.subject,
      size: m.size,
      policy: choice.basis,
      reason: choice.reason,
      who,
      path: entry.path,
    },
  };
}
