// A small qmail queue for `qguard demo`, written in qmail's own layout (mess/S/N with
// qmail-queue's and qmail-smtpd's Received lines, info/S/N, local/ or remote/, bounces with
// the original quoted, lock/sendmutex), so the real programs can read it. Not qmail: no
// inode numbers, no todo/ processing; just what a queue looks like after qmail-send has seen
// its messages.

import fs from 'node:fs';
import path from 'node:path';

const SPLIT = 23;
const QUEUE_DIRS = ['bounce', 'info', 'intd', 'local', 'lock', 'mess', 'pid', 'remote', 'todo'];
const SPLIT_DIRS = ['mess', 'info', 'local', 'remote'];

/** Who sends how much in the sample, and what the demo expects to happen to them. */
export interface SampleSender {
  ip: string;
  host: string;
  helo: string;
  count: number;
  role: string;
  subject: string;
}

export const SAMPLE_SENDERS: readonly SampleSender[] = [
  { ip: '203.0.113.7', host: 'unknown', helo: 'WIN-PVTQK39S7ZB', count: 34, role: 'spammer', subject: 'Cheap meds, no prescription' },
  { ip: '198.51.100.14', host: 'unknown', helo: '[198.51.100.14]', count: 23, role: 'spammer', subject: 'You have won a prize' },
  { ip: '203.0.113.99', host: 'unknown', helo: 'mail', count: 12, role: 'spammer, below the threshold', subject: 'Invoice overdue' },
  { ip: '198.51.100.150', host: 'mail.partner.example', helo: 'mail.partner.example', count: 26, role: 'partner (trusted)', subject: 'Order confirmation' },
  { ip: '10.0.0.15', host: 'pc15.intranet.example', helo: 'pc15', count: 21, role: 'intranet (private range)', subject: 'Quarterly report' },
];

/** The address of the spam-list sender whose spam bounced back at forged senders. */
export const LISTED_IP = '203.0.113.25';

function qmailDate(d: Date): string {
  const m = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'][d.getUTCMonth()];
  const hh = String(d.getUTCHours()).padStart(2, '0');
  const mm = String(d.getUTCMinutes()).padStart(2, '0');
  const ss = String(d.getUTCSeconds()).padStart(2, '0');
  return `${d.getUTCDate()} ${m} ${d.getUTCFullYear()} ${hh}:${mm}:${ss} -0000`;
}

function smtpMessage(pid: number, s: { ip: string; host: string; helo: string }, when: Date, from: string, to: string, subject: string): string {
  const helo = s.helo.toLowerCase() === s.host.toLowerCase() ? '' : ` (HELO ${s.helo})`;
  return (
    `Received: (qmail ${pid} invoked from network); ${qmailDate(when)}\n` +
    `Received: from ${s.host}${helo} (${s.ip})\n  by mx.example.net with SMTP; ${qmailDate(when)}\n` +
    `From: ${from}\nTo: ${to}\nSubject: ${subject}\nDate: ${when.toUTCString()}\nMessage-ID: <${pid}.${when.getTime()}@${s.host}>\n\n` +
    `This is a sample message of the qguard demo.\n`
  );
}

function bounceOf(pid: number, original: string, sender: string, when: Date): string {
  return (
    `Received: (qmail ${pid} invoked for bounce); ${qmailDate(when)}\n` +
    `Date: ${qmailDate(when)}\nFrom: MAILER-DAEMON@mx.example.net\nTo: ${sender}\nSubject: failure notice\n\n` +
    `Hi. This is the qmail-send program at mx.example.net.\n` +
    `I'm afraid I wasn't able to deliver your message to the following addresses.\n` +
    `This is a permanent error; I've given up. Sorry it didn't work out.\n\n` +
    `<info@example.net>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n` +
    `--- Below this line is a copy of the message.\n\nReturn-Path: <${sender}>\n${original}`
  );
}

/** Write the sample queue into `dir` (created); returns how many messages it holds. */
export function writeSampleQueue(dir: string, now: Date = new Date()): number {
  for (const d of QUEUE_DIRS) fs.mkdirSync(path.join(dir, d), { recursive: true });
  for (const d of SPLIT_DIRS) for (let s = 0; s < SPLIT; s++) fs.mkdirSync(path.join(dir, d, String(s)), { recursive: true });
  fs.writeFileSync(path.join(dir, 'lock', 'sendmutex'), '');
  let id = 1_490_000;
  let pid = 14_000;
  const put = (sub: string, n: number, data: string, when: Date) => {
    const file = path.join(dir, sub, String(n % SPLIT), String(n));
    fs.writeFileSync(file, data);
    fs.utimesSync(file, when, when);
  };
  const add = (mess: string, sender: string, rcpt: string, when: Date) => {
    const n = id++;
    put('mess', n, mess, when);
    put('info', n, `F${sender}\0`, when);
    put(/@example\.net$/.test(rcpt) ? 'local' : 'remote', n, `T${rcpt}\0`, when);
  };
  let i = 0;
  for (const s of SAMPLE_SENDERS) {
    for (let k = 0; k < s.count; k++, i++) {
      // Spread over the last two days, so all of it is inside the 3-day window.
      const when = new Date(now.getTime() - ((i * 2_711_000) % (2 * 86_400_000)));
      const from = s.role.startsWith('spammer') ? `offer${k}@bulk-${k % 7}.example` : `user${k}@${s.host}`;
      const to = s.role.startsWith('intranet') ? `client${k}@customer.example` : `sales@example.net`;
      add(smtpMessage(pid++, s, when, from, to, `${s.subject} #${k + 1}`), from, to, when);
    }
  }
  // Backscatter: spam from a listed sender to missing local users, bounced to forged senders
  // whose mail servers do not answer. The bounces stay queued.
  for (let k = 0; k < 6; k++) {
    const when = new Date(now.getTime() - k * 3_600_000);
    const forged = `victim${k}@forged-${k}.example`;
    const original = smtpMessage(pid++, { ip: LISTED_IP, host: 'unknown', helo: 'bulk' }, when, forged, 'info@example.net', 'Winner!');
    add(bounceOf(pid++, original, forged, when), '', forged, when);
  }
  // Mail that local users injected: never anyone's to deny.
  for (let k = 0; k < 3; k++) {
    const when = new Date(now.getTime() - k * 600_000);
    add(`Received: (qmail ${pid++} invoked by uid 1000); ${qmailDate(when)}\nFrom: alice@example.net\nTo: bob@remote.example\nSubject: Lunch?\n\nNoon?\n`, 'alice@example.net', 'bob@remote.example', when);
  }
  return id - 1_490_000;
}

/** A public spam list as a download would bring it (Spamhaus DROP style, with junk). */
export const SAMPLE_SPAM_LIST = `; Spamhaus DROP List (sample for the qguard demo)
; Last-Modified: ${new Date().toUTCString()}
${LISTED_IP} ; SBL100001
203.0.113.128/25 ; SBL100002
192.0.2.128/26 ; SBL100003
2001:db8:bad::/48 ; SBL100004
0.0.0.0/0 ; a broken entry the guards refuse
this line is junk
`;
