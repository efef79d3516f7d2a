// Running the firewall programs (nft, ipset, iptables, ip6tables and their -save/-restore)
// through lib/io/run-program.ts. cron's PATH (/usr/bin:/bin) usually lacks /usr/sbin, where
// they live: look on PATH first (so a test can put a program in front), then in sbin. A
// failure is a TemporaryError with the program's own first words of complaint.

import fs from 'node:fs';
import path from 'node:path';
import { TemporaryError } from '../../errors.js';
import type { Family } from '../../net/address.js';
import { type RunResult, runProgram } from '../run-program.js';

const SBIN = ['/usr/sbin', '/sbin', '/usr/local/sbin'];
const found = new Map<string, string | null>();
const ANY_EXIT = Array.from({ length: 256 }, (_, i) => i);

/** Big sets take seconds to load; a minute is not enough at a million elements. */
export const APPLY_TIMEOUT_MS = 10 * 60_000;

/** Absolute path of a firewall program, or null when it is not installed. */
export function firewallProgram(name: string): string | null {
  if (!found.has(name)) {
    let hit: string | null = null;
    for (const dir of [...(process.env.PATH ?? '').split(':').filter(Boolean), ...SBIN]) {
      const p = path.join(dir, name);
      try {
        fs.accessSync(p, fs.constants.X_OK);
        if (fs.statSync(p).isFile()) {
          hit = p;
          break;
        }
      } catch {
        // not here
      }
    }
    found.set(name, hit);
  }
  return found.get(name)!;
}

/** The line of a program's stderr that says what went wrong, kept short (nft echoes input). */
function firstProblem(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean);
  const line = lines.find((l) => /error/i.test(l)) ?? lines[0] ?? '';
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}

/**
 * Run a firewall program; exit codes outside `ok` become a TemporaryError with the
 * program's own message, e.g. `nft -f failed (exit 1): /dev/stdin:7:1-40: Error: ...`.
 */
export async function fw(
  name: string,
  args: readonly string[],
  opts: { input?: string; ok?: number[]; timeoutMs?: number } = {},
): Promise<RunResult> {
  const file = firewallProgram(name);
  if (!file) throw new TemporaryError(`unable to run ${name}: program not found (looked on PATH and in ${SBIN.join(', ')})`);
  const r = await runProgram(file, args, { input: opts.input, okExitCodes: ANY_EXIT, timeoutMs: opts.timeoutMs ?? 60_000 });
  if (!(opts.ok ?? [0]).includes(r.exitCode)) {
    const shown = args.filter((a) => a !== '-w' && a !== '-').join(' ');
    const why = firstProblem(r.stderr);
    throw new TemporaryError(`${name} ${shown} failed (exit ${r.exitCode})${why ? `: ${why}` : ''}`);
  }
  return r;
}

/** iptables or ip6tables. */
export const iptables = (family: Family) => (family === 4 ? 'iptables' : 'ip6tables');
