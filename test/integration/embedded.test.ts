// The embedded database (PGlite in $QGUARD_STATE_DIR/pgdata): the default for a single server.
// PGlite is single-process, so commands queue on a kernel lock; a bounded wait ends in 111.

import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestDb, createTestDb } from '../helpers/db.js';
import { runCli } from '../helpers/cli.js';
import { haveTools } from '../helpers/tools.js';

let t: TestDb;
const q = (args: string[], env: Record<string, string> = {}) => runCli('qguard', args, { env: { ...t.env, ...env } });

beforeAll(async () => {
  t = await createTestDb({ kind: 'embedded', migrate: false });
});
afterAll(async () => {
  await t?.drop();
});

describe('embedded database', () => {
  it('migrates and answers like the server', async () => {
    expect((await q(['ip', 'ls'])).code).toBe(100);
    expect((await q(['db', 'migrate'])).code).toBe(0);
    const st = JSON.parse((await q(['db', 'status', '--json'])).stdout);
    expect(st).toMatchObject({ database: 'embedded', location: path.join(t.stateDir, 'pgdata'), ok: true });
    expect((await q(['ip', 'deny', '203.0.113.0/24'])).code).toBe(0);
    expect((await q(['ip', 'allow', '203.0.113.5', '--for', '1h'])).code).toBe(0);
    expect(JSON.parse((await q(['ip', 'why', '203.0.113.5', '--json'])).stdout).decision).toBe('relay');
    expect(JSON.parse((await q(['ip', 'why', '203.0.113.6', '--json'])).stdout).decision).toBe('deny');
    expect(JSON.parse((await q(['ip', 'why', '198.51.100.1', '--json'])).stdout).decision).toBe('default');
  });

  it('commands started in the same moment wait for each other; none is lost', async () => {
    const runs = await Promise.all([1, 2, 3, 4].map((i) => q(['ip', 'deny', `198.18.0.${i}`])));
    expect(runs.map((r) => `${r.code} ${r.stderr}`)).toEqual(['0 ', '0 ', '0 ', '0 ']);
    const all = JSON.parse((await q(['ip', 'ls', '--json'])).stdout).map((r: { cidr: string }) => r.cidr);
    for (const i of [1, 2, 3, 4]) expect(all).toContain(`198.18.0.${i}/32`);
  });

  it.skipIf(!haveTools('flock'))('gives up after QGUARD_LOCK_WAIT with exit 111 while another holds it', async () => {
    // exec: the process that holds the lock is the one we kill
    const holder = execa('sh', ['-c', 'exec 9>>"$1" && flock -x 9 && exec sleep 30', 'sh', path.join(t.stateDir, 'pgdata.lock')], {
      reject: false,
    });
    await new Promise((r) => setTimeout(r, 300));
    try {
      const started = Date.now();
      const r = await q(['ip', 'ls'], { QGUARD_LOCK_WAIT: '1s' });
      expect(r.code).toBe(111);
      expect(r.stderr).toMatch(/embedded database .* is busy/);
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      holder.kill('SIGKILL');
      await holder;
    }
    expect((await q(['ip', 'ls'])).code).toBe(0);
  });
});
