// tcpserver's log lines as multilog stamps them, and the reader that follows a multilog
// directory across runs and rotations without reading a line twice or skipping one.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConnectionCounter, SLOT_MS, TcpserverLog, formatTai64n, parseTai64n } from '../../lib/qmail/tcpserver-log.js';
import { type LogPosition, readLogBytesSince } from '../../lib/io/multilog-read.js';

describe('TAI64N labels', () => {
  it('reads what tai64nlocal reads (TAI = UTC + 10 s), to the millisecond, and round-trips', () => {
    // tai64nlocal of @4000000069a1b2c30d2f1e88 (2026-02-27 15:12:35.221 UTC, from daemontools' own arithmetic)
    const ms = parseTai64n('@4000000069a1b2c30d2f1e88')!;
    expect(new Date(ms).toISOString()).toBe(new Date((0x69a1b2c3 - 10) * 1000 + Math.floor(0x0d2f1e88 / 1e6)).toISOString());
    for (const t of [0, 1_700_000_000_123, Date.UTC(2026, 11, 7, 3, 0, 0, 999)]) expect(parseTai64n(formatTai64n(t))).toBe(t);
  });
  it('refuses what is not a label', () => {
    for (const bad of ['', '@', '@4000000069a1b2c3', '@4000000069a1b2c30d2f1e8g', 'x4000000069a1b2c30d2f1e88', '@40000000ffffffffffffffff'])
      expect(parseTai64n(bad)).toBeNull();
  });
});

describe('tcpserver lines', () => {
  const at = formatTai64n(Date.UTC(2026, 11, 7, 3, 0, 0));
  it('counts a connection from its ok or deny line, with the client address', () => {
    const log = new TcpserverLog();
    expect(log.line(`${at} tcpserver: status: 1/40`)).toBeNull();
    expect(log.line(`${at} tcpserver: pid 9848 from 203.0.113.5`)).toBeNull();
    expect(log.line(`${at} tcpserver: ok 9848 mx.example.net:192.0.2.1:25 :203.0.113.5::43424`)).toEqual({ at: Date.UTC(2026, 11, 7, 3), ip: '203.0.113.5', denied: false });
    expect(log.line(`${at} tcpserver: end 9848 status 0`)).toBeNull();
    expect(log.line(`${at} tcpserver: deny 9849 0:192.0.2.1:25 spam.example:198.51.100.7:ident:5100`)).toMatchObject({ ip: '198.51.100.7', denied: true });
    expect(log.odd).toBe(0);
  });
  it('reads IPv6 clients (colons of their own) and gives IPv4-mapped ones as IPv4', () => {
    const log = new TcpserverLog();
    expect(log.line(`${at} tcpserver: ok 1 ::1:2001:db8::1:25 :2001:DB8:BAD::5::40000`)?.ip).toBe('2001:db8:bad::5');
    expect(log.line(`${at} tcpserver: ok 2 0:::ffff:192.0.2.1:25 :::ffff:203.0.113.9::40000`)?.ip).toBe('203.0.113.9');
  });
  it('other lines are not connections; an ok line it cannot read is counted as odd, not guessed', () => {
    const log = new TcpserverLog();
    expect(log.line(`${at} tcpserver: pid 77 from 203.0.113.77`)).toBeNull();
    expect(log.line(`${at} tcpserver: ok 77 0:192.0.2.1:25 garbage`)).toBeNull();
    expect(log.line(`${at} tcpserver: ok 78 0:192.0.2.1:25 :203.0.113.78::1 extra`)).toBeNull();
    expect(log.line(`${at} tcpserver: ok 79 :999.0.113.79::1`)).toBeNull();
    expect(log.odd).toBe(3);
    expect(log.line(`${at} qmail-smtpd: pid 77 from 203.0.113.77`)).toBeNull();
    expect(log.line(`${at} rblsmtpd: 203.0.113.77 pid 77: 451 listed`)).toBeNull();
    expect(log.line(`${at} tcpserver: okay 1 2 3`)).toBeNull();
    expect(log.odd).toBe(3);
    expect(log.line('tcpserver: ok 79 0:192.0.2.1:25 :203.0.113.79::1')).toEqual({ at: null, ip: '203.0.113.79', denied: false }); // multilog without t
  });
  it('reads a chunk of many lines as line() reads each of them (random logs with odd lines among them)', () => {
    let seed = 3;
    const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const pick = <T>(xs: T[]) => xs[Math.floor(rand() * xs.length)];
    const t0 = Date.UTC(2026, 11, 7, 3, 0, 0);
    for (let round = 0; round < 30; round++) {
      const lines: string[] = [];
      for (let i = 0; i < 300; i++) {
        const label = pick([formatTai64n(t0 + i * 997), formatTai64n(t0 + i * 997), '@4000000069a1b2c30d2f1e8g', '', '@short']);
        const ip = pick(['203.0.113.5', '2001:db8::5', '::ffff:198.51.100.9', '999.1.1.1', '203.0.113.0/24']);
        const body = pick([
          `tcpserver: ok ${i} mx:192.0.2.1:25 :${ip}::${i}`,
          `tcpserver: deny ${i} mx:192.0.2.1:25 host.example:${ip}:info:${i}`,
          `tcpserver: ok ${i} mx:192.0.2.1:25 :${ip}::${i} extra`,
          `tcpserver: ok ${i} garbage`,
          `tcpserver: deny ${i}`,
          `tcpserver: pid ${i} from ${ip}`,
          `tcpserver: status: 1/40`,
          `qmail-smtpd: tcpserver: ok ${i} mx:192.0.2.1:25 :${ip}::1`,
          `tcpserver: okay ${i} 1 2`,
        ]);
        lines.push(label === '' ? body : `${label} ${body}`);
      }
      const one = new TcpserverLog();
      const byLine = new ConnectionCounter();
      for (const l of lines) {
        const c = one.line(l);
        if (c) byLine.add(c, 42);
      }
      const chunked = new TcpserverLog();
      const byChunk = new ConnectionCounter();
      // a chunk as the reader gives it: whole lines, the last one maybe without its newline
      const buf = Buffer.from(`junk\n${lines.join('\n')}${round % 2 ? '\n' : ''}`, 'latin1');
      const got = chunked.chunk(buf, 5, buf.length, byChunk, 42);
      const sort = (xs: ReturnType<ConnectionCounter['take']>) => xs.sort((x, y) => x.slot - y.slot || (x.ip < y.ip ? -1 : 1));
      const want = sort(byLine.take());
      expect(sort(byChunk.take())).toEqual(want);
      expect(got.connections).toBe(want.reduce((n, r) => n + r.connections, 0));
      expect(got.denied).toBe(want.reduce((n, r) => n + r.denied, 0));
      expect(chunked.odd).toBe(one.odd);
    }
  });
  it('adds connections up per address and ten-minute slot', () => {
    const c = new ConnectionCounter();
    const t0 = Date.UTC(2026, 11, 7, 3, 0, 0);
    for (const [dt, ip, denied] of [[0, 'a', false], [1000, 'a', true], [SLOT_MS, 'a', false], [5, 'b', false]] as const) c.add({ at: t0 + dt, ip, denied }, 0);
    c.addAccepted('b', t0 + 7);
    c.addAccepted('c', t0 - 1);
    expect(c.take().sort((x, y) => x.ip.localeCompare(y.ip) || x.slot - y.slot)).toEqual([
      { ip: 'a', slot: t0, connections: 2, denied: 1, accepted: 0, first: t0, last: t0 + 1000 },
      { ip: 'a', slot: t0 + SLOT_MS, connections: 1, denied: 0, accepted: 0, first: t0 + SLOT_MS, last: t0 + SLOT_MS },
      { ip: 'b', slot: t0, connections: 1, denied: 0, accepted: 1, first: t0 + 5, last: t0 + 7 },
      { ip: 'c', slot: t0 - SLOT_MS, connections: 0, denied: 0, accepted: 1, first: t0 - 1, last: t0 - 1 },
    ]);
    expect(c.size).toBe(0);
  });
});

describe('following a multilog directory', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });
  const mk = () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'qg-multilog-'));
    dirs.push(d);
    return d;
  };
  const read = (dir: string, from: LogPosition | null) => {
    const lines: string[] = [];
    const r = readLogBytesSince(dir, from, (b, s, e) => lines.push(b.toString('latin1', s, e)));
    return { ...r, got: lines };
  };
  let n = 0;
  const rotate = (dir: string) => fs.renameSync(path.join(dir, 'current'), path.join(dir, `${formatTai64n(Date.UTC(2026, 0, 1) + n++ * 1000)}.s`));

  it('reads every line once across runs, holding back a partial last line', () => {
    const dir = mk();
    const cur = path.join(dir, 'current');
    fs.writeFileSync(cur, 'one\ntwo\nthr');
    const a = read(dir, null);
    expect(a.got).toEqual(['one', 'two']);
    expect(a.lost).toBeNull();
    fs.appendFileSync(cur, 'ee\nfour\n');
    const b = read(dir, a.position);
    expect(b.got).toEqual(['three', 'four']);
    const c = read(dir, b.position);
    expect(c.got).toEqual([]);
    expect(c.position).toEqual(b.position);
  });

  it('follows the file it was reading into its rotated name, then newer files, then the new current', () => {
    const dir = mk();
    const cur = path.join(dir, 'current');
    fs.writeFileSync(cur, 'a1\na2\n');
    const a = read(dir, null);
    fs.appendFileSync(cur, 'a3\n');
    rotate(dir);
    fs.writeFileSync(cur, 'b1\n');
    rotate(dir);
    fs.writeFileSync(cur, 'c1\nc2');
    const b = read(dir, a.position);
    expect(b.got).toEqual(['a3', 'b1', 'c1']);
    expect(b.files).toBe(3);
    expect(b.lost).toBeNull();
    fs.appendFileSync(cur, '\n');
    expect(read(dir, b.position).got).toEqual(['c2']);
  });

  it('the first read takes the history still there, oldest first (and a .u file an interrupted multilog left)', () => {
    const dir = mk();
    fs.writeFileSync(path.join(dir, `${formatTai64n(Date.UTC(2026, 0, 2))}.s`), 'second\n');
    fs.writeFileSync(path.join(dir, `${formatTai64n(Date.UTC(2026, 0, 1))}.u`), 'first\npartial-at-end');
    fs.writeFileSync(path.join(dir, 'current'), 'third\n');
    fs.writeFileSync(path.join(dir, 'state'), '');
    fs.writeFileSync(path.join(dir, 'lock'), '');
    expect(read(dir, null).got).toEqual(['first', 'partial-at-end', 'second', 'third']);
  });

  it('says so when the file it was reading is gone (rotated out before this run), and reads what is there', () => {
    const dir = mk();
    const cur = path.join(dir, 'current');
    fs.writeFileSync(cur, 'old\n');
    const a = read(dir, null);
    fs.rmSync(cur);
    fs.writeFileSync(cur, 'new\n');
    const pos = { ...a.position!, inode: a.position!.inode + 999_999 };
    const b = read(dir, pos);
    expect(b.got).toEqual(['new']);
    expect(b.lost).toMatch(/no longer in .*may not have been counted/);
  });

  it('a new file that got the old inode number is not taken for the old one (its first bytes differ)', () => {
    const dir = mk();
    const cur = path.join(dir, 'current');
    fs.writeFileSync(cur, '@4000000000000001 first file\n');
    const a = read(dir, null);
    fs.writeFileSync(cur, '@4000000000000002 other file, longer than the first\n'); // same inode, new content
    const b = read(dir, a.position);
    expect(b.got).toEqual(['@4000000000000002 other file, longer than the first']);
    expect(b.lost).not.toBeNull();
  });

  it('a read limited in bytes stops at a whole line, and the next read goes on from there, across files', () => {
    const dir = mk();
    const cur = path.join(dir, 'current');
    fs.writeFileSync(cur, 'aaaa\nbbbb\ncccc\n');
    rotate(dir);
    fs.writeFileSync(cur, 'dddd\neeee\n');
    const got: string[] = [];
    let pos: LogPosition | null = null;
    for (let run = 0; run < 10; run++) {
      const r = readLogBytesSince(dir, pos, (b, s, e) => got.push(b.toString('latin1', s, e)), 7);
      pos = r.position;
      if (!r.more) break;
    }
    expect(got).toEqual(['aaaa', 'bbbb', 'cccc', 'dddd', 'eeee']);
  });

  it('a missing directory is an error naming it', () => {
    expect(() => readLogBytesSince('/nonexistent/qguard-log', null, () => {})).toThrow(/unable to read the log directory \/nonexistent\/qguard-log/);
  });
});
