// The decision over the whole address space at once: a sorted list of disjoint spans, each
// with the decision that `decide()` gives every address in it (gaps are `default`). This is
// what the firewall blocks (the deny spans, aggregated) and what tests check tcp.smtp against.
// Pure; linear in the number of rules after sorting.

import { type Family, type Net, compareNets, netFirst, netLast } from '../net/address.js';
import { type Range, mergeRanges, netToRange } from '../net/cidr-set.js';
import { type Action, type PolicyRule, comparePrecedence } from './decide.js';

/** A run of addresses that all get the same (non-default) decision. */
export interface Span extends Range {
  decision: Action;
}

/** The strongest action per distinct network, sorted outer-first (address, then prefix). */
function distinctNets(rules: readonly PolicyRule[]): PolicyRule[] {
  const sorted = [...rules].sort((a, b) => compareNets(a.net, b.net) || comparePrecedence(a, b));
  const out: PolicyRule[] = [];
  for (const r of sorted) {
    const top = out[out.length - 1];
    if (top && compareNets(top.net, r.net) === 0) continue; // first is the strongest
    out.push(r);
  }
  return out;
}

/**
 * Paint nested CIDRs: inner networks override outer ones (CIDRs never partly overlap, so a
 * stack of open networks is enough).
 *
 * lib/net/tcprules-keys.ts paints the same way, on purpose separately: it works on IPv4 sort
 * keys in typed arrays (a million rules, no object per rule) and paints classes (static lines,
 * outcome texts) rather than actions; this one takes PolicyRule objects of both families with
 * bigint addresses, for the firewall and the tests. The property tests check each against
 * decide() for random policies, so the two cannot drift apart unnoticed.
 */
function paint(rules: readonly PolicyRule[]): Span[] {
  const nets = distinctNets(rules);
  const out: Span[] = [];
  const stack: { family: Family; last: bigint; action: Action }[] = [];
  let cursor = 0n;
  const emit = (family: Family, first: bigint, last: bigint, decision: Action) => {
    if (first > last) return;
    const prev = out[out.length - 1];
    if (prev && prev.family === family && prev.decision === decision && prev.last + 1n === first) {
      prev.last = last;
    } else {
      out.push({ family, first, last, decision });
    }
  };
  const closeUntil = (family: Family, before: bigint | null) => {
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      if (before !== null && top.family === family && top.last >= before) break;
      emit(top.family, cursor, top.last, top.action);
      cursor = top.last + 1n;
      stack.pop();
    }
  };
  for (const r of nets) {
    const first = netFirst(r.net);
    closeUntil(r.net.family, first);
    const top = stack[stack.length - 1];
    if (top) emit(top.family, cursor, first - 1n, top.action);
    cursor = first;
    stack.push({ family: r.net.family, last: netLast(r.net), action: r.action });
  }
  closeUntil(4, null);
  return out;
}

function clip(spans: readonly Span[], family: Family, first: bigint, last: bigint): Span[] {
  // spans are sorted by (family, first): binary search the first one that may overlap.
  let lo = 0;
  let hi = spans.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const s = spans[mid];
    if (s.family < family || (s.family === family && s.last < first)) lo = mid + 1;
    else hi = mid;
  }
  const out: Span[] = [];
  for (let i = lo; i < spans.length; i++) {
    const s = spans[i];
    if (s.family !== family || s.first > last) break;
    out.push({ family, decision: s.decision, first: s.first > first ? s.first : first, last: s.last < last ? s.last : last });
  }
  return out;
}

/**
 * The decision for every address as sorted, disjoint, maximal spans (IPv4 first). Addresses
 * in no span are `default`.
 */
export function partition(rules: readonly PolicyRule[], protectedNets: readonly Net[] = []): Span[] {
  const full = paint(rules);
  if (protectedNets.length === 0) return full;
  const prot = mergeRanges(protectedNets.map(netToRange));
  let noDeny: Span[] | null = null;
  const pieces: Span[] = [];
  for (const span of full) {
    if (span.decision !== 'deny') {
      pieces.push(span);
      continue;
    }
    // Split the deny span on protected ranges; inside them the best non-deny rule decides.
    let cursor = span.first;
    for (const p of prot) {
      if (p.family !== span.family || p.last < cursor || p.first > span.last) continue;
      const a = p.first > cursor ? p.first : cursor;
      const b = p.last < span.last ? p.last : span.last;
      if (a > cursor) pieces.push({ family: span.family, first: cursor, last: a - 1n, decision: 'deny' });
      noDeny ??= paint(rules.filter((r) => r.action !== 'deny'));
      pieces.push(...clip(noDeny, span.family, a, b));
      cursor = b + 1n;
      if (b === span.last) break;
    }
    if (cursor <= span.last) {
      pieces.push({ family: span.family, first: cursor, last: span.last, decision: 'deny' });
    }
  }
  // Merge neighbours that ended up with the same decision.
  const out: Span[] = [];
  for (const s of pieces) {
    if (s.first > s.last) continue;
    const prev = out[out.length - 1];
    if (prev && prev.family === s.family && prev.decision === s.decision && prev.last + 1n === s.first) {
      prev.last = s.last;
    } else {
      out.push({ ...s });
    }
  }
  return out;
}

/** The decision for one address from a partition (binary search); for tests and sampling. */
export function lookupSpan(spans: readonly Span[], family: Family, addr: bigint): Action | 'default' {
  const hit = clip(spans, family, addr, addr);
  return hit.length > 0 ? hit[0].decision : 'default';
}
