// scan-queue on queues built in qmail's layout: the adversarial queue of the issue (truncated
// and junk files, forged deeper Received lines, line 2 missing, huge header lines, a 2 MB
// message, files vanishing mid-scan), incremental rescans (unchanged files are not read
// again, inode reuse, gone messages), other layouts (conf-split 3, big-todo).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { keepCopies } from '../../lib/ops/message-copies.js';
import type { RunContext } from '../../lib/context.js';
import { listIds, openQueue, readListedMessage, readMessage, readMessageWith, statMessage } from '../../lib/io/queue-walk.js';
import { QUEUE_DIRS, type QueueDirName, messageSignature, signatureReusing } from '../../lib/qmail/queued-message.js';
import {
  NO_MAILBOX,
  QueueBuilder,
  bounceMessage,
  fixtureTemplates,
  fromTemplate,
  localMessage,
  networkMessage,
  plainMessage,
} from '../helpers/queue-builder.js';
import { createTestDb, type TestDb } from '../helpers/db.js';
import { runCli } from '../helpers/cli.js';
import { generateQueue } from '../../bench/gen-queue.js';

let db: TestDb;
beforeAll(async () => {
  db = await createTestDb();
});
afterAll(async () => {
  await db?.drop();
});

interface Summary {
  scanned: number;
  new: number;
  unchanged: number;
  updated: number;
  gone: number;
  skipped: number;
  errors: number;
  denied: string[];
  groupsRead: number;
}

async function scan(q: QueueBuilder, args: string[] = [], extra: Record<string, string> = {}): Promise<{ s: Summary; stderr: string }> {
  const r = await runCli('scan-queue', ['--json', ...args], { env: { ...db.env, QGUARD_QUEUE: q.dir, ...extra } });
  if (r.code !== 0) throw new Error(`scan-queue exit ${r.code}: ${r.stderr}`);
  return { s: JSON.parse(r.stdout) as Summary, stderr: r.stderr };
}

async function ls(q: QueueBuilder, args: string[] = [], extra: Record<string, string> = {}) {
  const r = await runCli('qguard', ['queue', 'ls', '--json', ...args], { env: { ...db.env, QGUARD_QUEUE: q.dir, ...extra } });
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as { id: string; sourceIp: string | null; kind: string; state: string; problems: string[]; pending: string[]; goneAt: string | null; subject: string | null; size: number }[];
}

describe('the adversarial queue', () => {
  const host = { QGUARD_HOST: 'adversarial' };
  let q: QueueBuilder;
  const ids: Record<string, string> = {};

  beforeAll(() => {
    q = QueueBuilder.create();
    // 25 spams from 203.0.113.50, each with a forged qmail-style Received line for 6.6.6.6 below ours.
    const forged =
      'Received: from unknown (HELO mx.example.net) (6.6.6.6)\n  by mx.example.net with SMTP; 27 Nov 2026 00:00:00 -0000\n' +
      'Received: from [6.6.6.6] (helo=trusted.example)\n\tby relay.forged.example with esmtpa (Exim 4.96)\n';
    for (let i = 0; i < 25; i++) q.add({ mess: networkMessage({ ip: '203.0.113.50', pid: 100 + i, content: forged + plainMessage({ subject: `forged ${i}` }) }) });
    // Also 25 messages whose line 2 is missing but a deeper line names 6.6.6.6.
    for (let i = 0; i < 25; i++) {
      q.add({
        mess: `Received: (qmail ${200 + i} invoked from network); 28 Nov 2026 00:22:16 -0000\nX-Spam: yes\nReceived: from unknown (6.6.6.6)\n  by mx.example.net with SMTP; 28 Nov 2026 00:22:16 -0000\n\nbody\n`,
      });
    }
    ids.truncated = q.add({ mess: 'Received: (qmail 300 invo', state: 'todo' });
    ids.junk = q.add({ mess: Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0xff, 0xfe]) });
    ids.empty = q.add({ mess: '', state: 'todo' });
    ids.longHeaders = q.add({
      mess: networkMessage({ ip: '198.51.100.201', content: `X-Long-1: ${'a'.repeat(100_000)}\nX-Long-2: ${'b'.repeat(100_000)}\nSubject: after the long lines\n\nbody\n` }),
    });
    ids.big = q.add({ mess: networkMessage({ ip: '198.51.100.202', content: plainMessage({ subject: 'big', body: `${'x'.repeat(76)}\n`.repeat(27_000) }) }) });
    ids.inflightEmpty = q.add({ mess: '', state: 'in-flight-mess-only' });
    ids.inflight = q.add({ mess: networkMessage({ ip: '198.51.100.203' }).slice(0, 200), state: 'in-flight-mess-only' });
    ids.bounceNoMarker = q.add({
      mess: 'Received: (qmail 400 invoked for bounce); 28 Nov 2026 00:22:16 -0000\nSubject: failure notice\n\nHi. This is the qmail-send program.\n',
      sender: '#@[]',
    });
    // Odd names and orphans that are not messages.
    fs.writeFileSync(path.join(q.dir, 'mess', '3', '.nfs0001'), 'x');
    fs.writeFileSync(path.join(q.dir, 'info', '5', '1499999'), 'Fx\0');
  });
  afterAll(() => q.destroy());

  it('never fails, counts the odd ones, and never trusts the forged lines', async () => {
    const { s, stderr } = await scan(q, [], host);
    expect(stderr).toBe('');
    // 50 + truncated + junk + empty-but-committed + long headers + big + in-flight + bounce without
    // marker; the empty in-flight one waits for qmail-queue to write its first line.
    expect(s.scanned).toBe(57);
    expect(s.skipped).toBe(1);
    // line 2 missing (25), truncated, junk, empty, bounce without its marker
    expect(s.errors).toBe(29);
    expect(s.denied).toEqual(['203.0.113.50']);
    const all = await ls(q, [], host);
    expect(all.filter((m) => m.sourceIp === '6.6.6.6')).toEqual([]);
    const byId = new Map(all.map((m) => [m.id, m]));
    expect(byId.get(ids.truncated)).toMatchObject({ kind: 'unknown', sourceIp: null, state: 'todo' });
    expect(byId.get(ids.junk)).toMatchObject({ kind: 'unknown', sourceIp: null });
    expect(byId.get(ids.junk)!.problems.length).toBeGreaterThan(0);
    expect(byId.get(ids.longHeaders)).toMatchObject({ sourceIp: '198.51.100.201', subject: null, problems: [] });
    expect(byId.get(ids.big)).toMatchObject({ sourceIp: '198.51.100.202', subject: 'big', problems: [] });
    expect(byId.get(ids.big)!.size).toBeGreaterThan(2_000_000);
    expect(byId.get(ids.inflight)).toMatchObject({ sourceIp: '198.51.100.203', state: 'in-flight-mess-only' });
    expect(byId.get(ids.bounceNoMarker)).toMatchObject({ kind: 'double-bounce', sourceIp: null });
    expect(byId.get(ids.empty)).toMatchObject({ kind: 'unknown', state: 'todo' });
    expect(byId.has(ids.inflightEmpty)).toBe(false);
    expect(byId.has('1499999')).toBe(false);
  });

  it('explains the odd ones under --verbose, still exit 0', async () => {
    const r = await runCli('scan-queue', ['--verbose', '--no-deny', '--dry-run'], { env: { ...db.env, QGUARD_QUEUE: q.dir, QGUARD_HOST: 'adversarial-v' } });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/line 2 is not qmail-smtpd's Received line/);
    expect(r.stderr).toMatch(/not qmail-queue's Received line/);
    expect(r.stderr).toMatch(/\.nfs0001|not queue ids/);
    expect(r.stderr).toMatch(/files but no mess/);
  });

  it("the cold scan's reader (each file opened once, no stat first) reads every message as readMessage does", () => {
    const layout = openQueue(q.dir);
    const listed = new Map<string, QueueDirName[]>();
    for (const d of QUEUE_DIRS) {
      const where = layout.splitDirs[d] ? Array.from({ length: layout.split }, (_, s) => path.join(layout.dir, d, String(s))) : [path.join(layout.dir, d)];
      for (const p of where) for (const id of listIds(p).ids) listed.set(id, [...(listed.get(id) ?? []), d]);
    }
    let n = 0;
    for (const [id, ds] of listed) {
      if (ds[0] !== 'mess') continue;
      n++;
      for (const keep of [true, false]) expect(readListedMessage(layout, id, ds, { keep }), id).toEqual(readMessage(layout, id));
    }
    expect(n).toBe(58);
    // Listed but gone by the time it is read: what readMessage says then, never an error.
    const gone = q.add({ mess: networkMessage({ ip: '192.0.2.99' }) });
    const dirsOfGone: QueueDirName[] = ['mess', 'info', 'local'];
    q.remove(gone);
    expect(readListedMessage(layout, gone, dirsOfGone)).toEqual({ status: 'vanished' });
    // todo/ listed, but qmail-send preprocessed it since: read in its new state.
    const moved = q.add({ mess: networkMessage({ ip: '192.0.2.98' }), state: 'todo', sender: 's@x.example' });
    const mess = fs.readFileSync(q.path('mess', moved));
    q.remove(moved);
    q.add({ id: moved, mess, sender: 's@x.example' });
    const r = readListedMessage(layout, moved, ['mess', 'todo', 'intd']);
    expect(r).toEqual(readMessage(layout, moved));
    expect(r).toMatchObject({ status: 'ok', message: { state: 'preprocessed', sender: 's@x.example' } });
    q.remove(moved);
  });

  it('reads only a bounded head of a 2 MB message, even for a bounce quoting it', () => {
    const layout = openQueue(q.dir);
    const r = readMessage(layout, ids.big);
    expect(r.status).toBe('ok');
    if (r.status === 'ok') expect(r.message.headBytes).toBeLessThanOrEqual(4096);
    const huge = networkMessage({ ip: '198.51.100.204', content: plainMessage({ body: 'y'.repeat(2_100_000) }) });
    const id = q.add({ mess: bounceMessage({ original: huge, originalSender: 'a@b.example', failed: [{ address: 'x@example.net', reason: NO_MAILBOX }] }), sender: '' });
    const b = readMessage(layout, id);
    expect(b.status).toBe('ok');
    if (b.status === 'ok') {
      expect(b.message.origin.sourceIp).toBe('198.51.100.204');
      expect(b.message.headBytes).toBeLessThanOrEqual(64 * 1024);
    }
    q.remove(id);
  });
});

describe('files that change or disappear under the reader', () => {
  it('a message delivered between the stat and the read is "vanished", not an error', () => {
    const q = QueueBuilder.create();
    try {
      const layout = openQueue(q.dir);
      const id = q.add({ mess: networkMessage({ ip: '192.0.2.9' }) });
      const stats = statMessage(layout, id);
      q.remove(id);
      expect(readMessageWith(layout, id, stats)).toEqual({ status: 'vanished' });
    } finally {
      q.destroy();
    }
  });

  it('a message preprocessed between the stat and the read is read again in its new state', () => {
    const q = QueueBuilder.create();
    try {
      const layout = openQueue(q.dir);
      const mess = networkMessage({ ip: '192.0.2.10' });
      const id = q.add({ mess, state: 'todo', sender: 's@x.example', recipients: ['dave@example.net'] });
      const stats = statMessage(layout, id);
      expect(stats.todo).toBeDefined();
      // qmail-send: info + local, then intd and todo go.
      q.remove(id);
      q.add({ id, mess, sender: 's@x.example', recipients: ['dave@example.net'] });
      const r = readMessageWith(layout, id, stats);
      expect(r.status).toBe('ok');
      if (r.status === 'ok') expect(r.message).toMatchObject({ state: 'preprocessed', sender: 's@x.example' });
    } finally {
      q.destroy();
    }
  });

  it('the rotation check reuses the stored parts of mess/ and info/ and still sees local/ change', () => {
    const q = QueueBuilder.create();
    try {
      const layout = openQueue(q.dir);
      const id = q.add({ mess: networkMessage({ ip: '192.0.2.11' }), recipients: ['dave@example.net', 'x@remote.example'] });
      const dirs: QueueDirName[] = ['mess', 'info', 'local', 'remote'];
      const stored = messageSignature(statMessage(layout, id)).sig;
      const partial = () => statMessage(layout, id, ['local', 'remote']);
      expect(signatureReusing(partial(), stored, ['mess', 'info'], dirs)).toBe(stored);
      // qmail-send's markdone: one byte rewritten in place, a new mtime.
      const file = q.path('local', id);
      const buf = fs.readFileSync(file);
      buf[0] = 'D'.charCodeAt(0);
      fs.writeFileSync(file, buf);
      fs.utimesSync(file, new Date(), new Date(Date.now() + 5000));
      const now = signatureReusing(partial(), stored, ['mess', 'info'], dirs);
      expect(now).not.toBe(stored);
      expect(now).toBe(messageSignature(statMessage(layout, id)).sig);
      // A stored signature without the part to reuse: no answer, the caller stats everything.
      expect(signatureReusing(partial(), stored.replace(/(^| )3\S+ /, '$1'), ['mess', 'info'], dirs)).toBeNull();
    } finally {
      q.destroy();
    }
  });

  it('a scan racing qmail-send deleting messages: exit 0, silent, no errors', async () => {
    const q = QueueBuilder.create();
    try {
      const ids: string[] = [];
      for (let i = 0; i < 3000; i++) ids.push(q.add({ mess: networkMessage({ ip: `192.0.2.${i % 200}`, pid: i + 1 }), recipients: ['dave@example.net'] }));
      // A separate process deletes every other message while the scan runs.
      const victims = ids.filter((_, i) => i % 2 === 0).map((id) => ['mess', 'info', 'local'].map((d) => q.path(d as 'mess', id)));
      const script = `for f in "$@"; do rm -f "$f"; done`;
      const killer = spawn('sh', ['-c', script, 'sh', ...victims.flat()], { stdio: 'ignore' });
      const r = await runCli('scan-queue', ['--json', '--no-deny'], { env: { ...db.env, QGUARD_QUEUE: q.dir, QGUARD_HOST: 'racing' } });
      await new Promise((res) => killer.on('exit', res));
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const s = JSON.parse(r.stdout) as Summary;
      expect(s.errors).toBe(0);
      expect(s.scanned).toBeGreaterThanOrEqual(1500);
      // The next scan agrees with what is left.
      const { s: s2 } = await scan(q, ['--no-deny'], { QGUARD_HOST: 'racing' });
      expect(s2.scanned).toBe(1500);
      expect(s2.errors).toBe(0);
    } finally {
      q.destroy();
    }
  });
});

describe('incremental rescans', () => {
  const host = { QGUARD_HOST: 'incremental' };
  let q: QueueBuilder;
  const ids: string[] = [];

  beforeAll(() => {
    // conf-split 3: any prime works, and the rotation comes round quickly.
    q = QueueBuilder.create({ split: 3 });
    const t = fixtureTemplates();
    for (let i = 0; i < 30; i++) {
      ids.push(
        q.add({
          mess: fromTemplate(t[i % t.length], { ip: `198.51.100.${10 + (i % 3)}`, pid: 1000 + i }),
          recipients: [{ address: 'dave@example.net' }, { address: 'carol@example.net' }],
          arrival: new Date(Date.now() - 3_600_000),
        }),
      );
    }
  });
  afterAll(() => q.destroy());

  it('reads everything once, then nothing while nothing changes', async () => {
    const first = (await scan(q, ['--no-deny'], host)).s;
    expect(first).toMatchObject({ scanned: 30, new: 30, unchanged: 0, errors: 0 });
    expect(first.groupsRead).toBe(3);
    // The directories must be older than the settle time before their signatures are trusted.
    await new Promise((r) => setTimeout(r, 2100));
    const second = (await scan(q, ['--no-deny'], host)).s;
    expect(second).toMatchObject({ scanned: 30, new: 0, updated: 0, gone: 0 });
    const third = (await scan(q, ['--no-deny'], host)).s;
    expect(third).toMatchObject({ scanned: 30, new: 0, unchanged: 30, updated: 0, gone: 0 });
    // Only the rotation's one group was listed.
    expect(third.groupsRead).toBe(1);
  });

  it('an unchanged message is not read again (same inode, size and mtime)', async () => {
    const id = ids[0];
    const file = q.path('mess', id);
    const st = fs.statSync(file);
    const text = fs.readFileSync(file, 'latin1');
    const swapped = text.replace(/\(198\.51\.100\.1\d\)/, '(198.51.100.99)');
    expect(swapped.length).toBe(text.length);
    fs.writeFileSync(file, swapped, 'latin1');
    fs.utimesSync(file, st.atime, st.mtime);
    await scan(q, ['--no-deny'], host);
    const row = (await ls(q, [], host)).find((m) => m.id === id)!;
    // Still the recorded source: the file was not opened.
    expect(row.sourceIp).not.toBe('198.51.100.99');
    fs.writeFileSync(file, text, 'latin1');
    fs.utimesSync(file, st.atime, st.mtime);
  });

  it('in-place T->D changes of local/ are picked up by the rotation within conf-split runs', async () => {
    const id = ids[1];
    const file = q.path('local', id);
    const buf = fs.readFileSync(file);
    buf[0] = 'D'.charCodeAt(0); // qmail-send's markdone: one byte, in place
    fs.writeFileSync(file, buf);
    for (let i = 0; i < 3; i++) await scan(q, ['--no-deny'], host);
    const row = (await ls(q, [], host)).find((m) => m.id === id)!;
    expect(row.pending).toEqual(['carol@example.net']);
  });

  it('a delivered message is marked gone; a reused inode number is a new message', async () => {
    const gone = ids[2];
    const reused = ids[3];
    q.remove(gone);
    q.remove(reused);
    q.add({ id: reused, mess: networkMessage({ ip: '203.0.113.77', pid: 999_999 }), recipients: ['dave@example.net'] });
    const { s } = await scan(q, ['--no-deny'], host);
    expect(s).toMatchObject({ scanned: 29, new: 1, gone: 2 });
    const live = await ls(q, [], host);
    expect(live.find((m) => m.id === gone)).toBeUndefined();
    expect(live.find((m) => m.id === reused)?.sourceIp).toBe('203.0.113.77');
    const all = await ls(q, ['--all'], host);
    const rows = all.filter((m) => m.id === reused);
    expect(rows.length).toBe(2);
    expect(rows.filter((m) => m.goneAt !== null).length).toBe(1);
  });

  it('a moved queue or another conf-split is read in full, rows follow', async () => {
    const other = QueueBuilder.create({ split: 7 });
    try {
      for (let i = 0; i < 5; i++) other.add({ mess: networkMessage({ ip: '198.51.100.40', pid: 7000 + i }) });
      const { s } = await scan(other, ['--no-deny'], host);
      expect(s).toMatchObject({ scanned: 5, new: 5, gone: 29 });
      expect(s.groupsRead).toBe(7);
    } finally {
      other.destroy();
    }
  });
});

describe('how new messages are recorded: COPY on a server, unnest on the embedded database', () => {
  const host = { QGUARD_HOST: 'recording' };
  let q: QueueBuilder;
  let embedded: TestDb | null = null;
  const ids: Record<string, string> = {};
  const oddSender = 'we"ird\\se\tnder@x.example';
  const oddRecipients = ['a"b@example.net', 'c\\d{,}@example.net', 'jörg@example.net', 'tab\there@remote.example', 'new\nline@remote.example'];

  beforeAll(() => {
    q = QueueBuilder.create();
    const t = fixtureTemplates();
    for (let i = 0; i < 40; i++) {
      ids[`t${i}`] = q.add({ mess: fromTemplate(t[i % t.length], { ip: `198.51.100.${i}`, pid: 3000 + i }), recipients: ['dave@example.net', 'x@remote.example'] });
    }
    // Values that COPY's text format and PostgreSQL's array literals must carry unchanged.
    ids.odd = q.add({
      mess:
        'Received: (qmail 77 invoked from network); 28 Nov 2026 00:22:16 -0000\n' +
        'Received: from back\\slash.example (HELO we\\ird) (ta\\b@198.51.100.250)\n  by mx.example.net with SMTP; 28 Nov 2026 00:22:16 -0000\n' +
        'Subject: back\\slash "quoted" {braces}, commas\ttab =?UTF-8?B?w6k=?=\n\nbody\n',
      sender: oddSender,
      recipients: oddRecipients,
    });
    ids.bounce = q.add({
      mess: bounceMessage({ original: networkMessage({ ip: '2001:db8::7' }), originalSender: 'a@b.example', failed: [{ address: 'x@example.net', reason: NO_MAILBOX }] }),
      sender: '',
      bounce: '<y@example.net>:\nSorry.\n\n',
    });
    ids.todo = q.add({ mess: networkMessage({ ip: '::ffff:192.0.2.77' }), state: 'todo' });
    ids.local = q.add({ mess: localMessage(), sender: 'www@example.net', arrival: new Date(Date.now() - 86_400_000) });
    // A stray copy of a mess file in the wrong subdirectory: not a message of its own.
    const stray = ids.t0;
    fs.copyFileSync(q.path('mess', stray), path.join(q.dir, 'mess', String((Number(stray) + 1) % 23), stray));
  });
  afterAll(async () => {
    q.destroy();
    await embedded?.drop();
  });

  // firstSeen is the time of the scan and recordId the row id in each database: not part of what is recorded.
  const withoutFirstSeen = (rows: Awaited<ReturnType<typeof ls>>) => rows.map((r) => ({ ...r, firstSeen: undefined, recordId: undefined }));

  it('records every message once, with odd values unchanged, and the embedded database agrees', async () => {
    const { s, stderr } = await scan(q, ['--no-deny'], host);
    expect(stderr).toBe('');
    expect(s).toMatchObject({ scanned: 44, new: 44, errors: 0, skipped: 0 });
    const rows = await ls(q, [], host);
    const odd = rows.find((m) => m.id === ids.odd) as unknown as Record<string, unknown>;
    expect(odd).toMatchObject({
      sourceIp: '198.51.100.250',
      helo: 'we\\ird',
      remoteHost: 'back\\slash.example',
      remoteInfo: 'ta\\b',
      sender: oddSender,
      recipients: oddRecipients,
      pending: oddRecipients,
      subject: 'back\\slash "quoted" {braces}, commas tab é',
      birth: '2026-11-28T00:22:16.000Z',
    });
    expect(rows.find((m) => m.id === ids.bounce)).toMatchObject({ kind: 'bounce', sourceIp: '2001:db8::7', sender: '' });
    expect(rows.find((m) => m.id === ids.todo)).toMatchObject({ state: 'todo', sourceIp: '192.0.2.77' });

    embedded = await createTestDb({ kind: 'embedded' });
    const r = await runCli('scan-queue', ['--json', '--no-deny'], { env: { ...embedded.env, QGUARD_QUEUE: q.dir, ...host } });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toMatchObject({ scanned: 44, new: 44, errors: 0 });
    const e = await runCli('qguard', ['queue', 'ls', '--json'], { env: { ...embedded.env, QGUARD_QUEUE: q.dir, ...host } });
    expect(e.code).toBe(0);
    expect(withoutFirstSeen(JSON.parse(e.stdout))).toEqual(withoutFirstSeen(rows));
    // What the next scan compares with is the same too.
    const sigs = async (d: TestDb) => {
      const conn = await d.open();
      try {
        const x = await conn.query(
          "SELECT queue_id::text AS id, line1, sig, mess_sig, arrival, birth FROM qguard.messages WHERE host = 'recording' ORDER BY queue_id",
        );
        return x.rows;
      } finally {
        await conn.close();
      }
    };
    expect(await sigs(embedded)).toEqual(await sigs(db));
    // And it compares the next scan with what it stored, as the server does.
    const again = await runCli('scan-queue', ['--json', '--no-deny'], { env: { ...embedded.env, QGUARD_QUEUE: q.dir, ...host } });
    expect(JSON.parse(again.stdout)).toMatchObject({ scanned: 44, new: 0, updated: 0, gone: 0, errors: 0 });
  });

  it('under --verbose, names the stray file in the wrong subdirectory', async () => {
    const r = await runCli('scan-queue', ['--verbose', '--no-deny', '--dry-run'], { env: { ...db.env, QGUARD_QUEUE: q.dir, QGUARD_HOST: 'recording-v' } });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`1 file\\(s\\) in the wrong subdirectory \\(e\\.g\\. ${ids.t0}\\)`));
  });

  it('a message recorded as gone that is found again comes back to life: no second row', async () => {
    const id = ids.t5;
    const mess = fs.readFileSync(q.path('mess', id));
    q.remove(id);
    expect((await scan(q, ['--no-deny'], host)).s).toMatchObject({ scanned: 43, gone: 1 });
    q.add({ id, mess, recipients: ['dave@example.net', 'x@remote.example'] });
    expect((await scan(q, ['--no-deny'], host)).s).toMatchObject({ scanned: 44, new: 1, errors: 0 });
    const mine = (await ls(q, ['--all'], host)).filter((m) => m.id === id);
    expect(mine.length).toBe(1);
    expect(mine[0].goneAt).toBeNull();
  });
});

describe('the first scan of a large queue (read in reader threads)', () => {
  let q: QueueBuilder;
  beforeAll(() => {
    q = generateQueue(fs.mkdtempSync(path.join(db.stateDir, 'large-')), { count: 21_000, seed: 7 }).queue;
  });
  afterAll(() => q.destroy());

  it('records exactly what a scan reading every group itself records', async () => {
    // Host A: its first scan, large enough for the reader threads.
    const a = await runCli('scan-queue', ['--json', '--no-deny', '--verbose'], { env: { ...db.env, QGUARD_QUEUE: q.dir, QGUARD_HOST: 'large-a' } });
    expect(a.code).toBe(0);
    expect(JSON.parse(a.stdout)).toMatchObject({ scanned: 21_000, new: 21_000, errors: 0, skipped: 0 });
    if (os.availableParallelism() >= 2) expect(a.stderr).toMatch(/first scan of this host: 23 groups read in 6 threads/);
    // Host B has rows already (a small queue first): the same queue is read in this thread.
    const small = QueueBuilder.create();
    try {
      small.add({ mess: networkMessage({ ip: '192.0.2.1' }) });
      expect((await scan(small, ['--no-deny'], { QGUARD_HOST: 'large-b' })).s.new).toBe(1);
    } finally {
      small.destroy();
    }
    const b = await runCli('scan-queue', ['--json', '--no-deny', '--verbose'], { env: { ...db.env, QGUARD_QUEUE: q.dir, QGUARD_HOST: 'large-b' } });
    expect(b.code).toBe(0);
    expect(b.stderr).not.toMatch(/threads/);
    expect(JSON.parse(b.stdout)).toMatchObject({ scanned: 21_000, new: 21_000, gone: 1, errors: 0 });
    const conn = await db.open();
    try {
      const rows = async (host: string) =>
        (
          await conn.query(
            `SELECT queue_id::text, line1, split, state, kind, forwarded, chain, birth, arrival, host(source_ip) AS ip, source_recorded,
                    helo, remote_host, remote_info, sender, recipients, pending, rcpt_count, pending_count, bounce_pending, size,
                    subject, problems, sig, mess_sig
               FROM qguard.messages WHERE host = $1 AND gone_at IS NULL ORDER BY queue_id`,
            [host],
          )
        ).rows;
      const [ra, rb] = [await rows('large-a'), await rows('large-b')];
      expect(ra.length).toBe(21_000);
      expect(ra).toEqual(rb);
    } finally {
      await conn.close();
    }
  });
});

describe('queue layouts', () => {
  it('big-todo (split todo/ and intd/) and unprocessed mail', async () => {
    const q = QueueBuilder.create({ split: 5, bigTodo: true });
    try {
      for (let i = 0; i < 4; i++) q.add({ mess: networkMessage({ ip: '198.51.100.50', pid: 50 + i }), state: 'todo' });
      q.add({ mess: localMessage(), state: 'todo', sender: 'root@mx.example.net', uid: 0 });
      const layout = openQueue(q.dir);
      expect(layout.splitDirs).toMatchObject({ todo: true, intd: true, bounce: false });
      const { s } = await scan(q, ['--no-deny'], { QGUARD_HOST: 'bigtodo' });
      expect(s).toMatchObject({ scanned: 5, new: 5, errors: 0 });
      const rows = await ls(q, [], { QGUARD_HOST: 'bigtodo' });
      expect(rows.map((r) => r.state)).toEqual(['todo', 'todo', 'todo', 'todo', 'todo']);
      expect(rows.filter((r) => r.kind === 'local').length).toBe(1);
    } finally {
      q.destroy();
    }
  });

  it('a directory that is not a queue: exit 100, naming it', async () => {
    const dir = fs.mkdtempSync(path.join(db.stateDir, 'notaqueue-'));
    const r = await runCli('scan-queue', [], { env: { ...db.env, QGUARD_QUEUE: dir } });
    expect(r.code).toBe(100);
    expect(r.stderr).toMatch(new RegExp(`^scan-queue: fatal: unable to read queue ${dir}/mess`));
  });
});

describe("the review page's readable copies", () => {
  const host = { QGUARD_HOST: 'copies' };
  const counts = async () => {
    const c = await db.open();
    try {
      const r = await c.query<{ live: string; copies: string; to: string }>(
        `SELECT (SELECT count(*) FROM qguard.messages WHERE host = 'copies' AND gone_at IS NULL)::text AS live,
                (SELECT count(*) FROM qguard.message_copies c JOIN qguard.messages m ON m.id = c.message_id
                  WHERE m.host = 'copies' AND m.gone_at IS NULL)::text AS copies,
                (SELECT copies_checked_to FROM qguard.queue_scans WHERE host = 'copies')::text AS to`,
      );
      return { live: Number(r.rows[0].live), copies: Number(r.rows[0].copies), checkedTo: Number(r.rows[0].to) };
    } finally {
      await c.close();
    }
  };
  let pid = 40_000;
  const add = (q: QueueBuilder, n: number) => {
    for (let i = 0; i < n; i++) {
      q.add({ mess: networkMessage({ ip: `198.51.100.${(i % 200) + 1}`, pid: pid++, content: plainMessage({ subject: `copy ${pid}` }) }), recipients: ['dave@example.net'] });
    }
  };

  it('runs that run out of time go on where the last stopped, and new messages are not left behind', async () => {
    const q = QueueBuilder.create();
    const c = await db.open();
    // A clock that is past the budget as soon as the run has started: one batch (2,000) per
    // part of the walk and run.
    let reads = 0;
    const clock = () => vi.spyOn(performance, 'now').mockImplementation(() => (reads++ === 0 ? 0 : 1e12));
    let now = clock();
    try {
      add(q, 9000);
      await scan(q, ['--no-deny'], { ...host, QGUARD_COPY_BYTES: '0' });
      const ctx = { config: { ...db.config, host: 'copies', copyBytes: 4096 }, protectedNets: () => [] } as unknown as RunContext;
      const layout = openQueue(q.dir);
      const run = () => {
        reads = 0;
        return keepCopies(ctx, c, layout, 0);
      };
      const walkState = async () =>
        (await c.query<{ f: string | null; t: string | null }>("SELECT copies_walk_from::text AS f, copies_walk_top::text AS t FROM qguard.queue_scans WHERE host = 'copies'")).rows[0];
      const got: number[] = [];
      let partialSeen = false;
      for (let i = 0; i < 10 && (await counts()).copies < (await counts()).live; i++) {
        got.push(await run());
        if ((await walkState()).f !== null) partialSeen = true;
        if (i === 1) {
          // New mail arrives while a walk is unfinished, recorded by a real run (which copies
          // too, on the real clock).
          now.mockRestore();
          add(q, 7);
          await scan(q, ['--no-deny'], host);
          now = clock();
        }
      }
      const end = await counts();
      expect(end.live).toBe(9007);
      // The first call stopped after its batch; the second went on below it (nothing new above).
      expect(got.slice(0, 2)).toEqual([2000, 2000]);
      expect(end.copies).toBe(end.live);
      expect(partialSeen).toBe(true);
      expect((await walkState()).f).toBeNull();
      // Nothing left: the next call copies nothing and looks at nothing below the mark.
      expect(await run()).toBe(0);
    } finally {
      vi.restoreAllMocks();
      await c.close();
      q.destroy();
    }
  }, 120_000);

  it('every message gets its copy, later ones too; turned off and on, all are copied again', async () => {
    const q = QueueBuilder.create();
    try {
      add(q, 30);
      await scan(q, ['--no-deny'], host);
      expect(await counts()).toMatchObject({ live: 30, copies: 30 });
      const first = (await counts()).checkedTo;
      expect(first).toBeGreaterThan(0);
      // New messages above the mark get theirs; nothing below it is looked at again.
      add(q, 5);
      await scan(q, ['--no-deny'], host);
      const after = await counts();
      expect(after).toMatchObject({ live: 35, copies: 35 });
      expect(after.checkedTo).toBeGreaterThan(first);
      // Off: copies dropped and the mark reset; on again: every message copied again.
      await scan(q, ['--no-deny'], { ...host, QGUARD_COPY_BYTES: '0' });
      expect(await counts()).toMatchObject({ live: 35, copies: 0, checkedTo: 0 });
      await scan(q, ['--no-deny'], host);
      expect(await counts()).toMatchObject({ live: 35, copies: 35 });
    } finally {
      q.destroy();
    }
  });
});
