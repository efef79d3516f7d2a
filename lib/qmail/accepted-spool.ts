// The spool of accepted messages (pure: no I/O). contrib/qmail/qguard-queue, run by
// qmail-smtpd as $QMAILQUEUE for every message it is about to queue, appends one line before it
// execs the real qmail-queue, in one of two forms:
//
//   u86400.25 2d9d1777-77bd-46c8-8650-dc8104bc8528 203.0.113.5    (Linux: /proc/uptime, boot id)
//   1796601600 203.0.113.5                                        (elsewhere: date +%s)
//
// the time — seconds since the boot named by the id, read without starting a program, or
// seconds since the epoch — and $TCPREMOTEIP as tcpserver set it (IPv4, or IPv6 from an IPv6
// tcpserver, `::ffff:a.b.c.d` for IPv4 clients on it). One write of a short line with O_APPEND:
// the lines of concurrent sessions do not mix.

import { canonicalIp } from './tcpserver-log.js';

export interface AcceptedLine {
  /** Epoch milliseconds. */
  at: number;
  ip: string;
}

/** The boot the reader runs in: its id and when it began (epoch ms, now minus /proc/uptime). */
export interface BootClock {
  bootId: string;
  bootMs: number;
}

/** Lines longer than this are not the program's (the longest, with an IPv6 address, is about 100). */
const MAX_LINE = 128;
const BOOT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const UPTIME = /^u(\d{1,10})(?:\.(\d{1,2}))?$/;

/**
 * One line without its newline: bytes [start, end) of `buf`. Null when it is not such a line.
 * A line of another boot than `clock`'s (written before this one began, and not read until
 * after) is dated at the boot.
 */
export function parseAcceptedLine(buf: Buffer, start: number, end: number, clock: BootClock | null): AcceptedLine | null {
  if (end - start > MAX_LINE || end - start < 3) return null;
  const words = buf.toString('latin1', start, end).split(' ');
  let at: number;
  if (words.length === 2 && /^\d{1,12}$/.test(words[0])) {
    at = Number(words[0]) * 1000;
  } else if (words.length === 3 && BOOT_ID.test(words[1])) {
    const m = UPTIME.exec(words[0]);
    if (!m) return null;
    const sinceBoot = Number(m[1]) * 1000 + Number((m[2] ?? '0').padEnd(2, '0')) * 10;
    at = clock === null ? Date.now() : words[1] === clock.bootId ? clock.bootMs + sinceBoot : clock.bootMs;
  } else return null;
  const ipText = words[words.length - 1];
  if (ipText === '' || /\s/.test(ipText)) return null;
  const ip = canonicalIp(ipText);
  return ip === null ? null : { at, ip };
}

/** The line the program writes where it has no /proc (tests and benches). */
export function formatAcceptedLine(at: number, ip: string): string {
  return `${Math.floor(at / 1000)} ${ip}\n`;
}

/** The line it writes on Linux. */
export function formatAcceptedUptimeLine(sinceBootMs: number, bootId: string, ip: string): string {
  return `u${Math.floor(sinceBootMs / 1000)}.${String(Math.floor((sinceBootMs % 1000) / 10)).padStart(2, '0')} ${bootId} ${ip}\n`;
}
