// `qguard status` as a monitoring check: exit 0 OK, 1 WARNING, 2 CRITICAL, from the job
// records every cron job writes (here written the way runMain writes them).

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestDb, createTestDb } from '../helpers/db.js';
import { runCli } from '../helpers/cli.js';

let t: TestDb;
const status = (args: string[] = [], env: Record<string, string> = {}) => runCli('qguard', ['status', ...args], { env: { ...t.env, ...env } });

async function record(job: string, secondsAgo: number, ok: boolean, host = 'test-host', error: string | null = null) {
  const db = await t.open();
  try {
    await db.query(
      `INSERT INTO qguard.job_runs (host, job, started_at, finished_at, ok, exit_code, error)
       VALUES ($1, $2, now() - make_interval(secs => $3 + 1), now() - make_interval(secs => $3), $4, $5, $6)`,
      [host, job, secondsAgo, ok, ok ? 0 : 111, error],
    );
  } finally {
    await db.close();
  }
}

beforeAll(async () => {
  t = await createTestDb();
});
afterAll(async () => {
  await t?.drop();
});

describe('qguard status', () => {
  it('CRITICAL (2) before sync-rules ever ran on this host', async () => {
    const r = await status();
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/^QGUARD CRITICAL - sync-rules has never run on test-host/);
    expect(r.stderr).toBe('');
  });

  it('OK (0) once sync-rules succeeded within 5 minutes', async () => {
    await record('sync-rules', 30, true);
    const r = await status(['--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ level: 'OK', exitCode: 0, problems: [] });
    expect(j.jobs[0]).toMatchObject({ host: 'test-host', job: 'sync-rules', lastRunOk: true, runs: 1 });
    expect(j.rules.byAction).toEqual({ relay: 0, trust: 0, deny: 0 });
  });

  it('WARNING (1) when the last scan-queue run failed', async () => {
    await record('scan-queue', 90, true);
    await record('scan-queue', 20, false, 'test-host', 'database trouble');
    const r = await status();
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^QGUARD WARNING - the last scan-queue run on test-host failed \(last error: database trouble\)/);
  });

  it('CRITICAL (2) when sync-rules has been stale for more than 5 minutes', async () => {
    const db = await t.open();
    await db.query("DELETE FROM qguard.job_runs WHERE job = 'sync-rules'");
    await db.close();
    await record('sync-rules', 6 * 60, true);
    const r = await status();
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/sync-rules has not succeeded on test-host for 6m/);
  });

  it('looks at other mail servers only with --all', async () => {
    await record('sync-rules', 5, true);
    await record('scan-queue', 5, true);
    expect((await status()).code).toBe(0);
    await record('sync-rules', 3600, true, 'mx2');
    const all = await status(['--all', '--json']);
    expect(all.code).toBe(2);
    expect(JSON.parse(all.stdout).problems.map((p: { host: string }) => p.host)).toEqual(['mx2']);
  });

  it('CRITICAL (2) when the database cannot be reached', async () => {
    const r = await status([], { QGUARD_DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/nowhere' });
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/^QGUARD CRITICAL - database trouble: unable to connect/);
  });
});
