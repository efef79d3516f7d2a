// The accepted networks of one import, held compactly while the list streams by (IPv4 as one
// number each in a Float64Array: 8 bytes an entry, never the text), then deduplicated and
// aggregated iprange-style into the fewest CIDRs covering exactly their union — but never a
// CIDR broader than QGUARD_MIN_PREFIX, so merging neighbours cannot make a refused entry.
// Pure: no I/O.

import { type Net, FAMILY_BITS, formatNet, netContains } from '../net/address.js';
import type { Range } from '../net/cidr-set.js';

/** The outcome of aggregation: counts and the networks to store. */
export interface AggregateResult {
  /** Distinct networks in the input. */
  unique: number;
  /** Entries identical to an earlier one. */
  duplicate: number;
  /** Distinct networks absorbed by merging (inside another, or joined with neighbours). */
  aggregated: number;
  /** Networks to store. */
  networks: number;
  /** The IPv4 networks to store as numbers (address * 64 + prefix), ascending. */
  v4: Float64Array;
  /** The IPv6 networks to store, ascending. */
  v6: Net[];
  /** The networks as CIDR text (`1.2.3.0/24`, `1.2.3.4/32`), IPv4 first, in address order. */
  texts(): Generator<string>;
  /** The same, one per line (`\n`), as UTF-8 chunks of about 64 kB: COPY's text format. */
  chunks(): Generator<Buffer>;
}

/** Number of trailing zero bits of v (v > 0n), at most `bits`. */
function trailingZeros(v: bigint, bits: number): number {
  if (v === 0n) return bits;
  let n = 0;
  while ((v & 0xffffffffn) === 0n) {
    v >>= 32n;
    n += 32;
  }
  const low = Number(v & 0xffffffffn);
  return n + 31 - Math.clz32(low & -low);
}

/** Floor of log2 of v (v > 0n). */
function log2(v: bigint): number {
  return v.toString(2).length - 1;
}

/**
 * The fewest CIDRs covering exactly [first, last], none broader than /minPrefix.
 * (rangeToCidrs of lib/net/cidr-set.ts with a floor on the prefix.)
 */
export function rangeToCidrsCapped(range: Range, minPrefix: number): Net[] {
  const bits = FAMILY_BITS[range.family];
  const maxSize = bits - minPrefix;
  const out: Net[] = [];
  let start = range.first;
  while (start <= range.last) {
    // The largest block aligned at `start` that does not pass `last` nor the floor.
    const size = Math.min(trailingZeros(start, bits), log2(range.last - start + 1n), maxSize);
    out.push({ family: range.family, addr: start, prefix: bits - size });
    start += 1n << BigInt(size);
  }
  return out;
}

/**
 * rangeToCidrsCapped for IPv4 on plain numbers (exact: every value stays below 2^33), calling
 * `emit(addr, prefix)` per CIDR. Used for the million-entry case; tested equal to the above.
 */
export function v4RangeToCidrs(first: number, last: number, minPrefix: number, emit: (addr: number, prefix: number) => void): void {
  const maxSize = 32 - minPrefix;
  let start = first;
  while (start <= last) {
    let size = 0;
    while (size < maxSize) {
      const next = 2 ** (size + 1);
      if (start % next !== 0 || start + next - 1 > last) break;
      size++;
    }
    emit(start, 32 - size);
    start += 2 ** size;
  }
}

function v4Text(addr: number, prefix: number): string {
  return `${Math.floor(addr / 16777216)}.${Math.floor(addr / 65536) % 256}.${Math.floor(addr / 256) % 256}.${addr % 256}/${prefix}`;
}

/**
 * Sort IPv4 keys (integers below 2^39: address * 64 + prefix) ascending, in place. A radix
 * sort, three passes of 13 bits: a million keys in some 40 ms, where the built-in numeric sort
 * takes 100-150 ms. Small arrays use the built-in sort.
 */
export function sortKeys(keys: Float64Array): void {
  const n = keys.length;
  let sorted = true; // many lists come sorted by address
  for (let i = 1; i < n && sorted; i++) sorted = keys[i - 1] <= keys[i];
  if (sorted) return;
  if (n < 4096) {
    keys.sort();
    return;
  }
  let from: Float64Array = keys;
  let to: Float64Array = new Float64Array(n);
  const count = new Uint32Array(8193);
  // Digits by multiplying with powers of two and flooring: exact, and far cheaper than `%`.
  for (let inv = 1; inv > 2 ** -39; inv /= 8192) {
    count.fill(0);
    for (let i = 0; i < n; i++) {
      const q = Math.floor(from[i] * inv);
      count[q - Math.floor(q / 8192) * 8192 + 1]++;
    }
    for (let d = 1; d <= 8192; d++) count[d] += count[d - 1];
    for (let i = 0; i < n; i++) {
      const k = from[i];
      const q = Math.floor(k * inv);
      to[count[q - Math.floor(q / 8192) * 8192]++] = k;
    }
    [from, to] = [to, from];
  }
  if (from !== keys) keys.set(from);
}

/** 2^i for i = 0..32: the size of a /(32 - i). */
const POW2 = Float64Array.from({ length: 33 }, (_, i) => 2 ** i);

/**
 * Write the CIDRs of a span of merged IPv4 entries (none when `first` < 0) to `out` from `m`
 * on; the new end. An entry alone in its span (`key` >= 0) stands for itself; more are split
 * into the fewest CIDRs, none broader than /min4.
 */
function endSpan(out: Float64Array, m: number, first: number, last: number, key: number, min4: number): number {
  if (key >= 0 && key - first * 64 >= min4) {
    out[m] = key;
    return m + 1;
  }
  let n = m;
  if (first >= 0) v4RangeToCidrs(first, last, min4, (addr, prefix) => (out[n++] = addr * 64 + prefix));
  return n;
}

/** Collects networks; `aggregate()` once at the end. */
export class EntrySet {
  /** IPv4 entries as addr * 64 + prefix: one number sorts by address, then broadest first. */
  private v4 = new Float64Array(1 << 16);
  private n4 = 0;
  private sorted = false;
  private v6: Net[] = [];

  /** Entries added so far (duplicates included). */
  get size(): number {
    return this.n4 + this.v6.length;
  }

  add(net: Net): void {
    if (net.family === 4) this.addV4(Number(net.addr), net.prefix);
    else this.v6.push(net);
  }

  /** Add an IPv4 network given as numbers (address with host bits clear, prefix 0-32). */
  addV4(addr: number, prefix: number): void {
    this.addV4Key(addr * 64 + prefix);
  }

  /** Add an IPv4 network given as one number, address * 64 + prefix (quickDottedQuadBytes). */
  addV4Key(key: number): void {
    this.sorted = false;
    if (this.n4 === this.v4.length) {
      const bigger = new Float64Array(this.v4.length * 2);
      bigger.set(this.v4);
      this.v4 = bigger;
    }
    this.v4[this.n4++] = key;
  }

  /**
   * Sort now what dropInside and aggregate would sort (once): by address, then broadest first,
   * repeats adjacent. The import does it while the database is still reading.
   */
  sort(): void {
    this.sortV4();
  }

  private sortV4(): Float64Array {
    const keys = this.v4.subarray(0, this.n4);
    if (!this.sorted) {
      sortKeys(keys);
      this.sorted = true;
    }
    return keys;
  }

  /**
   * Drop the entries equal to or inside one of `outer` (the relay/trust networks): being more
   * specific they would override it. An entry that merely contains one stays. Call after the
   * last add(), before aggregate(). Returns the distinct entries dropped, each with the outer
   * network it lies in.
   */
  dropInside(outer: readonly Net[]): { net: Net; inside: Net }[] {
    const dropped: { net: Net; inside: Net }[] = [];
    const keys = this.sortV4();
    // For each entry, 1 + the index of the outer network it lies in; 0 = keep.
    let mark: Int32Array | null = null;
    outer.forEach((o, oi) => {
      if (o.family !== 4) return;
      const of = Number(o.addr);
      const ol = of + 2 ** (32 - o.prefix) - 1;
      // Entries inside `o` start in [of, ol]: find the first that starts at `of` or later.
      let lo = 0;
      let hi = keys.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        const k = keys[mid];
        if ((k - (k % 64)) / 64 < of) lo = mid + 1;
        else hi = mid;
      }
      for (let i = lo; i < keys.length; i++) {
        const k = keys[i];
        const prefix = k % 64;
        const first = (k - prefix) / 64;
        if (first > ol) break;
        if (first + 2 ** (32 - prefix) - 1 <= ol) {
          mark ??= new Int32Array(keys.length);
          if (mark[i] === 0) mark[i] = oi + 1;
        }
      }
    });
    if (mark) {
      // Keep the unmarked entries, in order; report each dropped network once.
      const m: Int32Array = mark;
      let w = 0;
      let last = NaN;
      for (let i = 0; i < keys.length; i++) {
        const k = keys[i];
        if (m[i] === 0) {
          keys[w++] = k;
        } else if (k !== last) {
          last = k;
          const prefix = k % 64;
          dropped.push({ net: { family: 4, addr: BigInt((k - prefix) / 64), prefix }, inside: outer[m[i] - 1] });
        }
      }
      this.n4 = w;
    }
    const v6outer = outer.filter((o) => o.family === 6);
    if (v6outer.length > 0) {
      const seen = new Set<string>();
      this.v6 = this.v6.filter((n) => {
        const o = v6outer.find((x) => netContains(x, n));
        if (!o) return true;
        const key = `${n.addr}/${n.prefix}`;
        if (!seen.has(key)) dropped.push({ net: n, inside: o });
        seen.add(key);
        return false;
      });
    }
    return dropped;
  }

  /** Deduplicate and aggregate; no CIDR broader than `minPrefix` per family. */
  aggregate(minPrefix: { 4: number; 6: number }): AggregateResult {
    // IPv4: sort the packed numbers (sortKeys), count repeats, merge touching spans.
    const keys = this.sortV4();
    let unique = 0;
    let duplicate = 0;
    // (The loop's state is plain locals, none of them captured by a closure: with the IPv6
    // below, 78 -> 44-55 ms for bench/import-spamlist.ts's million lines.)
    const out4 = new Float64Array(Math.max(1, this.n4));
    const min4 = minPrefix[4];
    let m4 = 0;
    let curFirst = -1;
    let curLast = -2;
    // The span's first entry while it is the only one: then it is its own CIDR (most are).
    let curKey = -1;
    let prev = -1;
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i];
      if (k === prev) {
        duplicate++;
        continue;
      }
      prev = k;
      unique++;
      const first = Math.floor(k / 64);
      const last = first + POW2[32 - (k - first * 64)] - 1;
      if (first <= curLast + 1) {
        if (last > curLast) curLast = last;
        curKey = -1;
        continue;
      }
      m4 = endSpan(out4, m4, curFirst, curLast, curKey, min4);
      curFirst = first;
      curLast = last;
      curKey = k;
    }
    m4 = endSpan(out4, m4, curFirst, curLast, curKey, min4);
    // The input array is no longer needed: let it go before the database work.
    this.v4 = new Float64Array(0);
    this.n4 = 0;

    // IPv6, the same way on bigints: sorted, repeats counted, touching spans merged; an entry
    // alone in its span is its own CIDR (the bigint splitting only for merged spans).
    const v6 = this.v6.sort((a, b) => (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : a.prefix - b.prefix));
    this.v6 = [];
    const out6: Net[] = [];
    let span: { first: bigint; last: bigint; only: Net | null } | null = null;
    const end6 = () => {
      if (!span) return;
      if (span.only && span.only.prefix >= minPrefix[6]) out6.push(span.only);
      else out6.push(...rangeToCidrsCapped({ family: 6, first: span.first, last: span.last }, minPrefix[6]));
    };
    for (let i = 0; i < v6.length; i++) {
      const net = v6[i];
      const before = v6[i - 1];
      if (before && before.addr === net.addr && before.prefix === net.prefix) {
        duplicate++;
        continue;
      }
      unique++;
      const last = net.addr | ((1n << BigInt(128 - net.prefix)) - 1n);
      if (span && net.addr <= span.last + 1n) {
        if (last > span.last) span.last = last;
        span.only = null;
      } else {
        end6();
        span = { first: net.addr, last, only: net };
      }
    }
    end6();

    const networks = m4 + out6.length;
    return {
      unique,
      duplicate,
      aggregated: unique - networks,
      networks,
      v4: out4.subarray(0, m4),
      v6: out6,
      *texts() {
        for (let i = 0; i < m4; i++) {
          const k = out4[i];
          const prefix = k % 64;
          yield v4Text((k - prefix) / 64, prefix);
        }
        for (const net of out6) yield formatNet(net);
      },
      *chunks() {
        // Digits written straight into a buffer: no string per network on the hot path.
        const size = 1 << 16;
        let buf = Buffer.allocUnsafe(size);
        let pos = 0;
        const dec = (v: number) => {
          if (v >= 100) buf[pos++] = 48 + Math.floor(v / 100);
          if (v >= 10) buf[pos++] = 48 + (Math.floor(v / 10) % 10);
          buf[pos++] = 48 + (v % 10);
        };
        for (let i = 0; i < m4; i++) {
          if (pos > size - 24) {
            yield buf.subarray(0, pos);
            buf = Buffer.allocUnsafe(size);
            pos = 0;
          }
          const k = out4[i];
          const prefix = k % 64;
          const addr = (k - prefix) / 64;
          dec(Math.floor(addr / 16777216));
          buf[pos++] = 46;
          dec(Math.floor(addr / 65536) % 256);
          buf[pos++] = 46;
          dec(Math.floor(addr / 256) % 256);
          buf[pos++] = 46;
          dec(addr % 256);
          buf[pos++] = 47;
          dec(prefix);
          buf[pos++] = 10;
        }
        if (pos > 0) yield buf.subarray(0, pos);
        if (out6.length > 0) yield Buffer.from(`${out6.map(formatNet).join('\n')}\n`);
      },
    };
  }
}
