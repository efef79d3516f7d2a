// Taking one message out of a qmail queue: unlink every file it has (todo, info, intd, bounce,
// local, remote, mess) in an order that leaves, after a stop at any point (kill -9, power
// loss), nothing qmail-send would deliver, choke on or mistake for another message. Only
// ever called while qmail-send is stopped and we hold queue/lock/sendmutex (purge-queue).
//
// The order, from notqmail's qmail-send.c and qmail-clean.c:
//   1. todo/N   todo_do() preprocesses every todo/N it finds (it needs only todo/N and mess/N;
//               it unlinks and recreates info/local/remote itself), so while todo/N exists the
//               message would be delivered: it goes first. With todo/N gone and no info/N,
//               mess/N + intd/N look like qmail-queue still at work, which is never delivered.
//   2. info/N   pqstart() schedules deliveries from info/ alone (pqadd() skips an id whose
//               todo/N exists). Without info/N, local/N and remote/N are never read.
//   3. intd/N, bounce/N, local/N, remote/N: inert without todo/N and info/N.
//   4. mess/N   LAST. Its inode number is the message id: as long as mess/N exists no new
//               message can get id N. Removed earlier, a new message could take N and inherit
//               the stale parts — todo_do() unlinks old local/remote/info before writing new
//               ones, but NOT bounce/N: addbounce() would append to it and injectbounce()
//               would bounce the new message with the old failures.
// And if we never come back: cleanup_do() hands qmail-clean (`foop/N`: unlink intd/N, then
// mess/N) any mess/N that has neither info/N nor todo/N and was not accessed for 36 hours
// (OSSIFIED); it never touches local/, remote/ or bounce/ — which is why purge-queue repairs
// an interrupted removal itself before qmail-send runs again.

import fs from 'node:fs';
import path from 'node:path';
import { TemporaryError } from '../errors.js';
import { statMessage } from './queue-walk.js';
import { type QueueDirName, type QueueLayout, absPath } from '../qmail/queued-message.js';

/** Unlink order (see the top of this file). */
export const REMOVAL_ORDER: readonly QueueDirName[] = ['todo', 'info', 'intd', 'bounce', 'local', 'remote', 'mess'];

/**
 * Unlink every file of message `id` in REMOVAL_ORDER. Missing files are fine (already gone).
 * Adds the directories it changed to `touched` (to make the unlinks durable with one sync).
 * Returns the files it removed (relative to the queue).
 */
export function removeMessageFiles(layout: QueueLayout, id: string, touched?: Set<string>): string[] {
  const removed: string[] = [];
  for (const d of REMOVAL_ORDER) {
    const file = absPath(layout, d, id);
    try {
      fs.unlinkSync(file);
      removed.push(path.relative(layout.dir, file));
      touched?.add(path.dirname(file));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') continue;
      throw new TemporaryError(`unable to remove ${file}: ${(err as Error).message}`, { cause: err });
    }
  }
  return removed;
}

/** The files message `id` still has in the queue (directory names), in REMOVAL_ORDER. */
export function remainingParts(layout: QueueLayout, id: string): QueueDirName[] {
  const st = statMessage(layout, id);
  return REMOVAL_ORDER.filter((d) => st[d] !== undefined);
}
