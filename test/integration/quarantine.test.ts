// The quarantine after a purge: `qguard quarantine ls/show/restore/prune`. restore hands the
// message to qmail-queue — here a stand-in that records descriptor 0 and descriptor 1 — and the
// bytes must be exactly the original message and the envelope in qmail-queue(8)'s format
// (F sender \0, T recipient \0 each, an extra \0), with the pending recipients only and
// virtual-domain prefixes undone. qmail-queue's exit codes map to 100 / 111.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NO_MAILBOX, QueueBuilder, bounceMessage, networkMessage, plainMessage } from '../helpers/queue-builder.js';
import { createTestDb, type TestDb } from '../helpers/db.js';
import { runCli } from '../helpers/cli.js';
import { writeControlScripts, writeQmailQueueStandIn } from '../helpers/purge-fixtures.js';

let db: TestDb;
let work: string;
let b: QueueBuilder;
let env: Record<string, string>;
let qqOut: string;
const ids: Record<string, string> = {};
const bytes: Record<string, Buffer> = {};
type Entry = { id: string; queueId: string; sourceIp: string | null; sender: string; reason: string; purgedAt: string; state: string; path: string; pending: string[]; recipients: string[]; restoredAt: string | null };
let entries: Map<string, Entry>;

const ls = async (extra: string[] = []): Promise<Entry[]> => {
  const r = await runCli('qguard', ['quarantine', 'ls', '--json', ...extra], { env });
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout);
};
const qqFiles = () => fs.readdirSync(qqOut).filter((f) => f.startsWith('mess.')).length;

beforeAll(async () => {
  db = await createTestDb();
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-quarantine-'));
  b = QueueBuilder.create({ dir: path.join(work, 'queue') });
  const control = path.join(work, 'control');
  fs.mkdirSync(control);
  // vpopmail style: qmail-send writes local/ recipients of example.com as "example.com-user@example.com".
  fs.writeFileSync(path.join(control, 'virtualdomains'), 'example.com:example.com\n');
  qqOut = path.join(work, 'qq');
  writeQmailQueueStandIn(path.join(work, 'qmail-queue'), qqOut);
  const scripts = writeControlScripts(path.join(work, 'bin'), b.dir, path.join(work, 'none.pid'));
  env = {
    ...db.env,
    QGUARD_QUEUE: b.dir,
    QGUARD_CONTROL: control,
    QGUARD_QMAIL_QUEUE: path.join(work, 'qmail-queue'),
    QGUARD_QMAIL_STOP: scripts.stop,
    QGUARD_QMAIL_START: scripts.start,
  };
  // A partner's order, wrongly caught with its whole /24: recipients in local/ (one virtual
  // domain, one done) and remote/ (one pending).
  ids.partner = b.add({
    mess: networkMessage({ ip: '203.0.113.80', remoteHost: 'mail.partner.example', content: plainMessage({ from: 'orders@partner.example', subject: 'Order 4711 \x1b[31mconfirmed' }) }),
    sender: 'orders@partner.example',
    recipients: [
      { address: 'example.com-sales@example.com', queue: 'local' },
      { address: 'alice@example.net', queue: 'local', done: true },
      { address: 'crm@partner.example', queue: 'remote' },
    ],
  });
  // Still in todo/: every recipient pending, as given to qmail-queue (no prefixes there).
  ids.todo = b.add({ mess: networkMessage({ ip: '203.0.113.81' }), state: 'todo', sender: 'x@spam.example', recipients: ['dave@example.net', 'y@remote.example'] });
  // A bounce of spam (null sender).
  ids.bounce = b.add({
    mess: bounceMessage({ original: networkMessage({ ip: '203.0.113.82' }), originalSender: 'forged@victim.example', failed: [{ address: 'info@example.net', reason: NO_MAILBOX }] }),
    sender: '',
    recipients: ['forged@victim.example'],
  });
  ids.spam = b.add({ mess: networkMessage({ ip: '203.0.113.83' }), sender: 'promo@spam.example', recipients: ['dave@example.net'] });
  for (const [k, id] of Object.entries(ids)) bytes[k] = fs.readFileSync(b.path('mess', id));
  expect((await runCli('scan-queue', ['--no-deny'], { env })).code).toBe(0);
  expect((await runCli('qguard', ['ip', 'deny', '203.0.113.0/24'], { env })).code).toBe(0);
  const r = await runCli('purge-queue', ['--json'], { env });
  expect(r.stderr).toBe('');
  expect(JSON.parse(r.stdout)).toMatchObject({ removed: 4 });
  entries = new Map((await ls()).map((e) => [e.queueId, e]));
});
afterAll(async () => {
  await db?.drop();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

describe('qguard quarantine ls and show', () => {
  it('ls --json lists every purged message with id, source, sender, reason, purge time', () => {
    expect([...entries.keys()].sort()).toEqual(Object.values(ids).sort());
    const p = entries.get(ids.partner)!;
    expect(p).toMatchObject({
      sourceIp: '203.0.113.80',
      sender: 'orders@partner.example',
      reason: 'from 203.0.113.80, denied by manual rule 203.0.113.0/24',
      state: 'removed',
      recipients: ['example.com-sales@example.com', 'alice@example.net', 'crm@partner.example'],
      pending: ['sales@example.com', 'crm@partner.example'],
      restoredAt: null,
    });
    expect(Date.now() - Date.parse(p.purgedAt)).toBeLessThan(600_000);
    expect(entries.get(ids.bounce)).toMatchObject({ sender: '', reason: 'bounce of mail from 203.0.113.82, denied by manual rule 203.0.113.0/24' });
  });

  it('ls text output, newest first; --ip filters', async () => {
    const r = await runCli('qguard', ['quarantine', 'ls'], { env });
    const lines = r.stdout.trim().split('\n');
    expect(lines.length).toBe(4);
    expect(lines[0]).toMatch(/^\s*\d+ \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\s+\d+ 203\.0\.113\.\d+\s+<.*> -- /);
    expect((await ls(['--ip', '203.0.113.80'])).map((e) => e.queueId)).toEqual([ids.partner]);
  });

  it('show: the record, header and body, with escape sequences made harmless', async () => {
    const e = entries.get(ids.partner)!;
    const r = await runCli('qguard', ['quarantine', 'show', e.id], { env });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`quarantine ${e.id}   state: removed`);
    expect(r.stdout).toContain(`queue id: ${ids.partner}`);
    expect(r.stdout).toContain('Received: from mail.partner.example (203.0.113.80)');
    expect(r.stdout).toContain('Subject: Order 4711 \\x1b[31mconfirmed');
    expect(r.stdout).not.toContain('\x1b');
    const j = JSON.parse((await runCli('qguard', ['quarantine', 'show', e.id, '--json'], { env })).stdout);
    expect(j).toMatchObject({ id: e.id, queueId: ids.partner, missing: null, truncated: false });
    expect(j.body).toBe('Hello.\n');
  });

  it('show of an unknown or malformed id', async () => {
    expect(await runCli('qguard', ['quarantine', 'show', '99999'], { env })).toMatchObject({ code: 100, stderr: 'qguard: fatal: no quarantine entry 99999\n' });
    expect((await runCli('qguard', ['quarantine', 'show', 'abc'], { env })).code).toBe(2);
  });
});

describe('qguard quarantine restore', () => {
  it('hands qmail-queue the original message on fd 0 and the envelope on fd 1, byte for byte', async () => {
    const e = entries.get(ids.partner)!;
    const r = await runCli('qguard', ['quarantine', 'restore', e.id], { env });
    expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(fs.readFileSync(path.join(qqOut, 'mess.0')).equals(bytes.partner)).toBe(true);
    // qmail-queue(8): F sender \0, T recipient \0 ..., then the extra \0. Pending only; prefix undone.
    expect(fs.readFileSync(path.join(qqOut, 'env.0')).toString('latin1')).toBe('Forders@partner.example\0Tsales@example.com\0Tcrm@partner.example\0\0');
    const after = (await ls()).find((x) => x.id === e.id)!;
    expect(after.state).toBe('restored');
    expect(after.restoredAt).not.toBeNull();
  });

  it('a todo/ message and a bounce keep their envelopes (all recipients; the null sender)', async () => {
    const t = entries.get(ids.todo)!;
    const bo = entries.get(ids.bounce)!;
    const r = await runCli('qguard', ['quarantine', 'restore', t.id, bo.id, '--json'], { env });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([
      { id: t.id, queueId: ids.todo, ok: true, error: null },
      { id: bo.id, queueId: ids.bounce, ok: true, error: null },
    ]);
    expect(fs.readFileSync(path.join(qqOut, 'mess.1')).equals(bytes.todo)).toBe(true);
    expect(fs.readFileSync(path.join(qqOut, 'env.1')).toString('latin1')).toBe('Fx@spam.example\0Tdave@example.net\0Ty@remote.example\0\0');
    expect(fs.readFileSync(path.join(qqOut, 'env.2')).toString('latin1')).toBe('F\0Tforged@victim.example\0\0');
  });

  it('refuses to restore twice (exit 100) unless --force', async () => {
    const e = entries.get(ids.partner)!;
    const n = qqFiles();
    const r = await runCli('qguard', ['quarantine', 'restore', e.id], { env });
    expect(r.code).toBe(100);
    expect(r.stderr).toMatch(new RegExp(`^qguard: fatal: restore ${e.id}: already restored .* \\(--force queues it again\\)\\n$`));
    expect(qqFiles()).toBe(n);
    expect((await runCli('qguard', ['quarantine', 'restore', e.id, '--force'], { env })).code).toBe(0);
    expect(qqFiles()).toBe(n + 1);
  });

  it("qmail-queue's exit codes: 11-40 permanent (exit 100), others temporary (111); the entry stays restorable", async () => {
    const e = entries.get(ids.spam)!;
    let r = await runCli('qguard', ['quarantine', 'restore', e.id], { env: { ...env, QQ_EXIT: '11' } });
    expect(r.code).toBe(100);
    expect(r.stderr).toBe(`qguard: fatal: restore ${e.id}: ${env.QGUARD_QMAIL_QUEUE} refused it: exit 11: address too long\n`);
    r = await runCli('qguard', ['quarantine', 'restore', e.id], { env: { ...env, QQ_EXIT: '53' } });
    expect(r.code).toBe(111);
    expect(r.stderr).toContain('exit 53: write error');
    expect((await ls()).find((x) => x.id === e.id)!.state).toBe('removed');
    r = await runCli('qguard', ['quarantine', 'restore', e.id], { env: { ...env, QGUARD_QMAIL_QUEUE: path.join(work, 'no-such-qmail-queue') } });
    expect(r.code).toBe(111);
    expect(r.stderr).toMatch(/program not found/);
    // Several at once: each failure named, one summary line.
    r = await runCli('qguard', ['quarantine', 'restore', e.id, '424242'], { env: { ...env, QQ_EXIT: '31' } });
    expect(r.code).toBe(100);
    expect(r.stderr.split('\n').filter(Boolean)).toEqual([
      `qguard: warning: restore ${e.id}: ${env.QGUARD_QMAIL_QUEUE} refused it: exit 31: mail server permanently refuses to send the message to any recipients`,
      'qguard: warning: restore 424242: no quarantine entry 424242',
      'qguard: fatal: 2 of 2 restores failed',
    ]);
  });

  it('refuses an entry quarantined on another mail server', async () => {
    const e = entries.get(ids.spam)!;
    const r = await runCli('qguard', ['quarantine', 'restore', e.id], { env: { ...env, QGUARD_HOST: 'other-mx' } });
    expect(r.code).toBe(100);
    expect(r.stderr).toBe(`qguard: fatal: restore ${e.id}: it was quarantined on test-host: restore it there\n`);
  });
});

describe('retention', () => {
  it('prune --older-than drops old entries (rows and directories); the daily run applies QGUARD_QUARANTINE_KEEP', async () => {
    const before = await ls();
    expect(before.length).toBe(4);
    let r = await runCli('qguard', ['quarantine', 'prune', '--older-than', '1d', '--json'], { env });
    expect(JSON.parse(r.stdout)).toEqual({ pruned: 0 });
    await new Promise((res) => setTimeout(res, 1100));
    // Another host's entries are never pruned from here.
    r = await runCli('qguard', ['quarantine', 'prune', '--older-than', '1s', '--json'], { env: { ...env, QGUARD_HOST: 'other-mx' } });
    expect(JSON.parse(r.stdout)).toEqual({ pruned: 0 });
    const e = before[0];
    r = await runCli('qguard', ['quarantine', 'prune', '--older-than', '1s', '--json'], { env });
    expect(JSON.parse(r.stdout)).toEqual({ pruned: 4 });
    expect(await ls()).toEqual([]);
    expect(fs.existsSync(e.path)).toBe(false);
    expect(fs.readdirSync(path.dirname(e.path))).toEqual([]);

    // The daily run: a new purge, then QGUARD_QUARANTINE_KEEP=1s on the next run.
    const id = b.add({ mess: networkMessage({ ip: '203.0.113.90' }), sender: 'again@spam.example' });
    expect((await runCli('scan-queue', ['--no-deny'], { env })).code).toBe(0);
    expect(JSON.parse((await runCli('purge-queue', ['--json'], { env })).stdout)).toMatchObject({ removed: 1, pruned: 0 });
    expect((await ls()).map((x) => x.queueId)).toEqual([id]);
    await new Promise((res) => setTimeout(res, 1100));
    expect(JSON.parse((await runCli('purge-queue', ['--json'], { env: { ...env, QGUARD_QUARANTINE_KEEP: '1s' } })).stdout)).toMatchObject({ removed: 0, pruned: 1 });
    expect(await ls()).toEqual([]);
  });
});

describe('on the embedded database', () => {
  it('purge, ls and restore work the same', async () => {
    const edb = await createTestDb({ kind: 'embedded' });
    try {
      const q = QueueBuilder.create({ dir: path.join(work, 'embedded-queue') });
      const id = q.add({ mess: networkMessage({ ip: '203.0.113.7' }), sender: 'a@spam.example', recipients: ['dave@example.net'] });
      q.add({ mess: networkMessage({ ip: '198.51.100.150' }), sender: 'orders@partner.example' });
      const out = path.join(work, 'embedded-qq');
      writeQmailQueueStandIn(path.join(work, 'embedded-qmail-queue'), out);
      const e = { ...edb.env, QGUARD_QUEUE: q.dir, QGUARD_QMAIL_QUEUE: path.join(work, 'embedded-qmail-queue'), QGUARD_CONTROL: path.join(work, 'none') };
      expect((await runCli('scan-queue', ['--no-deny'], { env: e })).code).toBe(0);
      expect((await runCli('qguard', ['ip', 'deny', '203.0.113.7'], { env: e })).code).toBe(0);
      const r = await runCli('purge-queue', ['--json'], { env: e });
      expect(r.stderr).toBe('');
      expect(JSON.parse(r.stdout)).toMatchObject({ selected: 1, removed: 1, quarantined: 1 });
      expect(fs.existsSync(q.path('mess', id))).toBe(false);
      const list = JSON.parse((await runCli('qguard', ['quarantine', 'ls', '--json'], { env: e })).stdout) as Entry[];
      expect(list.map((x) => [x.queueId, x.sourceIp, x.state])).toEqual([[id, '203.0.113.7', 'removed']]);
      expect((await runCli('qguard', ['quarantine', 'restore', list[0].id], { env: e })).code).toBe(0);
      expect(fs.readFileSync(path.join(out, 'env.0')).toString('latin1')).toBe('Fa@spam.example\0Tdave@example.net\0\0');
    } finally {
      await edb.drop();
    }
  });
});
