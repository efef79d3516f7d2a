// Reading a multilog directory incrementally (tcpserver's log, e.g. /var/log/qmail/smtpd).
//
// multilog appends to `current`; when it is full, it renames `current` to `@TAI64N.s` (the same
// file, the same inode: the name is the time of the rename, so the names sort in the order of
// writing) and starts a new `current`; it deletes the oldest `@….s` beyond its count. An
// interrupted multilog leaves `@….u`. A position is a file (its inode and its first bytes, so
// that a reused inode number is not taken for the file) and the offset just after the last
// complete line read. The next read goes on from there: the rest of that file, wherever it has
// been renamed to, then every newer file, then `current` up to its last newline — a partial last
// line waits for the next run. Nothing is read twice and nothing skipped, unless multilog has
// deleted a file before it was read (then `lost` says so).

import fs from 'node:fs';
import path from 'node:path';
import { TemporaryError } from '../errors.js';

export interface LogPosition {
  inode: number;
  offset: number;
  /** The file's first bytes (up to HEAD_BYTES, latin1): tells the file from a later one with its inode number. */
  head: string;
}

export interface LogRead {
  position: LogPosition | null;
  files: number;
  bytes: number;
  /** Lines given (readLogBytesSince; null from readLogChunksSince, which does not split them). */
  lines: number | null;
  /** The read stopped at maxBytes: there is more for the next run. */
  more: boolean;
  /** Why lines may have been missed (the file read last time is gone), or null. */
  lost: string | null;
}

export interface LogFile {
  name: string;
  file: string;
  inode: number;
  size: number;
  mtimeMs: number;
}

/** The log could not be read (scan-queue warns and goes on with the queue). */
export class LogReadError extends TemporaryError {}

const HEAD_BYTES = 64;
const CHUNK = 1 << 20;

/** The log's files in the order multilog wrote them: `@….s` and `@….u` by name, then `current`. */
export function logFiles(dir: string): LogFile[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    throw new LogReadError(`unable to read the log directory ${dir}: ${(err as Error).message}`, { cause: err });
  }
  const rotated = names.filter((n) => /^@[0-9a-f]{24}\.[su]$/.test(n)).sort();
  const out: LogFile[] = [];
  for (const name of [...rotated, ...(names.includes('current') ? ['current'] : [])]) {
    const file = path.join(dir, name);
    try {
      const st = fs.lstatSync(file); // not a symbolic link: the directory may belong to qmaild
      if (st.isFile()) out.push({ name, file, inode: st.ino, size: st.size, mtimeMs: st.mtimeMs });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new LogReadError(`unable to stat ${file}: ${(err as Error).message}`, { cause: err });
    }
  }
  return out;
}

function readHead(fd: number, size: number): string {
  const buf = Buffer.alloc(Math.min(HEAD_BYTES, size));
  const n = fs.readSync(fd, buf, 0, buf.length, 0);
  return buf.toString('latin1', 0, n);
}

/**
 * Every line written after `from` (all of the directory when null), in order, to `onLine` as
 * bytes [start, end) of a buffer that is reused after the call (decode only what is needed),
 * at most about `maxBytes` of them (whole lines). Returns where the next read starts.
 */
export function readLogBytesSince(
  dir: string,
  from: LogPosition | null,
  onLine: (buf: Buffer, start: number, end: number) => void,
  maxBytes = Number.POSITIVE_INFINITY,
): LogRead {
  let lines = 0;
  const r = readLogChunksSince(
    dir,
    from,
    (buf, start, end) => {
      let s = start;
      for (let nl = buf.indexOf(10, s); nl >= 0 && nl < end; nl = buf.indexOf(10, s)) {
        lines++;
        onLine(buf, s, nl);
        s = nl + 1;
      }
      if (s < end) {
        lines++;
        onLine(buf, s, end); // a last line without its newline, in a file that no longer grows
      }
    },
    maxBytes,
  );
  return { ...r, lines };
}

/**
 * The same, a chunk of whole lines at a time: bytes [start, end) of a buffer reused after the
 * call, ending with a newline (but for the last line of a file that no longer grows).
 */
export function readLogChunksSince(
  dir: string,
  from: LogPosition | null,
  onChunk: (buf: Buffer, start: number, end: number) => void,
  maxBytes = Number.POSITIVE_INFINITY,
): LogRead {
  const files = logFiles(dir);
  const result: LogRead = { position: from, files: 0, bytes: 0, lines: null, more: false, lost: null };
  let start = 0;
  let offset = 0;
  if (from) {
    const at = files.findIndex((f) => f.inode === from.inode && f.size >= from.offset);
    const same = at >= 0 && withFd(files[at].file, (fd) => readHead(fd, from.offset) === from.head.slice(0, Math.min(HEAD_BYTES, from.offset)));
    if (at >= 0 && same) {
      start = at;
      offset = from.offset;
    } else if (files.length > 0) {
      result.lost = `the file read last time (inode ${from.inode}) is no longer in ${dir}: lines written between may not have been counted`;
    }
  }
  for (let i = start; i < files.length && !result.more; i++) {
    const f = files[i];
    const isCurrent = f.name === 'current';
    const end = withFd(f.file, (fd) => {
      const st = fs.fstatSync(fd);
      const from0 = i === start ? offset : 0;
      // At most maxBytes a read (whole lines): a large backlog is taken over several runs.
      const stop = Math.min(st.size, from0 + Math.max(0, maxBytes - result.bytes));
      const pos = readChunks(fd, from0, stop, isCurrent || stop < st.size, onChunk);
      if (stop < st.size) result.more = true;
      if (isCurrent || i === files.length - 1 || result.more) {
        result.position = { inode: st.ino, offset: pos, head: readHead(fd, Math.min(HEAD_BYTES, pos)) };
      }
      return pos;
    });
    result.bytes += end - (i === start ? offset : 0);
    result.files++;
  }
  return result;
}

function withFd<T>(file: string, fn: (fd: number) => T): T {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    throw new LogReadError(`unable to open ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return fn(fd);
  } catch (err) {
    if (err instanceof LogReadError) throw err;
    throw new LogReadError(`unable to read ${file}: ${(err as Error).message}`, { cause: err });
  } finally {
    fs.closeSync(fd);
  }
}

/** Whole lines of [from, size) in chunks; a partial last line is held back when the file may still grow. Returns the offset after the last line given. */
function readChunks(fd: number, from: number, size: number, mayGrow: boolean, onChunk: (buf: Buffer, start: number, end: number) => void): number {
  let buf = Buffer.allocUnsafe(2 * CHUNK);
  let carry = 0; // bytes of a partial line kept at the start of buf
  let pos = from; // file offset of the next read
  while (pos < size) {
    if (buf.length - carry < CHUNK) {
      // a line longer than a chunk: room for it
      const bigger = Buffer.allocUnsafe(2 * buf.length);
      buf.copy(bigger, 0, 0, carry);
      buf = bigger;
    }
    const n = fs.readSync(fd, buf, carry, Math.min(CHUNK, size - pos), pos);
    if (n === 0) break;
    pos += n;
    const filled = carry + n;
    const last = buf.lastIndexOf(10, filled - 1);
    if (last >= 0) {
      onChunk(buf.subarray(0, last + 1), 0, last + 1);
      buf.copy(buf, 0, last + 1, filled); // the partial line to the front (copy handles the overlap)
      carry = filled - last - 1;
    } else carry = filled;
  }
  if (carry && !mayGrow) {
    onChunk(buf.subarray(0, carry), 0, carry);
    return pos;
  }
  return pos - carry;
}
