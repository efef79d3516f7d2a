// Packaging: `npm pack`, then `npm install -g` of the tarball into a temporary prefix puts every
// executable on PATH, and each answers --version and --help (with examples).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/cli.js';

const BINS = ['qguard', 'sync-rules', 'scan-queue', 'purge-queue', 'import-spamlist'];
let dir: string;
let prefix: string;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-pack-'));
  prefix = path.join(dir, 'prefix');
  // dist/ is already built by `npm test`; do not rebuild it under the other tests' feet.
  const pack = await execa('npm', ['pack', '--ignore-scripts', '--pack-destination', dir, '--json'], { cwd: ROOT });
  const [{ filename }] = JSON.parse(pack.stdout) as { filename: string }[];
  await execa('npm', ['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--prefer-offline', path.join(dir, filename)], {
    cwd: dir,
    env: { ...process.env, npm_config_loglevel: 'error' },
  });
}, 600_000);

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('npm pack + npm install -g', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };

  it.each(BINS)('%s is on PATH and answers --version and --help', async (bin) => {
    const exe = path.join(prefix, 'bin', bin);
    expect(fs.existsSync(exe)).toBe(true);
    const env = { ...process.env, PATH: `${path.join(prefix, 'bin')}:${process.env.PATH}` };
    const v = await execa(bin, ['--version'], { env, reject: false });
    expect(v.exitCode).toBe(0);
    expect(v.stdout.trim()).toBe(pkg.version);
    const h = await execa(bin, ['--help'], { env, reject: false });
    expect(h.exitCode).toBe(0);
    expect(h.stdout).toMatch(new RegExp(`^Usage: ${bin}`));
    expect(h.stdout).toMatch(/Examples:/);
  });

  it('ships the migrations and runs one against an embedded database from the installed copy', async () => {
    const state = path.join(dir, 'state');
    const env = { ...process.env, PATH: `${path.join(prefix, 'bin')}:${process.env.PATH}`, QGUARD_STATE_DIR: state, QGUARD_CONFIG: '/dev/null' };
    for (const k of Object.keys(env)) if (k.startsWith('PG') || k === 'DATABASE_URL' || k === 'QGUARD_DATABASE_URL') delete env[k];
    const m = await execa('qguard', ['db', 'migrate', '--json'], { env, reject: false });
    expect(m.stderr).toBe('');
    expect(m.exitCode).toBe(0);
    expect(JSON.parse(m.stdout).applied.length).toBeGreaterThan(0);
  });
});
