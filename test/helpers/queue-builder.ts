// Build qmail queues for tests and benchmarks, in qmail's exact layout (INTERNALS, and the
// real queues in test/fixtures/qmail-queue/): mess/S/N, info/S/N, local/S/N, remote/S/N,
// todo/N + intd/N (hard links), bounce/N, lock/, pid/. Messages are written the way qmail
// writes them: line 1 by qmail-queue, line 2 by qmail-smtpd, bounces by qmail-send (marker,
// Return-Path, the whole original), forwards by qmail-local (Delivered-To + the original).
// Also: unpack the real fixture queues, and take their real messages as templates with
// other source IPs (for large generated queues). Used by scan-queue's and purge-queue's tests
// and benches. Never touches test/fixtures itself.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** test/fixtures/qmail-queue, from the sources or from their build in dist/ (benches). */
export const FIXTURE_DIR = ((): string => {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const up of ['../fixtures/qmail-queue', '../../../test/fixtures/qmail-queue']) {
    const dir = path.resolve(here, up);
    if (fs.existsSync(dir)) return dir;
  }
  return path.resolve(here, '../fixtures/qmail-queue');
})();

export type Snapshot = 'processed' | 'todo';

/** Unpack a real fixture queue (`tar xzf`) into a new temp directory (or `dest`). */
export function unpackFixture(snapshot: Snapshot, dest?: string): string {
  const dir = dest ?? fs.mkdtempSync(path.join(os.tmpdir(), `qguard-queue-${snapshot}-`));
  fs.mkdirSync(dir, { recursive: true });
  // GNU tar warns about the future mtimes of local/ and remote/ (qmail's next-retry times).
  execFileSync('tar', ['xzf', path.join(FIXTURE_DIR, `queue-${snapshot}.tar.gz`), '-C', dir, '--warning=no-timestamp'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return dir;
}

/** The fixture's ground truth (expected-*.json). */
export function expectedFixture(snapshot: Snapshot): {
  messages: Record<string, unknown>[];
  perIp: Record<string, Record<string, unknown>>;
  perNormalizedIpv4OrIpv6: Record<string, unknown>;
  [k: string]: unknown;
} {
  return JSON.parse(fs.readFileSync(path.join(FIXTURE_DIR, `expected-${snapshot}.json`), 'utf8'));
}

/** Move every mtime under `dir` by `deltaMs` (a fixture's arrival times brought to "now"). */
export function shiftMtimes(dir: string, deltaMs: number): void {
  const walk = (p: string) => {
    const st = fs.lstatSync(p);
    if (st.isDirectory()) for (const n of fs.readdirSync(p)) walk(path.join(p, n));
    if (st.isFile() || st.isDirectory()) {
      const t = new Date(st.mtimeMs + deltaMs);
      fs.utimesSync(p, t, t);
    }
  };
  walk(dir);
}

/** The clock of the machine that made the fixtures (all their dates are 28 Nov 2026 00:22-00:24 UTC). */
export const FIXTURE_TIME = Date.UTC(2026, 10, 28, 0, 24, 13);

// ---------------------------------------------------------------------------------------
// Message text, as qmail writes it

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** qmail's date822fmt: `28 Nov 2026 00:22:16 -0000` (UTC, no weekday). */
export function qmailDate(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} -0000`;
}

/** qmail-smtpd's safeput: anything but letters, digits and `.@%+/=:-[]` becomes `?`. */
export function safeput(s: string): string {
  return Buffer.from(s, 'utf8')
    .toString('latin1')
    .replace(/[^A-Za-z0-9.@%+/=:\-[\]]/g, '?');
}

export interface SmtpOrigin {
  /** TCPREMOTEIP, verbatim (IPv6 and ::ffff: forms as tcpserver sets them). */
  ip: string;
  /** TCPREMOTEHOST; `unknown` without one. */
  remoteHost?: string;
  /** HELO/EHLO argument; left out when equal to the remote host or absent. */
  helo?: string | null;
  /** TCPREMOTEINFO. */
  remoteInfo?: string | null;
  localHost?: string;
  protocol?: string;
}

/** The body of a plain message: its own header and a body. */
export function plainMessage(o: { from?: string; to?: string; subject?: string | null; body?: string; extraHeaders?: string[] } = {}): string {
  const h = [
    `Date: Fri, 27 Nov 2026 04:49:36 +0000`,
    `From: ${o.from ?? 'someone@sender.example'}`,
    `To: ${o.to ?? 'alice@example.net'}`,
    ...(o.subject === null ? [] : [`Subject: ${o.subject ?? 'hello'}`]),
    `Message-ID: <${Math.random().toString(36).slice(2)}@sender.example>`,
    ...(o.extraHeaders ?? []),
  ];
  return `${h.join('\n')}\n\n${o.body ?? 'Hello.\n'}`;
}

/** Line 1 of every mess file. */
export function queueLine(pid: number, how: string, date: Date): string {
  return `Received: (qmail ${pid} invoked ${how}); ${qmailDate(date)}\n`;
}

/** Lines 1 and 2 of a message qmail-smtpd received. */
export function smtpLines(pid: number, o: SmtpOrigin, date: Date): string {
  const host = o.remoteHost ?? 'unknown';
  const helo = o.helo !== undefined && o.helo !== null && o.helo.toLowerCase() !== host.toLowerCase() ? ` (HELO ${safeput(o.helo)})` : '';
  const info = o.remoteInfo ? `${safeput(o.remoteInfo)}@` : '';
  return (
    queueLine(pid, 'from network', date) +
    `Received: from ${safeput(host)}${helo} (${info}${safeput(o.ip)})\n  by ${o.localHost ?? 'mx.example.net'} with ${o.protocol ?? 'SMTP'}; ${qmailDate(date)}\n`
  );
}

/** A message as qmail-smtpd queues it. */
export function networkMessage(o: SmtpOrigin & { pid?: number; date?: Date; content?: string }): string {
  return smtpLines(o.pid ?? 4242, o, o.date ?? new Date()) + (o.content ?? plainMessage());
}

/** A message injected by a local user (qmail-inject / sendmail). */
export function localMessage(o: { pid?: number; uid?: number; date?: Date; content?: string } = {}): string {
  return queueLine(o.pid ?? 4243, `by uid ${o.uid ?? 1000}`, o.date ?? new Date()) + (o.content ?? plainMessage({ from: 'alice@example.net' }));
}

/** A copy forwarded by a .qmail file (qmail-local): Delivered-To, then the original unchanged. */
export function forwardedMessage(o: { original: string; deliveredTo: string; pid?: number; uid?: number | 'alias'; date?: Date }): string {
  const how = o.uid === 'alias' ? 'by alias' : `by uid ${o.uid ?? 1010}`;
  return `${queueLine(o.pid ?? 4244, how, o.date ?? new Date())}Delivered-To: ${o.deliveredTo}\n${o.original}`;
}

/** A bounce as qmail-send writes it: the failures, the marker, Return-Path, the whole original. */
export function bounceMessage(o: {
  original: string;
  /** The original's envelope sender (the bounce goes there). */
  originalSender: string;
  failed: { address: string; reason: string }[];
  pid?: number;
  date?: Date;
  me?: string;
}): string {
  const date = o.date ?? new Date();
  const me = o.me ?? 'mx.example.net';
  const reasons = o.failed.map((f) => `<${f.address}>:\n${f.reason}\n`).join('\n');
  return (
    `${queueLine(o.pid ?? 4245, 'for bounce', date)}Date: ${qmailDate(date)}\nFrom: MAILER-DAEMON@${me}\nTo: ${o.originalSender}\nSubject: failure notice\n\n` +
    `Hi. This is the qmail-send program at ${me}.\nI'm afraid I wasn't able to deliver your message to the following addresses.\n` +
    `This is a permanent error; I've given up. Sorry it didn't work out.\n\n${reasons}\n` +
    `--- Below this line is a copy of the message.\n\nReturn-Path: <${o.originalSender}>\n${o.original}`
  );
}

/** A double bounce: a null-sender message (often a bounce) could not be delivered. */
export function doubleBounceMessage(o: { originalBounce: string; failed: { address: string; reason: string }[]; pid?: number; date?: Date; me?: string; to?: string }): string {
  const date = o.date ?? new Date();
  const me = o.me ?? 'mx.example.net';
  const reasons = o.failed.map((f) => `<${f.address}>:\n${f.reason}\n`).join('\n');
  return (
    `${queueLine(o.pid ?? 4246, 'for bounce', date)}Date: ${qmailDate(date)}\nFrom: MAILER-DAEMON@${me}\nTo: ${o.to ?? 'postmaster@ops.example.com'}\nSubject: failure notice\n\n` +
    `Hi. This is the qmail-send program at ${me}.\nI tried to deliver a bounce message to this address, but the bounce bounced!\n\n${reasons}\n` +
    `--- Below this line is the original bounce.\n\nReturn-Path: <>\n${o.originalBounce}`
  );
}

export const NO_MAILBOX = 'Sorry, no mailbox here by that name. (#5.1.1)';

// ---------------------------------------------------------------------------------------
// Queue directories

export type BuiltState = 'preprocessed' | 'todo' | 'in-flight-intd' | 'in-flight-mess-only';

export interface BuiltRecipient {
  address: string;
  /** Where qmail-send put it (default: local for example.net/org, else remote). */
  queue?: 'local' | 'remote';
  done?: boolean;
}

export interface BuiltMessage {
  /** Queue id; default: the next free number. */
  id?: string;
  /** The mess/ file content (line 1 included). */
  mess: string | Buffer;
  state?: BuiltState;
  /** Envelope sender: "" for a bounce, "#@[]" for a double bounce. */
  sender?: string;
  recipients?: (string | BuiltRecipient)[];
  /** todo/intd `u` and `p` fields. */
  uid?: number;
  pid?: number;
  /** mtime of info/ (arrival), or todo/intd/mess before preprocessing; default now. */
  arrival?: Date;
  /** bounce/N text (pending failures). */
  bounce?: string;
  /** in-flight-intd: cut the envelope after this many bytes (default: mid-address). */
  intdCut?: number;
}

const LOCAL_DOMAINS = /@(example\.net|example\.org|mx\.example\.net)$/i;

/** A qmail queue under construction in a directory of its own. */
export class QueueBuilder {
  private next: number;
  readonly dirs: { todo: string; intd: string };

  private constructor(
    readonly dir: string,
    readonly split: number,
    readonly bigTodo: boolean,
    firstId: number,
  ) {
    this.next = firstId;
    this.dirs = { todo: 'todo', intd: 'intd' };
  }

  /** Create an empty queue: every directory qmail-install makes, with conf-split subdirectories. */
  static create(opts: { dir?: string; split?: number; bigTodo?: boolean; firstId?: number } = {}): QueueBuilder {
    const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-queue-'));
    const split = opts.split ?? 23;
    for (const d of ['bounce', 'info', 'intd', 'local', 'lock', 'mess', 'pid', 'remote', 'todo']) fs.mkdirSync(path.join(dir, d), { recursive: true });
    const splitDirs = ['mess', 'info', 'local', 'remote', ...(opts.bigTodo ? ['todo', 'intd'] : [])];
    for (const d of splitDirs) for (let s = 0; s < split; s++) fs.mkdirSync(path.join(dir, d, String(s)), { recursive: true });
    fs.writeFileSync(path.join(dir, 'lock', 'sendmutex'), '');
    fs.writeFileSync(path.join(dir, 'lock', 'tcpto'), Buffer.alloc(1024));
    return new QueueBuilder(dir, split, Boolean(opts.bigTodo), opts.firstId ?? 1_490_000);
  }

  /** The next unused id. */
  nextId(): string {
    for (;;) {
      const id = String(this.next++);
      if (!fs.existsSync(this.path('mess', id))) return id;
    }
  }

  /** Absolute path of a message's file (qmail's fmtqfn). */
  path(dir: 'mess' | 'info' | 'local' | 'remote' | 'todo' | 'intd' | 'bounce', id: string): string {
    const split = dir === 'mess' || dir === 'info' || dir === 'local' || dir === 'remote' || (this.bigTodo && (dir === 'todo' || dir === 'intd'));
    return split ? path.join(this.dir, dir, String(Number(BigInt(id) % BigInt(this.split))), id) : path.join(this.dir, dir, id);
  }

  /** Write one message's files. Returns its id. */
  add(m: BuiltMessage): string {
    const id = m.id ?? this.nextId();
    const state = m.state ?? 'preprocessed';
    const sender = m.sender ?? 'someone@sender.example';
    const rcpts: BuiltRecipient[] = (m.recipients ?? ['alice@example.net']).map((r) => (typeof r === 'string' ? { address: r } : r));
    const when = m.arrival;
    const write = (file: string, data: string | Buffer) => {
      fs.writeFileSync(file, data);
      if (when) fs.utimesSync(file, when, when);
    };
    write(this.path('mess', id), m.mess);
    const envelope = `u${m.uid ?? 1002}\0p${m.pid ?? 4242}\0F${sender}\0${rcpts.map((r) => `T${r.address}\0`).join('')}`;
    if (state === 'todo') {
      write(this.path('intd', id), envelope);
      fs.linkSync(this.path('intd', id), this.path('todo', id));
    } else if (state === 'in-flight-intd') {
      const buf = Buffer.from(envelope);
      write(this.path('intd', id), buf.subarray(0, m.intdCut ?? Math.max(1, buf.length - 3)));
    } else if (state === 'preprocessed') {
      write(this.path('info', id), `F${sender}\0`);
      for (const q of ['local', 'remote'] as const) {
        const mine = rcpts.filter((r) => (r.queue ?? (LOCAL_DOMAINS.test(r.address) ? 'local' : 'remote')) === q);
        if (mine.length && mine.some((r) => !r.done)) write(this.path(q, id), mine.map((r) => `${r.done ? 'D' : 'T'}${r.address}\0`).join(''));
      }
      if (m.bounce !== undefined) write(this.path('bounce', id), m.bounce);
    }
    return id;
  }

  /** Delete every file of a message (qmail-send finished it). */
  remove(id: string): void {
    for (const d of ['mess', 'info', 'local', 'remote', 'todo', 'intd', 'bounce'] as const) fs.rmSync(this.path(d, id), { force: true });
  }

  /** Remove the whole queue directory. */
  destroy(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------
// Real messages as templates

/** A network message of the fixtures, to be queued again with another source IP. */
export interface Template {
  id: string;
  kind: string;
  /** The message without our two Received lines (what the client sent). */
  content: string;
  origin: SmtpOrigin;
  sender: string;
  recipients: string[];
}

let templateCache: Template[] | null = null;

/**
 * The network messages (spam and ham, not forwarded, not bounces) of the `processed` fixture,
 * with qmail's two lines taken off, so they can be queued again from any IP.
 */
export function fixtureTemplates(): Template[] {
  if (templateCache) return templateCache;
  const dir = unpackFixture('processed');
  try {
    const exp = expectedFixture('processed');
    const out: Template[] = [];
    for (const m of exp.messages as {
      id: string;
      kind: string;
      files: string[];
      envelopeSender: string;
      recipients: string[];
      forwardOf?: string;
    }[]) {
      if ((m.kind !== 'spam' && m.kind !== 'ham') || m.forwardOf) continue;
      const text = fs.readFileSync(path.join(dir, m.files[0])).toString('latin1');
      const lines = text.split('\n');
      const l2 = /^Received: from (\S*) (?:\(HELO ([^()\s]*)\) )?\(([^()\s]*)\)$/.exec(lines[1] ?? '');
      if (!l2) continue;
      const who = l2[3];
      const at = who.lastIndexOf('@');
      out.push({
        id: m.id,
        kind: m.kind,
        content: lines.slice(3).join('\n'),
        origin: { ip: at >= 0 ? who.slice(at + 1) : who, remoteHost: l2[1], helo: l2[2] ?? null, remoteInfo: at >= 0 ? who.slice(0, at) : null },
        sender: m.envelopeSender,
        recipients: m.recipients,
      });
    }
    templateCache = out;
    return out;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A template queued again from another IP (latin1 content kept byte for byte). */
export function fromTemplate(t: Template, o: { ip: string; pid?: number; date?: Date }): Buffer {
  const head = smtpLines(o.pid ?? 4242, { ...t.origin, ip: o.ip, helo: t.origin.helo }, o.date ?? new Date());
  return Buffer.from(head + t.content, 'latin1');
}
