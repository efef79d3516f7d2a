// Which external programs the tests can use. Outside CI a missing program skips the tests
// that need it, saying so; in CI (CI=true) it fails them: green must mean everything ran.

import { execFileSync } from 'node:child_process';

export const IN_CI = process.env.CI === 'true' || process.env.CI === '1';

const cache = new Map<string, boolean>();

function onPath(program: string): boolean {
  if (!cache.has(program)) {
    let found = false;
    try {
      execFileSync('sh', ['-c', `command -v "$1"`, 'sh', program], { stdio: 'ignore' });
      found = true;
    } catch {
      found = false;
    }
    cache.set(program, found);
  }
  return cache.get(program)!;
}

/**
 * True when every program is installed. When one is missing: in CI, throw (the test file
 * fails); elsewhere, print why and return false so the caller can skip.
 */
export function haveTools(...programs: string[]): boolean {
  const missing = programs.filter((p) => !onPath(p));
  if (missing.length === 0) return true;
  const msg = `missing program(s): ${missing.join(', ')} (apt-get install ucspi-tcp ipset nftables iptables iproute2 daemontools)`;
  if (IN_CI) throw new Error(`${msg}; CI must run every test`);
  process.stderr.write(`skipping tests: ${msg}\n`);
  return false;
}

/** True when we are root (network namespaces, firewall). Same CI rule as haveTools. */
export function haveRoot(): boolean {
  if (process.getuid?.() === 0) return true;
  if (IN_CI) throw new Error('tests need root (network namespaces); CI must run every test');
  process.stderr.write('skipping tests: they need root\n');
  return false;
}
