// `qguard queue ls|top|show|stats`: the admin's review, against a queue built in qmail's
// layout and recorded by a real scan-queue run. Hostile message text must reach the terminal
// neutralised.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  NO_MAILBOX,
  QueueBuilder,
  bounceMessage,
  forwardedMessage,
  localMessage,
  networkMessage,
  plainMessage,
} from '../helpers/queue-builder.js';
import { createTestDb, type TestDb } from '../helpers/db.js';
import { runCli } from '../helpers/cli.js';

let db: TestDb;
let q: QueueBuilder;
const ids: Record<string, string> = {};
const ESC = '\x1b';

const env = (extra: Record<string, string> = {}) => ({ ...db.env, QGUARD_QUEUE: q.dir, QGUARD_HOST: 'review', ...extra });
const qg = (...args: string[]) => runCli('qguard', args, { env: env() });
const json = async (...args: string[]) => {
  const r = await qg(...args, '--json');
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout);
};

beforeAll(async () => {
  db = await createTestDb();
  q = QueueBuilder.create();
  const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
  for (let i = 0; i < 6; i++) {
    q.add({
      mess: networkMessage({ ip: '203.0.113.80', helo: 'spam.example', pid: 100 + i, content: plainMessage({ subject: `cheap ${i}` }) }),
      recipients: ['dave@example.net'],
      arrival: twoHoursAgo,
    });
  }
  ids.hostile = q.add({
    mess: networkMessage({
      ip: '203.0.113.81',
      content: plainMessage({ subject: `pwn ${ESC}]2;owned${ESC}\\ ${ESC}[31mred`, body: `line one\n${ESC}[2J${ESC}[1;1Hcleared\x07\n` }),
    }),
    sender: `x${ESC}[5m@evil.example`,
    recipients: ['dave@example.net'],
  });
  ids.bounce = q.add({
    mess: bounceMessage({ original: networkMessage({ ip: '203.0.113.80', pid: 200 }), originalSender: 'f@forged.example', failed: [{ address: 'nobody@example.net', reason: NO_MAILBOX }] }),
    sender: '',
    recipients: ['f@forged.example'],
  });
  ids.forward = q.add({
    mess: forwardedMessage({ original: networkMessage({ ip: '::ffff:198.51.100.82', pid: 201 }), deliveredTo: 'carol@example.net' }),
    sender: 'g@forged.example',
    recipients: ['carol@home-isp.example'],
  });
  ids.local = q.add({ mess: localMessage({ uid: 0 }), sender: 'root@mx.example.net', recipients: [{ address: 'ops@remote.example' }, { address: 'done@remote.example', done: true }] });
  ids.todo = q.add({ mess: networkMessage({ ip: '192.0.2.83' }), state: 'todo', sender: 'h@x.example', recipients: ['alice@example.net', 'bob@example.net'] });
  const r = await runCli('scan-queue', ['--no-deny'], { env: env() });
  expect(r.code).toBe(0);
  await runCli('qguard', ['ip', 'allow', '192.0.2.83'], { env: env() });
});
afterAll(async () => {
  q?.destroy();
  await db?.drop();
});

describe('queue ls', () => {
  it('lists every message with the INTERFACE.md fields', async () => {
    const rows = await json('queue', 'ls');
    expect(rows.length).toBe(11);
    const local = rows.find((m: { id: string }) => m.id === ids.local);
    expect(local).toMatchObject({
      id: ids.local,
      sourceIp: null,
      sender: 'root@mx.example.net',
      recipients: ['ops@remote.example', 'done@remote.example'],
      pending: ['ops@remote.example'],
      kind: 'local',
    });
    const fwd = rows.find((m: { id: string }) => m.id === ids.forward);
    expect(fwd).toMatchObject({ sourceIp: '198.51.100.82', sourceRecorded: '::ffff:198.51.100.82', kind: 'network', forwarded: true });
    expect(rows.find((m: { id: string }) => m.id === ids.todo)).toMatchObject({ state: 'todo', pending: ['alice@example.net', 'bob@example.net'] });
  });

  it('filters by address, network and kind', async () => {
    expect((await json('queue', 'ls', '--ip', '203.0.113.80')).length).toBe(7);
    expect((await json('queue', 'ls', '--ip', '203.0.113.80/31')).length).toBe(8);
    expect((await json('queue', 'ls', '--ip', '::ffff:198.51.100.82')).map((m: { id: string }) => m.id)).toEqual([ids.forward]);
    expect((await json('queue', 'ls', '--kind', 'bounce')).map((m: { id: string }) => m.id)).toEqual([ids.bounce]);
    expect((await json('queue', 'ls', '--kind', 'forward')).map((m: { id: string }) => m.id)).toEqual([ids.forward]);
    expect((await json('queue', 'ls', '--limit', '2')).length).toBe(2);
    expect(await json('queue', 'ls', '--all-hosts', '--ip', '10.9.9.9')).toEqual([]);
  });

  it('refuses bad arguments with exit 2, naming them', async () => {
    const a = await qg('queue', 'ls', '--kind', 'spam');
    expect(a.code).toBe(2);
    expect(a.stderr).toMatch(/^qguard: fatal: --kind: must be one of network, local, bounce/);
    const b = await qg('queue', 'ls', '--ip', '1.2.3');
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(/--ip: not an IPv4 address/);
  });

  it('prints text with control characters neutralised', async () => {
    const r = await qg('queue', 'ls');
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain(ESC);
    expect(r.stdout).toContain('\\x1b[31mred');
    expect(r.stdout.trim().split('\n').length).toBe(11);
  });
});

describe('queue top', () => {
  it('counts per IP (bounces included), largest first, with decision and a sample subject', async () => {
    const top = await json('queue', 'top');
    expect(top[0]).toMatchObject({ ip: '203.0.113.80', count: 7, decision: 'default', overThreshold: false, byKind: { network: 6, bounce: 1 } });
    // The newest is the bounce: its sample is the quoted original's subject, not "failure notice".
    expect(top[0].sample).toBe('hello');
    expect(top.find((t: { ip: string }) => t.ip === '192.0.2.83')).toMatchObject({ count: 1, decision: 'relay' });
    expect(top.find((t: { ip: string }) => t.ip === '198.51.100.82')).toMatchObject({ count: 1 });
  });

  it('--window limits by arrival', async () => {
    const top = await json('queue', 'top', '--window', '1h');
    expect(top.find((t: { ip: string }) => t.ip === '203.0.113.80')).toMatchObject({ count: 1 });
    const bad = await qg('queue', 'top', '--window', 'soon');
    expect(bad.code).toBe(2);
  });

  it('the text screen neutralises the sample subject', async () => {
    const r = await qg('queue', 'top');
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain(ESC);
    expect(r.stdout).toMatch(/^queued messages per source IP, last 3d/);
  });
});

describe('queue show', () => {
  it('shows envelope, header and body with every escape sequence neutralised', async () => {
    const r = await qg('queue', 'show', ids.hostile);
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain(ESC);
    expect(r.stdout).not.toContain('\x07');
    expect(r.stdout).toContain('\\x1b]2;owned\\x1b\\\\');
    expect(r.stdout).toContain('\\x1b[2J\\x1b[1;1Hcleared\\x07');
    expect(r.stdout).toContain('sender: <x\\x1b[5m@evil.example>');
    expect(r.stdout).toMatch(/source: 203\.0\.113\.81 {3}host: unknown/);
    expect(r.stdout).toContain('  to: <dave@example.net> local pending');
    expect(r.stdout).toContain('Received: (qmail 4242 invoked from network)');
  });

  it('--json carries the raw text (JSON escapes it)', async () => {
    const m = await json('queue', 'show', ids.bounce);
    expect(m).toMatchObject({ id: ids.bounce, kind: 'bounce', sourceIp: '203.0.113.80', sender: '' });
    expect(m.header).toMatch(/^Received: \(qmail 4245 invoked for bounce\)/);
    expect(m.body).toContain('--- Below this line is a copy of the message.');
  });

  it('an id that is not in the queue: exit 100; not an id at all: exit 2', async () => {
    const a = await qg('queue', 'show', '999999999');
    expect(a.code).toBe(100);
    expect(a.stderr).toMatch(/^qguard: fatal: no message 999999999 in /);
    const b = await qg('queue', 'show', '../../etc/passwd');
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(/not a queue id/);
  });
});

describe('queue stats', () => {
  it('counts files per directory like qmail-qstat, and recorded messages by kind and state', async () => {
    const s = await json('queue', 'stats');
    expect(s).toMatchObject({
      host: 'review',
      messages: 11,
      unprocessed: 1,
      files: { mess: 11, todo: 1, intd: 1, info: 10, local: 7, remote: 3, bounce: 0 },
      recorded: 11,
      byKind: { network: 9, bounce: 1, local: 1 },
      byState: { preprocessed: 10, todo: 1 },
      sources: 4,
      noSource: 1,
    });
    const r = await qg('queue', 'stats');
    expect(r.stdout).toMatch(/^messages in queue: 11\nmessages in queue but not yet preprocessed: 1\n/);
  });
});
