// Messages accepted, counted beyond the queue: contrib/qmail/qguard-queue (the QMAILQUEUE
// program) in front of a fake qmail-queue that records what it was given and exits as told; the
// program run by a real tcpserver whose tcp.smtp sets QMAILQUEUE; scan-queue reading the spool
// (rotation, a late writer, removal); the threshold over accepted messages (QGUARD_COUNT); the
// connection limit over tcpserver's log (QGUARD_CONNECTION_LIMIT); what `ip why` and `queue top`
// then show.

import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { type TestDb, createTestDb } from '../helpers/db.js';
import { QueueBuilder, networkMessage, plainMessage } from '../helpers/queue-builder.js';
import { haveTools } from '../helpers/tools.js';
import { readBootClock } from '../../lib/io/accepted-spool.js';
import { formatAcceptedLine, parseAcceptedLine } from '../../lib/qmail/accepted-spool.js';
import { formatTai64n } from '../../lib/qmail/tcpserver-log.js';

const PROGRAM = path.resolve(__dirname, '../../contrib/qmail/qguard-queue');

let db: TestDb;
let tmp: string;
let queue: QueueBuilder;
beforeAll(async () => {
  db = await createTestDb();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qg-accepted-'));
  queue = QueueBuilder.create();
  // The fake qmail-queue: where its descriptors 0 and 1 lead, what it read on each, two
  // variables, then the exit code it is told to give.
  fs.writeFileSync(
    path.join(tmp, 'fake-qmail-queue'),
    `#!/bin/sh
out=$FAKE_OUT
fd0=$(readlink /proc/$$/fd/0)
fd1=$(readlink /proc/$$/fd/1)
echo "$fd0" >"$out.fd0"
echo "$fd1" >"$out.fd1"
cat >"$out.message"
cat <&1 >"$out.envelope"
printf '%s|%s' "$TCPREMOTEIP" "$QMAILQUEUE" >"$out.env"
exit "\${FAKE_EXIT:-0}"
`,
    { mode: 0o755 },
  );
});
afterAll(async () => {
  queue?.destroy();
  await db?.drop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** The program as qmail-smtpd runs it: the message on 0, the envelope (NUL-separated) on 1. */
function runProgram(o: { ip: string; spool: string; exit?: number; out: string; qmailQueue?: string; noProc?: boolean }) {
  const msg = path.join(tmp, 'msg');
  const env = path.join(tmp, 'envelope');
  fs.writeFileSync(msg, 'Received: from x\nSubject: hi\n\nbody\n'.repeat(2000)); // larger than a pipe's buffer
  fs.writeFileSync(env, 'Fsender@example.org\0Tdave@example.net\0\0');
  const fd0 = fs.openSync(msg, 'r');
  const fd1 = fs.openSync(env, 'r');
  try {
    // noProc: where /proc is not there (another Unix): the program falls back to date(1)
    const [cmd, args] = o.noProc ? ['unshare', ['--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs none /proc && exec "$0"', PROGRAM]] : [PROGRAM, []];
    const r = spawnSync(cmd, args, {
      stdio: [fd0, fd1, 'pipe'],
      env: {
        PATH: '/usr/bin:/bin',
        TCPREMOTEIP: o.ip,
        QMAILQUEUE: PROGRAM,
        QGUARD_ACCEPTED_SPOOL: o.spool,
        QGUARD_QMAIL_QUEUE: o.qmailQueue ?? path.join(tmp, 'fake-qmail-queue'),
        FAKE_OUT: o.out,
        FAKE_EXIT: String(o.exit ?? 0),
      },
    });
    return { code: r.status, stderr: r.stderr.toString(), msg, env };
  } finally {
    fs.closeSync(fd0);
    fs.closeSync(fd1);
  }
}

const spoolLines = (spool: string) => (fs.existsSync(path.join(spool, 'current')) ? fs.readFileSync(path.join(spool, 'current'), 'latin1').split('\n').filter(Boolean) : []);

describe('the QMAILQUEUE program', () => {
  it('appends one line and hands qmail-queue the same descriptors, environment and message; its exit code passes through', () => {
    const spool = fs.mkdtempSync(path.join(tmp, 'spool-'));
    const before = Date.now();
    for (const [i, exit] of [0, 71, 31, 53, 0, 0].entries()) {
      const out = path.join(tmp, `run${i}`);
      const r = runProgram({ ip: i % 2 ? '2001:db8::25' : '198.51.100.25', spool, exit, out, noProc: i === 5 });
      expect(r.code).toBe(exit); // 71/31 (and any other) unchanged: qmail-smtpd answers from it
      expect(r.stderr).toBe('');
      if (i !== 5) {
        // (without /proc the fake cannot tell where its descriptors lead)
        expect(fs.readFileSync(`${out}.fd0`, 'utf8').trim()).toBe(r.msg);
        expect(fs.readFileSync(`${out}.fd1`, 'utf8').trim()).toBe(r.env);
      }
      expect(fs.readFileSync(`${out}.message`)).toEqual(fs.readFileSync(r.msg)); // nothing of it read before
      expect(fs.readFileSync(`${out}.envelope`)).toEqual(fs.readFileSync(r.env));
      expect(fs.readFileSync(`${out}.env`, 'utf8')).toBe(`${i % 2 ? '2001:db8::25' : '198.51.100.25'}|${PROGRAM}`);
    }
    const lines = spoolLines(spool);
    expect(lines).toHaveLength(6);
    expect(lines.slice(0, 5).every((l) => /^u\d+\.\d\d [0-9a-f-]{36} \S+$/.test(l))).toBe(true); // no program started for the time
    expect(lines[5]).toMatch(/^\d{10} 2001:db8::25$/); // date(1)
    const clock = readBootClock();
    for (const [i, l] of lines.entries()) {
      const got = parseAcceptedLine(Buffer.from(l), 0, l.length, clock)!;
      expect(got.at).toBeGreaterThanOrEqual(before - 1000); // the uptime has hundredths, date(1) seconds
      expect(got.at).toBeLessThanOrEqual(Date.now() + 20);
      expect(got.ip).toBe(i % 2 ? '2001:db8::25' : '198.51.100.25');
    }
  });

  it('a spool that cannot be written costs nothing: the message is queued, nothing is said', () => {
    const file = path.join(tmp, 'a-file');
    fs.writeFileSync(file, '');
    const dirAsCurrent = fs.mkdtempSync(path.join(tmp, 'spool-'));
    fs.mkdirSync(path.join(dirAsCurrent, 'current'));
    for (const spool of [path.join(tmp, 'no-such-dir'), file, dirAsCurrent]) {
      const out = path.join(tmp, 'unwritable');
      fs.rmSync(`${out}.message`, { force: true });
      const r = runProgram({ ip: '198.51.100.26', spool, out });
      expect(r.code).toBe(0);
      expect(r.stderr).toBe('');
      expect(fs.readFileSync(`${out}.message`)).toEqual(fs.readFileSync(r.msg));
    }
  });

  it('an address that is not one is not written (and the message still goes on)', () => {
    const spool = fs.mkdtempSync(path.join(tmp, 'spool-'));
    for (const ip of ['', '1.2.3.4\n999 6.6.6.6', '$(id)']) expect(runProgram({ ip, spool, out: path.join(tmp, 'odd') }).code).toBe(0);
    expect(spoolLines(spool)).toEqual([]);
  });

  it('without qmail-queue it exits with a temporary failure (qmail-smtpd answers 451, the client retries)', () => {
    const r = runProgram({ ip: '198.51.100.27', spool: tmp, out: path.join(tmp, 'none'), qmailQueue: path.join(tmp, 'no-qmail-queue') });
    expect(r.code).not.toBe(0);
    // qmail.c: 11-40 are permanent; everything else but 0 is temporary
    expect(r.code! >= 11 && r.code! <= 40).toBe(false);
  });
});

async function scan(env: Record<string, string>, args: string[] = []) {
  const r = await runCli('scan-queue', ['--json', ...args], { env: { ...db.env, QGUARD_QUEUE: queue.dir, QGUARD_HOST: 'mx1', ...env } });
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as {
    denied: string[];
    notDenied: { ip: string; count: number; why: string }[];
    overThreshold: number;
    overConnectionLimit: number;
    acceptedSpool: { accepted: number; odd: number; lines: number; files: number; removed: number; rotated: boolean; lost: string | null } | null;
  };
}

async function why(ip: string) {
  const r = await runCli('qguard', ['ip', 'why', ip, '--json'], { env: db.env });
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as { decision: string; rule: { reason: string } | null; connections: { connections: number; denied: number; accepted: number; hosts: number } | null };
}

async function sql(text: string): Promise<void> {
  const c = await db.open();
  try {
    await c.exec(text);
  } finally {
    await c.close();
  }
}

describe('scan-queue reads the spool', () => {
  beforeEach(() => sql('TRUNCATE qguard.connections, qguard.log_positions, qguard.message_copies, qguard.messages; DELETE FROM qguard.rules;'));

  it('counts every line once across runs, renames a large current, reads a late line in the renamed file, removes it once read', async () => {
    const spool = fs.mkdtempSync(path.join(tmp, 'spool-'));
    const now = Date.now();
    const current = path.join(spool, 'current');
    // 60,000 lines (> 1 MB): the file is renamed once read to its end
    const block = (ip: string, n: number) => Array.from({ length: n }, (_, i) => formatAcceptedLine(now - i, ip)).join('');
    fs.writeFileSync(current, block('192.0.2.201', 30_000) + block('2001:db8::7', 30_000) + '123 not-an-address\n');
    const a = await scan({ QGUARD_ACCEPTED_SPOOL: spool });
    expect(a.acceptedSpool).toMatchObject({ accepted: 60_000, odd: 1, rotated: true, lost: null });
    const renamed = fs.readdirSync(spool).filter((n) => /^@[0-9a-f]{24}\.s$/.test(n));
    expect(renamed).toHaveLength(1);
    expect(fs.existsSync(current)).toBe(false);

    // A program that had opened current before the rename writes into the renamed file; the next
    // ones start a new current.
    fs.appendFileSync(path.join(spool, renamed[0]), formatAcceptedLine(now, '192.0.2.201'));
    fs.writeFileSync(current, formatAcceptedLine(now, '::ffff:192.0.2.201') + formatAcceptedLine(now, '192.0.2.202'));
    const b = await scan({ QGUARD_ACCEPTED_SPOOL: spool });
    expect(b.acceptedSpool).toMatchObject({ accepted: 3, files: 2, removed: 0, rotated: false });

    // Read to its end and settled: removed at the next run; nothing counted twice.
    const old = new Date(now - 120_000);
    fs.utimesSync(path.join(spool, renamed[0]), old, old);
    const c = await scan({ QGUARD_ACCEPTED_SPOOL: spool });
    expect(c.acceptedSpool).toMatchObject({ accepted: 0, removed: 1 });
    expect(fs.readdirSync(spool)).toEqual(['current']);

    expect((await why('192.0.2.201')).connections).toMatchObject({ accepted: 30_002, connections: 0, hosts: 1 });
    expect((await why('2001:db8::7')).connections).toMatchObject({ accepted: 30_000 });
    expect((await why('192.0.2.202')).connections).toMatchObject({ accepted: 1 });
    const text = await runCli('qguard', ['ip', 'why', '192.0.2.202'], { env: db.env });
    expect(text.stdout).toContain('accepted messages in 3d: 1 on 1 mail server (QMAILQUEUE spool)');
  });

  it('a dry run counts and keeps nothing; a spool directory that is missing is a warning and the queue is still scanned', async () => {
    const spool = fs.mkdtempSync(path.join(tmp, 'spool-'));
    fs.writeFileSync(path.join(spool, 'current'), formatAcceptedLine(Date.now(), '192.0.2.203'));
    expect((await scan({ QGUARD_ACCEPTED_SPOOL: spool }, ['--dry-run'])).acceptedSpool).toMatchObject({ accepted: 1 });
    expect((await scan({ QGUARD_ACCEPTED_SPOOL: spool })).acceptedSpool).toMatchObject({ accepted: 1 });
    const r = await runCli('scan-queue', ['--json'], { env: { ...db.env, QGUARD_QUEUE: queue.dir, QGUARD_ACCEPTED_SPOOL: path.join(tmp, 'no-spool') } });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/QGUARD_ACCEPTED_SPOOL: unable to read the log directory .*no-spool.*; accepted messages not counted this run/);
    expect(JSON.parse(r.stdout)).toMatchObject({ acceptedSpool: null });
  });
});

describe('what the threshold counts (QGUARD_COUNT) and the connection limit', () => {
  beforeEach(async () => {
    await sql('TRUNCATE qguard.connections, qguard.log_positions, qguard.message_copies, qguard.messages; DELETE FROM qguard.rules;');
    for (const id of fs.readdirSync(path.join(queue.dir, 'info')).flatMap((d) => fs.readdirSync(path.join(queue.dir, 'info', d)))) queue.remove(id);
  });

  /** `n` accepted messages from `ip` in the spool, `n2` queued. */
  function traffic(spool: string, accepted: Record<string, number>, queued: Record<string, number>) {
    const now = Date.now();
    fs.appendFileSync(path.join(spool, 'current'), Object.entries(accepted).map(([ip, n]) => Array.from({ length: n }, (_, i) => formatAcceptedLine(now - i * 1000, ip)).join('')).join(''));
    let pid = 100;
    for (const [ip, n] of Object.entries(queued)) {
      for (let i = 0; i < n; i++) queue.add({ mess: networkMessage({ ip, pid: pid++, content: plainMessage({ subject: `s${i}` }) }), recipients: ['dave@example.net'] });
    }
  }

  it('queued (the default) ignores the spool; accepted denies on it alone; both on either, never the sum', async () => {
    const spool = fs.mkdtempSync(path.join(tmp, 'spool-'));
    // .31: delivered at once (accepted only); .32: 12 still queued of 12 accepted; .33: 20 queued
    traffic(spool, { '198.51.100.31': 25, '198.51.100.32': 12 }, { '198.51.100.32': 12, '198.51.100.33': 20 });
    const env = { QGUARD_ACCEPTED_SPOOL: spool };
    expect((await scan(env, ['--dry-run'])).denied).toEqual(['198.51.100.33']);
    expect((await scan({ ...env, QGUARD_COUNT: 'accepted' }, ['--dry-run'])).denied).toEqual(['198.51.100.31']);
    const both = await scan({ ...env, QGUARD_COUNT: 'both' });
    expect(both.denied.sort()).toEqual(['198.51.100.31', '198.51.100.33']); // .32: 12 + 12 is not 24
    expect((await why('198.51.100.31')).rule).toMatchObject({ reason: '25 accepted messages in 3d' });
    expect((await why('198.51.100.33')).rule).toMatchObject({ reason: '20 queued messages in 3d' });

    const top = await runCli('qguard', ['queue', 'top'], { env: { ...db.env, QGUARD_COUNT: 'both' } });
    expect(top.code).toBe(0);
    expect(top.stdout).toMatch(/threshold 20, counting queued or accepted messages/);
    expect(top.stdout).toMatch(/^ queued accepted conn\/denied$/m);
    expect(top.stdout).toMatch(/^ {4}20\* {8}0 {9}0\/0 198\.51\.100\.33 /m);
    expect(top.stdout).toMatch(/^ {4}12 {8}12 {9}0\/0 198\.51\.100\.32 /m);
    const json = JSON.parse((await runCli('qguard', ['queue', 'top', '--json'], { env: db.env })).stdout) as { ip: string; accepted: number }[];
    expect(json.find((s) => s.ip === '198.51.100.32')).toMatchObject({ accepted: 12 });
  });

  it('a trusted partner is counted and never denied, whatever is counted', async () => {
    const spool = fs.mkdtempSync(path.join(tmp, 'spool-'));
    expect((await runCli('qguard', ['ip', 'trust', '198.51.100.40/30', '--reason', 'partner'], { env: db.env })).code).toBe(0);
    traffic(spool, { '198.51.100.41': 50 }, {});
    const s = await scan({ QGUARD_ACCEPTED_SPOOL: spool, QGUARD_COUNT: 'accepted' });
    expect(s.denied).toEqual([]);
    expect(s.notDenied).toEqual([{ ip: '198.51.100.41', count: 50, why: expect.stringMatching(/^trust on mx1/) }]);
  });

  it('QGUARD_CONNECTION_LIMIT denies an address that keeps connecting, refused or not, within the period only', async () => {
    const log = fs.mkdtempSync(path.join(tmp, 'log-'));
    const now = Date.now();
    const line = (ip: string, at: number, deny: boolean, pid: number) =>
      `${formatTai64n(at)} tcpserver: ${deny ? 'deny' : 'ok'} ${pid} mx:192.0.2.1:25 :${ip}::${40_000 + pid}\n`;
    const lines: string[] = [];
    let pid = 1;
    for (let i = 0; i < 30; i++) lines.push(line('203.0.113.50', now - 60_000 + i, i >= 20, pid++)); // 30 in the last minute, 10 refused
    for (let i = 0; i < 29; i++) lines.push(line('203.0.113.51', now - 60_000 + i, false, pid++)); // 29
    for (let i = 0; i < 40; i++) lines.push(line('203.0.113.52', now - 3 * 3600_000 + i, false, pid++)); // 40, hours ago
    for (let i = 0; i < 35; i++) lines.push(line('127.0.0.5', now - 1000 + i, false, pid++)); // loopback: protected
    fs.writeFileSync(path.join(log, 'current'), lines.sort().join(''));
    const s = await scan({ QGUARD_SMTPD_LOG: log, QGUARD_CONNECTION_LIMIT: '30/10m' });
    expect(s.overConnectionLimit).toBe(2);
    expect(s.denied).toEqual(['203.0.113.50']);
    expect(s.notDenied).toEqual([{ ip: '127.0.0.5', count: 35, why: expect.stringMatching(/127\.0\.0\.0\/8/) }]);
    expect((await why('203.0.113.50')).rule).toMatchObject({ reason: '30 connections in 10m (10 refused by tcp.smtp)' });
    expect((await why('203.0.113.51')).decision).toBe('default');
    expect((await why('203.0.113.52')).decision).toBe('default');
    // off by default
    expect((await scan({ QGUARD_SMTPD_LOG: log })).overConnectionLimit).toBe(0);
  });

  it('a bad QGUARD_CONNECTION_LIMIT or QGUARD_COUNT is refused by name, nothing done', async () => {
    for (const [k, v, msg] of [
      ['QGUARD_CONNECTION_LIMIT', '300', /QGUARD_CONNECTION_LIMIT \(environment\): not COUNT\/DURATION \(such as 300\/10m\)/],
      ['QGUARD_CONNECTION_LIMIT', '300/10s', /QGUARD_CONNECTION_LIMIT \(environment\): at least 1 connection in at least 1m/],
      ['QGUARD_COUNT', 'sum', /QGUARD_COUNT \(environment\): must be one of queued, accepted, both/],
    ] as const) {
      const r = await runCli('scan-queue', [], { env: { ...db.env, QGUARD_QUEUE: queue.dir, [k]: v } });
      expect(r.code).toBe(100);
      expect(r.stderr).toMatch(msg);
    }
  });
});

describe.skipIf(!haveTools('tcpserver', 'tcprules'))('through a real tcpserver whose tcp.smtp sets QMAILQUEUE', () => {
  let server: ChildProcess;
  const port = 20_000 + ((process.pid + 7) % 20_000);
  let spool: string;
  beforeAll(async () => {
    await sql('TRUNCATE qguard.connections, qguard.log_positions;');
    spool = fs.mkdtempSync(path.join(tmp, 'spool-'));
    const cdb = path.join(tmp, 'qq.cdb');
    const vars = `QMAILQUEUE="${PROGRAM}",QGUARD_ACCEPTED_SPOOL="${spool}",QGUARD_QMAIL_QUEUE="${path.join(tmp, 'fake-qmail-queue')}"`;
    execFileSync('tcprules', [cdb, `${cdb}.tmp`], { input: `127.0.0.3:deny\n:allow,${vars}\n` });
    fs.writeFileSync(path.join(tmp, 'm'), 'Subject: x\n\nbody\n');
    fs.writeFileSync(path.join(tmp, 'e'), 'Fa@example.org\0Tb@example.net\0\0');
    // A stand-in for qmail-smtpd: greets, then runs $QMAILQUEUE as qmail-smtpd does (message on
    // 0, envelope on 1) and answers with its exit code.
    const smtpd = `echo 220; FAKE_OUT=${tmp}/tcp "$QMAILQUEUE" <${tmp}/m 1<${tmp}/e; echo "250 $?"`;
    server = spawn('sh', ['-c', `exec tcpserver -R -H -l0 -x ${cdb} 127.0.0.1 ${port} sh -c '${smtpd}'`], { detached: true, stdio: 'ignore' });
    for (let i = 0; i < 100 && (await session('127.0.0.1', true)) === ''; i++) await new Promise((r) => setTimeout(r, 50));
    fs.rmSync(path.join(spool, 'current'), { force: true });
  });
  afterAll(() => {
    if (server?.pid) process.kill(-server.pid, 'SIGTERM');
  });

  function session(from: string, quiet = false): Promise<string> {
    return new Promise((resolve) => {
      let got = '';
      const s = net.connect({ host: '127.0.0.1', port, localAddress: from });
      s.on('data', (d) => (got += d.toString()));
      s.on('error', () => resolve(quiet ? '' : got));
      s.on('close', () => resolve(got));
    });
  }

  it('each accepted session is one line with its client address; a refused client writes none', async () => {
    for (let i = 0; i < 7; i++) expect(await session('127.0.0.1')).toBe('220\n250 0\n');
    for (let i = 0; i < 4; i++) expect(await session('127.0.0.2')).toBe('220\n250 0\n');
    for (let i = 0; i < 3; i++) expect(await session('127.0.0.3')).toBe('');
    expect(spoolLines(spool).map((l) => l.split(' ').at(-1)).sort()).toEqual([...Array(7).fill('127.0.0.1'), ...Array(4).fill('127.0.0.2')]);
    expect((await scan({ QGUARD_ACCEPTED_SPOOL: spool })).acceptedSpool).toMatchObject({ accepted: 11, odd: 0 });
    expect((await why('127.0.0.2')).connections).toMatchObject({ accepted: 4 });
  });
});
