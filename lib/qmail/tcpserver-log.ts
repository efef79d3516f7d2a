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
// once, from its `ok` or `deny` line; `pid ... from IP` is only a fallback for the address.

import { isIP } from 'node:net';

/** A connection tcpserver accepted (`ok`) or refused by its rules (`deny`). */
export interface Connection {
  /** Milliseconds since the epoch, from the TAI64N label; null when the line has none. */
  at: number | null;
  ip: string;
  denied: boolean;
}

/** TAI64 labels count from 2^62, and daemontools' clock is TAI = UTC + 10 s (leap seconds ignored, as tai64nlocal does). */
const TAI64_EPOCH = 2n ** 62n + 10n;

/** `@` + 16 hex digits of seconds + 8 of nanoseconds -> epoch milliseconds; null if it is not a label. */
export function parseTai64n(label: string): number | null {
  if (label.length !== 25 || label[0] !== '@' || !/^@[0-9a-f]{24}$/i.test(label)) return null;
  const secs = BigInt(`0x${label.slice(1, 17)}`) - TAI64_EPOCH;
  const nanos = Number.parseInt(label.slice(17), 16);
  if (nanos > 999_999_999) return null;
  return Number(secs) * 1000 + Math.floor(nanos / 1e6);
}

/** The TAI64N label of a time (what multilog would write), for tests and generated logs. */
export function formatTai64n(ms: number): string {
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

/** One spelling per address (so that one address is one row): lower case, `::ffff:a.b.c.d` as the IPv4 address it is. */
function canonicalIp(ip: string): string | null {
  const kind = isIP(ip);
  if (kind === 4) return ip;
  if (kind !== 6) return null;
  const lower = ip.toLowerCase();
  return lower.startsWith('::ffff:') && isIP(lower.slice(7)) === 4 ? lower.slice(7) : lower;
}

/**
 * Reads lines in order, one at a time, and returns the connections they record. `pids` carries
 * `pid P from IP` across lines (and across runs, if the caller keeps it) for the rare `ok` line
 * whose remote field does not parse.
 */
export class TcpserverLog {
  readonly pids = new Map<string, string>();
  /** Lines that mention tcpserver but were not understood (kept for the summary, not fatal). */
  odd = 0;

  /** One line without its newline; a connection, or null for every other line. */
  line(text: string): Connection | null {
    let at: number | null = null;
    let rest = text;
    if (text.charCodeAt(0) === 64 /* @ */) {
      at = parseTai64n(text.slice(0, 25));
      rest = text.slice(26);
    }
    if (!rest.startsWith('tcpserver: ')) return null;
    const words = rest.slice(11).split(' ');
    const kind = words[0];
    if (kind === 'ok' || kind === 'deny') {
      if (words.length !== 4) return this.oddLine();
      const pid = words[1];
      const ip = remoteIp(words[3]) ?? this.pids.get(pid) ?? null;
      this.pids.delete(pid);
      if (ip === null) return this.oddLine();
      return { at, ip, denied: kind === 'deny' };
    }
    if (kind === 'pid' && words.length === 4 && words[2] === 'from') {
      const ip = canonicalIp(words[3]);
      if (ip !== null) this.pids.set(words[1], ip);
      if (this.pids.size > 100_000) this.pids.clear(); // lines lost somewhere: do not grow without end
      return null;
    }
    if (kind === 'end') this.pids.delete(words[1]);
    return null;
  }

  private oddLine(): null {
    this.odd++;
    return null;
  }
}

/** Connections per address and ten-minute slot: what is stored (qguard.connections). */
export interface ConnectionCount {
  ip: string;
  /** Start of the slot, epoch milliseconds. */
  slot: number;
  connections: number;
  denied: number;
  first: number;
  last: number;
}

export const SLOT_MS = 10 * 60 * 1000;

/** Adds connections up per address and slot. */
export class ConnectionCounter {
  private readonly counts = new Map<string, ConnectionCount>();

  add(c: Connection, fallbackAt: number): void {
    const at = c.at ?? fallbackAt;
    const slot = at - (((at % SLOT_MS) + SLOT_MS) % SLOT_MS);
    const key = `${c.ip} ${slot}`;
    let n = this.counts.get(key);
    if (!n) {
      n = { ip: c.ip, slot, connections: 0, denied: 0, first: at, last: at };
      this.counts.set(key, n);
    }
    n.connections++;
    if (c.denied) n.denied++;
    if (at < n.first) n.first = at;
    if (at > n.last) n.last = at;
  }

  get size(): number {
    return this.counts.size;
  }

  /** The counts so far, and a fresh start. */
  take(): ConnectionCount[] {
    const out = [...this.counts.values()];
    this.counts.clear();
    return out;
  }
}
