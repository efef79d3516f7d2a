// The spool of accepted messages (QGUARD_ACCEPTED_SPOOL), kept like a multilog directory so that
// lib/io/multilog-read.ts reads it: contrib/qmail/qguard-queue appends to `current`; scan-queue
// renames a `current` it has read to the end to `@TAI64N.s` once it is large, and removes
// `@….s` files it has read to the end. A program that opened `current` just before the rename
// writes its line into the renamed file: that file is read to its end at the next run, from the
// position saved, before it is removed a run later.

import fs from 'node:fs';
import path from 'node:path';
import type { BootClock } from '../qmail/accepted-spool.js';
import { formatTai64n } from '../qmail/tcpserver-log.js';
import { type LogPosition, LogReadError, logFiles } from './multilog-read.js';

/** `current` is renamed once it is this large (about 50,000 lines). */
export const ROTATE_BYTES = 1 << 20;
/** A renamed file is removed only when it has not changed for this long. */
const SETTLED_MS = 60_000;

/**
 * Remove the renamed files that lie wholly before `committed` (the position of the last run that
 * was kept). Returns how many.
 */
export function removeReadFiles(dir: string, committed: LogPosition | null, now = Date.now()): number {
  if (committed === null) return 0;
  const files = logFiles(dir);
  const at = files.findIndex((f) => f.inode === committed.inode);
  let removed = 0;
  for (const f of files.slice(0, Math.max(0, at))) {
    if (f.name === 'current' || now - f.mtimeMs < SETTLED_MS) continue;
    try {
      fs.unlinkSync(f.file);
      removed++;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new LogReadError(`unable to remove ${f.file}: ${(err as Error).message}`, { cause: err });
    }
  }
  return removed;
}

/**
 * Rename `current` to `@TAI64N.s` when it has been read to its end (`read`, the position this
 * run reached) and is at least `rotateBytes` long. The next program to run starts a new one.
 */
export function rotateIfRead(dir: string, read: LogPosition | null, rotateBytes = ROTATE_BYTES, now = Date.now()): boolean {
  if (read === null) return false;
  const current = path.join(dir, 'current');
  let st: fs.Stats;
  try {
    st = fs.lstatSync(current);
  } catch {
    return false;
  }
  if (!st.isFile() || st.ino !== read.inode || st.size !== read.offset || st.size < rotateBytes) return false;
  try {
    fs.renameSync(current, path.join(dir, `${formatTai64n(now)}.s`));
  } catch (err) {
    throw new LogReadError(`unable to rename ${current}: ${(err as Error).message}`, { cause: err });
  }
  return true;
}

/** This boot's id and start, to date the program's `u…` lines; null where /proc has neither. */
export function readBootClock(now = Date.now()): BootClock | null {
  try {
    const uptime = Number(fs.readFileSync('/proc/uptime', 'latin1').split(' ')[0]);
    const bootId = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim();
    return Number.isFinite(uptime) ? { bootId, bootMs: now - Math.round(uptime * 1000) } : null;
  } catch {
    return null;
  }
}
