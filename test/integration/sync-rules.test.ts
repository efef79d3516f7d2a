// sync-rules end to end: the built executable against a real PostgreSQL database, the real
// tcprules and tcprulescheck, files in a temp directory. Every safety case of the issue is one
// test: database unreachable or failing, a broken static file, the deny-key guard, two runs at
// once, kill -9 mid-run, stale temp files, world-readable cdb, rcpthosts never empty, hand
// edits, the unchanged run, expiry, open-relay defaults, free text from the database, the
// firewall failing, --dry-run, --json, --watch.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type TestDb, createTestDb } from '../helpers/db.js';
import { ROOT, runCli } from '../helpers/cli.js';
import { haveTools } from '../helpers/tools.js';
import type { Db } from '../../lib/db/connect.js';

const TOOLS = haveTools('tcprules', 'tcprulescheck', 'flock', 'diff');

let tdb: TestDb;
let db: Db;
let dir: string;
let env: Record<string, string>;
let log: string;

const file = (name: string) => path.join(dir, name);
const sha = (f: string) => crypto.createHash('sha1').update(fs.readFileSync(f)).digest('hex');

/** What a file is right now: content, inode, times, mode (or null when missing). */
function snap(f: string): string | null {
  if (!fs.existsSync(f)) return null;
  const st = fs.statSync(f);
  return `${sha(f)} ${st.ino} ${st.mtimeMs} ${st.mode.toString(8)}`;
}
const snapAll = () => ['tcp.smtp', 'tcp.smtp.cdb', 'control/rcpthosts', 'control/morercpthosts'].map((n) => snap(file(n)));

/** The real tcprulescheck's answer for an address: deny | relay | allow. */
function check(ip: string, cdb = file('tcp.smtp.cdb')): string {
  const out = execFileSync('tcprulescheck', [cdb], { env: { PATH: process.env.PATH, TCPREMOTEIP: ip }, encoding: 'utf8' });
  if (out.includes('deny connection')) return 'deny';
  return /RELAYCLIENT=/.test(out) ? 'relay' : 'allow';
}

const tcprulesCalls = () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter(Boolean).length : 0);

const sync = (args: string[] = [], extra: Record<string, string> = {}) => runCli('sync-rules', args, { env: { ...env, ...extra } });

async function addRules(rows: { cidr: string; action: string; source?: string; reason?: string; who?: string; host?: string | null; expires?: string | null }[]) {
  await db.query(
    `INSERT INTO qguard.rules (network, action, source, reason, who, host, expires_at)
     SELECT n, a, s, r, w, h, e::timestamptz
       FROM unnest($1::cidr[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) AS t(n, a, s, r, w, h, e)`,
    [
      rows.map((r) => r.cidr),
      rows.map((r) => r.action),
      rows.map((r) => r.source ?? 'manual'),
      rows.map((r) => r.reason ?? null),
      rows.map((r) => r.who ?? null),
      rows.map((r) => r.host ?? null),
      rows.map((r) => r.expires ?? null),
    ],
  );
}

function writeScript(name: string, body: string): string {
  const p = file(name);
  fs.writeFileSync(p, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return p;
}

beforeAll(async () => {
  if (!TOOLS) return;
  tdb = await createTestDb();
  db = await tdb.open();
});

afterAll(async () => {
  await db?.close();
  await tdb?.drop();
});

beforeEach(async () => {
  if (!TOOLS) return;
  await db.exec('DELETE FROM qguard.rules; DELETE FROM qguard.domains;');
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-sync-'));
  fs.mkdirSync(file('control'));
  log = file('tcprules.log');
  // A stand-in that records each call, then runs the real tcprules.
  const tcprules = writeScript('tcprules', `echo "$*" >> '${log}'\nexec tcprules "$@"`);
  env = {
    ...tdb.env,
    QGUARD_RULES: file('tcp.smtp'),
    QGUARD_RULES_CDB: file('tcp.smtp.cdb'),
    QGUARD_RULES_STATIC: file('tcp.smtp.static'),
    QGUARD_CONTROL: file('control'),
    QGUARD_QMAIL_NEWMRH: file('no-qmail-newmrh'),
    QGUARD_TCPRULES: tcprules,
  };
});

afterEach(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!TOOLS)('sync-rules', () => {
  it('publishes the decision: keys, relay inside deny, IPv6 and other hosts left out, world-readable cdb, quiet', async () => {
    await addRules([
      { cidr: '203.0.113.0/24', action: 'deny' },
      { cidr: '203.0.113.5/32', action: 'relay' },
      { cidr: '198.51.100.0/22', action: 'trust' },
      { cidr: '198.51.101.7/32', action: 'deny' },
      { cidr: '2001:db8::/32', action: 'deny' },
      { cidr: '192.0.2.99/32', action: 'deny', host: 'other-host' },
      { cidr: '192.0.2.98/32', action: 'deny', host: 'test-host' },
    ]);
    const r = await sync();
    expect(r).toMatchObject({ code: 0, stdout: '', stderr: '' });
    const text = fs.readFileSync(file('tcp.smtp'), 'utf8');
    expect(text).toContain('\n203.0.113.:deny\n');
    expect(text).toContain('\n203.0.113.5:allow,RELAYCLIENT=""\n');
    // trust renders like the default here (`allow`), so it needs no key of its own
    expect(text).not.toContain('198.51.100');
    expect(text).not.toContain('2001');
    expect(text).not.toContain('192.0.2.99');
    expect(text.endsWith('\n:allow\n')).toBe(true);
    expect(check('203.0.113.5')).toBe('relay');
    expect(check('203.0.113.6')).toBe('deny');
    expect(check('198.51.101.7')).toBe('deny');
    expect(check('198.51.101.8')).toBe('allow');
    expect(check('192.0.2.98')).toBe('deny');
    expect(check('192.0.2.99')).toBe('allow');
    expect(check('8.8.8.8')).toBe('allow');
    expect(fs.statSync(file('tcp.smtp.cdb')).mode & 0o777).toBe(0o644);
    expect(fs.readdirSync(dir).filter((n) => n.includes('qguard-'))).toEqual([]);
  });

  it('--json reports the counts, the firewall and whether anything changed', async () => {
    await addRules([
      { cidr: '203.0.113.0/24', action: 'deny' },
      { cidr: '2001:db8::/32', action: 'deny' },
      { cidr: '198.51.100.1/32', action: 'relay' },
    ]);
    const first = await sync(['--json']);
    expect(first.code).toBe(0);
    const j = JSON.parse(first.stdout);
    expect(j).toMatchObject({
      changed: true,
      rules: { relay: 1, trust: 0, deny: 2 },
      keys: 2,
      denyKeys: 1,
      rcpthosts: null,
      firewall: { backend: 'none', changed: false },
      expired: 0,
    });
    expect(typeof j.durationMs).toBe('number');
    const second = JSON.parse((await sync(['--json'])).stdout);
    expect(second).toMatchObject({ changed: false, rules: { relay: 1, trust: 0, deny: 2 }, keys: 2, wrote: [] });
    // Each run is recorded for `qguard status`, with its summary.
    const runs = await db.query<{ ok: boolean; changed: string }>(
      "SELECT ok, summary->>'changed' AS changed FROM qguard.job_runs WHERE job = 'sync-rules' AND host = 'test-host' ORDER BY id DESC LIMIT 2",
    );
    expect(runs.rows).toEqual([
      { ok: true, changed: 'false' },
      { ok: true, changed: 'true' },
    ]);
  });

  it('an unchanged run writes nothing and runs no tcprules', async () => {
    await addRules([{ cidr: '203.0.113.0/24', action: 'deny' }]);
    expect((await sync()).code).toBe(0);
    expect(tcprulesCalls()).toBe(1);
    const before = snapAll();
    const again = await sync(['--verbose']);
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/unchanged/);
    expect(tcprulesCalls()).toBe(1);
    expect(snapAll()).toEqual(before);
    // A change in the database that does not change the text (a new reason) costs no tcprules either.
    await db.query("UPDATE qguard.rules SET reason = 'other words'");
    expect((await sync()).code).toBe(0);
    expect(tcprulesCalls()).toBe(1);
    expect(snapAll()).toEqual(before);
  });

  it('database unreachable: exit 111, every file untouched', async () => {
    await addRules([{ cidr: '203.0.113.0/24', action: 'deny' }]);
    expect((await sync()).code).toBe(0);
    const before = snapAll();
    const r = await sync([], { QGUARD_DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/nowhere' });
    expect(r.code).toBe(111);
    expect(r.stderr).toMatch(/^sync-rules: fatal: unable to connect to database/);
    expect(snapAll()).toEqual(before);
  });

  it('a query that fails: exit 111, every file untouched', async () => {
    await addRules([{ cidr: '203.0.113.0/24', action: 'deny' }]);
    expect((await sync()).code).toBe(0);
    const before = snapAll();
    await addRules([{ cidr: '198.51.100.0/24', action: 'deny' }]);
    // Both ways of reading the rules fail: in full (the view) and patched (the changes).
    await db.exec('ALTER VIEW qguard.live_rules RENAME TO live_rules_gone; ALTER TABLE qguard.rule_changes RENAME TO rule_changes_gone');
    try {
      const r = await sync();
      expect(r.code).toBe(111);
      expect(r.stderr).toMatch(/rule_changes/);
    } finally {
      await db.exec('ALTER VIEW qguard.live_rules_gone RENAME TO live_rules; ALTER TABLE qguard.rule_changes_gone RENAME TO rule_changes');
    }
    expect(snapAll()).toEqual(before);
    expect(tcprulesCalls()).toBe(1);
  });

  it('a broken static file stops the run: exit 100 naming file and line, nothing written', async () => {
    await addRules([{ cidr: '203.0.113.0/24', action: 'deny' }]);
    fs.writeFileSync(file('tcp.smtp.static'), '127.:allow,RELAYCLIENT=""\n');
    expect((await sync()).code).toBe(0);
    const before = snapAll();
    for (const bad of [' 10.0.0.1:allow\n', '10.0.0.1:Allow\n', '10.0.0.1:allow\r\n', ':allow,RELAYCLIENT=""\n', '10.0.0.1:allow,X="y\n']) {
      fs.writeFileSync(file('tcp.smtp.static'), `# ok\n127.:allow,RELAYCLIENT=""\n${bad}`);
      const r = await sync();
      expect(r.code).toBe(100);
      expect(r.stderr).toContain(`${file('tcp.smtp.static')}: line 3: `);
      expect(snapAll()).toEqual(before);
    }
    expect(tcprulesCalls()).toBe(1);
  });

  it('the static file is copied verbatim first and its keys count', async () => {
    const stat = '# our hosts\n127.:allow,RELAYCLIENT=""\n:allow,QMAILQUEUE="/var/qmail/bin/simscan"\n198.51.100.:deny\n';
    fs.writeFileSync(file('tcp.smtp.static'), stat);
    await addRules([
      { cidr: '198.51.0.0/16', action: 'trust' },
      { cidr: '198.51.100.128/25', action: 'relay' },
      { cidr: '127.0.0.0/8', action: 'deny' }, // protected: never denied
    ]);
    expect((await sync()).code).toBe(0);
    const text = fs.readFileSync(file('tcp.smtp'), 'utf8');
    expect(text).toContain(`\n${stat}`);
    expect(text).not.toMatch(/\n:allow\n/); // the static file's default line is the default
    expect(check('127.0.0.1')).toBe('relay');
    expect(check('198.51.100.1')).toBe('deny'); // the static /24 beats the /16 trust
    expect(check('198.51.100.200')).toBe('relay'); // the /25 relay beats the static /24
    expect(check('198.51.7.7')).toBe('allow');
    const out = execFileSync('tcprulescheck', [file('tcp.smtp.cdb')], { env: { TCPREMOTEIP: '8.8.8.8' }, encoding: 'utf8' });
    expect(out).toContain('QMAILQUEUE=/var/qmail/bin/simscan');
  });

  it('refuses a default rule that relays (open relay): exit 100, nothing written', async () => {
    await addRules([{ cidr: '203.0.113.0/24', action: 'deny' }]);
    const r = await sync([], { QGUARD_DEFAULT_RULE: ':allow,RELAYCLIENT=""' });
    expect(r.code).toBe(100);
    expect(r.stderr).toMatch(/QGUARD_DEFAULT_RULE: RELAYCLIENT on the default rule .*open relay/);
    expect(snapAll()).toEqual([null, null, null, null]);
    const t = await sync([], { QGUARD_TRUST_ENV: 'RELAYCLIENT=""' });
    expect(t.code).toBe(100);
    expect(tcprulesCalls()).toBe(0);
  });

  it('puts no free text from the database into the file', async () => {
    const evil = 'x\n:allow,RELAYCLIENT=""\n# "quoted" \'single\' 1.2.3.4:allow';
    await addRules([
      { cidr: '203.0.113.0/24', action: 'deny', reason: evil, who: evil },
      { cidr: '198.51.100.9/32', action: 'relay', reason: evil, who: 'alice\n0.:allow,RELAYCLIENT=""' },
    ]);
    expect((await sync()).code).toBe(0);
    const text = fs.readFileSync(file('tcp.smtp'), 'utf8');
    expect(text).not.toContain('quoted');
    expect(text).not.toContain('alice');
    expect(text).not.toContain('1.2.3.4');
    expect(text.split('\n').filter((l) => l !== '' && !l.startsWith('#'))).toEqual([
      '198.51.100.9:allow,RELAYCLIENT=""',
      '203.0.113.:deny',
      ':allow',
    ]);
    expect(check('1.2.3.4')).toBe('allow');
    expect(check('0.1.2.3')).toBe('allow');
  });

  it('refuses to drop more than half of the published deny keys (and more than 100) unless --force', async () => {
    const rows = Array.from({ length: 300 }, (_, i) => ({ cidr: `203.0.${113 + (i >> 8)}.${i & 255}/32`, action: 'deny' }));
    await addRules(rows);
    expect((await sync()).code).toBe(0);
    const before = snapAll();
    await db.query("DELETE FROM qguard.rules WHERE network <<= '203.0.113.0/24'");
    const r = await sync();
    expect(r.code).toBe(100);
    expect(r.stderr).toMatch(/drop 256 of the 300 deny keys .*--force/);
    expect(snapAll()).toEqual(before);
    expect(check('203.0.113.7')).toBe('deny');
    const dry = await sync(['--dry-run']);
    expect(dry.code).toBe(100);
    const f = await sync(['--force']);
    expect(f.code).toBe(0);
    expect(check('203.0.113.7')).toBe('allow');
    expect(check('203.0.114.7')).toBe('deny');
    // 100 or fewer dropped is not refused even when that is more than half.
    await db.query('DELETE FROM qguard.rules');
    expect((await sync()).code).toBe(0);
  });

  it('two runs at once: one works, the other exits 0 quietly', async () => {
    await addRules([{ cidr: '203.0.113.0/24', action: 'deny' }]);
    const slow = writeScript('slow-tcprules', `echo "$*" >> '${log}'\nsleep 3\nexec tcprules "$@"`);
    const [a, b] = await Promise.all([sync([], { QGUARD_TCPRULES: slow }), sync([], { QGUARD_TCPRULES: slow })]);
    expect([a.code, b.code]).toEqual([0, 0]);
    expect(a.stdout + a.stderr + b.stdout + b.stderr).toBe('');
    expect(tcprulesCalls()).toBe(1);
    expect(check('203.0.113.1')).toBe('deny');
    // And while someone else holds the lock (a --watch, a stuck run): quiet, nothing touched.
    await addRules([{ cidr: '198.51.100.0/24', action: 'deny' }]);
    const lockFile = path.join(tdb.stateDir, 'locks', 'sync-rules.lock');
    const holder = spawn('flock', ['-x', lockFile, 'sleep', '4'], { stdio: 'ignore' });
    const held = new Promise((r) => holder.on('exit', r));
    try {
      await new Promise((r) => setTimeout(r, 500));
      const before = snapAll();
      const r = await sync(['--verbose']);
      expect(r.code).toBe(0);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/another sync-rules is running/);
      expect(snapAll()).toEqual(before);
    } finally {
      await held;
    }
    // Once it is gone, the next run does the work.
    expect((await sync()).code).toBe(0);
    expect(check('198.51.100.1')).toBe('deny');
  });

  it('a new cdb that answers wrong, or a tcprulescheck that fails, is not installed: exit 111, the old files stay', async () => {
    await addRules([{ cidr: '203.0.113.0/24', action: 'deny' }]);
    expect((await sync()).code).toBe(0);
    await addRules([{ cidr: '198.51.100.0/24', action: 'relay' }]);
    const before = snapAll();
    // A checker that says "allow" (no RELAYCLIENT) for every address: the samples of the relay and deny keys catch it.
    const liar = writeScript('lying-tcprulescheck', 'echo default:\necho allow connection');
    const r = await sync([], { QGUARD_TCPRULESCHECK: liar });
    expect(r.code).toBe(111);
    expect(r.stderr).toMatch(/answers "allow connection" for [\d.]+ instead of "(deny connection|set environment variable RELAYCLIENT=; allow connection)": not installed, the old one stays/);
    expect(snapAll()).toEqual(before);
    expect(check('198.51.100.1')).toBe('allow');
    // One that fails on the third address it is asked about: its own words, nothing installed.
    const count = file('checks');
    const failing = writeScript(
      'failing-tcprulescheck',
      `echo x >> '${count}'\nif [ "$(wc -l < '${count}')" -ge 3 ]; then echo "cdb read error" >&2; exit 1; fi\nexec tcprulescheck "$@"`,
    );
    const f = await sync([], { QGUARD_TCPRULESCHECK: failing });
    expect(f.code).toBe(111);
    expect(f.stderr).toMatch(/failing-tcprulescheck could not check .*exit 1.*cdb read error/);
    expect(snapAll()).toEqual(before);
    expect(fs.readdirSync(dir).filter((n) => n.includes('qguard-'))).toEqual([]);
    // The real one: installed.
    expect((await sync()).code).toBe(0);
    expect(check('198.51.100.1')).toBe('relay');
    expect(check('203.0.113.1')).toBe('deny');
  });

  it('kill -9 at any moment leaves the old cdb or the new one, never a broken or missing one', async () => {
    // 60,000 scattered /32 denies: a run that lasts long enough to be killed in every phase.
    await db.query(
      `INSERT INTO qguard.rules (network, action) SELECT DISTINCT ('10.0.0.0'::inet + ((i::bigint * 7919) % 16777216))::cidr, 'deny'
         FROM generate_series(1, 60000) i WHERE ('10.0.0.0'::inet + ((i::bigint * 7919) % 16777216)) NOT IN ('10.0.0.7', '10.0.0.8')`,
    );
    await addRules([{ cidr: '10.0.0.0/24', action: 'deny' }]);
    expect((await sync()).code).toBe(0);
    const cdbA = sha(file('tcp.smtp.cdb'));
    const textA = sha(file('tcp.smtp'));
    await addRules([{ cidr: '10.0.0.7/32', action: 'relay' }]);
    expect((await sync()).code).toBe(0);
    const cdbB = sha(file('tcp.smtp.cdb'));
    const textB = sha(file('tcp.smtp'));
    expect(cdbB).not.toBe(cdbA);
    let flip = false;
    const outcomes: string[] = [];
    for (const delay of [150, 300, 450, 600, 800, 1000, 1300, 1700]) {
      // Ask for the other policy than the one on disk, so every run has something to write.
      flip = sha(file('tcp.smtp.cdb')) === cdbB;
      await db.query("DELETE FROM qguard.rules WHERE action = 'relay'");
      if (!flip) await addRules([{ cidr: '10.0.0.7/32', action: 'relay' }]);
      const child = spawn(process.execPath, [path.join(ROOT, 'dist/bin/sync-rules.js')], {
        env: { ...process.env, ...env },
        stdio: 'ignore',
      });
      const exited = new Promise((r) => child.on('exit', r));
      await new Promise((r) => setTimeout(r, delay));
      child.kill('SIGKILL');
      await exited;
      await new Promise((r) => setTimeout(r, 300)); // an orphaned tcprules finishes into its temp name
      const now = sha(file('tcp.smtp.cdb'));
      expect([cdbA, cdbB]).toContain(now);
      outcomes.push(now === (flip ? cdbA : cdbB) ? 'new' : 'old');
      expect([textA, textB]).toContain(sha(file('tcp.smtp')));
      expect(['deny', 'relay']).toContain(check('10.0.0.7'));
      expect(check('10.0.0.8')).toBe('deny');
    }
    // Some kills landed before the new cdb went live (else this test proves nothing).
    process.stderr.write(`kill -9 outcomes by delay: ${outcomes.join(' ')}\n`);
    expect(outcomes).toContain('old');
    // The next run completes, cleans up what the killed ones left, and warns about nothing.
    const r = await sync();
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(sha(file('tcp.smtp.cdb'))).toBe(flip ? cdbA : cdbB);
    expect(fs.readdirSync(dir).filter((n) => n.includes('qguard-'))).toEqual([]);
  });

  it('a stale 0600 temp file and a 077 umask do not give an unreadable cdb; a chmod 600 cdb is repaired', async () => {
    await addRules([{ cidr: '203.0.113.0/24', action: 'deny' }]);
    for (const stale of ['.tcp.smtp.cdb.qguard-tmp.1.deadbeef', '.tcp.smtp.cdb.qguard-new.1.deadbeef', '.tcp.smtp.qguard-tmp.1.0']) {
      fs.writeFileSync(file(stale), 'junk', { mode: 0o600 });
    }
    const node = process.execPath;
    const r = execFileSync('/bin/sh', ['-c', 'umask 077 && exec "$@"', 'sh', node, path.join(ROOT, 'dist/bin/sync-rules.js')], {
      env: { ...process.env, ...env },
      encoding: 'utf8',
    });
    expect(r).toBe('');
    expect(fs.statSync(file('tcp.smtp.cdb')).mode & 0o777).toBe(0o644);
    expect(fs.statSync(file('tcp.smtp')).mode & 0o777).toBe(0o644);
    expect(fs.readdirSync(dir).filter((n) => n.includes('qguard-'))).toEqual([]);
    fs.chmodSync(file('tcp.smtp.cdb'), 0o600);
    const again = await sync();
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/tcp\.smtp\.cdb was changed since the last run/);
    expect(fs.statSync(file('tcp.smtp.cdb')).mode & 0o444).toBe(0o444);
  });

  it('a hand edit is detected, regenerated and warned about', async () => {
    await addRules([{ cidr: '203.0.113.0/24', action: 'deny' }]);
    expect((await sync()).code).toBe(0);
    const good = fs.readFileSync(file('tcp.smtp'), 'utf8');
    fs.appendFileSync(file('tcp.smtp'), '1.2.3.4:allow,RELAYCLIENT=""\n');
    execFileSync('tcprules', [file('tcp.smtp.cdb'), file('tcp.smtp.tmp')], { input: fs.readFileSync(file('tcp.smtp')) });
    expect(check('1.2.3.4')).toBe('relay');
    const r = await sync();
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/warning: .*tcp\.smtp was changed since the last run \(by hand\?\): regenerated \(hand-written rules belong in .*tcp\.smtp\.static\)/);
    expect(fs.readFileSync(file('tcp.smtp'), 'utf8')).toBe(good);
    expect(check('1.2.3.4')).toBe('allow');
    // Touching the file without changing it is not an edit.
    const t = new Date(Date.now() + 5000);
    fs.utimesSync(file('tcp.smtp'), t, t);
    const quiet = await sync();
    expect(quiet).toMatchObject({ code: 0, stderr: '' });
  });

  it('the first run keeps a copy of a tcp.smtp that qguard did not write', async () => {
    fs.writeFileSync(file('tcp.smtp'), '127.:allow,RELAYCLIENT=""\n:allow\n');
    const r = await sync();
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/was not written by qguard: kept a copy in .*tcp\.smtp\.before-qguard/);
    expect(fs.readFileSync(file('tcp.smtp.before-qguard'), 'utf8')).toBe('127.:allow,RELAYCLIENT=""\n:allow\n');
  });

  it('an expired rule is deleted (audited) and leaves the files in the run that passes its expiry', async () => {
    await addRules([
      { cidr: '203.0.113.0/24', action: 'deny' },
      { cidr: '198.51.100.7/32', action: 'relay', expires: new Date(Date.now() + 2500).toISOString() },
    ]);
    expect((await sync()).code).toBe(0);
    expect(check('198.51.100.7')).toBe('relay');
    await new Promise((r) => setTimeout(r, 3000));
    const r = JSON.parse((await sync(['--json'])).stdout);
    expect(r).toMatchObject({ changed: true, expired: 1, rules: { relay: 0, deny: 1 } });
    expect(check('198.51.100.7')).toBe('allow');
    const audit = await db.query<{ op: string }>("SELECT op FROM qguard.audit WHERE network = '198.51.100.7/32' ORDER BY id");
    expect(audit.rows.map((x) => x.op)).toEqual(['insert', 'expire']);
  });

  it('--dry-run prints the unified diff and changes nothing', async () => {
    await addRules([{ cidr: '203.0.113.0/24', action: 'deny' }]);
    expect((await sync()).code).toBe(0);
    const before = snapAll();
    await addRules([{ cidr: '198.51.100.9/32', action: 'relay' }]);
    const r = await sync(['--dry-run']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^--- .*tcp\.smtp \(now\)\n\+\+\+ .*tcp\.smtp \(new\)\n/);
    expect(r.stdout).toContain('\n+198.51.100.9:allow,RELAYCLIENT=""\n');
    expect(snapAll()).toEqual(before);
    expect(tcprulesCalls()).toBe(1);
    const j = JSON.parse((await sync(['--dry-run', '--json'])).stdout);
    expect(j).toMatchObject({ changed: true, dryRun: true, rules: { relay: 1, deny: 1 } });
    // The real run afterwards still sees the change.
    expect((await sync()).code).toBe(0);
    expect(check('198.51.100.9')).toBe('relay');
  });

  it('rcpthosts: written from the domains, never empty, never deleted; morercpthosts through qmail-newmrh', async () => {
    const rc = { QGUARD_MANAGE_RCPTHOSTS: '1' };
    fs.writeFileSync(file('control/rcpthosts'), 'old.example\n');
    const none = await sync([], rc);
    expect(none.code).toBe(0);
    expect(none.stderr).toMatch(/no domains .*rcpthosts left as it is/);
    expect(fs.readFileSync(file('control/rcpthosts'), 'utf8')).toBe('old.example\n');
    // Forget the last run (as on a first run), so the existing rcpthosts is someone else's.
    const id = crypto.createHash('sha1').update(`${file('tcp.smtp')}\0${file('tcp.smtp.cdb')}\0${file('control')}`).digest('hex').slice(0, 12);
    fs.rmSync(path.join(tdb.stateDir, `sync-rules-${id}.state`));
    await db.query("INSERT INTO qguard.domains (name, host) VALUES ('b.example', NULL), ('a.example', NULL), ('c.example', 'other-host')");
    const first = await runCli('sync-rules', ['--json'], { env: { ...env, ...rc } });
    expect(first.stderr).toMatch(/rcpthosts was not written by qguard: kept a copy in .*rcpthosts\.before-qguard/);
    expect(fs.readFileSync(file('control/rcpthosts.before-qguard'), 'utf8')).toBe('old.example\n');
    const r = JSON.parse(first.stdout);
    expect(r.rcpthosts).toBe(2);
    expect(fs.readFileSync(file('control/rcpthosts'), 'utf8')).toBe('a.example\nb.example\n');
    expect(fs.statSync(file('control/rcpthosts')).mode & 0o444).toBe(0o444);
    await db.query('DELETE FROM qguard.domains');
    const gone = await sync([], rc);
    expect(gone.code).toBe(0);
    expect(fs.readFileSync(file('control/rcpthosts'), 'utf8')).toBe('a.example\nb.example\n');
    // More than 50: the rest goes to morercpthosts, compiled by qmail-newmrh.
    const newmrh = writeScript('qmail-newmrh', `echo ran >> '${file('newmrh.log')}'`);
    await db.query("INSERT INTO qguard.domains (name) SELECT 'd' || lpad(i::text, 2, '0') || '.example' FROM generate_series(1, 60) i");
    expect((await sync([], { ...rc, QGUARD_QMAIL_NEWMRH: newmrh })).code).toBe(0);
    expect(fs.readFileSync(file('control/rcpthosts'), 'utf8').trim().split('\n')).toHaveLength(50);
    expect(fs.readFileSync(file('control/morercpthosts'), 'utf8').trim().split('\n')).toEqual(
      Array.from({ length: 10 }, (_, i) => `d${51 + i}.example`),
    );
    expect(fs.readFileSync(file('newmrh.log'), 'utf8')).toBe('ran\n');
  });

  it('a firewall failure does not stop the files: they are written, then exit 111 with its message', async () => {
    await addRules([{ cidr: '203.0.113.0/24', action: 'deny' }]);
    const bin = file('fakebin');
    fs.mkdirSync(bin);
    for (const p of ['nft', 'ipset', 'iptables', 'ip6tables']) {
      fs.writeFileSync(path.join(bin, p), '#!/bin/sh\necho "simulated firewall failure" >&2\nexit 1\n', { mode: 0o755 });
    }
    const r = await sync([], { QGUARD_FIREWALL: 'nft', PATH: `${bin}:${process.env.PATH}` });
    expect(r.code).toBe(111);
    expect(r.stderr).toMatch(/sync-rules: fatal: .*simulated firewall failure/);
    expect(check('203.0.113.1')).toBe('deny');
    // The next run retries the firewall even though the files are unchanged.
    const again = await sync([], { QGUARD_FIREWALL: 'nft', PATH: `${bin}:${process.env.PATH}` });
    expect(again.code).toBe(111);
    expect(tcprulesCalls()).toBe(1);
  });

  it('--watch applies a change within about a second, and stops on SIGTERM', async () => {
    await addRules([{ cidr: '203.0.113.0/24', action: 'deny' }]);
    const runs = async () =>
      Number((await db.query<{ n: number }>("SELECT count(*) AS n FROM qguard.job_runs WHERE job = 'sync-rules' AND ok")).rows[0].n);
    const runsBefore = await runs();
    const child = spawn(process.execPath, [path.join(ROOT, 'dist/bin/sync-rules.js'), '--watch'], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const waitFor = async (pred: () => boolean, ms: number) => {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        if (pred()) return true;
        await new Promise((r) => setTimeout(r, 50));
      }
      return pred();
    };
    const has = (s: string) => fs.existsSync(file('tcp.smtp')) && fs.readFileSync(file('tcp.smtp'), 'utf8').includes(s);
    try {
      expect(await waitFor(() => has('203.0.113.:deny'), 20_000), `first publish; stderr: ${stderr}`).toBe(true);
      // While it runs, cron's runs exit quietly.
      const cron = await sync();
      expect(cron).toMatchObject({ code: 0, stdout: '', stderr: '' });
      const t0 = Date.now();
      await db.query("SELECT qguard.allow_login('198.51.100.23', 'alice', interval '1 hour')");
      expect(await waitFor(() => has('198.51.100.23:allow,RELAYCLIENT=""'), 10_000), `login published; stderr: ${stderr}`).toBe(true);
      const took = Date.now() - t0;
      expect(check('198.51.100.23')).toBe('relay');
      // About a second; generous for a shared, loaded test machine.
      expect(took, `applied ${took} ms after the login`).toBeLessThan(5000);
      // Every pass is in the job records while it runs, so `qguard status` sees it working.
      expect(await runs()).toBeGreaterThanOrEqual(runsBefore + 2);
    } finally {
      child.kill('SIGTERM');
    }
    const code = await new Promise((r) => child.on('exit', (c) => r(c)));
    expect(code, stderr).toBe(0);
    expect(stderr).toBe('');
  });
});
