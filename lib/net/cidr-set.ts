// Sets of addresses as sorted ranges and minimal CIDR lists: turn a range into the fewest
// CIDRs, merge overlapping and adjacent networks (iprange-style aggregation). Used by
// import-spamlist (aggregation), the firewall (fewest set elements) and tests. Pure.

import { type Family, type Net, FAMILY_BITS, netFirst, netLast } from './address.js';

/** An inclusive range of addresses of one family. */
export interface Range {
  family: Family;
  first: bigint;
  last: bigint;
}

/** Number of trailing zero bits of v (v > 0), capped at `bits`. */
function trailingZeros(v: bigint, bits: number): number {
  if (v === 0n) return bits;
  let n = 0;
  while ((v & 1n) === 0n && n < bits) {
    v >>= 1n;
    n++;
  }
  return n;
}

/** Floor of log2 of v (v > 0). */
function log2(v: bigint): number {
  let n = -1;
  while (v > 0n) {
    v >>= 1n;
    n++;
  }
  return n;
}

/** The fewest CIDRs that cover exactly [first, last]. */
export function rangeToCidrs(range: Range): Net[] {
  const bits = FAMILY_BITS[range.family];
  const out: Net[] = [];
  let start = range.first;
  const last = range.last;
  while (start <= last) {
    // The largest block that starts at `start` (alignment) and does not pass `last` (size).
    const align = trailingZeros(start, bits);
    const fit = log2(last - start + 1n);
    const size = Math.min(align, fit);
    out.push({ family: range.family, addr: start, prefix: bits - size });
    start += 1n << BigInt(size);
    if (start === 0n) break; // wrapped past the top of the space (cannot happen for v4/v6 ranges)
  }
  return out;
}

/** The range a network spans. */
export function netToRange(net: Net): Range {
  return { family: net.family, first: netFirst(net), last: netLast(net) };
}

/**
 * Sort and merge ranges that overlap or touch, per family. The result is sorted (IPv4 first)
 * and disjoint with gaps between neighbours.
 */
export function mergeRanges(ranges: Iterable<Range>): Range[] {
  const list = [...ranges].sort((a, b) =>
    a.family !== b.family ? a.family - b.family : a.first < b.first ? -1 : a.first > b.first ? 1 : 0,
  );
  const out: Range[] = [];
  for (const r of list) {
    const top = out[out.length - 1];
    if (top && top.family === r.family && r.first <= top.last + 1n) {
      if (r.last > top.last) top.last = r.last;
    } else {
      out.push({ ...r });
    }
  }
  return out;
}

/** Aggregate networks into the fewest CIDRs covering exactly their union. */
export function aggregateNets(nets: Iterable<Net>): Net[] {
  const ranges = [];
  for (const n of nets) ranges.push(netToRange(n));
  return mergeRanges(ranges).flatMap(rangeToCidrs);
}
