// The spam-list line parser and the aggregation of an import: every format of issue 5, the
// strictness (never guessing), the fast path held equal to parseNet, aggregation held equal to
// lib/net/cidr-set.ts, and a fuzz test: no input crashes it, every line is an entry, a skip or
// a reported problem.

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { type Net, formatNet, netContains, parseNet } from '../../lib/net/address.js';
import { aggregateNets, rangeToCidrs } from '../../lib/net/cidr-set.js';
import {
  type LineResult,
  MAX_LINE,
  QUICK_SKIP,
  isMarkupLine,
  parseLine,
  quickDottedQuad,
  quickLineBytes,
  parseNetJunkFirst,
} from '../../lib/spamlist/parse-line.js';
import { EntrySet, rangeToCidrsCapped, sortKeys, v4RangeToCidrs } from '../../lib/spamlist/entry-set.js';

/** The networks of a line as CIDR text, or throws with what the parser said. */
const nets = (line: string): string[] => {
  const r = parseLine(line);
  if (r.kind !== 'nets') throw new Error(`${JSON.stringify(line)} gave ${JSON.stringify(r)}`);
  return r.nets.map(formatNet);
};
const reason = (line: string): string => {
  const r = parseLine(line);
  if (r.kind !== 'invalid') throw new Error(`${JSON.stringify(line)} was accepted: ${JSON.stringify(r)}`);
  return r.reason;
};
const kind = (line: string) => parseLine(line).kind;

describe('parseLine: formats', () => {
  it('plain addresses and CIDRs, IPv4 and IPv6', () => {
    expect(nets('192.0.2.1')).toEqual(['192.0.2.1/32']);
    expect(nets('198.51.100.0/24')).toEqual(['198.51.100.0/24']);
    expect(nets('2001:DB8::1')).toEqual(['2001:db8::1/128']);
    expect(nets('2001:db8::/32')).toEqual(['2001:db8::/32']);
    expect(nets('::ffff:192.0.2.9')).toEqual(['192.0.2.9/32']);
  });

  it('surrounding whitespace, CRLF and a UTF-8 BOM', () => {
    expect(nets('  192.0.2.1\t ')).toEqual(['192.0.2.1/32']);
    expect(nets('192.0.2.0/24\r')).toEqual(['192.0.2.0/24']);
    expect(nets('\uFEFF192.0.2.1\r')).toEqual(['192.0.2.1/32']);
    expect(kind('\uFEFF# list\r')).toBe('skip');
  });

  it('comment lines, trailing comments, blank lines', () => {
    for (const l of ['', '   ', '\r', '# Spamhaus DROP', '; Last-Modified: x', '#1.2.3.4', ';1.2.3.4']) {
      expect(kind(l)).toBe('skip');
    }
    expect(nets('192.0.2.7 # seen 2024-01-01')).toEqual(['192.0.2.7/32']);
    expect(nets('2001:db8::/48#x')).toEqual(['2001:db8::/48']);
  });

  it('Spamhaus DROP lines', () => {
    expect(nets('1.10.16.0/20 ; SBL256894')).toEqual(['1.10.16.0/20']);
    expect(nets('2a06:e480::/29 ; SBL301771\r')).toEqual(['2a06:e480::/29']);
  });

  it('Spamhaus JSON lines, and their metadata line', () => {
    expect(nets('{"cidr":"1.10.16.0/20","sblid":"SBL256894","rir":"apnic"}')).toEqual(['1.10.16.0/20']);
    expect(nets('{"cidr":"2a06:e480::/29","sblid":"SBL301771","rir":"ripencc"}')).toEqual(['2a06:e480::/29']);
    expect(kind('{"type":"metadata","timestamp":1700000000,"size":86000,"records":1400,"copyright":"..."}')).toBe('skip');
    expect(reason('{"sblid":"SBL1"}')).toMatch(/without a "cidr"/);
    expect(reason('{"cidr":"012.1.1.0/24"}')).toMatch(/octal/);
    expect(reason('{"cidr": 5}')).toMatch(/without a "cidr"/);
    expect(reason('{"cidr":')).toMatch(/not valid JSON/);
    expect(reason('{}x')).toMatch(/not valid JSON/);
  });

  it('ranges become the fewest CIDRs', () => {
    expect(nets('192.0.2.0-192.0.2.255')).toEqual(['192.0.2.0/24']);
    expect(nets('192.0.2.1 - 192.0.2.6')).toEqual(['192.0.2.1/32', '192.0.2.2/31', '192.0.2.4/31', '192.0.2.6/32']);
    expect(nets('10.0.0.0-10.1.255.255')).toEqual(['10.0.0.0/15']);
    expect(nets('192.0.2.4-20')).toEqual(['192.0.2.4/30', '192.0.2.8/29', '192.0.2.16/30', '192.0.2.20/32']);
    expect(nets('2001:db8::-2001:db8::ff')).toEqual(['2001:db8::/120']);
    expect(nets('192.0.2.9-192.0.2.9')).toEqual(['192.0.2.9/32']);
    expect(reason('192.0.2.9-192.0.2.1')).toMatch(/ends before it starts/);
    expect(reason('192.0.2.1-2001:db8::1')).toMatch(/mixes IPv4 and IPv6/);
    expect(reason('192.0.2.1-256')).toMatch(/0-255/);
    expect(reason('192.0.2.1-020')).toMatch(/0-255/);
    expect(reason('192.0.2.0/24-192.0.3.0')).toMatch(/range start: a single address/);
    expect(reason('192.0.2.1-192.0.2')).toMatch(/range end/);
  });

  it('tcprules lines: exact, prefix, first-dash ranges', () => {
    expect(nets('192.0.2.7:deny')).toEqual(['192.0.2.7/32']);
    expect(nets('192.0.2.:deny')).toEqual(['192.0.2.0/24']);
    expect(nets('10.2.:deny')).toEqual(['10.2.0.0/16']);
    expect(nets('10.:deny')).toEqual(['10.0.0.0/8']);
    expect(nets('1.2.3.4-20:deny')).toEqual(['1.2.3.4/30', '1.2.3.8/29', '1.2.3.16/30', '1.2.3.20/32']);
    expect(nets('10.2-3.:deny')).toEqual(['10.2.0.0/15']);
    // Not contiguous: 1.2.7.0/24, 1.3.7.0/24, 1.4.7.0/24, as tcpserver would match.
    expect(nets('1.2-4.7.:deny')).toEqual(['1.2.7.0/24', '1.3.7.0/24', '1.4.7.0/24']);
    expect(nets('192.0.2.7:deny,RBLSMTPD="-go away"')).toEqual(['192.0.2.7/32']);
    // A comment that happens to say ":deny" is still a comment.
    expect(nets('192.0.2.8 ; was 192.0.2.:deny')).toEqual(['192.0.2.8/32']);
    // The empty key is everyone: the parser says so, the guards refuse it.
    expect(nets(':deny')).toEqual(['0.0.0.0/0']);
  });

  it('tcprules lines that are not listings or never match', () => {
    expect(reason('192.0.2.:allow,RELAYCLIENT=""')).toMatch(/allow line is not a listing/);
    expect(reason(':allow')).toMatch(/allow line/);
    expect(reason('=mail.example.com:deny')).toMatch(/host-name/);
    expect(reason('joe@192.0.2.1:deny')).toMatch(/user@ip/);
    expect(reason('1.2:deny')).toMatch(/four parts or a trailing dot/);
    expect(reason('1.2.3.4.:deny')).toMatch(/four parts never matches/);
    expect(reason('1.2.03.:deny')).toMatch(/octal/);
    expect(reason('1.2-3.4-5.:deny')).toMatch(/only the first range/);
    expect(reason('1.2.3.9-4:deny')).toMatch(/ends before/);
    expect(reason('1.2.300.:deny')).toMatch(/0-255/);
    expect(reason('1.2.3.x:deny')).toMatch(/not a tcprules IPv4 key/);
  });

  it('is strict: octal-looking, short, host bits, junk are reported, never guessed', () => {
    expect(reason('012.0.0.1')).toMatch(/octal/);
    expect(reason('192.0.2.01')).toMatch(/octal/);
    expect(reason('1.2.3')).toMatch(/not an IPv4/);
    expect(reason('256.1.1.1')).toMatch(/not an IPv4/);
    expect(reason('192.0.2.5/24')).toMatch(/host bits set.*192\.0\.2\.0\/24/);
    expect(reason('192.0.2.0/33')).toMatch(/longer than/);
    expect(reason('192.0.2.0/024')).toMatch(/bad prefix/);
    expect(reason('192.0.2.1 192.0.2.2')).toMatch(/more than one word/);
    expect(reason('spam.example.com')).toMatch(/not an IP/);
    expect(reason('fe80::1%eth0')).toMatch(/zone/);
    expect(reason('x'.repeat(MAX_LINE + 1))).toMatch(/longer than/);
  });

  it('markup is never an entry, and is recognised for the whole-input check', () => {
    expect(reason('<!DOCTYPE html>')).toMatch(/markup/);
    expect(reason('<html><head><title>404 Not Found</title>')).toMatch(/markup/);
    expect(isMarkupLine('  <html>')).toBe(true);
    expect(isMarkupLine('\uFEFF<?xml version="1.0"?>')).toBe(true);
    expect(isMarkupLine('192.0.2.1 # <b>')).toBe(false);
  });
});

describe('quickDottedQuad: the fast path is parseNet, only faster', () => {
  const check = (s: string) => {
    const q = quickDottedQuad(s);
    // The reader's bytes form gives the same answer for a line of just this text (unless the
    // text is blank or a comment, or a trailing comment follows an entry), also with a CR.
    for (const bytes of [Buffer.from(`x${s}x`), Buffer.from(`x${s}\rx`)]) {
      const b = quickLineBytes(bytes, 1, bytes.length - 1);
      if (s !== '' && !/[\s#;]/.test(s)) expect(b, s).toBe(q ? q.addr * 64 + q.prefix : -1);
    }
    if (q === null) return;
    const r = parseNet(s);
    expect(r.ok, s).toBe(true);
    if (r.ok) {
      expect(r.net.family).toBe(4);
      expect(Number(r.net.addr)).toBe(q.addr);
      expect(r.net.prefix).toBe(q.prefix);
    }
  };

  it('agrees with parseNet on every text it accepts', () => {
    const chars = fc.constantFrom(...'0123456789./ -x:'.split(''));
    fc.assert(fc.property(fc.string({ unit: chars, maxLength: 20 }), (s) => check(s)), { numRuns: 20_000 });
    const octet = fc.oneof(fc.integer({ min: 0, max: 300 }).map(String), fc.constantFrom('00', '01', '010', '255', '256', ''));
    const quadish = fc
      .tuple(octet, octet, octet, octet, fc.option(fc.oneof(fc.integer({ min: 0, max: 40 }).map(String), fc.constantFrom('08', '', '/'))))
      .map(([a, b, c, d, p]) => `${a}.${b}.${c}.${d}${p === null ? '' : `/${p}`}`);
    fc.assert(fc.property(quadish, (s) => check(s)), { numRuns: 20_000 });
  });

  it('accepts every canonical address and network', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.integer({ min: 0, max: 32 }), fc.boolean(), (a, p, bare) => {
        const size = 2 ** (32 - p);
        const addr = a - (a % size);
        const text = `${addr >>> 24}.${(addr >>> 16) & 255}.${(addr >>> 8) & 255}.${addr & 255}${bare && p === 32 ? '' : `/${p}`}`;
        expect(quickDottedQuad(text)).toEqual({ addr, prefix: p });
      }),
      { numRuns: 5000 },
    );
  });
});

describe('quickLineBytes: the reader\'s hot path says what parseLine says, whenever it answers', () => {
  /** quickLineBytes on the line's UTF-8 bytes, checked against parseLine; returns its answer. */
  const check = (line: string): number => {
    const bytes = Buffer.from(`\n${line}\n`);
    const q = quickLineBytes(bytes, 1, bytes.length - 1);
    const r = parseLine(line);
    if (q === QUICK_SKIP) expect(r, JSON.stringify(line)).toEqual({ kind: 'skip' });
    else if (q >= 0) {
      const prefix = q % 64;
      expect(r, JSON.stringify(line)).toEqual({ kind: 'nets', nets: [{ family: 4, addr: BigInt((q - prefix) / 64), prefix }] });
    } else expect(q, JSON.stringify(line)).toBe(-1);
    return q;
  };

  it('plain entries, blanks, trailing comments, comment and blank lines', () => {
    expect(check('192.0.2.1')).toBe(0xc0000201 * 64 + 32);
    expect(check('  198.51.100.0/24 ; SBL123\r')).toBe(0xc6336400 * 64 + 24);
    expect(check('192.0.2.7\t# seen twice')).toBe(0xc0000207 * 64 + 32);
    expect(check('192.0.2.7;x')).toBe(0xc0000207 * 64 + 32);
    for (const l of ['', ' \t\r', '# c', ';; c', '  # 1.2.3.4']) expect(check(l)).toBe(QUICK_SKIP);
    // Everything else is parseLine's: ranges, tcprules, IPv6, JSON, a BOM, junk, two words.
    for (const l of ['192.0.2.1-192.0.2.5', '192.0.2.:deny', '192.0.2.1:deny', '2001:db8::/32', '{"cidr":"192.0.2.0/24"}',
      '\uFEFF192.0.2.1', '192.0.2.1 192.0.2.2', '192.0.2.1 x', '012.0.0.1', '10.0.0.5/24', '\u00a0192.0.2.1']) {
      expect(check(l)).toBe(-1);
    }
    // Over MAX_LINE, even a comment is parseLine's to report.
    expect(check(`#${'x'.repeat(MAX_LINE)}`)).toBe(-1);
  });

  it('agrees with parseLine on random lines made of the pieces that matter', () => {
    const piece = fc.constantFrom('1', '0', '9', '25', '255', '256', '01', '.', '/', '24', '32', ' ', '\t', '\r', '\v',
      '#', ';', ':deny', '-', 'x', '\u00a0', '\uFEFF', '::', '{', '<');
    fc.assert(fc.property(fc.array(piece, { maxLength: 14 }), (ps) => void check(ps.join(''))), { numRuns: 30_000 });
    fc.assert(fc.property(fc.constantFrom(...SAMPLES), fc.string({ maxLength: 6 }), fc.string({ maxLength: 6 }), (s, a, b) => {
      check(s);
      check(a + s + b);
    }), { numRuns: 5000 });
  });
});

describe('parseNetJunkFirst: parseNet, answering junk without ipaddr', () => {
  it('gives parseNet\'s answer for every text', () => {
    const piece = fc.constantFrom('1', '0', '01', '255', '256', '.', '/', '24', ':', '::', 'ffff', 'x', 'g', ' ', '%', '-', 'é', '\t');
    fc.assert(fc.property(fc.array(piece, { maxLength: 12 }), (ps) => {
      const t = ps.join('');
      expect(parseNetJunkFirst(t), JSON.stringify(t)).toEqual(parseNet(t));
    }), { numRuns: 20_000 });
    fc.assert(fc.property(fc.string({ maxLength: 120 }), (t) => {
      expect(parseNetJunkFirst(t)).toEqual(parseNet(t));
    }), { numRuns: 5000 });
    for (const t of ['023.45.67.89x', 'junk', 'x/24', `${'a'.repeat(101)}`, '1.2.3.4/x', '::ffff:1.2.3.4', 'fe80::1%eth0']) {
      expect(parseNetJunkFirst(t), t).toEqual(parseNet(t));
    }
  });
});

// ---------------------------------------------------------------------------------------
// Aggregation

const arbV4Net: fc.Arbitrary<Net> = fc
  .tuple(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.integer({ min: 8, max: 32 }))
  .map(([a, p]) => ({ family: 4 as const, addr: BigInt(a - (a % 2 ** (32 - p))), prefix: p }));
/** Clustered, so that overlaps, duplicates and neighbours are common. */
const arbClusteredV4: fc.Arbitrary<Net> = fc
  .tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 26, max: 32 }))
  .map(([a, p]) => ({ family: 4 as const, addr: BigInt(0xc0000200 + a - (a % 2 ** (32 - p))), prefix: p }));
const arbV6Net: fc.Arbitrary<Net> = fc
  .tuple(fc.integer({ min: 0, max: 1023 }), fc.integer({ min: 118, max: 128 }))
  .map(([a, p]) => ({ family: 6 as const, addr: (0x20010db8n << 96n) + BigInt(a - (a % 2 ** (128 - p))), prefix: p }));

function aggregateTexts(input: Net[], min = { 4: 0, 6: 0 }) {
  const set = new EntrySet();
  for (const n of input) set.add(n);
  const r = set.aggregate(min);
  const list = [...r.texts()];
  // The COPY bytes say the same, line by line, and so do the numbers the import diffs.
  expect(Buffer.concat([...r.chunks()]).toString()).toBe(list.map((x) => `${x}\n`).join(''));
  const v4 = Array.from(r.v4, (k) => formatNet({ family: 4, addr: BigInt((k - (k % 64)) / 64), prefix: k % 64 }));
  expect([...v4, ...r.v6.map(formatNet)]).toEqual(list);
  return { ...r, list };
}

describe('EntrySet: deduplicate and aggregate', () => {
  it('sortKeys (radix, from 4096 keys) sorts as the built-in numeric sort does', () => {
    const arbKey = fc.oneof(
      fc.tuple(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.integer({ min: 0, max: 32 })).map(([a, p]) => a * 64 + p),
      fc.integer({ min: 0, max: 300 }),
    );
    fc.assert(
      fc.property(fc.array(arbKey, { minLength: 4000, maxLength: 9000 }), (list) => {
        const keys = Float64Array.from(list);
        sortKeys(keys);
        expect(keys).toEqual(Float64Array.from(list).sort());
      }),
      { numRuns: 30 },
    );
  });

  it('counts duplicates and what aggregation absorbed', () => {
    const input = ['192.0.2.0/25', '192.0.2.128/25', '192.0.2.0/25', '192.0.2.7', '198.51.100.1', '2001:db8::/64', '2001:db8::/64']
      .map((t) => (parseNet(t) as { net: Net }).net);
    const r = aggregateTexts(input);
    expect(r.list).toEqual(['192.0.2.0/24', '198.51.100.1/32', '2001:db8::/64']);
    expect(r.duplicate).toBe(2);
    expect(r.unique).toBe(5);
    expect(r.aggregated).toBe(2); // the two /25 became one /24; 192.0.2.7 was inside it
    expect(r.networks).toBe(3);
  });

  it('COPY chunks hold every network across chunk boundaries', () => {
    const rnd = fc.sample(fc.tuple(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.integer({ min: 24, max: 32 })), { numRuns: 20_000, seed: 7 });
    const input = rnd.map(([a, p]) => ({ family: 4 as const, addr: BigInt(a - (a % 2 ** (32 - p))), prefix: p }));
    const r = aggregateTexts(input, { 4: 8, 6: 32 });
    expect(r.list.length).toBeGreaterThan(5000); // several 64 kB chunks
    expect(r.list).toEqual(aggregateNets(input).map(formatNet));
  });

  it('never merges into a network broader than the minimum prefix', () => {
    const input = ['10.0.0.0/8', '11.0.0.0/8', '2001:db8::/33', '2001:db8:8000::/33'].map((t) => (parseNet(t) as { net: Net }).net);
    expect(aggregateTexts(input, { 4: 8, 6: 32 }).list).toEqual(['10.0.0.0/8', '11.0.0.0/8', '2001:db8::/32']);
    expect(aggregateTexts(input, { 4: 7, 6: 32 }).list).toEqual(['10.0.0.0/7', '2001:db8::/32']);
  });

  it('equals aggregateNets of lib/net/cidr-set.ts (no floor)', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(arbV4Net, arbClusteredV4, arbClusteredV4, arbV6Net), { maxLength: 60 }), (input) => {
        const got = aggregateTexts(input).list;
        expect(got).toEqual(aggregateNets(input).map(formatNet));
      }),
      { numRuns: 2000 },
    );
  });

  it('with a floor: covers exactly the same addresses, nothing broader than the floor', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(arbClusteredV4, arbV6Net), { maxLength: 40 }), fc.integer({ min: 26, max: 30 }), (input, floor) => {
        const wanted = input.filter((n) => n.family === 6 || n.prefix >= floor);
        const got = aggregateTexts(wanted, { 4: floor, 6: 118 }).list.map((t) => (parseNet(t) as { net: Net }).net);
        for (const n of got) expect(n.prefix).toBeGreaterThanOrEqual(n.family === 4 ? floor : 118);
        // Same union: each side's aggregation without a floor is identical.
        expect(aggregateNets(got).map(formatNet)).toEqual(aggregateNets(wanted).map(formatNet));
      }),
      { numRuns: 1000 },
    );
  });

  it('the number form of range → CIDRs equals the bigint forms', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.integer({ min: 0, max: 70000 }), fc.integer({ min: 0, max: 32 }), (first, span, floor) => {
        // Short spans under a high floor: the answer has up to span / 2^(32-floor) CIDRs.
        const len = floor > 20 ? span % 600 : span;
        const last = Math.min(2 ** 32 - 1, first + len);
        const fast: string[] = [];
        v4RangeToCidrs(first, last, floor, (a, p) => fast.push(formatNet({ family: 4, addr: BigInt(a), prefix: p })));
        const range = { family: 4 as const, first: BigInt(first), last: BigInt(last) };
        expect(fast).toEqual(rangeToCidrsCapped(range, floor).map(formatNet));
        if (floor === 0) expect(fast).toEqual(rangeToCidrs(range).map(formatNet));
      }),
      { numRuns: 3000 },
    );
    // The whole space in one go, with and without a floor.
    const all: string[] = [];
    v4RangeToCidrs(0, 2 ** 32 - 1, 0, (a, p) => all.push(`${a}/${p}`));
    expect(all).toEqual(['0/0']);
    let n = 0;
    v4RangeToCidrs(0, 2 ** 32 - 1, 8, () => n++);
    expect(n).toBe(256);
  });
});

describe('EntrySet.dropInside: entries equal to or inside relay/trust networks', () => {
  const n = (t: string) => (parseNet(t) as { net: Net }).net;

  it('drops equal and inner entries once each, keeps those that contain one', () => {
    const set = new EntrySet();
    for (const t of ['198.51.100.0/24', '198.51.100.9', '198.51.100.9', '198.51.0.0/16', '100.81.0.7', '100.81.0.0/24', '2001:db8:1::5', '2001:db8::/32']) {
      set.add(n(t));
    }
    const outer = [n('198.51.100.0/24'), n('100.81.0.7'), n('198.51.100.0/25'), n('2001:db8:1::/48')];
    const dropped = set.dropInside(outer).map((d) => `${formatNet(d.net)} in ${formatNet(d.inside)}`);
    expect(dropped.sort()).toEqual(
      ['100.81.0.7/32 in 100.81.0.7/32', '198.51.100.0/24 in 198.51.100.0/24', '198.51.100.9/32 in 198.51.100.0/24', '2001:db8:1::5/128 in 2001:db8:1::/48'].sort(),
    );
    const r = set.aggregate({ 4: 8, 6: 32 });
    expect([...r.texts()]).toEqual(['100.81.0.0/24', '198.51.0.0/16', '2001:db8::/32']);
    expect(r.duplicate).toBe(0); // the repeated 198.51.100.9 went with the drop
  });

  it('equals a brute-force model on random entries and outer networks', () => {
    fc.assert(
      fc.property(fc.array(arbClusteredV4, { maxLength: 50 }), fc.array(arbClusteredV4, { maxLength: 6 }), (entries, outer) => {
        const set = new EntrySet();
        for (const e of entries) set.add(e);
        const dropped = set.dropInside(outer).map((d) => formatNet(d.net));
        const model = [...new Set(entries.filter((e) => outer.some((o) => netContains(o, e))).map(formatNet))];
        expect(dropped.sort()).toEqual(model.sort());
        const kept = entries.filter((e) => !outer.some((o) => netContains(o, e)));
        expect([...set.aggregate({ 4: 0, 6: 0 }).texts()]).toEqual(aggregateNets(kept).map(formatNet));
      }),
      { numRuns: 2000 },
    );
  });
});

// ---------------------------------------------------------------------------------------
// Fuzz

/** The outcome must be one of the three kinds, and an entry must be a well-formed network. */
function wellFormed(line: string, r: LineResult): void {
  if (r.kind === 'skip') return;
  if (r.kind === 'invalid') {
    expect(typeof r.reason).toBe('string');
    expect(r.reason.length, line).toBeGreaterThan(0);
    expect(r.reason.length).toBeLessThan(400);
    return;
  }
  expect(r.kind).toBe('nets');
  expect(r.nets.length).toBeGreaterThan(0);
  for (const n of r.nets) {
    const bits = n.family === 4 ? 32 : 128;
    expect(n.prefix >= 0 && n.prefix <= bits).toBe(true);
    expect(netContains({ family: n.family, addr: n.addr, prefix: n.prefix }, n)).toBe(true);
    // Host bits clear: the canonical text parses back to the same network.
    const back = parseNet(formatNet(n));
    expect(back.ok && back.net.addr === n.addr && back.net.prefix === n.prefix).toBe(true);
  }
}

const SAMPLES = [
  '192.0.2.1',
  '198.51.100.0/24 ; SBL123',
  '{"cidr":"203.0.113.0/24","sblid":"SBL9"}',
  '10.1.2.:deny',
  '1.2.3.4-20:deny',
  '192.0.2.1-192.0.2.77',
  '2001:db8::/32 # v6',
  '\uFEFF# header\r',
];

describe('fuzz: no crash, every line an entry, a skip or a reported problem', () => {
  it('random bytes, split into lines as the reader does', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => {
        const text = Buffer.from(bytes).toString('utf8');
        for (const line of text.split('\n')) wellFormed(line, parseLine(line));
      }),
      { numRuns: 5000 },
    );
  });

  it('mutated real lines', () => {
    const mutation = fc.tuple(fc.nat(), fc.constantFrom('insert', 'delete', 'replace', 'dup'), fc.string({ unit: 'binary', minLength: 1, maxLength: 3 }));
    fc.assert(
      fc.property(fc.constantFrom(...SAMPLES), fc.array(mutation, { minLength: 1, maxLength: 4 }), (sample, muts) => {
        let s = sample;
        for (const [pos, op, chunk] of muts) {
          const i = s.length === 0 ? 0 : pos % s.length;
          if (op === 'insert') s = s.slice(0, i) + chunk + s.slice(i);
          else if (op === 'delete') s = s.slice(0, i) + s.slice(i + 1);
          else if (op === 'replace') s = s.slice(0, i) + chunk + s.slice(i + chunk.length);
          else s = s.slice(0, i) + s.slice(i) + s.slice(i);
        }
        wellFormed(s, parseLine(s));
      }),
      { numRuns: 20_000 },
    );
  });
});
