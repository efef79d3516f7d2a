// The review page's readable copies: after each scan, scan-queue (root, or the user that can
// read the queue) copies the first QGUARD_COPY_BYTES of each newly recorded message into the
// database, so the page, running unprivileged and perhaps on another machine, never opens
// the queue. Messages from relay/trust senders (your own users, partners) are not copied:
// their mail is not for operators to read. QGUARD_COPY_BYTES=0 turns copies off and drops
// this host's copies of queued messages (quarantined ones stay with their entry).

import type { RunContext } from '../context.js';
import type { Db } from '../db/connect.js';
import { type NewCopy, copyWalk, dropCopies, messagesWithoutCopy, saveCopyWalk, storeCopies } from '../db/web.js';
import { readHead } from '../io/queue-walk.js';
import { type QueueLayout, absPath } from '../qmail/queued-message.js';
import { rulesAndVerdicts } from './verdicts.js';

/** Messages looked at per batch, and at most per run (the rest wait for the next minute). */
const BATCH = 2000;
const PER_RUN = 50_000;
/**
 * The copies' share of a run: they stop after 15% of the time the scan itself took, or after
 * MIN_BUDGET_MS when the scan was quicker. Counting (and so denying) must not wait for a
 * convenience: a queue's first scan of 100,000 messages gets its copies over the next minutes
 * (newest first; about 5,000 a minute at 250 ms: 20 minutes, with each rescan within 10% of the
 * first scan's time — at 1 s they took 5 minutes and every rescan meanwhile was 25% of it), a
 * busy server's new messages of the minute in the same run.
 */
export const COPY_SHARE = 0.15;
const MIN_BUDGET_MS = 250;

/** Copy what is missing, newest first, within the run's budget; returns how many copies were written. */
export async function keepCopies(ctx: RunContext, db: Db, layout: QueueLayout, scanMs: number): Promise<number> {
  const { host, copyBytes } = ctx.config;
  if (copyBytes === 0) {
    await dropCopies(db, host);
    return 0;
  }
  const until = performance.now() + Math.max(MIN_BUDGET_MS, COPY_SHARE * scanMs);
  const walk = await copyWalk(db, host);
  // (newest may be below what was seen when the newest messages have gone: seen stays seen)
  const newest = Math.max(walk.newest, walk.checkedTo, walk.top ?? 0);
  let copied = 0;
  let seen = 0;
  /**
   * Copy what is missing in (after, before), newest first: at least one batch, then while the
   * budget lasts (so new mail gets its copies in its own run, and a filling queue moves on every
   * run). Returns the lowest id looked at when it stopped early (everything from it up was
   * seen), or null when the whole segment was seen.
   */
  const segment = async (before: number, after: number): Promise<number | null> => {
    for (;;) {
      const todo = await messagesWithoutCopy(db, host, BATCH, before, after);
      if (todo.length === 0) return null;
      seen += todo.length;
      before = todo[todo.length - 1].id;
      copied += await copyBatch(ctx, db, layout, todo);
      if (todo.length < BATCH) return null;
      if (seen >= PER_RUN || performance.now() >= until) return before;
    }
  };
  // Messages only get newer ids (sql/017): look above what was seen, newest first, then go on
  // below an unfinished walk; keep what this run saw.
  const partial = walk.from !== null && walk.top !== null;
  const stopA = await segment(newest + 1, partial ? walk.top! : walk.checkedTo);
  if (stopA !== null) {
    // Out of time among the newest: a first unfinished walk is kept; beside another, not.
    if (!partial) await saveCopyWalk(db, host, { checkedTo: walk.checkedTo, from: stopA, top: newest });
    return copied;
  }
  if (!partial) {
    await saveCopyWalk(db, host, { checkedTo: newest, from: null, top: null });
    return copied;
  }
  const stopB = await segment(walk.from!, walk.checkedTo);
  await saveCopyWalk(db, host, stopB === null ? { checkedTo: newest, from: null, top: null } : { checkedTo: walk.checkedTo, from: stopB, top: newest });
  return copied;
}

/** Copy one batch (relay/trust senders' mail and vanished files are marked, not copied); returns how many were copied. */
async function copyBatch(
  ctx: RunContext,
  db: Db,
  layout: QueueLayout,
  todo: { id: number; queueId: string; sourceIp: string }[],
): Promise<number> {
  const { host, copyBytes } = ctx.config;
  // Only "relay or trust?" is asked: the lists' entries are read only where it can matter.
  const verdicts = await rulesAndVerdicts(db, [...new Set(todo.map((t) => t.sourceIp))], ctx.protectedNets(), 'underAllow');
  const copies: NewCopy[] = [];
  const skipped: number[] = [];
  for (const t of todo) {
    const d = verdicts.get(t.sourceIp)?.on(host).decision ?? 'default';
    if (d === 'relay' || d === 'trust') {
      skipped.push(t.id);
      continue;
    }
    let head: { data: Buffer; size: number };
    try {
      head = readHead(absPath(layout, 'mess', t.queueId), copyBytes);
    } catch {
      skipped.push(t.id); // gone meanwhile: the next scan marks it gone
      continue;
    }
    copies.push({ messageId: t.id, data: head.data, size: head.size, truncated: head.size > head.data.length });
  }
  await storeCopies(db, host, copies, skipped);
  return copies.length;
}
