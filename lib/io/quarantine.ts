// The quarantine directory: where purge-queue keeps each message it takes out of the queue,
// so a wrong purge can be undone (`qguard quarantine restore`). One directory per entry,
// named after its id in qguard.quarantine:
//
//   QUARANTINE/42/mess       the message file exactly as qmail-queue wrote it (a hard link
//                            to mess/S/N when on the same filesystem: no copy, same bytes)
//   QUARANTINE/42/envelope   the envelope for qmail-queue's descriptor 1 (sender and pending
//                            recipients; lib/qmail/qmail-queue-envelope.ts)
//   QUARANTINE/42/meta.json  who sent it, why it was purged, its queue files' state
//
// An entry is built as `.new-42/` and renamed into place, so a name without the dot is always
// complete. Durability is one barrier per batch (syncfs through `sync -f`, or an fsync of every
// file and directory where that program is missing) instead of three fsyncs per message: the
// database row inserted after the barrier is the commit point (sql/006_quarantine.sql).
// The directory is mode 0700: it holds other people's mail.

import fs from 'node:fs';
import path from 'node:path';
import { TemporaryError } from '../errors.js';
import { runProgram } from './run-program.js';

/** The files of one entry. */
export const ENTRY_FILES = { mess: 'mess', envelope: 'envelope', meta: 'meta.json' } as const;

/** What meta.json records (everything the database row has, and the raw queue state). */
export interface QuarantineMeta {
  version: 1;
  id: number;
  host: string;
  queueId: string;
  line1: string;
  birth: string | null;
  arrival: string;
  queueState: string;
  kind: string;
  forwarded: boolean;
  sourceIp: string | null;
  sourceRecorded: string | null;
  sender: string;
  /** Every recipient the queue recorded: address as stored, its queue, done or not. */
  recipients: { address: string; queue: string; done: boolean }[];
  /** The recipients written to the envelope file (pending, virtual-domain prefixes undone). */
  envelopeRecipients: string[];
  /** bounce/N: failures qmail-send had not yet turned into a bounce. */
  bounceReport: string | null;
  subject: string | null;
  size: number;
  policy: string;
  reason: string;
  who: string | null;
  purgedAt: string;
  /** The queue files the message had, relative to the queue directory. */
  files: string[];
  queueDir: string;
}

function fail(what: string, p: string, err: unknown): never {
  throw new TemporaryError(`unable to ${what} ${p}: ${(err as Error).message}`, { cause: err });
}

/** Create the quarantine directory (mode 0700) when missing; tighten it when looser. */
export function ensureQuarantineDir(dir: string): string {
  const abs = path.resolve(dir);
  try {
    fs.mkdirSync(abs, { recursive: true, mode: 0o700 });
    const st = fs.statSync(abs);
    if (!st.isDirectory()) throw new Error('not a directory');
    if ((st.mode & 0o077) !== 0 && st.uid === process.getuid?.()) fs.chmodSync(abs, 0o700);
  } catch (err) {
    fail('create the quarantine directory', abs, err);
  }
  return abs;
}

/** The directory of entry `id`. */
export function entryPath(dir: string, id: number | string): string {
  return path.join(dir, String(id));
}

export interface EntryInput {
  /** mess/S/N in the queue. */
  messFrom: string;
  envelope: Buffer;
  meta: QuarantineMeta;
}

export interface WrittenEntry {
  path: string;
  /** Files to make durable (when there is no syncfs). */
  files: string[];
  /** mess was hard-linked (true) or copied. */
  linked: boolean;
}

/**
 * Build entry `id` (as `.new-ID`, then renamed). Not yet durable: call syncPaths() on the
 * batch before anything relies on it. Throws TemporaryError when it cannot be written; throws
 * an ENOENT error (code kept) when mess/ vanished meanwhile.
 */
export function writeEntry(dir: string, id: number, input: EntryInput): WrittenEntry {
  const final = entryPath(dir, id);
  const tmp = path.join(dir, `.new-${id}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  try {
    fs.mkdirSync(tmp, { mode: 0o700 });
  } catch (err) {
    fail('create', tmp, err);
  }
  const mess = path.join(tmp, ENTRY_FILES.mess);
  let linked = true;
  try {
    fs.linkSync(input.messFrom, mess);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw err;
    }
    // Another filesystem (EXDEV), or links refused (EPERM under protected_hardlinks, EMLINK):
    // copy the bytes instead.
    linked = false;
    try {
      fs.copyFileSync(input.messFrom, mess, fs.constants.COPYFILE_EXCL);
      fs.chmodSync(mess, 0o600);
    } catch (err2) {
      fs.rmSync(tmp, { recursive: true, force: true });
      if ((err2 as NodeJS.ErrnoException).code === 'ENOENT') throw err2;
      fail('copy', input.messFrom, err2);
    }
  }
  try {
    fs.writeFileSync(path.join(tmp, ENTRY_FILES.envelope), input.envelope, { mode: 0o600, flag: 'wx' });
    fs.writeFileSync(path.join(tmp, ENTRY_FILES.meta), `${JSON.stringify(input.meta, null, 1)}\n`, { mode: 0o600, flag: 'wx' });
    fs.rmSync(final, { recursive: true, force: true });
    fs.renameSync(tmp, final);
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    fail('write quarantine entry', final, err);
  }
  const files = [ENTRY_FILES.envelope, ENTRY_FILES.meta, ...(linked ? [] : [ENTRY_FILES.mess])].map((f) => path.join(final, f));
  return { path: final, files, linked };
}

let syncfsMissing = false;

/**
 * Make everything written under `dirs` durable: one syncfs(2) per filesystem through coreutils
 * `sync -f` (which reports write-back errors); where that program is missing, an fsync of each
 * of `files` and of each directory in `dirs`.
 */
export async function syncPaths(dirs: readonly string[], files: readonly string[] = []): Promise<void> {
  if (dirs.length === 0 && files.length === 0) return;
  if (!syncfsMissing) {
    // One path per filesystem is enough for syncfs.
    const byDev = new Map<number, string>();
    for (const d of dirs) {
      try {
        const dev = fs.statSync(d).dev;
        if (!byDev.has(dev)) byDev.set(dev, d);
      } catch {
        // gone: nothing of it to sync
      }
    }
    if (byDev.size === 0) return;
    try {
      await runProgram('sync', ['-f', ...byDev.values()], { timeoutMs: 600_000 });
      return;
    } catch (err) {
      if (!/program not found/.test((err as Error).message)) throw err;
      syncfsMissing = true;
    }
  }
  for (const p of [...files, ...dirs]) {
    let fd: number | null = null;
    try {
      fd = fs.openSync(p, 'r');
      fs.fsyncSync(fd);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'EINVAL') fail('sync', p, err);
    } finally {
      if (fd !== null) fs.closeSync(fd);
    }
  }
}

/** Remove an entry (or a half-built `.new-` one). Missing is fine. */
export function removeEntry(p: string): void {
  try {
    fs.rmSync(p, { recursive: true, force: true });
  } catch (err) {
    fail('remove', p, err);
  }
}

/** The entries in the quarantine directory: complete ones by id, half-built `.new-ID` ones. */
export function listEntries(dir: string): { ids: number[]; partial: string[] } {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { ids: [], partial: [] };
    fail('read', dir, err);
  }
  const ids: number[] = [];
  const partial: string[] = [];
  for (const n of names) {
    if (/^[1-9]\d{0,17}$/.test(n)) ids.push(Number(n));
    else if (/^\.new-\d+$/.test(n)) partial.push(path.join(dir, n));
  }
  return { ids, partial };
}

/** An entry's files, read back. Throws ENOENT errors as they come when something is missing. */
export function readEntry(p: string): { meta: QuarantineMeta; envelope: Buffer; messPath: string; messSize: number } {
  const meta = JSON.parse(fs.readFileSync(path.join(p, ENTRY_FILES.meta), 'utf8')) as QuarantineMeta;
  const envelope = fs.readFileSync(path.join(p, ENTRY_FILES.envelope));
  const messPath = path.join(p, ENTRY_FILES.mess);
  const messSize = fs.statSync(messPath).size;
  return { meta, envelope, messPath, messSize };
}

/** Is the entry complete (all three files present)? */
export function entryComplete(p: string): boolean {
  return Object.values(ENTRY_FILES).every((f) => fs.existsSync(path.join(p, f)));
}
