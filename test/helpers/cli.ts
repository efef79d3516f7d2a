// Run the built executables (dist/bin) as a user would, and capture what they say.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Environment every CLI test starts from: nothing inherited that could point elsewhere. */
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined) continue;
    if (k.startsWith('QGUARD_') || k.startsWith('PG') || k === 'DATABASE_URL' || k === 'QMAIL_HOME') continue;
    env[k] = v;
  }
  return env;
}

/** Run dist/bin/NAME.js with args; never throws on a non-zero exit. */
export async function runCli(
  name: string,
  args: string[],
  opts: { env?: Record<string, string | undefined>; input?: string | Buffer; cwd?: string; timeoutMs?: number } = {},
): Promise<CliResult> {
  const bin = path.join(ROOT, 'dist/bin', `${name}.js`);
  if (!fs.existsSync(bin)) throw new Error(`${bin} is missing: run \`npm run build\` (npm test does)`);
  const r = await execa(process.execPath, [bin, ...args], {
    env: { ...baseEnv(), ...opts.env },
    extendEnv: false,
    input: opts.input,
    cwd: opts.cwd,
    reject: false,
    timeout: opts.timeoutMs ?? 120_000,
    stripFinalNewline: false,
  });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}
