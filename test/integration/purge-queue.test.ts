// purge-queue on the real queues written by real qmail (test/fixtures/qmail-queue): with the
// spammers denied (inside /24s that also hold a trusted partner), the policy removes exactly
// the spam and our backscatter of it — ids checked against the ground truth — keeps everything
// else byte for byte, keeps a complete copy of each removed message in the quarantine, and
// leaves no part of a removed message behind. Then the flags and guards on generated queues.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURE_TIME, QueueBuilder, type Snapshot, bounceMessage, expectedFixture, localMessage, networkMessage, shiftMtimes, unpackFixture, NO_MAILBOX } from '../helpers/queue-builder.js';
import { createTestDb, type TestDb } from '../helpers/db.js';
import { runCli } from '../helpers/cli.js';
import { copyTree, diffTrees, filesById, snapshotTree, writeControlScripts } from '../helpers/purge-fixtures.js';
import { normaliseIp } from '../../lib/qmail/received.js';
import { renderQmailQueueEnvelope } from '../../lib/qmail/qmail-queue-envelope.js';

interface Expected {
  id: string;
  state: string;
  sourceIp: string | null;
  kind: string;
  envelopeSender: string | null;
  pendingRecipients: string[];
  files: string[];
}

let db: TestDb;
let work: string;

beforeAll(async () => {
  db = await createTestDb();
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-purge-'));
});
afterAll(async () => {
  await db?.drop();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

/** Rules: every spammer denied (two /24s, three /32s, one IPv6), a partner trusted inside a denied /24, intranet relay. */
const RULES: [string, string][] = [
  ['deny', '203.0.113.0/24'],
  ['deny', '198.51.100.0/24'],
  ['trust', '198.51.100.150'],
  ['deny', '192.0.2.45'],
  ['deny', '192.0.2.201'],
  ['deny', '192.0.2.150'],
  ['deny', '2001:db8::/64'],
  ['allow', '10.0.0.0/8'],
  ['allow', '172.16.0.0/12'],
];

function expectedRemoval(snapshot: Snapshot): { removed: Expected[]; kept: Expected[]; spammers: Set<string> } {
  const messages = expectedFixture(snapshot).messages as unknown as Expected[];
  const spammers = new Set(messages.filter((m) => m.kind === 'spam' && m.sourceIp).map((m) => normaliseIp(m.sourceIp!)!));
  const removed: Expected[] = [];
  const kept: Expected[] = [];
  for (const m of messages) {
    const ip = m.sourceIp ? normaliseIp(m.sourceIp) : null;
    const complete = m.state === 'preprocessed' || m.state === 'todo';
    const spam = m.kind === 'spam';
    const backscatter = (m.kind === 'bounce' || m.kind === 'double-bounce') && ip !== null && spammers.has(ip);
    (complete && (spam || backscatter) ? removed : kept).push(m);
  }
  return { removed, kept, spammers };
}

describe.each(['processed', 'todo'] as Snapshot[])('the real queue-%s', (snapshot) => {
  let queue: string;
  let saved: string;
  let state: string;
  let env: Record<string, string>;
  const exp = expectedRemoval(snapshot);

  beforeAll(async () => {
    queue = unpackFixture(snapshot, path.join(work, snapshot, 'queue'));
    shiftMtimes(queue, Date.now() - FIXTURE_TIME);
    saved = path.join(work, snapshot, 'saved');
    copyTree(queue, saved);
    // Each snapshot is its own mail server (host) with its own state directory.
    state = path.join(work, snapshot, 'state');
    fs.mkdirSync(state);
    const scripts = writeControlScripts(path.join(work, snapshot, 'bin'), queue, path.join(work, snapshot, 'none.pid'));
    env = {
      ...db.env,
      QGUARD_HOST: `mx-${snapshot}`,
      QGUARD_STATE_DIR: state,
      QGUARD_QUEUE: queue,
      QGUARD_QMAIL_STOP: scripts.stop,
      QGUARD_QMAIL_START: scripts.start,
      QGUARD_CONTROL: path.join(work, 'no-control'),
    };
    const scan = await runCli('scan-queue', ['--no-deny'], { env });
    expect(scan.stderr).toBe('');
    expect(scan.code).toBe(0);
    if (snapshot === 'processed') {
      for (const [action, net] of RULES) {
        const r = await runCli('qguard', ['ip', action, net, '--reason', 'test'], { env });
        expect(r.stderr).toBe('');
      }
    }
  });

  it('the ground truth has what this test needs: spam, backscatter, kept bounces and in-flight spam', () => {
    expect(exp.spammers.size).toBe(snapshot === 'todo' ? 14 : 11);
    expect(exp.removed.filter((m) => m.kind === 'bounce').length).toBeGreaterThan(5);
    expect(exp.kept.filter((m) => m.kind === 'bounce').length).toBeGreaterThan(0);
    expect(exp.kept.filter((m) => m.kind === 'ham').length).toBeGreaterThan(10);
    if (snapshot === 'todo') expect(exp.kept.filter((m) => m.state.startsWith('in-flight')).length).toBe(2);
  });

  it('--dry-run lists exactly the spam and backscatter, and changes nothing', async () => {
    const before = snapshotTree(queue);
    const r = await runCli('purge-queue', ['--dry-run'], { env });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines.map((l) => l.trim().split(/\s+/)[0]).sort()).toEqual(exp.removed.map((m) => m.id).sort());
    const one = exp.removed.find((m) => m.kind === 'spam' && m.sourceIp === '203.0.113.7' && m.envelopeSender)!;
    expect(lines.find((l) => l.trim().startsWith(`${one.id} `))).toContain(`203.0.113.7`);
    expect(lines.find((l) => l.trim().startsWith(`${one.id} `))).toContain(`<${one.envelopeSender}> from 203.0.113.7, denied by manual rule 203.0.113.0/24`);
    const j = JSON.parse((await runCli('purge-queue', ['--dry-run', '--json'], { env })).stdout);
    expect(j).toMatchObject({ selected: exp.removed.length, removed: 0, quarantined: 0, skipped: 0, stoppedQmail: false, dryRun: true });
    expect(j.messages.length).toBe(exp.removed.length);
    expect(diffTrees(before, snapshotTree(queue))).toEqual({ removed: [], added: [], changed: [] });
    expect(fs.existsSync(path.join(state, 'quarantine'))).toBe(false);
  });

  it('removes exactly those messages, every file of each, and nothing else', async () => {
    const before = snapshotTree(queue);
    const r = await runCli('purge-queue', ['--json'], { env });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(Object.keys(s).slice(0, 6)).toEqual(['selected', 'removed', 'quarantined', 'skipped', 'stoppedQmail', 'durationMs']);
    expect(s).toMatchObject({ selected: exp.removed.length, removed: exp.removed.length, quarantined: exp.removed.length, skipped: 0, stoppedQmail: false });
    expect(s.guarded).toEqual(snapshot === 'todo' ? { 'in-flight': 2 } : {});
    const after = snapshotTree(queue);
    const d = diffTrees(before, after);
    expect(d.added).toEqual([]);
    expect(d.changed).toEqual([]);
    // Exactly the ground truth's files of the removed messages are gone.
    expect(d.removed).toEqual(exp.removed.flatMap((m) => m.files).sort());
    // No orphans: every message left has all of its files.
    const left = filesById(after);
    expect([...left.keys()].sort()).toEqual(exp.kept.map((m) => m.id).sort());
    for (const m of exp.kept) expect(left.get(m.id), m.id).toEqual([...m.files].sort());
  });

  it('keeps each removed message in the quarantine: the same bytes, its envelope for qmail-queue, why', async () => {
    const r = await runCli('qguard', ['quarantine', 'ls', '--json'], { env });
    expect(r.code).toBe(0);
    const q = JSON.parse(r.stdout) as { id: string; queueId: string; sourceIp: string | null; sender: string; reason: string; policy: string; purgedAt: string; state: string; path: string }[];
    expect(q.map((e) => e.queueId).sort()).toEqual(exp.removed.map((m) => m.id).sort());
    const qdir = path.join(state, 'quarantine');
    expect(fs.statSync(qdir).mode & 0o777).toBe(0o700);
    const byQueueId = new Map(q.map((e) => [e.queueId, e]));
    for (const m of exp.removed) {
      const e = byQueueId.get(m.id)!;
      expect(e.state).toBe('removed');
      expect(e.path).toBe(path.join(qdir, e.id));
      expect(e.sourceIp).toBe(normaliseIp(m.sourceIp!));
      expect(e.sender).toBe(m.envelopeSender);
      expect(e.policy).toBe(m.kind === 'spam' ? 'denied' : 'backscatter');
      expect(e.reason).toMatch(/denied by manual rule/);
      const original = fs.readFileSync(path.join(saved, m.files.find((f) => f.startsWith('mess/'))!));
      expect(fs.readFileSync(path.join(e.path, 'mess')).equals(original), m.id).toBe(true);
      const envelope = renderQmailQueueEnvelope({ sender: m.envelopeSender!, recipients: m.pendingRecipients });
      expect(envelope.ok).toBe(true);
      if (envelope.ok) expect(fs.readFileSync(path.join(e.path, 'envelope')).equals(envelope.bytes), m.id).toBe(true);
      const meta = JSON.parse(fs.readFileSync(path.join(e.path, 'meta.json'), 'utf8'));
      expect(meta).toMatchObject({ queueId: m.id, sourceIp: e.sourceIp, policy: e.policy });
      expect([...meta.files].sort()).toEqual([...m.files].sort());
    }
    // Nothing else in the quarantine directory.
    expect(fs.readdirSync(qdir).sort()).toEqual(q.map((e) => e.id).sort());
  });

  it('the removed messages are no longer listed as queued; a second run finds nothing and says nothing', async () => {
    const ls = JSON.parse((await runCli('qguard', ['queue', 'ls', '--json'], { env })).stdout) as { id: string }[];
    expect(ls.map((m) => m.id).sort()).toEqual(exp.kept.map((m) => m.id).sort());
    const before = snapshotTree(queue);
    const r = await runCli('purge-queue', [], { env });
    expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(diffTrees(before, snapshotTree(queue))).toEqual({ removed: [], added: [], changed: [] });
  });

  it('the run is recorded with its summary', async () => {
    const c = await db.open();
    try {
      const r = await c.query<{ ok: boolean; summary: { removed: number } }>(
        "SELECT ok, summary FROM qguard.job_runs WHERE job = 'purge-queue' AND host = $1 ORDER BY id",
        [`mx-${snapshot}`],
      );
      expect(r.rows.map((x) => [x.ok, x.summary.removed])).toEqual([
        [true, exp.removed.length],
        [true, 0],
      ]);
    } finally {
      await c.close();
    }
  });
});

describe('flags and guards on a generated queue', () => {
  let b: QueueBuilder;
  let env: Record<string, string>;
  const DAY = 86400_000;
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    b = QueueBuilder.create({ dir: path.join(work, 'gen', 'queue') });
    const state = path.join(work, 'gen', 'state');
    fs.mkdirSync(state, { recursive: true });
    const scripts = writeControlScripts(path.join(work, 'gen', 'bin'), b.dir, path.join(work, 'gen', 'none.pid'));
    env = {
      ...db.env,
      QGUARD_HOST: 'mx-gen',
      QGUARD_STATE_DIR: state,
      QGUARD_QUEUE: b.dir,
      QGUARD_QMAIL_STOP: scripts.stop,
      QGUARD_QMAIL_START: scripts.start,
      QGUARD_CONTROL: path.join(work, 'no-control'),
    };
    const now = Date.now();
    const spam = (ip: string, sender: string, daysOld = 1, state: 'preprocessed' | 'todo' = 'preprocessed') =>
      b.add({ mess: networkMessage({ ip, date: new Date(now - daysOld * DAY) }), sender, recipients: ['dave@example.net'], arrival: new Date(now - daysOld * DAY), state });
    for (let i = 0; i < 6; i++) ids[`s${i}`] = spam('203.0.113.50', `promo${i}@winbig.test`, 1 + i);
    ids.todo = spam('203.0.113.50', 'late@winbig.test', 0, 'todo');
    ids.other = spam('198.18.0.9', 'offer@cheap.example', 2);
    ids.partner = spam('192.0.2.80', 'orders@partner.example', 3);
    ids.local = b.add({ mess: localMessage({ uid: 1000 }), sender: 'alice@example.net', recipients: ['x@remote.example'] });
    // A stuck bounce of partner mail and a double bounce of it, 10 days old.
    const original = networkMessage({ ip: '192.0.2.80' });
    ids.oldBounce = b.add({
      mess: bounceMessage({ original, originalSender: 'orders@partner.example', failed: [{ address: 'x@example.net', reason: NO_MAILBOX }] }),
      sender: '',
      recipients: ['orders@partner.example'],
      arrival: new Date(now - 10 * DAY),
    });
    ids.youngBounce = b.add({
      mess: bounceMessage({ original: networkMessage({ ip: '198.18.0.9' }), originalSender: 'a@b.example', failed: [{ address: 'y@example.net', reason: NO_MAILBOX }] }),
      sender: '',
      recipients: ['a@b.example'],
      arrival: new Date(now - 1 * DAY),
    });
    expect((await runCli('scan-queue', ['--no-deny'], { env })).code).toBe(0);
    expect((await runCli('qguard', ['ip', 'deny', '203.0.113.0/24'], { env })).code).toBe(0);
  });

  const inQueue = (id: string) => fs.existsSync(b.path('mess', id));

  it('bad flags are usage errors (exit 2) and change nothing', async () => {
    for (const args of [
      ['--policy', 'everything'],
      ['--policy', 'stale'],
      ['--ip', '203.0.113.1/16'],
      ['--id', '0123'],
      ['--max', '0'],
      ['--older-than', '3x'],
    ]) {
      const r = await runCli('purge-queue', args, { env });
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(/^purge-queue: fatal: --(policy|ip|id|max|older-than)/);
    }
    expect(inQueue(ids.s0)).toBe(true);
  });

  it('--max refuses a bigger selection (exit 100) and changes nothing', async () => {
    const before = snapshotTree(b.dir);
    const r = await runCli('purge-queue', ['--max', '5'], { env });
    expect(r.code).toBe(100);
    expect(r.stderr).toMatch(/^purge-queue: fatal: 7 messages selected, more than --max 5: nothing removed/);
    expect(diffTrees(before, snapshotTree(b.dir))).toEqual({ removed: [], added: [], changed: [] });
  });

  it('an inode reused since the scan (same id, new line 1) is skipped, the new message untouched', async () => {
    // The message the database knows as ids.s5 is delivered; a new one (from the partner) gets its id.
    b.remove(ids.s5);
    b.add({ id: ids.s5, mess: networkMessage({ ip: '192.0.2.80', pid: 9999, date: new Date(Date.now() - 3600_000) }), sender: 'new@partner.example' });
    const newBytes = fs.readFileSync(b.path('mess', ids.s5));
    const r = await runCli('purge-queue', ['--max', '5', '--force', '--json'], { env });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout);
    // Oldest first: s5 (6 days) is the oldest and is skipped; s4..s1 go; 2 left for the next run.
    expect(s).toMatchObject({ selected: 7, removed: 4, skipped: 1, skippedWhy: { replaced: 1 }, deferred: 2 });
    expect(fs.readFileSync(b.path('mess', ids.s5)).equals(newBytes)).toBe(true);
    expect([ids.s1, ids.s2, ids.s3, ids.s4].map(inQueue)).toEqual([false, false, false, false]);
    expect([ids.s0, ids.todo].map(inQueue)).toEqual([true, true]);
  });

  it('the default policies leave undenied, local and partner mail; --older-than adds stale null-sender mail, guards still apply', async () => {
    const r = await runCli('purge-queue', ['--json', '--older-than', '5d'], { env });
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout);
    // s0 and the todo one (denied); the old bounce of partner mail: stale, its source is not denied → removed.
    expect(s).toMatchObject({ removed: 3, policies: ['denied', 'backscatter', 'stale'] });
    expect([ids.s0, ids.todo, ids.oldBounce].map(inQueue)).toEqual([false, false, false]);
    expect([ids.other, ids.partner, ids.local, ids.youngBounce].map(inQueue)).toEqual([true, true, true, true]);
    // The todo message: todo/ and intd/ are gone with it.
    expect(fs.existsSync(b.path('todo', ids.todo)) || fs.existsSync(b.path('intd', ids.todo))).toBe(false);
  });

  it('admin selections: --sender, --ip (guards apply), --id (they do not)', async () => {
    let r = await runCli('purge-queue', ['--sender', '*@cheap.example', '--json'], { env });
    expect(JSON.parse(r.stdout)).toMatchObject({ selected: 1, removed: 1, policies: [] });
    expect(inQueue(ids.other)).toBe(false);
    expect((await runCli('qguard', ['ip', 'trust', '192.0.2.80'], { env })).code).toBe(0);
    r = await runCli('purge-queue', ['--ip', '192.0.2.80', '--json'], { env });
    expect(JSON.parse(r.stdout)).toMatchObject({ selected: 0, removed: 0, guarded: { trust: 1 } });
    expect(inQueue(ids.partner)).toBe(true);
    r = await runCli('purge-queue', ['--id', ids.partner, ids.local, '999999999', '--json'], { env });
    expect(r.stderr).toBe('purge-queue: warning: --id 999999999: no such message in the queue\n');
    expect(JSON.parse(r.stdout)).toMatchObject({ selected: 2, removed: 2 });
    expect([ids.partner, ids.local].map(inQueue)).toEqual([false, false]);
    const q = JSON.parse((await runCli('qguard', ['quarantine', 'ls', '--json'], { env })).stdout) as { queueId: string; policy: string; reason: string }[];
    expect(q.find((e) => e.queueId === ids.local)).toMatchObject({ policy: 'id', reason: 'selected by --id' });
  });
});
