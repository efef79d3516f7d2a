// scan-queue's auto-deny: the threshold, what counts (bounces, forwards, todo; not in-flight,
// not outside the window), what is never denied (relay/trust on any host, protected, scan
// exemptions, mail without a source IP), fleet-wide counting (two hosts, two queues, one
// database), --no-deny / --dry-run, the job lock, and a database that fails.

import fs from 'node:fs';
import { spawn } from 'node:child_process';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  NO_MAILBOX,
  QueueBuilder,
  type BuiltState,
  bounceMessage,
  forwardedMessage,
  localMessage,
  networkMessage,
  plainMessage,
} from '../helpers/queue-builder.js';
import { createTestDb, type TestDb } from '../helpers/db.js';
import { runCli } from '../helpers/cli.js';

let db: TestDb;
const queues: QueueBuilder[] = [];
beforeAll(async () => {
  db = await createTestDb();
});
// Counting is fleet-wide: every test starts from an empty record and no rules.
beforeEach(async () => {
  const c = await db.open();
  try {
    await c.exec('TRUNCATE qguard.message_copies, qguard.messages, qguard.queue_scans; DELETE FROM qguard.rules;');
  } finally {
    await c.close();
  }
});
afterAll(async () => {
  for (const q of queues) q.destroy();
  await db?.drop();
});

function newQueue(opts: { split?: number } = {}): QueueBuilder {
  const q = QueueBuilder.create(opts);
  queues.push(q);
  return q;
}

let pid = 20_000;
function fill(q: QueueBuilder, ip: string, n: number, o: { state?: BuiltState; arrival?: Date } = {}): void {
  for (let i = 0; i < n; i++) {
    q.add({ mess: networkMessage({ ip, pid: pid++, content: plainMessage({ subject: `offer ${i} from ${ip}` }) }), recipients: ['dave@example.net'], ...o });
  }
}

interface Summary {
  scanned: number;
  new: number;
  denied: string[];
  notDenied: { ip: string; count: number; why: string }[];
  alreadyDenied: number;
  overThreshold: number;
}

async function scan(q: QueueBuilder, host: string, args: string[] = [], extra: Record<string, string> = {}) {
  const r = await runCli('scan-queue', ['--json', ...args], { env: { ...db.env, QGUARD_QUEUE: q.dir, QGUARD_HOST: host, ...extra } });
  return { ...r, s: r.code === 0 && r.stdout ? (JSON.parse(r.stdout) as Summary) : null };
}

async function scanRules(): Promise<{ cidr: string; reason: string; expiresAt: string | null; who: string; host: string | null }[]> {
  const r = await runCli('qguard', ['ip', 'ls', '--source', 'scan', '--json'], { env: db.env });
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout);
}

async function qguard(...args: string[]) {
  const r = await runCli('qguard', args, { env: db.env });
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
}

describe('the threshold', () => {
  it('19 is not enough; the 20th message denies, with the reason and no expiry by default', async () => {
    const q = newQueue();
    fill(q, '198.51.100.21', 19);
    const a = await scan(q, 'thr');
    expect(a.code).toBe(0);
    expect(a.stderr).toBe('');
    expect(a.s!.denied).toEqual([]);
    fill(q, '198.51.100.21', 1);
    const b = await scan(q, 'thr');
    expect(b.s!.denied).toEqual(['198.51.100.21']);
    const rule = (await scanRules()).find((r) => r.cidr === '198.51.100.21/32')!;
    expect(rule).toMatchObject({ reason: '20 queued messages in 3d', expiresAt: null, host: null, who: 'scan-queue (thr)' });
    // Denied once: the next run has nothing more to do.
    const c = await scan(q, 'thr');
    expect(c.s).toMatchObject({ denied: [], alreadyDenied: 1 });
  });

  it('--threshold and QGUARD_THRESHOLD move it', async () => {
    const q = newQueue();
    fill(q, '198.51.100.22', 5);
    expect((await scan(q, 'thr2', ['--threshold', '6'])).s!.denied).toEqual([]);
    expect((await scan(q, 'thr2', [], { QGUARD_THRESHOLD: '5' })).s!.denied).toEqual(['198.51.100.22']);
    const bad = await scan(q, 'thr2', ['--threshold', 'many']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--threshold: not a whole number/);
  });

  it('bounces and forwarded copies count for the client that caused them', async () => {
    const q = newQueue();
    const ip = '198.51.100.23';
    fill(q, ip, 10);
    for (let i = 0; i < 5; i++) {
      const original = networkMessage({ ip, pid: pid++ });
      q.add({ mess: bounceMessage({ original, originalSender: `s${i}@forged.example`, failed: [{ address: 'nobody@example.net', reason: NO_MAILBOX }] }), sender: '', recipients: [`s${i}@forged.example`] });
      q.add({ mess: forwardedMessage({ original: networkMessage({ ip, pid: pid++ }), deliveredTo: 'carol@example.net' }), sender: `f${i}@forged.example`, recipients: ['carol@home-isp.example'] });
    }
    const r = await scan(q, 'bnc', ['--threshold', '20']);
    expect(r.s!.denied).toEqual([ip]);
  });

  it('counts only arrivals within the window (info/ mtime)', async () => {
    const q = newQueue();
    fill(q, '198.51.100.24', 25, { arrival: new Date(Date.now() - 4 * 86400_000) });
    expect((await scan(q, 'win')).s!.denied).toEqual([]);
    const r = await scan(q, 'win', ['--window', '5d']);
    expect(r.s!.denied).toEqual(['198.51.100.24']);
    expect((await scanRules()).find((x) => x.cidr === '198.51.100.24/32')!.reason).toBe('25 queued messages in 5d');
  });

  it('unprocessed mail (todo/) counts; mail still in flight does not', async () => {
    const q = newQueue();
    fill(q, '198.51.100.25', 19);
    fill(q, '198.51.100.25', 1, { state: 'todo' });
    fill(q, '198.51.100.26', 19);
    fill(q, '198.51.100.26', 3, { state: 'in-flight-intd' });
    const r = await scan(q, 'todo');
    expect(r.s!.denied).toEqual(['198.51.100.25']);
  });

  it('QGUARD_SCAN_BAN gives the denial an expiry', async () => {
    const q = newQueue();
    fill(q, '198.51.100.27', 20);
    await scan(q, 'ban', [], { QGUARD_SCAN_BAN: '2d' });
    const rule = (await scanRules()).find((x) => x.cidr === '198.51.100.27/32')!;
    const left = new Date(rule.expiresAt!).getTime() - Date.now();
    expect(left).toBeGreaterThan(2 * 86400_000 - 120_000);
    expect(left).toBeLessThanOrEqual(2 * 86400_000);
  });
});

describe('never denied automatically', () => {
  it('relay or trust (on this host or any other), protected, exempt ranges, mail without a source IP', async () => {
    await qguard('ip', 'allow', '203.0.113.31', '--reason', 'office');
    await qguard('ip', 'trust', '203.0.113.0/28', '--reason', 'partner block');
    await qguard('ip', 'trust', '192.0.2.33', '--host', 'mx-other', '--reason', 'partner of mx-other only');
    const q = newQueue();
    const ips = ['203.0.113.31', '203.0.113.5', '192.0.2.33', '192.0.2.34', '192.168.7.7', '192.0.2.35', '192.0.2.36'];
    for (const ip of ips) fill(q, ip, 25);
    for (let i = 0; i < 30; i++) q.add({ mess: localMessage({ pid: pid++ }), sender: 'www-data@mx.example.net' });
    const r = await scan(q, 'exempt', [], { QGUARD_PROTECT: '192.0.2.34', QGUARD_SCAN_EXEMPT: '192.168.0.0/16,192.0.2.35/32' });
    expect(r.stderr).toBe('');
    const s = r.s!;
    expect(s.denied).toEqual(['192.0.2.36']);
    const why = Object.fromEntries(s.notDenied.map((n) => [n.ip, n.why]));
    expect(why['203.0.113.31']).toMatch(/^relay on exempt/);
    expect(why['203.0.113.5']).toMatch(/^trust on exempt \(203\.0\.113\.0\/28/);
    expect(why['192.0.2.33']).toMatch(/^trust on mx-other/);
    expect(why['192.0.2.34']).toMatch(/protected/);
    expect(why['192.168.7.7']).toMatch(/QGUARD_SCAN_EXEMPT/);
    expect(why['192.0.2.35']).toMatch(/QGUARD_SCAN_EXEMPT/);
    expect(Object.keys(why).length).toBe(6);
    const denied = (await scanRules()).map((x) => x.cidr);
    for (const ip of ips.slice(0, 6)) expect(denied).not.toContain(`${ip}/32`);
  });

  it('loopback and this machine are protected whatever the exemptions say', async () => {
    const q = newQueue();
    fill(q, '127.0.0.1', 25);
    const r = await scan(q, 'loop', [], { QGUARD_SCAN_EXEMPT: '' });
    expect(r.s!.denied).toEqual([]);
    expect(r.s!.notDenied[0]).toMatchObject({ ip: '127.0.0.1', count: 25 });
    expect(r.s!.notDenied[0].why).toMatch(/protected/);
  });
});

describe('--no-deny and --dry-run', () => {
  it('--no-deny records and counts, creates no rule', async () => {
    const q = newQueue();
    fill(q, '198.51.100.41', 22);
    const r = await scan(q, 'nodeny', ['--no-deny']);
    expect(r.s).toMatchObject({ new: 22, denied: [], overThreshold: 1 });
    expect(r.s!.notDenied).toEqual([{ ip: '198.51.100.41', count: 22, why: '--no-deny' }]);
    expect((await scanRules()).map((x) => x.cidr)).not.toContain('198.51.100.41/32');
  });

  it('--dry-run reports what it would deny and changes nothing', async () => {
    const q = newQueue();
    fill(q, '198.51.100.42', 21);
    const r = await scan(q, 'dry', ['--dry-run']);
    expect(r.s).toMatchObject({ new: 21, denied: ['198.51.100.42'], dryRun: true });
    expect((await scanRules()).map((x) => x.cidr)).not.toContain('198.51.100.42/32');
    const ls = await runCli('qguard', ['queue', 'ls', '--json'], { env: { ...db.env, QGUARD_HOST: 'dry' } });
    expect(JSON.parse(ls.stdout)).toEqual([]);
    // A real run afterwards starts from scratch.
    expect((await scan(q, 'dry')).s).toMatchObject({ new: 21, denied: ['198.51.100.42'] });
  });
});

describe('fleet-wide counting: two mail servers, two queues, one database', () => {
  it('12 + 12 messages on two hosts make 24: denied by the second scan', async () => {
    const a = newQueue();
    const b = newQueue();
    fill(a, '198.51.100.51', 12);
    fill(b, '198.51.100.51', 12);
    // The same queue ids on both hosts are distinct messages.
    const r1 = await scan(a, 'mx1');
    expect(r1.s!.denied).toEqual([]);
    const r2 = await scan(b, 'mx2');
    expect(r2.s!.denied).toEqual(['198.51.100.51']);
    expect((await scanRules()).find((x) => x.cidr === '198.51.100.51/32')!.reason).toBe('24 queued messages in 3d');
    const top = await runCli('qguard', ['queue', 'top', '--json'], { env: { ...db.env, QGUARD_HOST: 'mx1' } });
    const row = (JSON.parse(top.stdout) as { ip: string; count: number; hosts: string[]; decision: string }[]).find((t) => t.ip === '198.51.100.51')!;
    expect(row).toMatchObject({ count: 24, hosts: ['mx1', 'mx2'], decision: 'deny' });
  });

  it('messages that left one queue stop counting', async () => {
    const a = newQueue();
    const b = newQueue();
    fill(a, '198.51.100.52', 12);
    const ids = Array.from({ length: 12 }, () => '');
    for (let i = 0; i < 12; i++) ids[i] = b.add({ mess: networkMessage({ ip: '198.51.100.52', pid: pid++ }), recipients: ['dave@example.net'] });
    await scan(a, 'mx3', ['--no-deny']);
    await scan(b, 'mx4', ['--no-deny']);
    for (const id of ids.slice(0, 10)) b.remove(id);
    await scan(b, 'mx4', ['--no-deny']);
    const r = await scan(a, 'mx3');
    expect(r.s!.denied).toEqual([]);
    expect(r.s!.overThreshold).toBe(0);
  });
});

describe('running it', () => {
  it('an overlapping run exits 0 at once and says nothing', async () => {
    const q = newQueue();
    fill(q, '198.51.100.61', 3);
    const lock = path.join(db.stateDir, 'locks', 'scan-queue.lock');
    fs.mkdirSync(path.dirname(lock), { recursive: true });
    // Its own process group, so that flock and its sleep both go at the end.
    const holder = spawn('flock', ['-x', lock, 'sleep', '20'], { stdio: 'ignore', detached: true });
    try {
      await new Promise((res) => setTimeout(res, 500));
      const r = await scan(q, 'locked');
      expect(r).toMatchObject({ code: 0, stdout: '', stderr: '' });
      const ls = await runCli('qguard', ['queue', 'ls', '--json'], { env: { ...db.env, QGUARD_HOST: 'locked' } });
      expect(JSON.parse(ls.stdout)).toEqual([]);
      // It connects to a database server while it takes the lock: a busy lock still wins.
      const down = await scan(q, 'locked', [], { QGUARD_DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/nothing' });
      expect(down).toMatchObject({ code: 0, stdout: '', stderr: '' });
    } finally {
      process.kill(-holder.pid!, 'SIGTERM');
    }
  });

  it('database unreachable: exit 111', async () => {
    const q = newQueue();
    fill(q, '198.51.100.62', 1);
    const r = await scan(q, 'down', [], { QGUARD_DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/nothing' });
    expect(r.code).toBe(111);
    expect(r.stderr).toMatch(/^scan-queue: fatal: unable to connect to database/);
  });

  it('database lost in the middle of the run: exit 111, nothing half-written', async () => {
    if (db.kind !== 'server') return;
    const c = new pg.Client({ connectionString: db.url! });
    await c.connect();
    try {
      await c.query(`CREATE FUNCTION public.qguard_test_kill() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$`);
      await c.query(`CREATE TRIGGER qguard_test_kill BEFORE INSERT OR UPDATE ON qguard.queue_scans
                     FOR EACH ROW WHEN (NEW.host = 'doomed') EXECUTE FUNCTION public.qguard_test_kill()`);
      const q = newQueue();
      fill(q, '198.51.100.63', 25);
      const r = await scan(q, 'doomed');
      expect(r.code).toBe(111);
      expect(r.stderr).toMatch(/scan-queue: fatal: /);
      const n = await c.query("SELECT count(*)::int AS n FROM qguard.messages WHERE host = 'doomed'");
      expect(n.rows[0].n).toBe(0);
      const rules = await c.query("SELECT count(*)::int AS n FROM qguard.rules WHERE network = '198.51.100.63/32'");
      expect(rules.rows[0].n).toBe(0);
    } finally {
      await c.query('DROP TRIGGER IF EXISTS qguard_test_kill ON qguard.queue_scans').catch(() => {});
      await c.end();
    }
  });
});

describe('the embedded database', () => {
  it('records, counts and denies the same way', async () => {
    const edb = await createTestDb({ kind: 'embedded' });
    try {
      const q = newQueue();
      fill(q, '198.51.100.71', 20);
      q.add({ mess: localMessage(), sender: 'root@mx.example.net' });
      const env = { ...edb.env, QGUARD_QUEUE: q.dir };
      const r = await runCli('scan-queue', ['--json'], { env });
      expect(r.stderr).toBe('');
      expect(JSON.parse(r.stdout)).toMatchObject({ scanned: 21, new: 21, denied: ['198.51.100.71'] });
      const again = await runCli('scan-queue', ['--json'], { env });
      expect(again.stderr).toBe('');
      expect(JSON.parse(again.stdout)).toMatchObject({ scanned: 21, new: 0, denied: [] });
      const ls = await runCli('qguard', ['queue', 'ls', '--kind', 'local', '--json'], { env });
      expect((JSON.parse(ls.stdout) as unknown[]).length).toBe(1);
    } finally {
      await edb.drop();
    }
  });
});

describe('the count is run again only when something it depends on changed', () => {
  type Reused = Summary & { countReused: boolean };
  const run = async (q: QueueBuilder, host: string, extra: Record<string, string> = {}) => {
    const r = await scan(q, host, [], extra);
    expect(r.code).toBe(0);
    return r.s as Reused;
  };

  it('an unchanged fleet reuses the last count; messages on another host, a rule, a setting or ten minutes count again', async () => {
    const mx1 = newQueue();
    const mx2 = newQueue();
    fill(mx1, '198.51.100.61', 20);
    await qguard('ip', 'trust', '198.51.100.61', '--reason', 'partner');
    const a = await run(mx1, 'mx1');
    expect(a).toMatchObject({ countReused: false, overThreshold: 1, denied: [] });
    expect(a.notDenied.map((n) => n.ip)).toEqual(['198.51.100.61']);
    // Nothing changed anywhere: the same result, without counting.
    const b = await run(mx1, 'mx1');
    expect(b).toMatchObject({ countReused: true, overThreshold: 1, denied: [], notDenied: a.notDenied });

    // Another server records messages: its 10 and mx1's 10 of one address make 20.
    fill(mx1, '203.0.113.62', 10);
    expect((await run(mx1, 'mx1')).denied).toEqual([]);
    expect((await run(mx1, 'mx1')).countReused).toBe(true);
    fill(mx2, '203.0.113.62', 10);
    expect((await run(mx2, 'mx2', { QGUARD_THRESHOLD: '100' })).denied).toEqual([]);
    const c = await run(mx1, 'mx1');
    expect(c).toMatchObject({ countReused: false, denied: ['203.0.113.62'] });

    // A rule changes: the same addresses are decided on again, without counting. The partner
    // is trusted no more: denied.
    expect(await run(mx1, 'mx1')).toMatchObject({ countReused: true, denied: [], alreadyDenied: 1 });
    await qguard('ip', 'rm', '198.51.100.61', '--source', 'manual');
    const d = await run(mx1, 'mx1');
    expect(d).toMatchObject({ countReused: true, denied: ['198.51.100.61'], notDenied: [] });
    // Proof that it did not count: messages written behind scan-queue's back are not seen
    // until something is recorded (no mail server writes them so).
    const c1 = await db.open();
    try {
      await c1.query(
        `INSERT INTO qguard.messages (host, queue_id, line1, split, source_ip, state, arrival, kind, size, sig, mess_sig)
         SELECT 'ghost', 900000 + g, 'forged ' || g, 0, '198.51.100.69', 'todo', now(), 'network', 1, 'x', 'x' FROM generate_series(1, 25) g`,
      );
    } finally {
      await c1.close();
    }
    await qguard('ip', 'allow', '192.0.2.200', '--reason', 'a login');
    expect(await run(mx1, 'mx1')).toMatchObject({ countReused: true, denied: [] });
    fill(mx1, '198.51.100.70', 1);
    expect(await run(mx1, 'mx1')).toMatchObject({ countReused: false, denied: ['198.51.100.69'] });

    // A setting changes.
    fill(mx1, '198.51.100.63', 5);
    await run(mx1, 'mx1');
    expect((await run(mx1, 'mx1')).countReused).toBe(true);
    expect(await run(mx1, 'mx1', { QGUARD_THRESHOLD: '5' })).toMatchObject({ countReused: false, denied: ['198.51.100.63'] });

    // Ten minutes: counted again whatever changed.
    await run(mx1, 'mx1');
    expect((await run(mx1, 'mx1')).countReused).toBe(true);
    const c2 = await db.open();
    try {
      await c2.query(`UPDATE qguard.queue_scans SET last_count = jsonb_set(last_count, '{at}', to_jsonb((extract(epoch FROM now()) * 1000 - 600001)::bigint)) WHERE host = 'mx1'`);
    } finally {
      await c2.close();
    }
    expect((await run(mx1, 'mx1')).countReused).toBe(false);
  });

  it("deciding again on a kept count reuses the lists' entries it found while no list's entries changed", async () => {
    const mx = newQueue();
    fill(mx, '198.51.100.80', 20);
    const sql = async (text: string) => {
      const c = await db.open();
      try {
        await c.exec(text);
      } finally {
        await c.close();
      }
    };
    await sql(`INSERT INTO qguard.lists (source, reason) VALUES ('list:kept', 'kept');
               INSERT INTO qguard.list_entries (list_id, network) SELECT id, '198.51.100.80/32' FROM qguard.lists WHERE source = 'list:kept'`);
    expect(await run(mx, 'mx9')).toMatchObject({ countReused: false, denied: [], alreadyDenied: 1 });
    // The entry goes behind qguard's back (no change recorded), then a rule changes: decided
    // again with the entry it found — proof that the entries were not read again.
    await sql(`ALTER TABLE qguard.list_entries DISABLE TRIGGER list_entries_changed;
               DELETE FROM qguard.list_entries WHERE network = '198.51.100.80/32';
               ALTER TABLE qguard.list_entries ENABLE TRIGGER list_entries_changed`);
    await qguard('ip', 'allow', '192.0.2.201', '--reason', 'a login');
    expect(await run(mx, 'mx9')).toMatchObject({ countReused: true, denied: [], alreadyDenied: 1 });
    // A list's entries change (any of them): read again, and the address is no longer listed.
    await sql(`INSERT INTO qguard.list_entries (list_id, network) SELECT id, '198.51.100.81/32' FROM qguard.lists WHERE source = 'list:kept'`);
    expect(await run(mx, 'mx9')).toMatchObject({ countReused: true, denied: ['198.51.100.80'] });
  });

  it('--no-deny keeps a count of its own; --dry-run and QGUARD_COUNT=both always count', async () => {
    const q = newQueue();
    fill(q, '198.51.100.64', 20);
    for (const [args, reused] of [[['--no-deny'], false], [['--no-deny'], true], [['--dry-run'], false], [['--dry-run'], false]] as const) {
      const r = await scan(q, 'mx3', [...args]);
      expect((r.s as Reused).countReused).toBe(reused);
      expect(r.s!.overThreshold).toBe(1);
      expect(r.s!.notDenied).toEqual(args[0] === '--no-deny' ? [{ ip: '198.51.100.64', count: 20, why: '--no-deny' }] : []);
    }
    for (let i = 0; i < 2; i++) expect(((await scan(q, 'mx3', [], { QGUARD_COUNT: 'both' })).s as Reused).countReused).toBe(false);
  });
});
