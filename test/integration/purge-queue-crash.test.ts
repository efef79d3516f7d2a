// kill -9 in the middle of a large purge, then a re-run: at the moment of the kill every
// message that has lost any file is complete in the quarantine (same bytes) with its row; after
// the re-run the queue is exactly the original minus the spam and its backscatter — no orphan
// part of any message — and the quarantine holds each removed message once. Also the repair
// of the precise states a kill leaves (rows 'removing', a message half unlinked, an id reused
// meanwhile), built from a real run.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NO_MAILBOX, QueueBuilder, bounceMessage, forwardedMessage, localMessage, networkMessage } from '../helpers/queue-builder.js';
import { createTestDb, type TestDb } from '../helpers/db.js';
import { ROOT, runCli } from '../helpers/cli.js';
import {
  type FakeQmailSend,
  type TreeSnapshot,
  copyTree,
  diffTrees,
  filesById,
  idOfQueueFile,
  snapshotTree,
  startFakeQmailSend,
  writeControlScripts,
} from '../helpers/purge-fixtures.js';
import { haveTools } from '../helpers/tools.js';

let db: TestDb;
let work: string;
const fakes: FakeQmailSend[] = [];

beforeAll(async () => {
  db = await createTestDb();
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-purge-crash-'));
  for (const net of ['203.0.113.0/24', '198.51.100.0/24']) expect((await runCli('qguard', ['ip', 'deny', net], { env: db.env })).code).toBe(0);
  expect((await runCli('qguard', ['ip', 'trust', '198.51.100.150'], { env: db.env })).code).toBe(0);
});
afterEach(() => {
  for (const f of fakes.splice(0)) f.kill();
});
afterAll(async () => {
  await db?.drop();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

/**
 * A queue of `spam` messages from denied addresses in every shape (preprocessed with local,
 * remote and pending bounce files, todo + intd, forwarded copies, bounces and double bounces of
 * them) and `ham` others (partner, intranet, local, bounces of those). Returns the ids that
 * must go.
 */
function buildQueue(dir: string, spam: number, ham: number): { b: QueueBuilder; doomed: Set<string> } {
  const b = QueueBuilder.create({ dir });
  const doomed = new Set<string>();
  const now = Date.now();
  for (let i = 0; i < spam; i++) {
    const ip = i % 3 === 0 ? '198.51.100.14' : `203.0.113.${1 + (i % 200)}`;
    const date = new Date(now - (i % 50) * 60_000);
    const shape = i % 6;
    let id: string;
    if (shape === 0) {
      id = b.add({
        mess: networkMessage({ ip, date }),
        sender: `s${i}@spam.example`,
        recipients: [{ address: 'dave@example.net' }, { address: 'hr@example.net', done: true }, { address: 'x@remote.example' }],
        bounce: `<hr@example.net>:\n${NO_MAILBOX}\n\n`,
        arrival: date,
      });
    } else if (shape === 1) {
      id = b.add({ mess: networkMessage({ ip, date }), state: 'todo', sender: `s${i}@spam.example`, recipients: ['alice@example.net', 'y@remote.example'], arrival: date });
    } else if (shape === 2) {
      id = b.add({ mess: forwardedMessage({ original: networkMessage({ ip, date }), deliveredTo: 'carol@example.net' }), sender: `s${i}@spam.example`, recipients: ['carol@home-isp.example'] });
    } else if (shape === 3) {
      id = b.add({
        mess: bounceMessage({ original: networkMessage({ ip, date }), originalSender: `forged${i}@victim.example`, failed: [{ address: 'info@example.net', reason: NO_MAILBOX }] }),
        sender: '',
        recipients: [`forged${i}@victim.example`],
      });
    } else {
      id = b.add({ mess: networkMessage({ ip, date }), sender: `s${i}@spam.example`, recipients: ['dave@example.net'], arrival: date });
    }
    doomed.add(id);
  }
  for (let i = 0; i < ham; i++) {
    const shape = i % 4;
    if (shape === 0) b.add({ mess: networkMessage({ ip: '198.51.100.150' }), sender: 'orders@partner.example', recipients: ['alice@example.net'] });
    else if (shape === 1) b.add({ mess: networkMessage({ ip: '10.0.0.15' }), sender: 'bob@example.net', recipients: ['z@remote.example'], state: 'todo' });
    else if (shape === 2) b.add({ mess: localMessage(), sender: 'root@mx.example.net', recipients: ['ops@remote.example'] });
    else
      b.add({
        mess: bounceMessage({ original: networkMessage({ ip: '198.51.100.150' }), originalSender: 'orders@partner.example', failed: [{ address: 'nobody@example.net', reason: NO_MAILBOX }] }),
        sender: '',
        recipients: ['orders@partner.example'],
      });
  }
  return { b, doomed };
}

/** The environment runCli gives the executables, for a process we want to kill ourselves. */
function childEnv(env: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || k.startsWith('QGUARD_') || k.startsWith('PG') || k === 'DATABASE_URL') continue;
    out[k] = v;
  }
  return { ...out, ...env };
}

interface QRow {
  id: number;
  queue_id: string;
  state: string;
  path: string;
}

async function quarantineRows(host: string): Promise<QRow[]> {
  const c = await db.open();
  try {
    const r = await c.query<QRow>('SELECT id::int AS id, queue_id::text AS queue_id, state, path FROM qguard.quarantine WHERE host = $1 ORDER BY id', [host]);
    return r.rows;
  } finally {
    await c.close();
  }
}

/** Every message that lost a file is complete in the quarantine, same bytes, with a row. */
async function assertRemovedAreQuarantined(host: string, original: TreeSnapshot, now: TreeSnapshot, qdir: string): Promise<{ touched: number; rows: QRow[] }> {
  const d = diffTrees(original, now);
  // A purge only ever removes whole files of the queue.
  expect(d.added).toEqual([]);
  expect(d.changed).toEqual([]);
  const touched = new Set(d.removed.map(idOfQueueFile).filter((x): x is string => x !== null));
  const rows = await quarantineRows(host);
  const byQueueId = new Map(rows.map((r) => [r.queue_id, r]));
  for (const id of touched) {
    const row = byQueueId.get(id);
    expect(row, `message ${id} lost files but has no quarantine row`).toBeDefined();
    expect(['removing', 'removed']).toContain(row!.state);
    expect(row!.path).toBe(path.join(qdir, String(row!.id)));
    for (const f of ['mess', 'envelope', 'meta.json']) expect(fs.existsSync(path.join(row!.path, f)), `${row!.path}/${f}`).toBe(true);
    const messRel = [...original.keys()].find((k) => k.startsWith('mess/') && k.endsWith(`/${id}`))!;
    expect(fs.readFileSync(path.join(row!.path, 'mess')).length).toBe(original.get(messRel)!.size);
  }
  return { touched: touched.size, rows };
}

describe.skipIf(!haveTools('flock'))('kill -9 in the middle of a large purge', () => {
  const SPAM = 3000;
  const HAM = 600;

  it.each([
    ['while copying into the quarantine (nothing committed yet)', 'staging'],
    ['while unlinking queue files', 'removing'],
    ['in a later batch', 'late'],
  ] as const)('killed %s: the re-run leaves no orphans and a complete quarantine', async (_what, when) => {
    const dir = path.join(work, when);
    const { b, doomed } = buildQueue(path.join(dir, 'queue'), SPAM, HAM);
    const saved = path.join(dir, 'saved');
    copyTree(b.dir, saved);
    const state = path.join(dir, 'state');
    fs.mkdirSync(state);
    const qdir = path.join(state, 'quarantine');
    const pidFile = path.join(dir, 'qmail-send.pid');
    const scripts = writeControlScripts(path.join(dir, 'bin'), b.dir, pidFile);
    const host = `crash-${when}`;
    const env = { ...db.env, QGUARD_HOST: host, QGUARD_STATE_DIR: state, QGUARD_QUEUE: b.dir, QGUARD_QMAIL_STOP: scripts.stop, QGUARD_QMAIL_START: scripts.start };
    expect((await runCli('scan-queue', ['--no-deny'], { env })).code).toBe(0);
    const original = snapshotTree(b.dir);
    const total = filesById(original).size;
    fakes.push(await startFakeQmailSend(b.dir, pidFile));

    const child = spawn(process.execPath, [path.join(ROOT, 'dist/bin/purge-queue.js')], { env: childEnv(env), stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    let done = false;
    void exited.then(() => (done = true));
    const messLeft = () => {
      let n = 0;
      for (let s = 0; s < 23; s++) n += fs.readdirSync(path.join(b.dir, 'mess', String(s))).length;
      return n;
    };
    const entries = () => (fs.existsSync(qdir) ? fs.readdirSync(qdir).length : 0);
    for (;;) {
      if (done) break;
      const left = messLeft();
      if (when === 'staging' && entries() >= 300 && left === total) break;
      if (when === 'removing' && left < total) break;
      if (when === 'late' && left <= total - 1200) break;
      await new Promise((r) => setTimeout(r, 3));
    }
    child.kill('SIGKILL');
    const ex = await exited;
    expect(ex.signal, `purge-queue finished before the kill: ${stderr}`).toBe('SIGKILL');

    // At the moment of the kill: everything removed is in the quarantine.
    const mid = await assertRemovedAreQuarantined(host, original, snapshotTree(b.dir), qdir);
    if (when === 'staging') expect(mid.touched).toBe(0);
    else expect(mid.touched).toBeGreaterThan(0);
    expect(mid.touched).toBeLessThan(doomed.size);
    expect(scripts.calls()).toEqual(['stop']);

    // The next run repairs, finishes, and starts qmail-send (stopped by the killed run).
    const r = await runCli('purge-queue', ['--json'], { env });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.stoppedQmail).toBe(true);
    expect(scripts.calls()).toEqual(['stop', `start ${total - doomed.size}`]);

    const after = snapshotTree(b.dir);
    const d = diffTrees(original, after);
    expect(d.added).toEqual([]);
    expect(d.changed).toEqual([]);
    const byId = filesById(original);
    expect(d.removed).toEqual([...doomed].flatMap((id) => byId.get(id)!).sort());
    // No orphans: every message left has all its files.
    const left = filesById(after);
    for (const [id, files] of left) expect(files, id).toEqual(byId.get(id));
    expect([...left.keys()].some((id) => doomed.has(id))).toBe(false);

    // The quarantine: one complete entry per removed message, all 'removed', nothing else.
    const rows = await quarantineRows(host);
    expect(rows.map((x) => x.queue_id).sort()).toEqual([...doomed].sort());
    expect(rows.every((x) => x.state === 'removed')).toBe(true);
    expect(fs.readdirSync(qdir).sort()).toEqual(rows.map((x) => String(x.id)).sort());
    for (const row of rows) {
      const messRel = byId.get(row.queue_id)!.find((f) => f.startsWith('mess/'))!;
      expect(fs.readFileSync(path.join(row.path, 'mess')).equals(fs.readFileSync(path.join(saved, messRel))), row.queue_id).toBe(true);
    }
    // The re-run finished exactly the interrupted removals and removed the rest, each once.
    expect(s.repaired).toBe(mid.rows.filter((x) => x.state === 'removing').length);
    expect(s.removed).toBe(doomed.size - mid.rows.length);
  });
});

describe('repair of the states a kill leaves, built from a real run', () => {
  it("rows 'removing', a message half unlinked, one untouched, an id reused meanwhile: finished, the new message spared", async () => {
    const dir = path.join(work, 'repair');
    const { b, doomed } = buildQueue(path.join(dir, 'queue'), 30, 6);
    const saved = path.join(dir, 'saved');
    copyTree(b.dir, saved);
    const state = path.join(dir, 'state');
    fs.mkdirSync(state);
    const scripts = writeControlScripts(path.join(dir, 'bin'), b.dir, path.join(dir, 'none.pid'));
    const host = 'repair';
    const env = { ...db.env, QGUARD_HOST: host, QGUARD_STATE_DIR: state, QGUARD_QUEUE: b.dir, QGUARD_QMAIL_STOP: scripts.stop, QGUARD_QMAIL_START: scripts.start };
    expect((await runCli('scan-queue', ['--no-deny'], { env })).code).toBe(0);
    const original = snapshotTree(b.dir);
    const byId = filesById(original);
    expect((await runCli('purge-queue', [], { env })).code).toBe(0);
    const rows = await quarantineRows(host);
    expect(rows.length).toBe(doomed.size);

    // Pick three preprocessed messages with local, remote and bounce files.
    const rich = rows.filter((r) => byId.get(r.queue_id)!.some((f) => f.startsWith('bounce/'))).slice(0, 3);
    expect(rich.length).toBe(3);
    const [half, whole, reused] = rich;
    const put = (id: string, keep: (f: string) => boolean) => {
      for (const f of byId.get(id)!.filter(keep)) {
        fs.copyFileSync(path.join(saved, f), path.join(b.dir, f));
        const st = fs.statSync(path.join(saved, f));
        fs.utimesSync(path.join(b.dir, f), st.atime, st.mtime);
      }
    };
    // Killed after unlinking info/ (todo/ and intd/ never existed): mess, local, remote, bounce left.
    put(half.queue_id, (f) => !f.startsWith('info/'));
    // Killed right after the commit: every file still there.
    put(whole.queue_id, () => true);
    // Ours was removed completely, then a new message got the same id.
    b.add({ id: reused.queue_id, mess: networkMessage({ ip: '198.51.100.150', pid: 31337 }), sender: 'new@partner.example', recipients: ['alice@example.net'] });
    const fresh = snapshotTree(b.dir);
    // A row inserted, its files durable, but the run died before any unlink: state 'removing'.
    const c = await db.open();
    try {
      await c.query("UPDATE qguard.quarantine SET state = 'removing', removed_at = NULL WHERE id = ANY($1::bigint[])", [[half.id, whole.id, reused.id]]);
    } finally {
      await c.close();
    }
    // And a quarantine directory never committed (no row): its message never left the queue.
    fs.mkdirSync(path.join(state, 'quarantine', '999999'));
    fs.mkdirSync(path.join(state, 'quarantine', '.new-1000000'));

    const r = await runCli('purge-queue', ['--json', '--verbose'], { env });
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s).toMatchObject({ repaired: 3, removed: 0, selected: 0 });
    // What was left of the half-removed one went in qmail-send's safe order: mess last.
    const q = half.queue_id;
    expect(r.stderr).toMatch(new RegExp(`finished removing ${q} \\(quarantine ${half.id}\\): bounce/${q} local/\\d+/${q} remote/\\d+/${q} mess/\\d+/${q}\\n`));
    expect(r.stderr).toMatch(new RegExp(`finished removing ${whole.queue_id} \\(quarantine ${whole.id}\\): info/\\d+/\\d+ bounce/`));
    const after = snapshotTree(b.dir);
    const d = diffTrees(fresh, after);
    expect(d.added).toEqual([]);
    expect(d.changed).toEqual([]);
    expect(d.removed).toEqual([...byId.get(half.queue_id)!.filter((f) => !f.startsWith('info/')), ...byId.get(whole.queue_id)!].sort());
    // The new message with the reused id is untouched.
    expect(fs.existsSync(b.path('mess', reused.queue_id))).toBe(true);
    const final = await quarantineRows(host);
    expect(final.every((x) => x.state === 'removed')).toBe(true);
    expect(fs.readdirSync(path.join(state, 'quarantine')).sort()).toEqual(final.map((x) => String(x.id)).sort());
  });
});
