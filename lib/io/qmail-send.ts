// qmail-send, stopped and held: purge-queue removes files only while qmail-send is not
// running and queue/lock/sendmutex is locked by us (qmail-send holds it while it runs, and
// qmail-qread/qmail-qstat take it too). Stop and start are the admin's commands
// (QGUARD_QMAIL_STOP / QGUARD_QMAIL_START: svc -d/-u, systemctl); a marker file remembers
// that we stopped qmail-send, so a run killed in between is followed by a start.

import fs from 'node:fs';
import path from 'node:path';
import { PermanentError, TemporaryError, errorText } from '../errors.js';
import { formatDuration } from '../duration.js';
import type { Logger } from '../log.js';
import { type FileLock, lockFile } from './lock.js';
import { runProgram, splitCommand } from './run-program.js';
import { writeFileAtomic } from './atomic-write.js';

/** The admin's commands to stop and start qmail-send, and where to say what we run. */
export interface QmailControl {
  stop: string;
  start: string;
  log: Logger;
}

export interface Gate {
  /** We stopped qmail-send (this run or a killed earlier one) and start it on release. */
  stopped: boolean;
  release(): Promise<void>;
}

function commandArgv(line: string, key: string): string[] {
  let argv: string[];
  try {
    argv = splitCommand(line);
  } catch (err) {
    throw new PermanentError(`${key}: ${errorText(err)}`);
  }
  if (argv.length === 0) throw new PermanentError(`${key} is empty`);
  return argv;
}

async function runControl(ctl: QmailControl, line: string, key: string): Promise<void> {
  const argv = commandArgv(line, key);
  ctl.log.info(`running ${key}: ${line}`);
  await runProgram(argv[0], argv.slice(1), { timeoutMs: 120_000 });
}

async function startQmail(ctl: QmailControl, marker: string): Promise<void> {
  try {
    await runControl(ctl, ctl.start, 'QGUARD_QMAIL_START');
  } catch (err) {
    throw new TemporaryError(`unable to start qmail-send again (${errorText(err)}): run \`${ctl.start}\` by hand`);
  }
  fs.rmSync(marker, { force: true });
}

/** Nothing to remove, but a killed run left qmail-send stopped: start it. */
export function owedOnly(ctl: QmailControl, marker: string): Gate {
  return {
    stopped: true,
    async release() {
      await startQmail(ctl, marker);
    },
  };
}

/**
 * Make sure qmail-send is not running and hold queue/lock/sendmutex: free → take it; held →
 * stop qmail-send and wait for it. Throws TemporaryError (exit 111) when the lock cannot be
 * had, after starting again what it stopped.
 */
export async function stopAndLock(ctl: QmailControl, queueDir: string, waitSeconds: number, marker: string, owed: boolean): Promise<Gate> {
  const mutex = path.join(queueDir, 'lock', 'sendmutex');
  let lock: FileLock | null = await lockFile(mutex, { waitSeconds: 0, create: false });
  let stopped = false;
  if (!lock) {
    // The marker first: if we are killed from here on, the next run starts qmail-send again.
    writeFileAtomic(marker, `${new Date().toISOString()} ${ctl.stop}\n`, { mode: 0o600 });
    try {
      await runControl(ctl, ctl.stop, 'QGUARD_QMAIL_STOP');
    } catch (err) {
      if (!owed) fs.rmSync(marker, { force: true });
      if (err instanceof PermanentError) throw err;
      throw new TemporaryError(`unable to stop qmail-send: ${errorText(err)}: nothing removed`);
    }
    stopped = true;
    ctl.log.info(`waiting up to ${formatDuration(waitSeconds)} for qmail-send to release ${mutex}`);
    lock = await lockFile(mutex, { waitSeconds, create: false });
    if (!lock) {
      let also = '';
      try {
        await startQmail(ctl, marker);
      } catch (err) {
        also = `; ${errorText(err)}`;
      }
      throw new TemporaryError(
        `qmail-send still holds ${mutex} ${formatDuration(waitSeconds)} after \`${ctl.stop}\`: nothing removed${also}`,
      );
    }
  }
  const held = lock;
  return {
    stopped: stopped || owed,
    async release() {
      held.release();
      if (stopped || owed) await startQmail(ctl, marker);
    },
  };
}

