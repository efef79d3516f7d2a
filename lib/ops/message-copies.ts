// The review page's readable copies: after each scan, scan-queue (root, or the user that can
// read the queue) copies the first QGUARD_COPY_BYTES of each newly recorded message into the
// database, so the page, running unprivileged and perhaps on another machine, never opens
// the queue. Messages from relay/trust senders (your own users, partners) are not copied:
// their mail is not for operators to read. QGUARD_COPY_BYTES=0 turns copies off and drops
// this host's copies of queued messages (quarantined ones stay with their entry).

import type { RunContext } from '../context.js';
import type { Db } from '../db/connect.js';
import { type NewCopy, copiesCheckedTo, dropCopies, messagesWithoutCopy, setCopiesCheckedTo, storeCopies } from '../db/web.js';
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
 * (newest first), a busy server's new messages of the minute in the same run.
 */
export const COPY_SHARE = 0.15;
const MIN_BUDGET_MS = 1000;

/** Copy what is missing, newest first, within the run's budget; returns how many copies were written. */
export async function keepCopies(ctx: RunContext, db: Db, layout: QueueLayout, scanMs: number): Promise<number> {
  const { host, copyBytes } = ctx.config;
  if (copyBytes === 0) {
    await dropCopies(db, host);
    return 0;
  }
  const until = performance.now() + Math.max(MIN_BUDGET_MS, COPY_SHARE * scanMs);
  let copied = 0;
  // Messages only get newer ids (sql/017): the search starts above the last one fully seen,
  // and when it reaches that point in this run, everything up to today's newest was seen.
  const { checkedTo, newest } = await copiesCheckedTo(db, host);
  let before = newest + 1;
  for (let seen = 0; seen < PER_RUN && performance.now() < until; ) {
    const todo = await messagesWithoutCopy(db, host, BATCH, before, checkedTo);
    if (todo.length === 0) {
      await setCopiesCheckedTo(db, host, newest);
      break;
    }
    seen += todo.length;
    before = todo[todo.length - 1].id;
    const verdicts = await rulesAndVerdicts(db, [...new Set(todo.map((t) => t.sourceIp))], ctx.protectedNets());
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
    copied += copies.length;
    if (todo.length < BATCH) {
      await setCopiesCheckedTo(db, host, newest);
      break;
    }
  }
  return copied;
}
