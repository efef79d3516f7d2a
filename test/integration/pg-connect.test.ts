// Connection settings mean what they mean to psql. Every executable under cron's bare
// environment with `postgresql:///DB` (the local socket, the OS user); the same inside a
// network namespace with only loopback, where TCP cannot reach the server and only the
// socket can; PG* variables; and, against a second, real PostgreSQL server of our own that
// asks for passwords (scram-sha-256, socket in /tmp on a port of its own): PGPASSWORD,
// .pgpass, a group-readable .pgpass ignored with a warning, a wrong password — and the
// password never in anything printed. Wrong user or database: exit 111 naming what was tried.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestDb, createTestDb, serverAvailable } from '../helpers/db.js';
import { ROOT } from '../helpers/cli.js';
import { IN_CI, haveRoot, haveTools } from '../helpers/tools.js';

const PG_BIN = '/usr/lib/postgresql/15/bin';
const OK =
  haveTools('ip', 'tcprules', 'flock') &&
  haveRoot() &&
  (fs.existsSync(`${PG_BIN}/initdb`) || (IN_CI ? (() => { throw new Error(`${PG_BIN}/initdb missing in CI`); })() : false));

let tdb: TestDb;
let dbName: string;
let dir: string;
const NS = `qgpg-${process.pid}`;

/** cron's environment on Debian: SHELL, LOGNAME, HOME and a PATH; nothing else. */
function cronEnv(extra: Record<string, string>): string[] {
  const env = {
    PATH: '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin',
    HOME: '/root',
    LOGNAME: 'root',
    SHELL: '/bin/sh',
    QGUARD_CONFIG: '/dev/null',
    QGUARD_STATE_DIR: path.join(dir, 'state'),
    QGUARD_HOST: 'test-host',
    QGUARD_QUEUE: path.join(dir, 'queue'),
    QGUARD_CONTROL: path.join(dir, 'control'),
    QGUARD_RULES: path.join(dir, 'tcp.smtp'),
    QGUARD_RULES_CDB: path.join(dir, 'tcp.smtp.cdb'),
    QGUARD_RULES_STATIC: path.join(dir, 'tcp.smtp.static'),
    QGUARD_QMAIL_STOP: '/bin/true',
    QGUARD_QMAIL_START: '/bin/true',
    ...extra,
  };
  return Object.entries(env).map(([k, v]) => `${k}=${v}`);
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a built executable with exactly this environment (env -i), optionally in the namespace. */
async function run(bin: string, args: string[], env: string[], opts: { ns?: boolean; input?: string } = {}): Promise<Run> {
  const argv = ['-i', ...env, process.execPath, path.join(ROOT, 'dist/bin', `${bin}.js`), ...args];
  const r = opts.ns
    ? await execa('ip', ['netns', 'exec', NS, 'env', ...argv], { reject: false, input: opts.input ?? '' })
    : await execa('env', argv, { reject: false, input: opts.input ?? '' });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** One harmless real run of each executable. */
const JOBS: [string, string[], string?][] = [
  ['qguard', ['db', 'status']],
  ['qguard', ['ip', 'ls']],
  ['sync-rules', []],
  ['scan-queue', []],
  ['purge-queue', ['--dry-run']],
  ['import-spamlist', ['--source', 'cronlist', '--dry-run'], '203.0.113.9\n'],
];

describe.skipIf(!OK)('connecting the libpq way', () => {
  beforeAll(async () => {
    if (!(await serverAvailable())) throw new Error('these tests need the local PostgreSQL server');
    tdb = await createTestDb({ kind: 'server' });
    dbName = new URL(tdb.url!).pathname.slice(1);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-pgconn-'));
    fs.mkdirSync(path.join(dir, 'control'));
    fs.writeFileSync(path.join(dir, 'tcp.smtp.static'), '');
    // An empty queue in qmail's layout.
    for (const d of ['mess', 'info', 'local', 'remote']) for (let i = 0; i < 23; i++) fs.mkdirSync(path.join(dir, 'queue', d, String(i)), { recursive: true });
    for (const d of ['todo', 'intd', 'bounce', 'lock', 'pid']) fs.mkdirSync(path.join(dir, 'queue', d), { recursive: true });
    fs.writeFileSync(path.join(dir, 'queue', 'lock', 'sendmutex'), '');
    await execa('ip', ['netns', 'add', NS]);
    await execa('ip', ['netns', 'exec', NS, 'ip', 'link', 'set', 'lo', 'up']);
  });
  afterAll(async () => {
    await execa('ip', ['netns', 'delete', NS], { reject: false });
    await tdb?.drop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('every executable under cron with postgresql:///DB: the socket and the OS user', async () => {
    const env = cronEnv({ QGUARD_DATABASE_URL: `postgresql:///${dbName}` });
    for (const [bin, args, input] of JOBS) {
      const r = await run(bin, args, env, { input });
      expect({ bin, args, code: r.code, stderr: r.stderr }).toEqual({ bin, args, code: 0, stderr: '' });
    }
    const st = await run('qguard', ['db', 'status'], env);
    expect(st.stdout).toContain(`socket /var/run/postgresql/.s.PGSQL.5432, user root, database ${dbName}`);
    // The jobs really ran against that database: their runs are recorded.
    const db = await tdb.open();
    try {
      const jobs = await db.query<{ job: string }>('SELECT DISTINCT job FROM qguard.job_runs ORDER BY job');
      expect(jobs.rows.map((r) => r.job)).toEqual(expect.arrayContaining(['scan-queue', 'sync-rules']));
    } finally {
      await db.close();
    }
  });

  it('inside a namespace with only loopback: the socket works, TCP cannot', async () => {
    const env = cronEnv({ QGUARD_DATABASE_URL: `postgresql:///${dbName}` });
    for (const [bin, args, input] of JOBS) {
      const r = await run(bin, args, env, { ns: true, input });
      expect({ bin, args, code: r.code, stderr: r.stderr }).toEqual({ bin, args, code: 0, stderr: '' });
    }
    const tcp = await run('qguard', ['db', 'status'], cronEnv({ QGUARD_DATABASE_URL: `postgresql://root@127.0.0.1/${dbName}` }), { ns: true });
    expect(tcp.code).toBe(111);
    expect(tcp.stderr).toContain(`tried host 127.0.0.1 port 5432, user root, database ${dbName}`);
  });

  it('PG* variables alone name the server', async () => {
    const r = await run('qguard', ['db', 'status', '--json'], cronEnv({ PGHOST: '/var/run/postgresql', PGDATABASE: dbName, PGUSER: 'postgres' }));
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout) as { database: string; location: string };
    expect(s.database).toBe('server');
    expect(s.location).toBe(`PostgreSQL socket /var/run/postgresql/.s.PGSQL.5432, user postgres, database ${dbName}`);
    // A keyword/value string, as psql takes it.
    const kv = await run('qguard', ['ip', 'ls'], cronEnv({ QGUARD_DATABASE_URL: `host=/var/run/postgresql dbname=${dbName}` }));
    expect(kv).toMatchObject({ code: 0, stderr: '' });
  });

  it('a wrong user or database: exit 111, naming the socket, port, user and database tried', async () => {
    const u = await run('qguard', ['ip', 'ls'], cronEnv({ QGUARD_DATABASE_URL: `postgresql://nosuchrole@/${dbName}` }));
    expect(u.code).toBe(111);
    expect(u.stderr).toMatch(/^qguard: fatal: unable to connect to database postgresql:\/\/nosuchrole@\/\S+ \(QGUARD_DATABASE_URL; tried socket \/var\/run\/postgresql\/\.s\.PGSQL\.5432, user nosuchrole, database \S+;.*role "nosuchrole" does not exist/);
    const d = await run('sync-rules', [], cronEnv({ QGUARD_DATABASE_URL: 'postgresql:///nosuchdb' }));
    expect(d.code).toBe(111);
    expect(d.stderr).toMatch(/tried socket \/var\/run\/postgresql\/\.s\.PGSQL\.5432, user root, database nosuchdb; .*user from the operating-system user.*database "nosuchdb" does not exist/);
    const bad = await run('scan-queue', [], cronEnv({ QGUARD_DATABASE_URL: 'postgresql:///x?sslmod=require' }));
    expect(bad.code).toBe(100);
    expect(bad.stderr).toContain('unknown parameter "sslmod"');
  });

  describe('a server that asks for passwords', () => {
    const PORT = 20000 + (process.pid % 20000);
    const PASSWORD = 'Corr3ct-h0rse-battery';
    let data: string;
    let sock: string;
    const pgctl = (args: string[]) => execFileSync('runuser', ['-u', 'postgres', '--', `${PG_BIN}/pg_ctl`, ...args], { stdio: 'pipe' });

    beforeAll(() => {
      data = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-pwserver-'));
      sock = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-pwsock-'));
      fs.chownSync(data, 101, 104);
      fs.chmodSync(data, 0o700);
      fs.chownSync(sock, 101, 104);
      const pwfile = path.join(data, '..', `pw-${process.pid}`);
      fs.writeFileSync(pwfile, `${PASSWORD}\n`, { mode: 0o644 });
      execFileSync('runuser', ['-u', 'postgres', '--', `${PG_BIN}/initdb`, '-D', path.join(data, 'd'), '-U', 'qg', '--auth=scram-sha-256', `--pwfile=${pwfile}`], { stdio: 'pipe' });
      fs.rmSync(pwfile);
      pgctl(['-D', path.join(data, 'd'), '-w', '-l', path.join(data, 'log'), '-o', `-p ${PORT} -k ${sock},/tmp -c listen_addresses=''`, 'start']);
    });
    afterAll(() => {
      try {
        pgctl(['-D', path.join(data, 'd'), '-m', 'immediate', '-w', 'stop']);
      } catch {
        // not started
      }
      fs.rmSync(data, { recursive: true, force: true });
      fs.rmSync(sock, { recursive: true, force: true });
    });

    const home = () => path.join(dir, 'home');
    const url = `postgresql://qg@/postgres?host=${'SOCK'}&port=${PORT}`;
    const envWith = (extra: Record<string, string>) => cronEnv({ HOME: home(), QGUARD_DATABASE_URL: url.replace('SOCK', sock), ...extra });
    const noPassword = (r: Run) => expect(`${r.stdout}${r.stderr}`).not.toContain(PASSWORD);

    it('PGPASSWORD, and a password in the URL, are used and never shown', async () => {
      fs.mkdirSync(home(), { recursive: true });
      const ok = await run('qguard', ['db', 'migrate'], envWith({ PGPASSWORD: PASSWORD }));
      expect(ok).toMatchObject({ code: 0, stderr: '' });
      const st = await run('qguard', ['db', 'status', '--json'], envWith({ PGPASSWORD: PASSWORD }));
      expect(st.code).toBe(0);
      noPassword(st);
      const inUrl = await run('qguard', ['db', 'status'], cronEnv({ HOME: home(), QGUARD_DATABASE_URL: `postgresql://qg:${PASSWORD}@/postgres?host=${sock}&port=${PORT}` }));
      expect(inUrl.code).toBe(0);
      noPassword(inUrl);
      const wrong = await run('qguard', ['db', 'status'], cronEnv({ HOME: home(), QGUARD_DATABASE_URL: `postgresql://qg:${PASSWORD}x@/postgres?host=${sock}&port=${PORT}` }));
      expect(wrong.code).toBe(111);
      expect(wrong.stderr).toContain('password authentication failed for user "qg"');
      noPassword(wrong);
    });

    it('~/.pgpass is read when the server asks, and ignored (with a warning) when others can read it', async () => {
      const pgpass = path.join(home(), '.pgpass');
      fs.writeFileSync(pgpass, `# qguard\n${sock}:${PORT}:postgres:qg:${PASSWORD.replace(/:/g, '\\:')}\n`, { mode: 0o600 });
      fs.chmodSync(pgpass, 0o600);
      const ok = await run('sync-rules', [], envWith({}));
      expect(ok).toMatchObject({ code: 0, stderr: '' });
      const viaPassfile = await run('qguard', ['ip', 'ls'], envWith({ PGPASSFILE: pgpass, HOME: '/nonexistent' }));
      expect(viaPassfile).toMatchObject({ code: 0, stderr: '' });
      fs.chmodSync(pgpass, 0o644);
      const loose = await run('qguard', ['ip', 'ls'], envWith({}));
      expect(loose.code).toBe(111);
      expect(loose.stderr).toContain(`password file "${pgpass}" has group or world access`);
      expect(loose.stderr).toContain('the server asks for a password and none was given');
      noPassword(loose);
      fs.chmodSync(pgpass, 0o600);
    });

    it('with no host named, the socket is looked for in /var/run/postgresql, then /tmp', async () => {
      // This server has no socket in /var/run/postgresql for its port, one in /tmp.
      const r = await run('qguard', ['db', 'status'], cronEnv({ HOME: home(), QGUARD_DATABASE_URL: 'postgresql://qg@/postgres', PGPORT: String(PORT), PGPASSWORD: PASSWORD }));
      expect(r).toMatchObject({ code: 0, stderr: '' });
      expect(r.stdout).toContain(`socket /tmp/.s.PGSQL.${PORT}, user qg, database postgres`);
    });
  });
});
