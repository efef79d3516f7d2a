// purge-queue and a running qmail-send. A fake qmail-send (a process holding flock on
// queue/lock/sendmutex, as the real one does) and stop/start commands that record their calls:
// a free lock means nothing is stopped or started; a held one is stopped, waited for, and
// started again after the removal; a qmail-send that will not let go of its lock makes the
// purge refuse (exit 111), change nothing, and start only what it stopped.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { QueueBuilder, networkMessage } from '../helpers/queue-builder.js';
import { createTestDb, type TestDb } from '../helpers/db.js';
import { runCli } from '../helpers/cli.js';
import { type FakeQmailSend, diffTrees, mutexHeld, snapshotTree, startFakeQmailSend, writeControlScripts } from '../helpers/purge-fixtures.js';
import { haveTools } from '../helpers/tools.js';

let db: TestDb;
let work: string;
const fakes: FakeQmailSend[] = [];

beforeAll(async () => {
  db = await createTestDb();
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-purge-ctl-'));
  expect((await runCli('qguard', ['ip', 'deny', '203.0.113.0/24'], { env: db.env })).code).toBe(0);
});
afterEach(() => {
  for (const f of fakes.splice(0)) f.kill();
});
afterAll(async () => {
  await db?.drop();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

let n = 0;

/** A queue with 5 spam messages (denied source) and 2 others, scanned; its own host and state. */
async function setup(opts: { stopExit?: number; stopKills?: boolean; spam?: number } = {}) {
  const dir = path.join(work, `case${++n}`);
  const b = QueueBuilder.create({ dir: path.join(dir, 'queue') });
  for (let i = 0; i < (opts.spam ?? 5); i++) b.add({ mess: networkMessage({ ip: '203.0.113.9' }), sender: `s${i}@spam.example`, recipients: ['dave@example.net', 'x@remote.example'] });
  for (let i = 0; i < 2; i++) b.add({ mess: networkMessage({ ip: '198.51.100.150' }), sender: 'partner@partner.example' });
  const pidFile = path.join(dir, 'qmail-send.pid');
  const scripts = writeControlScripts(path.join(dir, 'bin'), b.dir, pidFile, opts);
  const state = path.join(dir, 'state');
  fs.mkdirSync(state);
  const env = {
    ...db.env,
    QGUARD_HOST: `ctl-${n}`,
    QGUARD_STATE_DIR: state,
    QGUARD_QUEUE: b.dir,
    QGUARD_QMAIL_STOP: `${scripts.stop} -d /service/qmail-send`,
    QGUARD_QMAIL_START: scripts.start,
  };
  expect((await runCli('scan-queue', ['--no-deny'], { env })).code).toBe(0);
  const fake = async () => {
    const f = await startFakeQmailSend(b.dir, pidFile);
    fakes.push(f);
    return f;
  };
  const messCount = () => fs.readdirSync(path.join(b.dir, 'mess'), { recursive: true }).filter((p) => /\/\d+$/.test(String(p))).length;
  return { b, env, scripts, state, fake, messCount };
}

describe.skipIf(!haveTools('flock'))('stopping qmail-send', () => {
  it('qmail-send not running (lock free): nothing is stopped or started, the purge happens', async () => {
    const c = await setup();
    const r = await runCli('purge-queue', ['--json'], { env: c.env });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ removed: 5, stoppedQmail: false });
    expect(c.scripts.calls()).toEqual([]);
    expect(c.messCount()).toBe(2);
  });

  it('qmail-send running: stopped, its lock held for the removal, started again after it', async () => {
    const c = await setup();
    const f = await c.fake();
    const r = await runCli('purge-queue', ['--json'], { env: c.env });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ removed: 5, quarantined: 5, stoppedQmail: true });
    // stop (with its arguments), then start — when start ran, the removal was done (2 left).
    expect(c.scripts.calls()).toEqual(['stop -d /service/qmail-send', 'start 2']);
    expect(f.alive()).toBe(false);
    expect(mutexHeld(c.b.dir)).toBe(false);
    expect(fs.existsSync(path.join(c.state, 'purge-queue.qmail-stopped'))).toBe(false);
  });

  it('the default commands, svc -d / svc -u /service/qmail-send, found on PATH', async () => {
    const c = await setup();
    const f = await c.fake();
    // A fake daemontools svc: records its arguments; -d stops the fake qmail-send.
    const bin = path.join(work, `case${n}`, 'path');
    fs.mkdirSync(bin);
    const log = path.join(bin, 'svc.log');
    fs.writeFileSync(
      path.join(bin, 'svc'),
      `#!/bin/sh\necho "svc $* $(find '${c.b.dir}/mess' -type f | wc -l)" >> '${log}'\n[ "$1" = -d ] && kill -TERM -${f.pid}\nexit 0\n`,
      { mode: 0o755 },
    );
    const { QGUARD_QMAIL_STOP: _stop, QGUARD_QMAIL_START: _start, ...env } = c.env;
    const r = await runCli('purge-queue', ['--json'], { env: { ...env, PATH: `${bin}:${process.env.PATH}` } });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ removed: 5, stoppedQmail: true });
    expect(fs.readFileSync(log, 'utf8').trim().split('\n')).toEqual(['svc -d /service/qmail-send 7', 'svc -u /service/qmail-send 2']);
    expect(f.alive()).toBe(false);
  });

  it('the stop command "succeeds" but qmail-send keeps its lock: exit 111, nothing removed, started again', async () => {
    const c = await setup({ stopKills: false });
    const f = await c.fake();
    const before = snapshotTree(c.b.dir);
    const t0 = Date.now();
    const r = await runCli('purge-queue', ['--stop-wait', '2s'], { env: c.env });
    expect(r.code).toBe(111);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2000);
    expect(r.stderr).toBe(
      `purge-queue: fatal: qmail-send still holds ${c.b.dir}/lock/sendmutex 2s after \`${c.env.QGUARD_QMAIL_STOP}\`: nothing removed\n`,
    );
    expect(r.stdout).toBe('');
    expect(diffTrees(before, snapshotTree(c.b.dir))).toEqual({ removed: [], added: [], changed: [] });
    expect(c.scripts.calls()).toEqual(['stop -d /service/qmail-send', 'start 7']);
    expect(f.alive()).toBe(true);
    expect(fs.readdirSync(path.join(c.state, 'quarantine'))).toEqual([]);
    expect(fs.existsSync(path.join(c.state, 'purge-queue.qmail-stopped'))).toBe(false);
  });

  it('the stop command fails: exit 111, nothing removed, nothing started', async () => {
    const c = await setup({ stopExit: 1, stopKills: false });
    await c.fake();
    const before = snapshotTree(c.b.dir);
    const r = await runCli('purge-queue', [], { env: c.env });
    expect(r.code).toBe(111);
    expect(r.stderr).toMatch(/^purge-queue: fatal: unable to stop qmail-send: .*qmail-stop failed \(exit 1\): nothing removed\n$/);
    expect(diffTrees(before, snapshotTree(c.b.dir))).toEqual({ removed: [], added: [], changed: [] });
    expect(c.scripts.calls()).toEqual(['stop -d /service/qmail-send']);
  });

  it('nothing to remove: qmail-send is left alone even while it runs', async () => {
    const c = await setup({ spam: 0 });
    const f = await c.fake();
    const r = await runCli('purge-queue', [], { env: c.env });
    expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(c.scripts.calls()).toEqual([]);
    expect(f.alive()).toBe(true);
  });

  it('a dry run never stops anything', async () => {
    const c = await setup();
    await c.fake();
    const r = await runCli('purge-queue', ['--dry-run', '--json'], { env: c.env });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ selected: 5, removed: 0, stoppedQmail: false });
    expect(c.scripts.calls()).toEqual([]);
  });

  it('a run killed while qmail-send was stopped is followed by one that starts it', async () => {
    const c = await setup({ spam: 0 });
    // What a killed run leaves: the marker (qmail-send itself stays down under svc -d).
    fs.writeFileSync(path.join(c.state, 'purge-queue.qmail-stopped'), 'x\n');
    const r = await runCli('purge-queue', ['--json'], { env: c.env });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ removed: 0, stoppedQmail: true });
    expect(c.scripts.calls()).toEqual(['start 2']);
    expect(fs.existsSync(path.join(c.state, 'purge-queue.qmail-stopped'))).toBe(false);
  });

  it('a stop command with unbalanced quotes is a configuration error (exit 100), nothing stopped', async () => {
    const c = await setup();
    await c.fake();
    const r = await runCli('purge-queue', [], { env: { ...c.env, QGUARD_QMAIL_STOP: "svc -d '/service/qmail-send" } });
    expect(r.code).toBe(100);
    expect(r.stderr).toMatch(/^purge-queue: fatal: QGUARD_QMAIL_STOP: unbalanced quote/);
    expect(c.scripts.calls()).toEqual([]);
  });
});
