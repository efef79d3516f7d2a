// The real queues written by real qmail (test/fixtures/qmail-queue) must come out exactly as
// their ground truth says: first through the walker and parsers, then end to end through
// scan-queue, the database and `qguard queue ls/top --json`.

import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listIds, openQueue, readListedMessage, readMessage } from '../../lib/io/queue-walk.js';
import { QUEUE_DIRS, type QueueDirName, kindOf } from '../../lib/qmail/queued-message.js';
import { parseBounceFile } from '../../lib/qmail/queue-files.js';
import { normaliseIp } from '../../lib/qmail/received.js';
import { FIXTURE_TIME, type Snapshot, expectedFixture, shiftMtimes, unpackFixture } from '../helpers/queue-builder.js';
import { createTestDb, type TestDb } from '../helpers/db.js';
import { runCli } from '../helpers/cli.js';

interface Expected {
  id: string;
  split: number;
  state: string;
  sourceIp: string | null;
  envelopeSender: string | null;
  recipients: string[];
  pendingRecipients: string[];
  recipientStatus: { address: string; queue: string; done: boolean }[];
  kind: string;
  files: string[];
  bytes: number;
  qmailQueuePid: number;
  receivedQueueLine: string;
  receivedSmtpdLine?: string;
  remoteInfo?: string;
  forwardOf?: string;
  bounceOf?: string;
  bounceChain?: string[];
  pendingBounceReport?: string;
  envelopeComplete?: boolean;
}

/** What a parser can know of the ground truth's kinds: spam and ham both came from the network. */
const KIND: Record<string, string> = { spam: 'network', ham: 'network', local: 'local', bounce: 'bounce', 'double-bounce': 'double-bounce' };

const snapshots: Snapshot[] = ['processed', 'todo'];
const dirs: Partial<Record<Snapshot, string>> = {};

beforeAll(() => {
  for (const s of snapshots) dirs[s] = unpackFixture(s);
});
afterAll(() => {
  for (const s of snapshots) if (dirs[s]) fs.rmSync(dirs[s]!, { recursive: true, force: true });
});

describe.each(snapshots)('the walker on queue-%s', (snapshot) => {
  const exp = expectedFixture(snapshot);
  const messages = exp.messages as unknown as Expected[];

  it('detects conf-split 23 and an unsplit todo/intd', () => {
    const layout = openQueue(dirs[snapshot]!);
    expect(layout.split).toBe(23);
    expect(layout.splitDirs).toMatchObject({ mess: true, info: true, local: true, remote: true, todo: false, intd: false, bounce: false });
  });

  it('finds exactly the messages of the ground truth', () => {
    const layout = openQueue(dirs[snapshot]!);
    const ids: string[] = [];
    for (let s = 0; s < 23; s++) ids.push(...listIds(path.join(layout.dir, 'mess', String(s))).ids);
    expect(ids.sort()).toEqual(messages.map((m) => m.id).sort());
  });

  it('reproduces every message record exactly', () => {
    const layout = openQueue(dirs[snapshot]!);
    for (const m of messages) {
      const r = readMessage(layout, m.id);
      expect(r.status, m.id).toBe('ok');
      if (r.status !== 'ok') continue;
      const g = r.message;
      const o = g.origin;
      const got = {
        id: g.id,
        split: g.split,
        state: g.state,
        sourceIp: o.sourceIpRecorded,
        envelopeSender: g.sender,
        recipients: g.recipients.map((x) => x.address),
        pendingRecipients: g.recipients.filter((x) => !x.done).map((x) => x.address),
        recipientStatus: g.recipients.map((x) => ({ address: x.address, queue: x.queue, done: x.done })),
        kind: kindOf(g),
        files: g.files,
        bytes: g.size,
        qmailQueuePid: o.queueLine?.pid,
        receivedQueueLine: g.line1,
        receivedSmtpdLine: o.smtp?.text,
        remoteInfo: o.smtp?.remoteInfo ?? undefined,
        forwarded: o.forwarded,
        bounceLevels: o.chain.filter((c) => c !== 'forward').length,
        bounceReport: g.bounceReport,
      };
      const want = {
        id: m.id,
        split: m.split,
        state: m.state,
        sourceIp: m.sourceIp,
        envelopeSender: m.envelopeSender,
        recipients: m.recipients,
        pendingRecipients: m.pendingRecipients,
        recipientStatus: m.recipientStatus.map((x) => ({ address: x.address, queue: x.queue, done: x.done })),
        kind: KIND[m.kind],
        files: m.files,
        bytes: m.bytes,
        qmailQueuePid: m.qmailQueuePid,
        receivedQueueLine: m.receivedQueueLine,
        receivedSmtpdLine: m.receivedSmtpdLine,
        remoteInfo: m.remoteInfo,
        forwarded: m.forwardOf !== undefined,
        bounceLevels: m.bounceChain ? m.bounceChain.length : m.bounceOf !== undefined ? 1 : 0,
        bounceReport: m.pendingBounceReport !== undefined ? parseBounceFile(m.pendingBounceReport).entries : null,
      };
      expect(got, `message ${m.id} (${m.kind}, ${m.state})`).toEqual(want);
      if (m.state === 'in-flight-intd') expect(g.envelopeComplete).toBe(false);
      if (!m.state.startsWith('in-flight')) expect(g.problems, m.id).toEqual([]);
    }
  });
});

describe.each(snapshots)('the cold scan\'s reader on queue-%s', (snapshot) => {
  it('reads every message exactly as readMessage does, from the listing alone', () => {
    const layout = openQueue(dirs[snapshot]!);
    // The listing as scan-queue makes it: each id with its directories, mess first.
    const listed = new Map<string, QueueDirName[]>();
    for (const d of QUEUE_DIRS) {
      const where = layout.splitDirs[d] ? Array.from({ length: layout.split }, (_, s) => path.join(layout.dir, d, String(s))) : [path.join(layout.dir, d)];
      for (const p of where) for (const id of listIds(p).ids) listed.set(id, [...(listed.get(id) ?? []), d]);
    }
    const ids = [...listed].filter(([, ds]) => ds[0] === 'mess').map(([id]) => id);
    expect(ids.length).toBe((expectedFixture(snapshot).messages as unknown[]).length);
    for (const id of ids) {
      for (const keep of [true, false]) expect(readListedMessage(layout, id, listed.get(id)!, { keep }), id).toEqual(readMessage(layout, id));
    }
  });
});

describe('end to end: scan-queue, the database and qguard queue', () => {
  let db: TestDb;
  const env = (snapshot: Snapshot, extra: Record<string, string> = {}) => ({ ...db.env, QGUARD_QUEUE: dirs[snapshot]!, ...extra });

  beforeAll(async () => {
    db = await createTestDb();
    // Bring the fixtures' arrival times (28 Nov 2026) to now, so the 3d window holds them on any date.
    for (const s of snapshots) shiftMtimes(dirs[s]!, Date.now() - FIXTURE_TIME);
  });
  afterAll(async () => {
    await db?.drop();
  });

  /** The ground truth's per-IP counts (normalised, in-flight excluded). */
  const counts = (snapshot: Snapshot) => expectedFixture(snapshot).perNormalizedIpv4OrIpv6 as Record<string, number>;
  const isPrivate = (ip: string) => /^(10\.|172\.(1[6-9]|2\d|3[01])\.|192\.168\.)/.test(ip);

  it('queue-processed: records every message and denies exactly the IPs with 20 or more', async () => {
    const r = await runCli('scan-queue', ['--json'], { env: env('processed') });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout);
    const want = Object.entries(counts('processed'))
      .filter(([ip, n]) => n >= 20 && !isPrivate(ip))
      .map(([ip]) => ip);
    expect(want).toEqual(['203.0.113.7', '203.0.113.25', '198.51.100.14', '198.51.100.200']);
    expect(s).toMatchObject({ scanned: 222, new: 222, unchanged: 0, gone: 0, skipped: 0, errors: 0 });
    expect([...s.denied].sort()).toEqual([...want].sort());
    expect(Object.keys(s).slice(0, 8)).toEqual(['scanned', 'new', 'unchanged', 'gone', 'skipped', 'errors', 'denied', 'durationMs']);
    // S5 (203.0.113.99) has 19: not yet.
    expect(counts('processed')['203.0.113.99']).toBe(19);
    const ls = await runCli('qguard', ['ip', 'ls', '--source', 'scan', '--json'], { env: env('processed') });
    const rules = JSON.parse(ls.stdout) as { cidr: string; reason: string; expiresAt: string | null; action: string }[];
    expect(rules.map((x) => x.cidr).sort()).toEqual(want.map((ip) => `${ip}/32`).sort());
    const s3 = rules.find((x) => x.cidr === '198.51.100.14/32')!;
    expect(s3).toMatchObject({ action: 'deny', reason: '21 queued messages in 3d', expiresAt: null });
  });

  it('queue-todo: the same host now sees 278 messages; S5 reaches 20 and is denied', async () => {
    const r = await runCli('scan-queue', ['--json'], { env: env('todo') });
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s).toMatchObject({ scanned: 278, errors: 0 });
    expect(s.denied).toEqual(['203.0.113.99']);
    expect(s.alreadyDenied).toBe(4);
  });

  it('queue ls --json reproduces ids, normalised source IPs, senders, recipients, pending and kinds', async () => {
    const r = await runCli('qguard', ['queue', 'ls', '--json'], { env: env('todo') });
    expect(r.code).toBe(0);
    const got = JSON.parse(r.stdout) as { id: string; sourceIp: string | null; sender: string | null; recipients: string[]; pending: string[]; kind: string; state: string; forwarded: boolean }[];
    const exp = expectedFixture('todo').messages as unknown as Expected[];
    expect(got.map((m) => m.id).sort()).toEqual(exp.map((m) => m.id).sort());
    const byId = new Map(got.map((m) => [m.id, m]));
    for (const m of exp) {
      const g = byId.get(m.id)!;
      expect(
        { sourceIp: g.sourceIp, sender: g.sender, recipients: g.recipients, pending: g.pending, kind: g.kind, state: g.state, forwarded: g.forwarded },
        m.id,
      ).toEqual({
        sourceIp: m.sourceIp === null ? null : normaliseIp(m.sourceIp),
        sender: m.envelopeSender,
        recipients: m.recipients,
        pending: m.pendingRecipients,
        kind: KIND[m.kind],
        state: m.state,
        forwarded: m.forwardOf !== undefined,
      });
    }
    const mapped = got.find((m) => m.id === exp.find((e) => e.sourceIp === '::ffff:198.51.100.77')!.id)!;
    expect(mapped.sourceIp).toBe('198.51.100.77');
  });

  it('queue top --json counts per IP exactly as the ground truth (in-flight excluded)', async () => {
    const r = await runCli('qguard', ['queue', 'top', '--limit', '100', '--json'], { env: env('todo') });
    expect(r.code).toBe(0);
    const top = JSON.parse(r.stdout) as { ip: string; count: number; decision: string; sample: string | null }[];
    expect(Object.fromEntries(top.map((t) => [t.ip, t.count]))).toEqual(counts('todo'));
    expect(top[0]).toMatchObject({ ip: '203.0.113.7', count: 113, decision: 'deny' });
    expect(top.find((t) => t.ip === '10.0.0.15')).toMatchObject({ decision: 'default' });
    expect(top.every((t) => t.sample === null || typeof t.sample === 'string')).toBe(true);
    // Sorted largest first.
    expect(top.map((t) => t.count)).toEqual([...top.map((t) => t.count)].sort((a, b) => b - a));
  });

  it('a lower threshold reaches the intranet relays, which stay exempt (private ranges)', async () => {
    const r = await runCli('scan-queue', ['--json', '--threshold', '4', '--dry-run'], { env: env('todo') });
    const s = JSON.parse(r.stdout);
    expect(s.notDenied.map((n: { ip: string }) => n.ip).sort()).toEqual(['10.0.0.15', '172.16.5.20']);
    expect(s.notDenied[0].why).toMatch(/QGUARD_SCAN_EXEMPT/);
    expect([...s.denied].sort()).toEqual(['192.0.2.45', '198.51.100.3', '198.51.100.66', '198.51.100.77']);
  });
});

// Keep the list of directories honest: these are all the directories a message can use.
it('QUEUE_DIRS names every per-message directory of qmail', () => {
  expect([...QUEUE_DIRS].sort()).toEqual(['bounce', 'info', 'intd', 'local', 'mess', 'remote', 'todo']);
});
