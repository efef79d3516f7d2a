// What one import changes: the networks a list names (aggregated, deduplicated, sorted) against
// the rules its source holds now → the networks to insert, the rules to rewrite, the rules to
// delete, and the counts of the report. Plan, then apply: the database module reads the
// source's rules once (lib/db/spamlist.ts), this decides, and only the changes are written —
// re-importing an unchanged list writes nothing at all. Pure: no I/O.
//
// IPv4 networks are numbers (address * 64 + prefix, as in entry-set.ts), so a million-entry
// list is a merge of two sorted arrays; IPv6 entries are few and go through a Map.

import type { Net } from '../net/address.js';

/** Flag bits of a stored rule, computed by the database (lib/db/spamlist.ts). */
export const UNSCOPED = 1; // host IS NULL: for every mail server, the only kind a list entry matches
export const LIVE = 2; // not expired
export const CURRENT = 4; // stored as this run would write it (action, reason, who, expiry): no write

/** The rules of one source as read from the database. */
export interface StoredRules {
  /** IPv4 rules: key (address * 64 + prefix), id and flags; any order. */
  v4Keys: Float64Array;
  v4Ids: Float64Array;
  v4Flags: Uint8Array;
  /** How many of the IPv4 arrays are filled. */
  n4: number;
  /** IPv6 rules. */
  v6: { net: Net; id: number; flags: number }[];
}

/** The plan: counts for the report and the writes that make the source hold the list. */
export interface ListDiff {
  /** Live rules of the source before the run (scoped ones included). */
  existing: number;
  /** Networks of the list that a live unscoped rule of the source already holds. */
  matched: number;
  /** Of those, stored exactly as this run would write them. */
  unchanged: number;
  /** IPv4 networks to insert (keys, ascending). */
  insert4: number[];
  /** IPv6 networks to insert. */
  insert6: Net[];
  /** Ids of rules to rewrite: the list names them, but they differ or have expired. */
  rewrite: number[];
  /** Ids of rules to delete (only with `replace`): everything else of the source. */
  remove: number[];
}

/** Positions 0..n-1 of `keys` in ascending key order (no copy when already sorted, the usual case). */
function order(keys: Float64Array, n: number): ArrayLike<number> {
  let sorted = true;
  for (let i = 1; i < n; i++) {
    if (keys[i] < keys[i - 1]) {
      sorted = false;
      break;
    }
  }
  const idx = new Uint32Array(n);
  for (let i = 0; i < n; i++) idx[i] = i;
  if (!sorted) idx.sort((a, b) => keys[a] - keys[b]);
  return idx;
}

/**
 * Diff the list (`want4`: ascending distinct IPv4 keys; `want6`: distinct IPv6 networks)
 * against the source's rules. A listed network is held by the source's unscoped rule of that
 * network; a live one counts as matched (unchanged when CURRENT, else rewritten), an expired
 * one is rewritten (and counts as added). With `replace` every other rule of the source is
 * deleted: unlisted networks, rules scoped to one host, expired leftovers.
 */
export function diffList(want4: Float64Array, want6: readonly Net[], stored: StoredRules, replace: boolean): ListDiff {
  const d: ListDiff = { existing: 0, matched: 0, unchanged: 0, insert4: [], insert6: [], rewrite: [], remove: [] };
  /** One stored rule of a listed network; returns true when it is the unscoped one. */
  const listed = (id: number, flags: number): boolean => {
    if (flags & LIVE) d.existing++;
    if (!(flags & UNSCOPED)) {
      if (replace) d.remove.push(id);
      return false;
    }
    if (flags & LIVE) {
      d.matched++;
      if (flags & CURRENT) d.unchanged++;
      else d.rewrite.push(id);
    } else {
      d.rewrite.push(id);
    }
    return true;
  };
  /** One stored rule the list does not name. */
  const unlisted = (id: number, flags: number): void => {
    if (flags & LIVE) d.existing++;
    if (replace) d.remove.push(id);
  };

  // IPv4: merge the two ascending sequences.
  const { v4Keys: keys, v4Ids: ids, v4Flags: flags, n4 } = stored;
  const pos = order(keys, n4);
  let i = 0;
  let j = 0;
  while (i < want4.length || j < n4) {
    const w = i < want4.length ? want4[i] : Infinity;
    const s = j < n4 ? keys[pos[j]] : Infinity;
    if (w < s) {
      d.insert4.push(w);
      i++;
    } else if (s < w) {
      unlisted(ids[pos[j]], flags[pos[j]]);
      j++;
    } else {
      let held = false;
      for (; j < n4 && keys[pos[j]] === w; j++) {
        if (listed(ids[pos[j]], flags[pos[j]])) held = true;
      }
      if (!held) d.insert4.push(w);
      i++;
    }
  }

  // IPv6: few; by text key.
  const key6 = (n: Net) => `${n.addr.toString(16)}/${n.prefix}`;
  const byNet = new Map<string, { id: number; flags: number }[]>();
  for (const r of stored.v6) {
    const k = key6(r.net);
    const rows = byNet.get(k);
    if (rows) rows.push(r);
    else byNet.set(k, [r]);
  }
  for (const net of want6) {
    const k = key6(net);
    const rows = byNet.get(k);
    let held = false;
    if (rows) {
      byNet.delete(k);
      for (const r of rows) if (listed(r.id, r.flags)) held = true;
    }
    if (!held) d.insert6.push(net);
  }
  for (const rows of byNet.values()) for (const r of rows) unlisted(r.id, r.flags);
  return d;
}
