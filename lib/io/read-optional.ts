// "A missing file means the default": reads and stats that answer null for a file (or
// directory) that does not exist, and a TemporaryError naming the file for any other failure.
// One place for the ENOENT test that state files, static files and control files all need.

import fs from 'node:fs';
import { TemporaryError } from '../errors.js';

const missing = (err: unknown) => {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
};

/** The file's bytes (or text, with an encoding), or null when it does not exist. */
export function readIfExists(file: string): Buffer | null;
export function readIfExists(file: string, encoding: BufferEncoding): string | null;
export function readIfExists(file: string, encoding?: BufferEncoding): Buffer | string | null {
  try {
    return encoding ? fs.readFileSync(file, encoding) : fs.readFileSync(file);
  } catch (err) {
    if (missing(err)) return null;
    throw new TemporaryError(`unable to read ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/** stat(2) (following links), or null when the path does not exist. */
export function statIfExists(file: string): fs.Stats | null {
  try {
    return fs.statSync(file);
  } catch (err) {
    if (missing(err)) return null;
    throw new TemporaryError(`unable to stat ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/** A directory's entry names, or null when it does not exist. */
export function readdirIfExists(dir: string): string[] | null {
  try {
    return fs.readdirSync(dir);
  } catch (err) {
    if (missing(err)) return null;
    throw new TemporaryError(`unable to read directory ${dir}: ${(err as Error).message}`, { cause: err });
  }
}
