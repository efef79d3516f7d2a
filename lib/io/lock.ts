// Kernel file locks (flock(2)) from Node, which has no flock: we open the file ourselves and
// let util-linux `flock(1)` lock our open file description through an inherited fd, the way
// `exec 9>lock; flock 9` does in a shell. The lock then belongs to our fd: it lasts until we
// close it, and the kernel drops it when we die, even by kill -9. The same lock qmail-send
// takes on queue/lock/sendmutex, and the same setlock(8) takes.

import fs from 'node:fs';
import path from 'node:path';
import { TemporaryError } from '../errors.js';
import { runProgram } from './run-program.js';

/** A held lock. `release()` is idempotent. */
export interface FileLock {
  readonly path: string;
  release(): void;
}

export interface LockOptions {
  /** Seconds to wait for the lock; 0 = give up at once (like `setlock -n`). */
  waitSeconds: number;
  /** Create the file (and its directory) when missing (default true). */
  create?: boolean;
  /** flock(1) to use (default: on PATH). */
  flockProgram?: string;
}

/**
 * Take an exclusive lock on `file`. Returns null when it is held elsewhere and could not be
 * had within `waitSeconds`. Throws TemporaryError when the file cannot be opened or flock(1)
 * cannot be run.
 */
export async function lockFile(file: string, opts: LockOptions): Promise<FileLock | null> {
  let fd: number;
  try {
    if (opts.create !== false) fs.mkdirSync(path.dirname(file), { recursive: true });
    fd = fs.openSync(file, opts.create === false ? 'r' : 'a', 0o644);
  } catch (err) {
    throw new TemporaryError(`unable to open lock ${file}: ${(err as Error).message}`, { cause: err });
  }
  const wait = opts.waitSeconds > 0 ? ['-w', String(opts.waitSeconds)] : ['-n'];
  try {
    // flock(1) exits 1 when the lock is busy (-n) or the wait ran out (-w): -E makes that 75.
    const r = await runProgram(opts.flockProgram ?? 'flock', ['-x', '-E', '75', ...wait, '3'], {
      extraFds: [fd],
      okExitCodes: [0, 75],
      timeoutMs: (opts.waitSeconds + 30) * 1000,
    });
    if (r.exitCode === 75) {
      fs.closeSync(fd);
      return null;
    }
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  let held = true;
  return {
    path: file,
    release() {
      if (!held) return;
      held = false;
      try {
        fs.closeSync(fd);
      } catch {
        // already closed: the lock is gone either way
      }
    },
  };
}
