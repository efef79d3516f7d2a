// The review page's readable copies: after each scan, scan-queue (root, or the user that can
// read the queue) copies the first QGUARD_COPY_BYTES of each newly recorded message into the
// database, so the page, running unprivileged and perhaps on another machine, never opens
// the queue. Messages from relay/trust senders (your own users, partners) are not copied:
// their mail is not for operators to read. QGUARD_COPY_BYTES=0 turns copies off and drops
// this host's copies of queued messages (quarantined ones stay with their entry).

import type { RunContext } from '../context.js';
import type { Queryable } from '../db/connect.js';
import { dropCopies, messagesWithoutCopy, storeCopies } from '../db/web.js';
import { readHead } from '../io/queue-walk.js';
import { type QueueLayout, absPath } from '../qmail/queued-message.js';
import { rulesAndVerdicts } from './verdicts.js';

/** Messages looked at per batch, and at most per run (the rest wait for the next minute). */
const BATCH = 2000;
const PER_RUN = 50_000;

/** Copy what is missing; returns how many copies were written. */
export async function keepCopies(ctx: RunContext, db: Queryable, layout: QueueLayout): Promise<number> {
  const { host, copyBytes } = ctx.config;
  if (copyBytes === 0) {
    await dropCopies(db, host);
    return 0;
  }
  let copied = 0;
  for (let seen = 0; seen < PER_RUN; ) {
    const todo = await messagesWithoutCopy(db, host, BATCH);
    if (todo.length === 0) break;
    seen += todo.length;
    const verdicts = await rulesAndVerdicts(db, [...new Set(todo.map((t) => t.sourceIp))], ctx.protectedNets());
    const copies: { messageId: number; data: Buffer; size: number; truncated: boolean }[] = [];
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
    if (todo.length < BATCH) break;
  }
  return copied;
}
