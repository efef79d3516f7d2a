// What one import changes: the networks a list names (aggregated, deduplicated, sorted) against
// the rules its source holds now → the networks to insert, the rules to rewrite, the rules to
// delete, and the counts of the report. Plan, then apply: the database module reads the
// source's rules once (lib/db/spamlist.ts), this decides, and only the changes are written —
// re-importing an unchanged list writes nothing at all. Pure: no I/O.
//
// IPv4 networks are numbers (address * 64 + prefix, as in entry-set.ts): each stored rule is
// looked up in the sorted list by a cursor that gallops forward, so rules read in network order
// (the table as we wrote it) cost a step each, and any other order a binary search each; IPv6
// entries are few and go through a Map.

import type { Net } from '../net/address.js';

/** Flag bits of a stored rule, computed by the database (lib/db/spamlist.ts). */
export const UNSCOPED = 1; // host IS NULL: for every mail server, the only kind a list entry matches
export const SAME = 2; // action, reason and who as this run writes them (the expiry aside)

/** The rules of one source as read from the database. */
export interface StoredRules {
  /** IPv4 rules: key (address * 64 + prefix), flags, expiry; any order. */
  v4Keys: Float64Array;
  v4Flags: Uint8Array;
  /** Microseconds since 2000-01-01 (PostgreSQL's epoch); Infinity: never expires. */
  v4Expires: Float64Array;
  /** The id of IPv4 rule `i` (asked only for the few rules that change). */
  v4Id(i: number): number;
  /** How many IPv4 rules. */
  n4: number;
  /** IPv6 rules. */
  v6: { net: Net; id: number; flags: number; expires: number }[];
}

/** Networks to insert: IPv4 as keys, IPv6 as networks. */
export interface NetSet {
  v4: number[] | Float64Array;
  v6: Net[];
}

/** The run the diff is for. */
export interface DiffOptions {
  /** Delete what the list does not name. */
  replace: boolean;
  /** The transaction's now(), microseconds since 2000-01-01. */
  now: number;
  /** --for in microseconds, or null: entries never expire. */
  ttl: number | null;
}

/** The plan: counts for the report and the writes that make the source hold the list. */
export interface ListDiff {
  /** Live rules of the source before the run (scoped ones included). */
  existing: number;
  /** Networks of the list that a live unscoped rule of the source already holds. */
  matched: number;
  /** Of those, stored exactly as this run would write them. */
  unchanged: number;
  /** Networks to insert (IPv4 ascending). */
  insert: NetSet;
  /** Ids of rules to rewrite: the list names them, but they differ or have expired. */
  rewrite: number[];
  /** Ids of rules to delete (only with `replace`): everything else of the source. */
  remove: number[];
}

/** The first index in want[from, to) whose key is >= k (to when none). */
function lowerBound(want: Float64Array, from: number, to: number, k: number): number {
  while (from < to) {
    const mid = (from + to) >>> 1;
    if (want[mid] < k) from = mid + 1;
    else to = mid;
  }
  return from;
}

/**
 * Diff the list (`want4`: ascending distinct IPv4 keys; `want6`: distinct IPv6 networks)
 * against the source's rules. A listed network is held by the source's unscoped rule of that
 * network; a live one counts as matched — unchanged when it is already as this run would write
 * it, else rewritten — and an expired one is rewritten (and counts as added). With `replace`
 * every other rule of the source is deleted: unlisted networks, rules scoped to one host,
 * expired leftovers.
 *
 * "As this run would write it" includes the expiry: none without --for; with --for DUR an
 * expiry between now + DUR/2 and now + DUR is left alone (see lib/db/spamlist.ts: renewing
 * it every run would rewrite every entry every run).
 */
export function diffList(want4: Float64Array, want6: readonly Net[], stored: StoredRules, opts: DiffOptions): ListDiff {
  const d: ListDiff = { existing: 0, matched: 0, unchanged: 0, insert: { v4: [], v6: [] }, rewrite: [], remove: [] };
  const { replace, now, ttl } = opts;
  const lo = ttl === null ? Infinity : now + Math.floor(ttl / 2);
  const hi = ttl === null ? Infinity : now + ttl;
  const v6 = stored.v6;
  /** The id of stored rule `ref`: IPv4 rule `ref`, or IPv6 rule `-1 - ref`. */
  const idOf = (ref: number) => (ref >= 0 ? stored.v4Id(ref) : v6[-1 - ref].id);
  /** A stored rule of a listed network; returns true when it is the unscoped one, holding it. */
  const listed = (ref: number, flags: number, expires: number): boolean => {
    const live = expires > now;
    if (live) d.existing++;
    if (!(flags & UNSCOPED)) {
      if (replace) d.remove.push(idOf(ref));
      return false;
    }
    if (live) {
      d.matched++;
      if (flags & SAME && expires >= lo && expires <= hi) d.unchanged++;
      else d.rewrite.push(idOf(ref));
    } else {
      d.rewrite.push(idOf(ref));
    }
    return true;
  };
  /** A stored rule the list does not name. */
  const unlisted = (ref: number, expires: number): void => {
    if (expires > now) d.existing++;
    if (replace) d.remove.push(idOf(ref));
  };

  // IPv4: find each stored rule's network in the list; `held` marks the listed networks an
  // unscoped rule holds, the others are inserted.
  const { v4Keys: keys, v4Flags: flags, v4Expires: expires, n4 } = stored;
  const nw = want4.length;
  const held = new Uint8Array(nw);
  let cur = 0; // where the last rule's network was (or would be) in the list
  for (let j = 0; j < n4; j++) {
    const k = keys[j];
    if (cur < nw && want4[cur] < k) {
      // Forward: a step usually; galloping when the rules skip part of the list.
      let step = 1;
      let from = cur + 1;
      while (from < nw && want4[from] < k) {
        cur = from;
        from += step;
        step *= 2;
      }
      cur = lowerBound(want4, cur + 1, Math.min(from + 1, nw), k);
    } else if (cur > 0 && (cur >= nw || want4[cur] > k) && want4[cur - 1] >= k) {
      cur = lowerBound(want4, 0, cur, k); // out of order: search what lies behind
    }
    const f = flags[j];
    const e = expires[j];
    if (cur < nw && want4[cur] === k) {
      // The usual case first: an unscoped rule stored as this run writes it.
      if (f === (UNSCOPED | SAME) && e > now && e >= lo && e <= hi) {
        d.existing++;
        d.matched++;
        d.unchanged++;
        held[cur] = 1;
      } else if (listed(j, f, e)) {
        held[cur] = 1;
      }
    } else {
      unlisted(j, e);
    }
  }
  if (n4 === 0) {
    // A first import: all of it, the list's own keys (no copy: 50 ms a million).
    d.insert.v4 = want4;
  } else {
    const v4: number[] = [];
    for (let i = 0; i < nw; i++) if (held[i] === 0) v4.push(want4[i]);
    d.insert.v4 = v4;
  }

  // IPv6: few; by text key.
  const key6 = (n: Net) => `${n.addr.toString(16)}/${n.prefix}`;
  const byNet = new Map<string, number[]>(); // network → positions in v6
  v6.forEach((r, at) => {
    const k = key6(r.net);
    const rows = byNet.get(k);
    if (rows) rows.push(at);
    else byNet.set(k, [at]);
  });
  for (const net of want6) {
    const k = key6(net);
    const rows = byNet.get(k);
    let isHeld = false;
    if (rows) {
      byNet.delete(k);
      for (const at of rows) if (listed(-1 - at, v6[at].flags, v6[at].expires)) isHeld = true;
    }
    if (!isHeld) d.insert.v6.push(net);
  }
  for (const rows of byNet.values()) for (const at of rows) unlisted(-1 - at, v6[at].expires);
  return d;
}
