// Replace a file so that every reader, at every moment (kill -9 included), sees either the old
// contents or the new ones, never a mix or nothing: a temp file in the same directory, written
// and fsynced, given the old file's mode and owner, renamed over the old one, the directory
// fsynced. Temp names start with `.NAME.qguard-` so a later run can remove what a killed run
// left (call removeStaleTemps under the job lock). The temp file is removed in `finally`.
// Like write-file-atomic; synchronous, because nothing else runs meanwhile.

import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { TemporaryError } from '../errors.js';

export interface ReplaceOptions {
  /** Mode of a new file (default 0644). An existing file keeps its mode. */
  mode?: number;
  /** Permission bits that must be set whatever the old mode (e.g. 0444: readable by all). */
  ensureBits?: number;
}

/** The prefix of our temp files for `file`. */
export function tempPrefix(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.qguard-`);
}

/** A fresh unique temp name next to `file`. */
export function tempName(file: string, tag = 'tmp'): string {
  return `${tempPrefix(file)}${tag}.${process.pid}.${crypto.randomBytes(4).toString('hex')}`;
}

/** Remove temp files a killed run left next to `file`. Returns how many. */
export function removeStaleTemps(file: string): number {
  const dir = path.dirname(file);
  const prefix = `.${path.basename(file)}.qguard-`;
  let n = 0;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    try {
      fs.unlinkSync(path.join(dir, name));
      n++;
    } catch {
      // gone already, or not ours to remove: the unique names keep us clear of it
    }
  }
  return n;
}

function fail(what: string, file: string, err: unknown): never {
  throw new TemporaryError(`unable to ${what} ${file}: ${(err as Error).message}`, { cause: err });
}

/** fsync a directory so a rename in it survives a crash (best effort where unsupported). */
export function fsyncDir(dir: string): void {
  let fd: number | null = null;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'EISDIR' && code !== 'EPERM') fail('sync directory', dir, err);
  } finally {
    if (fd !== null) fs.closeSync(fd);
  }
}

/** Mode and owner the replacement of `file` should get. */
function targetMeta(file: string, opts: ReplaceOptions): { mode: number; uid: number | null; gid: number | null } {
  let mode = opts.mode ?? 0o644;
  let uid: number | null = null;
  let gid: number | null = null;
  try {
    const st = fs.statSync(file);
    mode = st.mode & 0o7777;
    uid = st.uid;
    gid = st.gid;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') fail('stat', file, err);
  }
  return { mode: mode | (opts.ensureBits ?? 0), uid, gid };
}

/**
 * Give the finished temp file `tmp` the mode and owner `file` should have, rename it over
 * `file` and sync the directory. The caller wrote and fsynced `tmp`.
 */
export function installFile(tmp: string, file: string, opts: ReplaceOptions = {}): void {
  const meta = targetMeta(file, opts);
  try {
    fs.chmodSync(tmp, meta.mode);
    if (meta.uid !== null && meta.gid !== null && process.getuid?.() === 0) fs.chownSync(tmp, meta.uid, meta.gid);
  } catch (err) {
    fail('set the mode of', tmp, err);
  }
  try {
    fs.renameSync(tmp, file);
  } catch (err) {
    fail('move into place', file, err);
  }
  fsyncDir(path.dirname(file));
}

/** Write and fsync a new temp file (see tempName); install it with installFile. */
export function writeTempFile(tmp: string, data: string | Buffer): void {
  let fd: number | null = null;
  try {
    fd = fs.openSync(tmp, 'wx', 0o600);
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } catch (err) {
    fail('write', tmp, err);
  } finally {
    if (fd !== null) fs.closeSync(fd);
  }
}

/** Write `data` to `file` atomically (see the top of this file). Returns the new file's stat. */
export function writeFileAtomic(file: string, data: string | Buffer, opts: ReplaceOptions = {}): fs.Stats {
  const tmp = tempName(file);
  try {
    writeTempFile(tmp, data);
    installFile(tmp, file, opts);
    return fs.statSync(file);
  } finally {
    try {
      fs.unlinkSync(tmp);
    } catch {
      // renamed: nothing left behind
    }
  }
}
