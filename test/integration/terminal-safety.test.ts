// Hostile bytes never reach the admin's terminal. A queue of messages written to attack it —
// CSI and OSC sequences (colours, screen clears, window titles, OSC 52 clipboard writes, OSC 8
// hyperlinks), C1 controls, bidi overrides ("exe.png"), NUL, CR-only lines, invalid UTF-8 and
// 8-bit headers — and rules whose reasons and user names the intranet wrote, go through every
// human-readable output: queue ls/top/show, ip why/ls, purge-queue's report and --verbose
// lines, quarantine ls/show, import-spamlist's error lines, usage errors. On a pipe and on a
// pseudo-terminal (script -qc), nothing that acts on a terminal comes out, and what was there
// is still visible as escapes. --json stays exact.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QueueBuilder, networkMessage, plainMessage, queueLine, qmailDate } from '../helpers/queue-builder.js';
import { type TestDb, createTestDb } from '../helpers/db.js';
import { ROOT, runCli } from '../helpers/cli.js';
import { haveTools } from '../helpers/tools.js';
import { startFakeQmailSend, writeControlScripts } from '../helpers/purge-fixtures.js';

const TOOLS = haveTools('script', 'flock');

const ESC = '\x1b';
const SPAMMER = '203.0.113.90';

/** Anything a terminal would act on: C0 but newline and tab, DEL, C1, bidi controls, separators. */
const DANGEROUS = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/u;

let db: TestDb;
let q: QueueBuilder;
let dir: string;
const ids: Record<string, string> = {};

const env = (extra: Record<string, string> = {}) => ({
  ...db.env,
  QGUARD_QUEUE: q.dir,
  QGUARD_HOST: 'review',
  QGUARD_QUARANTINE_DIR: path.join(dir, 'quarantine'),
  QGUARD_CONTROL: path.join(dir, 'control'),
  ...extra,
});

interface Out {
  code: number;
  out: string;
}

/** Run a built executable on pipes; stdout and stderr together. */
async function onPipe(bin: string, args: string[], input?: string | Buffer, extra: Record<string, string> = {}): Promise<Out> {
  const r = await runCli(bin, args, { env: env(extra), input });
  return { code: r.code, out: r.stdout + r.stderr };
}

/** The same on a pseudo-terminal: `script -qc CMD /dev/null`, stdin from a file when given. */
async function onPty(bin: string, args: string[], input?: string | Buffer, extra: Record<string, string> = {}): Promise<Out> {
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  let cmd = [process.execPath, path.join(ROOT, 'dist/bin', `${bin}.js`), ...args].map(quote).join(' ');
  if (input !== undefined) {
    const f = path.join(dir, `stdin-${Math.random().toString(36).slice(2)}`);
    fs.writeFileSync(f, input);
    cmd += ` < ${quote(f)}`;
  }
  const r = await execa('script', ['-qec', cmd, '/dev/null'], { env: { PATH: process.env.PATH, HOME: os.homedir(), TERM: 'xterm', ...env(extra) }, extendEnv: false, reject: false, stdin: 'ignore' });
  // The terminal turns each newline into CR LF; our own progress line (import-spamlist on a
  // terminal) clears itself with CR ESC[K and carries no outside text.
  const out = String(r.stdout).replace(/\r\n/g, '\n').replace(/\r\x1b\[K/g, '');
  return { code: r.exitCode ?? -1, out };
}

/** Run on both, check both are harmless, return the pipe's output. */
async function both(bin: string, args: string[], o: { input?: string; inputBytes?: Buffer; code?: number; env?: Record<string, string> } = {}): Promise<string> {
  const input = o.inputBytes ?? o.input;
  const results = [await onPipe(bin, args, input, o.env), await onPty(bin, args, input, o.env)];
  for (const [i, r] of results.entries()) {
    const where = `${bin} ${args.join(' ')} on a ${i === 0 ? 'pipe' : 'terminal'}`;
    expect({ where, code: r.code }).toEqual({ where, code: o.code ?? 0 });
    const bad = DANGEROUS.exec(r.out);
    expect({ where, dangerous: bad ? JSON.stringify(r.out.slice(Math.max(0, bad.index - 30), bad.index + 30)) : null }).toEqual({ where, dangerous: null });
  }
  return results[0].out;
}

/** A message whose header and body attack the terminal in every way we know. */
function hostileMessage(): Buffer {
  const text = plainMessage({
    from: `"Bank ${ESC}[8m" <x@evil.example>`,
    subject: `rtl \u202egnp.exe ${ESC}[31mred${ESC}]0;pwned title\x07`,
    extraHeaders: [`X-Junk: ${ESC}[31mred\u0085next`, `X-Clip: ${ESC}]52;c;cm0gLXJmIH4=\x07`, `X-Isolate: \u2066abc\u2069`],
    body: [
      'line one',
      `${ESC}[2J${ESC}[1;1Hcleared`,
      `click ${ESC}]8;;https://evil.example/${ESC}\\here${ESC}]8;;${ESC}\\`,
      'visible\rhidden by CR',
      'nul\x00byte and del\x7f',
      '',
    ].join('\n'),
  });
  // Raw bytes: invalid UTF-8 (0xff, a lone continuation byte) and a raw C1 CSI (0x9b).
  return Buffer.concat([Buffer.from(networkMessage({ ip: SPAMMER, helo: 'spam.example', content: text })), Buffer.from([0xff, 0x80, 0x9b, 0x32, 0x4a, 0x0a])]);
}

/** An 8-bit header (Latin-1, not UTF-8) and a body that is not UTF-8 at all. */
function latin1Message(): Buffer {
  const head = networkMessage({ ip: SPAMMER, content: '' });
  const rest = Buffer.from('From: a@b.example\nSubject: Gr\xfc\xdfe \x9b31m aus K\xf6ln\n\nK\xe4se \x1b[5mblink\n', 'latin1');
  return Buffer.concat([Buffer.from(head), rest]);
}

beforeAll(async () => {
  db = await createTestDb();
  q = QueueBuilder.create();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-terminal-'));
  fs.mkdirSync(path.join(dir, 'control'));
  ids.hostile = q.add({ mess: hostileMessage(), arrival: new Date(Date.now() - 3600_000), sender: `bounce${ESC}[5m\u202e@evil.example`, recipients: ['dave@example.net', `x\u202e${ESC}[1m@remote.example`] });
  ids.latin1 = q.add({ mess: latin1Message(), recipients: ['dave@example.net'] });
  // Line 2 as only a broken or hostile local file could have it (qmail-smtpd writes `?` for odd bytes).
  const date = new Date();
  ids.helo = q.add({
    mess: `${queueLine(4300, 'from network', date)}Received: from unknown (HELO ${ESC}[41mhelo) (${SPAMMER})\n  by mx.example.net with SMTP; ${qmailDate(date)}\n${plainMessage({ subject: 'helo' })}`,
    recipients: ['dave@example.net'],
  });
  ids.plain = q.add({ mess: networkMessage({ ip: SPAMMER, pid: 499 }), recipients: ['dave@example.net'], arrival: new Date(Date.now() - 3600_000) });
  // The newest: queue top's sample subject is one of these.
  for (let i = 0; i < 3; i++) q.add({ mess: networkMessage({ ip: SPAMMER, pid: 500 + i, content: plainMessage({ subject: `cheap ${ESC}[1m${i}` }) }), recipients: ['dave@example.net'], arrival: new Date(Date.now() + 1000) });
  const scan = await runCli('scan-queue', ['--no-deny'], { env: env() });
  expect(scan).toMatchObject({ code: 0, stderr: '' });
  // A rule as the intranet might write it: reason and user name chosen by someone else.
  const c = await db.open();
  try {
    await c.query(`INSERT INTO qguard.rules (network, action, source, reason, who) VALUES ($1, 'deny', 'intranet', $2, $3)`, [
      `${SPAMMER}/32`,
      `listed ${ESC}[2J by \u202eTRATS${ESC}]0;t\x07\nsecond line`,
      `admin${ESC}[31m\u2067`,
    ]);
  } finally {
    await c.close();
  }
});
afterAll(async () => {
  q?.destroy();
  await db?.drop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!TOOLS)('hostile text on the admin terminal', () => {
  it('queue ls: subjects, senders and recipients shown escaped', async () => {
    const out = await both('qguard', ['queue', 'ls']);
    expect(out).toContain('rtl \\u202egnp.exe \\x1b[31mred\\x1b]0;pwned title\\x07');
    expect(out).toContain('<bounce\\x1b[5m\\u202e@evil.example>');
    expect(out).toContain('cheap \\x1b[1m0');
    // One line per message: no header can add one.
    expect(out.trim().split('\n').length).toBe(7);
    // The 8-bit (Latin-1) subject is readable; its C1 byte is shown.
    expect(out).toContain('Grüße \\x9b31m aus Köln');
  });

  it('queue ls --json is exact', async () => {
    const r = await runCli('qguard', ['queue', 'ls', '--json'], { env: env() });
    expect(DANGEROUS.test(r.stdout)).toBe(false);
    const rows = JSON.parse(r.stdout) as { id: string; subject: string; sender: string; recipients: string[] }[];
    const h = rows.find((m) => m.id === ids.hostile)!;
    expect(h.subject).toBe(`rtl \u202egnp.exe ${ESC}[31mred${ESC}]0;pwned title\x07`);
    expect(h.sender).toBe(`bounce${ESC}[5m\u202e@evil.example`);
    expect(h.recipients).toContain(`x\u202e${ESC}[1m@remote.example`);
  });

  it('queue top: the sample subject', async () => {
    const out = await both('qguard', ['queue', 'top']);
    expect(out).toContain(SPAMMER);
    expect(out).toMatch(/cheap \\x1b\[1m\d/);
  });

  it('queue show: header, body, HELO; marks what it escaped and where it cut', async () => {
    const out = await both('qguard', ['queue', 'show', ids.hostile]);
    expect(out).toContain('X-Junk: \\x1b[31mred\\x85next');
    expect(out).toContain('X-Clip: \\x1b]52;c;cm0gLXJmIH4=\\x07');
    expect(out).toContain('X-Isolate: \\u2066abc\\u2069');
    expect(out).toContain('\\x1b[2J\\x1b[1;1Hcleared');
    expect(out).toContain('click \\x1b]8;;https://evil.example/\\x1b\\\\here');
    expect(out).toContain('visible\\rhidden by CR');
    expect(out).toContain('nul\\x00byte and del\\x7f');
    expect(out).toContain('\\xff\\x80\\x9b2J');
    expect(out).toMatch(/\[escaped: \d+ control characters, \d+ bidi or invisible characters?, 3 invalid UTF-8 bytes\]/);
    expect(out).toContain('sender: <bounce\\x1b[5m\\u202e@evil.example>');
    expect(out).toContain('  to: <x\\u202e\\x1b[1m@remote.example> remote pending');

    const l1 = await both('qguard', ['queue', 'show', ids.latin1]);
    expect(l1).toContain('Subject: Gr\\xfc\\xdfe \\x9b31m aus K\\xf6ln');
    expect(l1).toContain('K\\xe4se \\x1b[5mblink');

    const helo = await both('qguard', ['queue', 'show', ids.helo]);
    expect(helo).toContain('helo: \\x1b[41mhelo');

    const cut = await both('qguard', ['queue', 'show', ids.hostile, '--lines', '1']);
    expect(cut).toMatch(/\[cut: 1 body line shown, \d+ of \d+ bytes; escaped: /);
    const clean = await both('qguard', ['queue', 'show', ids.plain]);
    expect(clean).not.toContain('[escaped');
  });

  it('queue show --json carries the text exactly', async () => {
    const r = await runCli('qguard', ['queue', 'show', ids.hostile, '--json'], { env: env() });
    expect(DANGEROUS.test(r.stdout)).toBe(false);
    const m = JSON.parse(r.stdout) as { header: string; body: string };
    expect(m.header).toContain(`X-Junk: ${ESC}[31mred\u0085next`);
    expect(m.body).toContain(`${ESC}[2J${ESC}[1;1Hcleared`);
  });

  it('ip why and ip ls: the reason and user name the intranet wrote', async () => {
    const why = await both('qguard', ['ip', 'why', SPAMMER]);
    expect(why).toContain('listed \\x1b[2J by \\u202eTRATS\\x1b]0;t\\x07\\nsecond line');
    expect(why).toContain('admin\\x1b[31m\\u2067');
    const ls = await both('qguard', ['ip', 'ls']);
    expect(ls).toContain('\\u202eTRATS');
    expect(ls.trim().split('\n').length).toBe(1);
  });

  it('a usage error echoing an argument', async () => {
    const out = await both('qguard', ['ip', 'why', `${ESC}[31m1.2.3.4\u202e`], { code: 2 });
    expect(out).toContain('"\\x1b[31m1.2.3.4\\u202e"');
    const unknown = await both('qguard', [`--c${ESC}[2Jolour`], { code: 2 });
    expect(unknown).toContain('\\x1b[2J');
  });

  it('import-spamlist: the lines it refuses are echoed escaped', async () => {
    const list = Buffer.concat([
      Buffer.from([`203.0.113.0/24 ${ESC}[31mred comment`, `${ESC}]52;c;cm0=\x07 junk`, `198.51.100.7\u202e`, ''].join('\n')),
      Buffer.from([0xff, 0xfe, 0x31, 0x0a]),
      Buffer.from(`10.${ESC}[2J1.1.1\n198.51.100.200\n`),
    ]);
    const out = await both('import-spamlist', ['--source', 'hostile', '--dry-run', '--max-invalid', '100'], { input: list.toString('latin1'), inputBytes: list });
    expect(out).toContain('stdin:1: more than one word (only an address, a CIDR or a range per line): "203.0.113.0/24 \\x1b[31mred comment"');
    expect(out).toContain('stdin:2: not an IP address: "\\x1b]52"');
    expect(out).toContain('stdin:3: not an IP address: "198.51.100.7\\u202e"');
    expect(out).toContain('stdin:4: not an IP address: "\\xff\\xfe1"');
    expect(out).toContain('stdin:5: not an IP address: "10.\\x1b[2J1.1.1"');
  });

  it('purge-queue: the dry-run report and the --verbose lines; then quarantine ls/show', async () => {
    const control = writeControlScripts(path.join(dir, 'ctl'), q.dir, path.join(dir, 'qmail-send.pid'));
    const penv = { QGUARD_QMAIL_STOP: control.stop, QGUARD_QMAIL_START: control.start };
    const dry = await both('purge-queue', ['--dry-run', '--ip', SPAMMER], { env: penv });
    expect(dry).toContain('<bounce\\x1b[5m\\u202e@evil.example>');
    await startFakeQmailSend(q.dir, path.join(dir, 'qmail-send.pid'));
    const real = await onPipe('purge-queue', ['--verbose', '--ip', SPAMMER, '--id', ids.hostile], undefined, penv);
    expect(real.code).toBe(0);
    expect(DANGEROUS.test(real.out)).toBe(false);
    expect(real.out).toContain(`removed ${ids.hostile}`);
    expect(real.out).toContain('bounce\\x1b[5m\\u202e@evil.example');

    const ls = await both('qguard', ['quarantine', 'ls']);
    expect(ls).toContain('<bounce\\x1b[5m\\u202e@evil.example>');
    const j = JSON.parse((await runCli('qguard', ['quarantine', 'ls', '--json'], { env: env() })).stdout) as { id: string; queueId: string; sender: string }[];
    const entry = j.find((e) => e.queueId === ids.hostile)!;
    expect(entry.sender).toBe(`bounce${ESC}[5m\u202e@evil.example`);
    const show = await both('qguard', ['quarantine', 'show', entry.id]);
    expect(show).toContain('X-Junk: \\x1b[31mred\\x85next');
    expect(show).toContain('\\xff\\x80\\x9b2J');
    expect(show).toMatch(/\[escaped: .*3 invalid UTF-8 bytes\]/);
  });
});
