// tcpserver's log, as multilog keeps it (pure: no I/O). `tcpserver -v` writes, per connection:
//
//   @4000000069a1b2c30d2f1e88 tcpserver: status: 3/40
//   @4000000069a1b2c30d2f9a10 tcpserver: pid 9848 from 203.0.113.5
//   @4000000069a1b2c30d30c000 tcpserver: ok 9848 mx.example.net:192.0.2.1:25 :203.0.113.5::43424
//   @4000000069a1b2c30d30c111 tcpserver: deny 9849 mx.example.net:192.0.2.1:25 :198.51.100.7::5100
//   @4000000069a1b2c5004c4b40 tcpserver: end 9848 status 0
//
// (tcpserver.c: `ok`/`deny` PID LOCALHOST:LOCALIP:LOCALPORT REMOTEHOST:REMOTEIP:REMOTEINFO:REMOTEPORT;
// the label is multilog's TAI64N stamp, present with multilog's `t`.) A connection is counted
// once, from its `ok` or `deny` line.

import { formatNetShort, parseIp } from '../net/address.js';

/** A connection tcpserver accepted (`ok`) or refused by its rules (`deny`). */
export interface Connection {
  /** Milliseconds since the epoch, from the TAI64N label; null when the line has none. */
  at: number | null;
  ip: string;
  denied: boolean;
}

/** TAI64 labels count from 2^62, and daemontools' clock is TAI = UTC + 10 s (leap seconds ignored, as tai64nlocal does). */
const TAI64_EPOCH = 2n ** 62n + 10n;

/** Eight hex digits of `b` from `at` as a number; -1 if one is not a hex digit. */
function hex8At(b: Buffer, at: number): number {
  let v = 0;
  for (let i = at; i < at + 8; i++) {
    const c = b[i];
    const d = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

/** The 25 bytes at `at` (which start with `@`: `@` + 16 hex digits of seconds + 8 of nanoseconds) -> epoch milliseconds; null if they are not a label. */
function tai64nAt(b: Buffer, at: number): number | null {
  const hi = hex8At(b, at + 1);
  const lo = hex8At(b, at + 9);
  const nanos = hex8At(b, at + 17);
  if (hi < 0 || lo < 0 || nanos < 0 || nanos > 999_999_999) return null;
  // Until 2106 the high half is 0x40000000: plain numbers, no BigInt.
  const secs = hi === 0x40000000 ? lo - 10 : Number((BigInt(hi) << 32n) + BigInt(lo) - TAI64_EPOCH);
  return secs * 1000 + Math.floor(nanos / 1e6);
}

/** A TAI64N label (`@4000000069a1b2c30d2f1e88`) -> epoch milliseconds; null if it is not a label. */
export function parseTai64n(label: string): number | null {
  if (label.length !== 25 || label.charCodeAt(0) !== 64 /* @ */) return null;
  return tai64nAt(Buffer.from(label, 'latin1'), 0);
}

/** The TAI64N label of a time (what multilog would write), for tests and generated logs. */
export function formatTai64n(ms: number): string {
  ms = Math.floor(ms);
  const secs = BigInt(Math.floor(ms / 1000)) + TAI64_EPOCH;
  const nanos = (((ms % 1000) + 1000) % 1000) * 1e6;
  return `@${secs.toString(16).padStart(16, '0')}${nanos.toString(16).padStart(8, '0')}`;
}

/** The address in REMOTEHOST:REMOTEIP:REMOTEINFO:REMOTEPORT (an IPv6 address has colons of its own: host and info have none). */
function remoteIp(field: string): string | null {
  const first = field.indexOf(':');
  const portColon = field.lastIndexOf(':');
  const infoColon = field.lastIndexOf(':', portColon - 1);
  if (first < 0 || infoColon <= first) return null;
  return canonicalIp(field.slice(first + 1, infoColon));
}

/** A dotted quad of 0-255 without leading zeros: the common case, without node's isIP regex. */
function isIpv4(ip: string): boolean {
  let parts = 0;
  let n = -1;
  let digits = 0;
  for (let i = 0; i <= ip.length; i++) {
    const c = i < ip.length ? ip.charCodeAt(i) : 46;
    if (c === 46) {
      if (digits === 0 || n > 255 || (digits > 1 && ip.charCodeAt(i - digits) === 48)) return false;
      parts++;
      n = -1;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      n = (n < 0 ? 0 : n * 10) + c - 48;
      if (++digits > 3) return false;
    } else return false;
  }
  return parts === 4;
}

/** One spelling per address (so that one address is one row): a dotted quad as it is, anything else as lib/net/address spells it (`::ffff:a.b.c.d` as the IPv4 address). */
export function canonicalIp(ip: string): string | null {
  if (isIpv4(ip)) return ip;
  if (ip.includes('/')) return null;
  const parsed = parseIp(ip);
  return parsed.ok ? formatNetShort(parsed.net) : null;
}

const OK = Buffer.from('tcpserver: ok ', 'latin1');
const DENY = Buffer.from('tcpserver: deny ', 'latin1');

/**
 * Reads lines in order, one at a time, and returns the connections they record: each `ok` and
 * `deny` line is one connection, its address taken from its own remote field (a line whose
 * field does not parse is counted in `odd`, not guessed from another line).
 */
export class TcpserverLog {
  /** Lines of tcpserver's `ok`/`deny` that were not understood (kept for the summary, not fatal). */
  odd = 0;

  /** One line without its newline; a connection, or null for every other line. */
  line(text: string): Connection | null {
    let at: number | null = null;
    let from = 0;
    if (text.charCodeAt(0) === 64 /* @ */) {
      at = parseTai64n(text.slice(0, 25));
      from = 26;
    }
    if (!text.startsWith('tcpserver: ', from)) return null;
    from += 11;
    let denied: boolean;
    if (text.startsWith('ok ', from)) {
      denied = false;
      from += 3;
    } else if (text.startsWith('deny ', from)) {
      denied = true;
      from += 5;
    } else return null;
    // PID LOCAL REMOTE: three words, the last one the remote field
    const a = text.indexOf(' ', from);
    const b = a < 0 ? -1 : text.indexOf(' ', a + 1);
    if (b < 0 || text.indexOf(' ', b + 1) >= 0) return this.oddLine();
    const ip = remoteIp(text.slice(b + 1));
    if (ip === null) return this.oddLine();
    return { at, ip, denied };
  }

  /**
   * Every connection in the whole lines [start, end) of `buf` (a read's chunk), counted into
   * `counter`: the same answers as line() on each line, found faster — native searches jump to
   * the `ok` and `deny` lines (2 of a connection's 5) instead of visiting every line. Returns
   * how many connections and denied ones.
   */
  chunk(buf: Buffer, start: number, end: number, counter: ConnectionCounter, fallbackAt: number): { connections: number; denied: number } {
    let connections = 0;
    let denied = 0;
    const next = (pat: Buffer, from: number) => {
      const i = buf.indexOf(pat, from);
      return i < 0 || i >= end ? -1 : i;
    };
    let ok = next(OK, start);
    let deny = next(DENY, start);
    while (ok >= 0 || deny >= 0) {
      const isDeny = ok < 0 || (deny >= 0 && deny < ok);
      const p = isDeny ? deny : ok;
      if (isDeny) deny = next(DENY, p + 1);
      else ok = next(OK, p + 1);
      // only where line() would look: at the line's start, or after a label (26 bytes from a `@`)
      const ls = Math.max(start, buf.lastIndexOf(10, p - 1) + 1);
      if (ls !== p && !(buf[ls] === 64 && p === ls + 26)) continue;
      let le = buf.indexOf(10, p);
      if (le < 0 || le > end) le = end;
      const from = p + (isDeny ? DENY.length : OK.length);
      // PID LOCAL REMOTE: three words, the last one the remote field
      const a = buf.indexOf(32, from);
      const b = a < 0 || a >= le ? -1 : buf.indexOf(32, a + 1);
      if (b < 0 || b >= le) {
        this.odd++;
        continue;
      }
      const c = buf.indexOf(32, b + 1);
      if (c >= 0 && c < le) {
        this.odd++;
        continue;
      }
      const ip = remoteIp(buf.toString('latin1', b + 1, le));
      if (ip === null) {
        this.odd++;
        continue;
      }
      const at = ls === p ? null : tai64nAt(buf, ls);
      counter.count(ip, at ?? fallbackAt, isDeny);
      connections++;
      if (isDeny) denied++;
    }
    return { connections, denied };
  }

  private oddLine(): null {
    this.odd++;
    return null;
  }
}

/** Connections and accepted messages per address and ten-minute slot: what is stored (qguard.connections). */
export interface ConnectionCount {
  ip: string;
  /** Start of the slot, epoch milliseconds. */
  slot: number;
  connections: number;
  denied: number;
  /** Messages handed to qmail-queue (the QMAILQUEUE spool, lib/qmail/accepted-spool.ts). */
  accepted: number;
  first: number;
  last: number;
}

export const SLOT_MS = 10 * 60 * 1000;

/** Adds connections up per address and slot. */
export class ConnectionCounter {
  /** slot -> address -> count: a log is in time order, so the slot's map is found once per slot, not per line. */
  private readonly slots = new Map<number, Map<string, ConnectionCount>>();
  private lastSlot = Number.NaN;
  private lastMap: Map<string, ConnectionCount> | null = null;
  private n = 0;

  add(c: Connection, fallbackAt: number): void {
    this.count(c.ip, c.at ?? fallbackAt, c.denied);
  }

  /** One connection from `ip` at `at` (epoch ms). */
  count(ip: string, at: number, denied: boolean): void {
    const r = this.row(ip, at);
    r.connections++;
    if (denied) r.denied++;
  }

  /** One message accepted from `ip` at `at` (epoch ms). */
  addAccepted(ip: string, at: number): void {
    this.row(ip, at).accepted++;
  }

  private row(ip: string, at: number): ConnectionCount {
    const slot = at - (((at % SLOT_MS) + SLOT_MS) % SLOT_MS);
    let m = this.lastMap;
    if (slot !== this.lastSlot || m === null) {
      m = this.slots.get(slot) ?? null;
      if (m === null) {
        m = new Map();
        this.slots.set(slot, m);
      }
      this.lastSlot = slot;
      this.lastMap = m;
    }
    let r = m.get(ip);
    if (r === undefined) {
      r = { ip, slot, connections: 0, denied: 0, accepted: 0, first: at, last: at };
      m.set(ip, r);
      this.n++;
      return r;
    }
    if (at < r.first) r.first = at;
    if (at > r.last) r.last = at;
    return r;
  }

  get size(): number {
    return this.n;
  }

  /** The counts so far, and a fresh start. */
  take(): ConnectionCount[] {
    const out: ConnectionCount[] = [];
    for (const m of this.slots.values()) for (const r of m.values()) out.push(r);
    this.slots.clear();
    this.lastMap = null;
    this.lastSlot = Number.NaN;
    this.n = 0;
    return out;
  }
}
