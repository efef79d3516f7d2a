// The record of the last successful apply ($QGUARD_STATE_DIR/firewall.json): how sync-rules
// knows "the kernel already holds this set" without listing a million elements. Written
// atomically (lib/io/atomic-write.ts): the record is old or new, never torn.

import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../../config.js';
import { FIREWALL_BACKENDS } from '../../firewall/backends.js';
import { writeFileAtomic } from '../atomic-write.js';
import { readIfExists } from '../read-optional.js';
import type { AppliedFirewall } from './backend.js';

const STATE_FILE = 'firewall.json';

function statePath(config: Config): string {
  return path.join(config.stateDir, STATE_FILE);
}

/** The last apply's record, or null (never applied, removed, unreadable). */
export function readAppliedFirewall(config: Config): AppliedFirewall | null {
  try {
    const text = readIfExists(statePath(config), 'utf8');
    if (text === null) return null;
    const s = JSON.parse(text) as AppliedFirewall;
    if ((FIREWALL_BACKENDS as readonly string[]).includes(s.backend) && typeof s.digest === 'string' && Array.isArray(s.ports)) return s;
  } catch {
    // Unreadable, torn or foreign: treat as never applied, the next apply rewrites it.
  }
  return null;
}

/** Record an apply. Without the record the next run rewrites the set once more. */
export function writeAppliedFirewall(config: Config, state: AppliedFirewall): void {
  const file = statePath(config);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  writeFileAtomic(file, `${JSON.stringify(state, null, 2)}\n`);
}

/** Forget the last apply (after `qguard firewall remove`). */
export function forgetAppliedFirewall(config: Config): void {
  fs.rmSync(statePath(config), { force: true });
}
