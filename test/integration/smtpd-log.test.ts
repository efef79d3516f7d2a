// scan-queue counts SMTP connections from tcpserver's log: a real `tcpserver -v -x tcp.smtp.cdb`
// on loopback, its messages through a real `multilog t s4096` (small files: it rotates several
// times during the test), a small SMTP client connecting from allowed and denied loopback
// addresses; scan-queue runs between the rounds and every connection is counted exactly once,
// denied ones as denied, as `qguard ip why` then says.

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { type TestDb, createTestDb } from '../helpers/db.js';
import { QueueBuilder } from '../helpers/queue-builder.js';
import { haveTools } from '../helpers/tools.js';
import { formatTai64n } from '../../lib/qmail/tcpserver-log.js';

const RUN = haveTools('tcpserver', 'tcprules', 'multilog');

describe.skipIf(!RUN)("connections counted from tcpserver's log", () => {
  let db: TestDb;
  let tmp: string;
  let logDir: string;
  let queue: QueueBuilder;
  let server: ChildProcess;
  const port = 20_000 + (process.pid % 20_000);

  beforeAll(async () => {
    db = await createTestDb();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qg-smtpd-log-'));
    logDir = path.join(tmp, 'log');
    queue = QueueBuilder.create();
    const cdb = path.join(tmp, 'tcp.smtp.cdb');
    execFileSync('tcprules', [cdb, `${cdb}.tmp`], { input: '127.0.0.3:deny\n:allow\n' });
    const smtpd = `echo "220 test ESMTP"; read line; echo "221 bye"`;
    server = spawn(
      'sh',
      ['-c', `exec tcpserver -v -R -H -l0 -x ${cdb} 127.0.0.1 ${port} sh -c '${smtpd}' 2>&1 | multilog t s4096 n50 ${logDir}`],
      { detached: true, stdio: 'ignore' },
    );
    await waitFor(() => logText().includes('tcpserver: status: 0/40'));
  });

  afterAll(async () => {
    if (server?.pid) {
      try {
        process.kill(-server.pid, 'SIGTERM');
      } catch {
        // gone
      }
    }
    queue?.destroy();
    await db?.drop();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** Everything multilog has written, oldest file first. */
  function logText(): string {
    if (!fs.existsSync(logDir)) return '';
    const names = fs.readdirSync(logDir).filter((n) => n.startsWith('@')).sort();
    return [...names, 'current'].map((n) => (fs.existsSync(path.join(logDir, n)) ? fs.readFileSync(path.join(logDir, n), 'latin1') : '')).join('');
  }
  const countLines = (re: RegExp) => logText().split('\n').filter((l) => re.test(l)).length;

  /** One SMTP session from `from`: the greeting, QUIT, the answer. A denied client gets no greeting. */
  function session(from: string): Promise<string> {
    return new Promise((resolve) => {
      let got = '';
      const s = net.connect({ host: '127.0.0.1', port, localAddress: from });
      s.on('data', (d) => {
        got += d.toString();
        if (got.startsWith('220')) s.write('QUIT\r\n');
      });
      s.on('error', () => resolve(got));
      s.on('close', () => resolve(got));
    });
  }

  async function sessions(from: string, n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      const answer = await session(from);
      if (from === '127.0.0.3') expect(answer).toBe('');
      else expect(answer).toBe('220 test ESMTP\n221 bye\n');
    }
  }

  async function scan(extra: Record<string, string> = {}, args: string[] = []) {
    const r = await runCli('scan-queue', ['--json', ...args], { env: { ...db.env, QGUARD_QUEUE: queue.dir, QGUARD_HOST: 'mx1', QGUARD_SMTPD_LOG: logDir, ...extra } });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    return JSON.parse(r.stdout) as { smtpdLog: { connections: number; denied: number; bytes: number; files: number; lost: string | null } };
  }

  async function why(ip: string) {
    const r = await runCli('qguard', ['ip', 'why', ip, '--json'], { env: db.env });
    expect(r.code).toBe(0);
    return JSON.parse(r.stdout) as { connections: { connections: number; denied: number; hosts: number; window: string } | null };
  }

  it('counts accepted and denied connections once each, across runs and multilog rotations', async () => {
    await sessions('127.0.0.1', 12);
    await sessions('127.0.0.3', 5);
    await waitFor(() => countLines(/tcpserver: (ok|deny) /) === 17 && countLines(/tcpserver: end /) === 17);
    const a = await scan();
    expect(a.smtpdLog).toMatchObject({ connections: 17, denied: 5, lost: null });

    // A dry run reads and counts, and keeps nothing: the next run counts the same lines.
    await sessions('127.0.0.2', 40);
    await waitFor(() => countLines(/tcpserver: (ok|deny) /) === 57);
    const rotated = fs.readdirSync(logDir).filter((n) => /^@[0-9a-f]{24}\.s$/.test(n)).length;
    expect(rotated).toBeGreaterThanOrEqual(2); // multilog rotated during the test
    expect((await scan({}, ['--dry-run'])).smtpdLog).toMatchObject({ connections: 40, denied: 0 });
    const b = await scan();
    expect(b.smtpdLog).toMatchObject({ connections: 40, denied: 0, lost: null });
    expect(b.smtpdLog.files).toBeGreaterThanOrEqual(2);

    // Nothing new: nothing counted (only tcpserver's status lines, if any).
    expect((await scan()).smtpdLog).toMatchObject({ connections: 0, denied: 0 });

    expect((await why('127.0.0.1')).connections).toMatchObject({ connections: 12, denied: 0, hosts: 1, window: '3d' });
    expect((await why('127.0.0.2')).connections).toMatchObject({ connections: 40, denied: 0 });
    expect((await why('127.0.0.3')).connections).toMatchObject({ connections: 5, denied: 5 });
    expect((await why('127.0.0.9')).connections).toBeNull();
    const text = await runCli('qguard', ['ip', 'why', '127.0.0.3'], { env: db.env });
    expect(text.stdout).toMatch(/connections in 3d: 5 \(5 denied\) on 1 mail server, first .* \(tcpserver's log\)/);
  });

  it("another mail server's log adds up for the same address", async () => {
    const other = path.join(tmp, 'log-mx2');
    fs.mkdirSync(other);
    const line = (pid: number) => `${formatTai64n(Date.now())} tcpserver: ok ${pid} 0:192.0.2.1:25 :127.0.0.3::4000${pid}\n`;
    fs.writeFileSync(path.join(other, 'current'), line(1) + line(2));
    expect((await scan({ QGUARD_HOST: 'mx2', QGUARD_SMTPD_LOG: other })).smtpdLog).toMatchObject({ connections: 2 });
    expect((await why('127.0.0.3')).connections).toMatchObject({ connections: 7, denied: 5, hosts: 2 });
  });

  it('a log directory that cannot be read is a warning: the queue is still scanned', async () => {
    const r = await runCli('scan-queue', ['--json'], { env: { ...db.env, QGUARD_QUEUE: queue.dir, QGUARD_HOST: 'mx3', QGUARD_SMTPD_LOG: path.join(tmp, 'no-such-log') } });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/QGUARD_SMTPD_LOG: unable to read the log directory .*no-such-log.*connections not counted this run/);
    expect(JSON.parse(r.stdout)).toMatchObject({ smtpdLog: null, scanned: 0 });
  });
});

async function waitFor(ok: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error('timed out waiting for the log');
    await new Promise((r) => setTimeout(r, 50));
  }
}
