// The spool of accepted messages (pure: no I/O). contrib/qmail/qguard-queue, run by
// qmail-smtpd as $QMAILQUEUE for every message it is about to queue, appends one line before it
// execs the real qmail-queue:
//
//   1796601600 203.0.113.5
//
// the time (seconds since the epoch, from `date +%s`) and $TCPREMOTEIP as tcpserver set it
// (IPv4, or IPv6 from an IPv6 tcpserver, `::ffff:a.b.c.d` for IPv4 clients on it). One write
// of a short line with O_APPEND: lines of concurrent sessions do not mix.

import { canonicalIp } from './tcpserver-log.js';

export interface AcceptedLine {
  /** Epoch milliseconds. */
  at: number;
  ip: string;
}

/** Lines longer than this are not the program's (an IPv6 address and the time fit in 60). */
const MAX_LINE = 80;

/** One line without its newline: bytes [start, end) of `buf`. Null when it is not such a line. */
export function parseAcceptedLine(buf: Buffer, start: number, end: number): AcceptedLine | null {
  if (end - start > MAX_LINE || end - start < 3) return null;
  let secs = 0;
  let i = start;
  for (; i < end && i - start < 12; i++) {
    const c = buf[i];
    if (c < 48 || c > 57) break;
    secs = secs * 10 + c - 48;
  }
  if (i === start || i >= end || buf[i] !== 32 /* space */) return null;
  const text = buf.toString('latin1', i + 1, end);
  if (/\s/.test(text)) return null;
  const ip = canonicalIp(text);
  return ip === null ? null : { at: secs * 1000, ip };
}

/** The line the program writes (tests and benches). */
export function formatAcceptedLine(at: number, ip: string): string {
  return `${Math.floor(at / 1000)} ${ip}\n`;
}
