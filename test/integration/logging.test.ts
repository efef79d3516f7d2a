// Logs: one line per event on stderr, prefixed with the command; with QGUARD_SYSLOG=1 the same
// lines (and the --verbose ones, even without --verbose) go to syslog through `logger -t qguard`.
// A stand-in `logger` on PATH records what it is given.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestDb, createTestDb } from '../helpers/db.js';
import { runCli } from '../helpers/cli.js';

let t: TestDb;
let dir: string;
let env: Record<string, string>;
const logged = () => (fs.existsSync(path.join(dir, 'syslog')) ? fs.readFileSync(path.join(dir, 'syslog'), 'utf8') : '');

beforeAll(async () => {
  t = await createTestDb();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-log-'));
  fs.mkdirSync(path.join(dir, 'bin'));
  fs.writeFileSync(path.join(dir, 'bin', 'logger'), `#!/bin/sh\necho "args: $*" >> "${dir}/syslog"\ncat >> "${dir}/syslog"\n`, { mode: 0o755 });
  env = { ...t.env, QGUARD_SYSLOG: '1', PATH: `${path.join(dir, 'bin')}:${process.env.PATH}` };
});
afterAll(async () => {
  await t?.drop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('syslog', () => {
  it('records what was done, while the terminal (cron) stays quiet', async () => {
    const r = await runCli('qguard', ['ip', 'deny', '198.18.1.1', '--reason', 'line\nbreak'], { env });
    expect(r).toMatchObject({ code: 0, stdout: '', stderr: '' });
    expect(logged()).toBe('args: -t qguard\nqguard: 198.18.1.1/32 deny (source manual)\n');
  });

  it('records warnings and fatal errors as they appear on stderr', async () => {
    fs.rmSync(path.join(dir, 'syslog'), { force: true });
    const r = await runCli('qguard', ['ip', 'deny', '127.0.0.1'], { env });
    expect(r.code).toBe(100);
    expect(r.stderr).toBe('qguard: fatal: 127.0.0.1 is protected (inside 127.0.0.0/8): never denied\n');
    expect(logged()).toBe('args: -t qguard\nqguard: fatal: 127.0.0.1 is protected (inside 127.0.0.0/8): never denied\n');
  });

  it('sends nothing to syslog unless asked', async () => {
    fs.rmSync(path.join(dir, 'syslog'), { force: true });
    const r = await runCli('qguard', ['ip', 'deny', '198.18.1.2'], { env: { ...env, QGUARD_SYSLOG: '0' } });
    expect(r.code).toBe(0);
    expect(logged()).toBe('');
  });
});
