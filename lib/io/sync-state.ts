// sync-rules' memory between runs: a small JSON file in $QGUARD_STATE_DIR per target (rules
// file, cdb and control directory) saying what the last run published — the change counter,
// the next expiry, a hash of the config and the static file, and the stat of every file it
// wrote. Equal on the next run: nothing changed, nothing is read. Written atomically; a
// missing or broken file only costs one full run.

import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import type { Config } from '../config.js';
import type { Action } from '../policy/decide.js';
import type { FirewallResult } from '../firewall/backends.js';
import { removeStaleTemps, writeFileAtomic } from './atomic-write.js';
import { readIfExists, statIfExists } from './read-optional.js';

/** Bump when the generated text changes for the same input, so upgrades rebuild. */
export const FORMAT_VERSION = 1;

/** Identity of a file on disk: a hand edit changes at least one of these. */
export interface Stamp {
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
  mode: number;
}

export interface SyncState {
  version: number;
  /** False while a run is applying: the next run rebuilds without hand-edit warnings. */
  complete: boolean;
  changeSeq: number;
  nextExpiry: string | null;
  configHash: string;
  staticStamp: Stamp | null;
  staticHash: string;
  /** sha1 of the files we wrote (text files), by role. */
  hashes: Record<string, string>;
  stamps: Record<string, Stamp | null>;
  rules: Record<Action, number>;
  keys: number;
  denyKeys: number;
  rcpthosts: number | null;
  firewallOk: boolean;
  firewall: FirewallResult | null;
}

/** A file's stamp, or null when it does not exist. */
export function stampOf(file: string): Stamp | null {
  const st = statIfExists(file);
  return st ? { size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino, mode: st.mode & 0o7777 } : null;
}

/** Equal stamps: the file was not touched. */
export function sameStamp(a: Stamp | null | undefined, b: Stamp | null): boolean {
  if (!a || !b) return !a && !b;
  return a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs && a.ino === b.ino && a.mode === b.mode;
}

/** sha1 in hex: what the state records of texts. */
export const sha1 = (data: string | Buffer) => crypto.createHash('sha1').update(data).digest('hex');

/** The state file of this target (several configs may share a state directory). */
export function statePath(c: Config): string {
  const id = sha1(`${c.rulesFile}\0${c.rulesCdb}\0${c.controlDir}`).slice(0, 12);
  return path.join(c.stateDir, `sync-rules-${id}.state`);
}

/** The state file's contents, or null (none yet, another format, broken). */
export function readState(file: string): SyncState | null {
  const text = readIfExists(file, 'utf8');
  if (text === null) return null;
  try {
    const s = JSON.parse(text) as SyncState;
    return s.version === FORMAT_VERSION ? s : null;
  } catch {
    return null; // a broken state file only costs one full run
  }
}

/** Write the state file atomically. */
export function writeState(file: string, state: SyncState): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  removeStaleTemps(file);
  writeFileAtomic(file, `${JSON.stringify(state)}\n`, { mode: 0o644 });
}
