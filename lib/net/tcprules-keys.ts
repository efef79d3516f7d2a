// IPv4 rules -> tcprules keys, exactly. tcprules has no CIDR and tcpserver answers with the
// most specific key that exists (exact address, then `a.b.c.`, `a.b.`, `a.`, then the default
// line), whatever its line; for equal keys the first line wins. So CIDRs cannot simply be
// expanded one by one: a /12 deny and a /20 relay inside it, a /32 auto-deny inside a relayed
// /24, a protected address inside a denied /16 all need the keys resolved first.
//
// The plan here works on the decision itself, not on the rules:
//   1. paint the nested CIDRs (longest prefix wins; equal prefix: static line > relay > trust >
//      deny, as decide() ranks them) into disjoint segments covering every IPv4 address; inside
//      protected ranges the deny-like entries are set aside (protected is never denied);
//   2. walk the 256-ary tree of keys (`a.` -> `a.b.` -> `a.b.c.` -> exact) and give a node a key
//      only where the answer tcpserver would inherit from above differs from the decision; each
//      node takes the value most of its children want, so a deny /8 with one relay inside is two
//      keys, and a million scattered /32 denies are a million exact keys.
// The admin's static lines are part of the decision: an address key there acts like a rule of
// its key's prefix that wins ties (tcpserver reads it first); a node that has a static key is
// never generated again (it would be shadowed) but finer keys below it may be.
//
// Numbers, not objects: a million rules arrive as one Float64Array of sort keys (see
// ruleSortKey; PostgreSQL computes the same formula) so nothing here allocates per rule beyond
// the segment and key arrays. Pure: no I/O.
//
// Size: the key planner is one algorithm (paint, expand, resolve overlaps) over shared typed arrays, kept together for speed and proof.

/** Action codes in decide()'s order of strength at equal prefix. */
export const ACTION_CODE = { relay: 0, trust: 1, deny: 2 } as const;
export type ActionCode = 0 | 1 | 2;

/** Sort-key layout: addr * 2^21 + prefix * 2^15 + order, exact in a double (< 2^53). */
export const SORT_ADDR_MUL = 2 ** 21;
export const SORT_PREFIX_MUL = 2 ** 15;
/** Orders 0..STATIC_MAX-1 are static keys (file order); rule actions come after them. */
export const STATIC_MAX = SORT_PREFIX_MUL - 3;
/** The order of a rule action in the sort key. */
export const actionOrder = (code: ActionCode): number => STATIC_MAX + code;

/** The sort key of one IPv4 rule (addr as an unsigned 32-bit number). */
export function ruleSortKey(addr: number, prefix: number, code: ActionCode): number {
  return addr * SORT_ADDR_MUL + prefix * SORT_PREFIX_MUL + actionOrder(code);
}

/** The same formula in SQL over qguard.rules columns (network cidr, action text), a bigint. */
export const SQL_SORT_KEY =
  `((network - '0.0.0.0'::inet) * ${SORT_ADDR_MUL} + masklen(network) * ${SORT_PREFIX_MUL}` +
  ` + CASE action WHEN 'relay' THEN ${actionOrder(0)} WHEN 'trust' THEN ${actionOrder(1)} ELSE ${actionOrder(2)} END)`;

/** Decode a sort key. */
export function decodeSortKey(k: number): { addr: number; prefix: number; order: number } {
  const addr = Math.floor(k / SORT_ADDR_MUL);
  const rest = k - addr * SORT_ADDR_MUL;
  const prefix = Math.floor(rest / SORT_PREFIX_MUL);
  return { addr, prefix, order: rest - prefix * SORT_PREFIX_MUL };
}

/**
 * How many tcprules keys a CIDR of this prefix expands to on its own (/8, /16, /24, /32: one;
 * /12: 16; /28: 16). The deny-key guard of sync-rules counts these: unlike the planned keys
 * (where 256 denied /32s of one /24 become one key), they do not shrink when rules line up.
 */
export function keysOfPrefix(prefix: number): number {
  return 2 ** (Math.max(8, Math.ceil(prefix / 8) * 8) - prefix);
}

/** Key granularity: the prefix a key stands for (`a.` = 8 ... exact = 32). */
export type Gran = 8 | 16 | 24 | 32;

/** An address key of the admin's static file, expanded (ranges give several). */
export interface StaticKey {
  first: number;
  gran: Gran;
  /** Outcome class of its line. */
  cls: number;
}

export interface KeyPlanInput {
  /** Sort keys of the rules (ruleSortKey); only the first `ruleCount` are used; may be sorted in place. */
  rules: Float64Array;
  ruleCount: number;
  /** Outcome class of each action code: [relay, trust, deny]. */
  actionClass: readonly [number, number, number];
  /** Outcome class of addresses no key matches (the default line). */
  defaultClass: number;
  /** Classes that refuse the client (deny, or allow with RBLSMTPD="-..."): never for protected addresses. */
  denyLike: ReadonlySet<number>;
  /** Address keys of the static file in file order (a repeated key: the first counts). */
  statics: readonly StaticKey[];
  /** Protected IPv4 ranges (inclusive), any order. */
  protectedRanges: readonly { first: number; last: number }[];
}

/** Disjoint segments covering 0..2^32-1 in order, each with one outcome class. */
export interface Segments {
  length: number;
  start: Float64Array;
  end: Float64Array;
  cls: Int32Array;
}

/** Generated key lines in address order; a line covers `count` consecutive sibling keys. */
export interface KeyLines {
  length: number;
  first: Float64Array;
  gran: Uint8Array;
  count: Uint16Array;
  cls: Int32Array;
}

export interface KeyPlan {
  segments: Segments;
  lines: KeyLines;
  /** Number of keys (cdb entries) per class. */
  keysByClass: Map<number, number>;
  /** Exact static keys whose line denies a protected address: tcpserver reads them first, nothing can override them. */
  conflicts: { first: number; cls: number }[];
}

const SPACE_END = 2 ** 32 - 1;

const BLOCK_SIZE: readonly number[] = Array.from({ length: 33 }, (_, g) => 2 ** (32 - g));

function blockSize(gran: number): number {
  return BLOCK_SIZE[gran];
}

/** Growable parallel typed arrays of segments, merging neighbours of the same class. */
class SegmentBuilder {
  length = 0;
  start: Float64Array;
  end: Float64Array;
  cls: Int32Array;
  constructor(capacity = 1024) {
    this.start = new Float64Array(capacity);
    this.end = new Float64Array(capacity);
    this.cls = new Int32Array(capacity);
  }
  push(first: number, last: number, cls: number): void {
    if (first > last) return;
    const n = this.length;
    if (n > 0 && this.cls[n - 1] === cls && this.end[n - 1] + 1 === first) {
      this.end[n - 1] = last;
      return;
    }
    if (n === this.start.length) {
      const grow = <T extends Float64Array | Int32Array>(a: T): T => {
        const b = new (a.constructor as new (n: number) => T)(a.length * 2);
        b.set(a);
        return b;
      };
      this.start = grow(this.start);
      this.end = grow(this.end);
      this.cls = grow(this.cls);
    }
    this.start[n] = first;
    this.end[n] = last;
    this.cls[n] = cls;
    this.length = n + 1;
  }
  done(): Segments {
    return { length: this.length, start: this.start, end: this.end, cls: this.cls };
  }
}

/** Growable key lines. */
class LineBuilder {
  length = 0;
  first: Float64Array;
  gran: Uint8Array;
  count: Uint16Array;
  cls: Int32Array;
  constructor(capacity = 1024) {
    this.first = new Float64Array(capacity);
    this.gran = new Uint8Array(capacity);
    this.count = new Uint16Array(capacity);
    this.cls = new Int32Array(capacity);
  }
  push(first: number, gran: number, count: number, cls: number): void {
    const n = this.length;
    if (n === this.first.length) {
      const f = new Float64Array(n * 2);
      f.set(this.first);
      this.first = f;
      const g = new Uint8Array(n * 2);
      g.set(this.gran);
      this.gran = g;
      const c = new Uint16Array(n * 2);
      c.set(this.count);
      this.count = c;
      const k = new Int32Array(n * 2);
      k.set(this.cls);
      this.cls = k;
    }
    this.first[n] = first;
    this.gran[n] = gran;
    this.count[n] = count;
    this.cls[n] = cls;
    this.length = n + 1;
  }
}

interface Entries {
  keys: Float64Array;
  n: number;
  /** Class of an entry's order. */
  classOf(order: number): number;
}

/**
 * Paint nested CIDRs (sorted by address, then prefix, then order): inner ones override outer
 * ones; for the same network the first (strongest) counts. The result covers every address:
 * gaps get `gapCls`. (lib/policy/partition.ts paints PolicyRule objects of both families for
 * the firewall; this one stays on typed arrays of IPv4 keys for speed — see the note there.)
 */
function paint(e: Entries, skip: ((cls: number) => boolean) | null, gapCls: number): SegmentBuilder {
  // n nested networks make at most 2n + 1 segments.
  const out = new SegmentBuilder(2 * e.n + 16);
  const stackLast: number[] = [];
  const stackCls: number[] = [];
  let cursor = 0;
  let prevAddr = -1;
  let prevPrefix = -1;
  for (let i = 0; i < e.n; i++) {
    const k = e.keys[i];
    const addr = Math.floor(k / SORT_ADDR_MUL);
    const rest = k - addr * SORT_ADDR_MUL;
    const prefix = Math.floor(rest / SORT_PREFIX_MUL);
    const cls = e.classOf(rest - prefix * SORT_PREFIX_MUL);
    if (skip !== null && skip(cls)) continue;
    if (addr === prevAddr && prefix === prevPrefix) continue; // a weaker entry for the same network
    prevAddr = addr;
    prevPrefix = prefix;
    const last = addr + BLOCK_SIZE[prefix] - 1;
    while (stackLast.length > 0 && stackLast[stackLast.length - 1] < addr) {
      const top = stackLast.length - 1;
      out.push(cursor, stackLast[top], stackCls[top]);
      cursor = stackLast[top] + 1;
      stackLast.pop();
      stackCls.pop();
    }
    out.push(cursor, addr - 1, stackLast.length > 0 ? stackCls[stackCls.length - 1] : gapCls);
    cursor = addr;
    stackLast.push(last);
    stackCls.push(cls);
  }
  while (stackLast.length > 0) {
    const top = stackLast.length - 1;
    out.push(cursor, stackLast[top], stackCls[top]);
    cursor = stackLast[top] + 1;
    stackLast.pop();
    stackCls.pop();
  }
  out.push(cursor, SPACE_END, gapCls);
  return out;
}

/** The segments of `s` clipped to [first, last] (binary search). */
function clip(s: SegmentBuilder, first: number, last: number, into: SegmentBuilder): void {
  let lo = 0;
  let hi = s.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (s.end[mid] < first) lo = mid + 1;
    else hi = mid;
  }
  for (let i = lo; i < s.length && s.start[i] <= last; i++) {
    into.push(Math.max(s.start[i], first), Math.min(s.end[i], last), s.cls[i]);
  }
}

function mergedRanges(ranges: readonly { first: number; last: number }[]): { first: number; last: number }[] {
  const sorted = [...ranges].sort((a, b) => a.first - b.first);
  const out: { first: number; last: number }[] = [];
  for (const r of sorted) {
    const top = out[out.length - 1];
    if (top && r.first <= top.last + 1) top.last = Math.max(top.last, r.last);
    else out.push({ first: r.first, last: r.last });
  }
  return out;
}

/** True when a segment of a deny-like class overlaps a protected range. */
function denyTouchesProtected(seg: SegmentBuilder, prot: { first: number; last: number }[], denyLike: ReadonlySet<number>): boolean {
  for (const p of prot) {
    let lo = 0;
    let hi = seg.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (seg.end[mid] < p.first) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < seg.length && seg.start[i] <= p.last; i++) if (denyLike.has(seg.cls[i])) return true;
  }
  return false;
}

/**
 * The decision for every IPv4 address as segments covering the whole space (gaps are the
 * default class). Equals decide() over the rules plus the static keys as rules. Sorts
 * `input.rules` in place when there are no static keys (it is only read otherwise).
 */
export function decisionSegments(input: KeyPlanInput): Segments {
  const m = input.statics.length;
  if (m > STATIC_MAX) throw new Error(`more than ${STATIC_MAX} static address keys`);
  const n = input.ruleCount + m;
  let keys: Float64Array;
  if (m === 0) {
    keys = input.rules.subarray(0, n);
  } else {
    keys = new Float64Array(n);
    keys.set(input.rules.subarray(0, input.ruleCount));
    input.statics.forEach((s, i) => {
      keys[input.ruleCount + i] = s.first * SORT_ADDR_MUL + s.gran * SORT_PREFIX_MUL + i;
    });
  }
  keys.sort();
  const entries: Entries = {
    keys,
    n,
    classOf: (order) => (order < STATIC_MAX ? input.statics[order].cls : input.actionClass[order - STATIC_MAX]),
  };
  const full = paint(entries, null, input.defaultClass);
  const prot = mergedRanges(input.protectedRanges);
  if (prot.length === 0 || !denyTouchesProtected(full, prot, input.denyLike)) return full.done();
  // Inside protected ranges the deny-like entries do not count: the best remaining one decides.
  const noDeny = paint(entries, (c) => input.denyLike.has(c), input.defaultClass);
  const out = new SegmentBuilder(full.length + 4 * prot.length + 16);
  let p = 0;
  for (let i = 0; i < full.length; i++) {
    const first = full.start[i];
    const last = full.end[i];
    const cls = full.cls[i];
    if (!input.denyLike.has(cls)) {
      out.push(first, last, cls);
      continue;
    }
    while (p < prot.length && prot[p].last < first) p++;
    let cursor = first;
    for (let q = p; q < prot.length && prot[q].first <= last; q++) {
      const a = Math.max(prot[q].first, cursor);
      const b = Math.min(prot[q].last, last);
      if (a > b) continue;
      out.push(cursor, a - 1, cls);
      clip(noDeny, a, b, out);
      cursor = b + 1;
    }
    out.push(cursor, last, cls);
  }
  return out.done();
}

/** Static key nodes per granularity, sorted, with their class (the first line of a key counts). */
class StaticIndex {
  private readonly byGran = new Map<number, { starts: number[]; cls: number[] }>();
  constructor(statics: readonly StaticKey[]) {
    const seen = new Set<string>();
    const tmp = new Map<number, { first: number; cls: number }[]>();
    for (const s of statics) {
      const id = `${s.gran}/${s.first}`;
      if (seen.has(id)) continue;
      seen.add(id);
      if (!tmp.has(s.gran)) tmp.set(s.gran, []);
      tmp.get(s.gran)!.push({ first: s.first, cls: s.cls });
    }
    for (const [gran, list] of tmp) {
      list.sort((a, b) => a.first - b.first);
      this.byGran.set(gran, { starts: list.map((x) => x.first), cls: list.map((x) => x.cls) });
    }
  }
  /** Index of the first static node of `gran` starting at or after `addr`, and the list. */
  from(gran: number, addr: number): { starts: number[]; cls: number[]; i: number } | null {
    const g = this.byGran.get(gran);
    if (!g) return null;
    let lo = 0;
    let hi = g.starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (g.starts[mid] < addr) lo = mid + 1;
      else hi = mid;
    }
    return { ...g, i: lo };
  }
  at(gran: number, addr: number): number | undefined {
    const f = this.from(gran, addr);
    if (!f || f.i >= f.starts.length || f.starts[f.i] !== addr) return undefined;
    return f.cls[f.i];
  }
}

/**
 * Plan the generated keys: the fewest-ish keys such that, read together with the static keys
 * (which come first in the file), tcpserver's most-specific-key answer is the decision for
 * every IPv4 address.
 */
export function planKeys(input: KeyPlanInput): KeyPlan {
  const seg = decisionSegments(input);
  const statics = new StaticIndex(input.statics);
  const lines = new LineBuilder(Math.max(1024, seg.length >> 1));
  const keyCount: number[] = [];
  const conflicts: { first: number; cls: number }[] = [];
  const { start: segStart, end: segEnd, cls: segCls } = seg;

  const emit = (first: number, gran: Gran, count: number, cls: number) => {
    lines.push(first, gran, count, cls);
    keyCount[cls] = (keyCount[cls] ?? 0) + count;
  };
  const hasStatics = input.statics.length > 0;

  // Static keys below `gran` inside [lo, hi] whose class is not `v`: tcpserver would answer
  // them there, so the walk must go down to them (and generate finer keys, or report them).
  const NONE: number[] = [];
  const deeperMismatch = (lo: number, hi: number, gran: number, v: number): number[] => {
    if (!hasStatics) return NONE;
    const out: number[] = [];
    for (let g = gran + 8; g <= 32; g += 8) {
      const st = statics.from(g, lo);
      if (!st) continue;
      for (let i = st.i; i < st.starts.length && st.starts[i] <= hi; i++) if (st.cls[i] !== v) out.push(st.starts[i]);
    }
    return out;
  };

  // Emit keys for children [from, to] (aligned child starts) of size cs that all want `v`,
  // while the parent hands down `b`. Children that hold a static key, or a static key below
  // them that disagrees with `v`, are visited on their own.
  const constantRun = (from: number, to: number, gran: Gran, cs: number, v: number, b: number, segIdx: number) => {
    if (!hasStatics) {
      if (v !== b) emit(from, gran, (to + cs - from) / cs, v);
      return;
    }
    const special = new Set<number>();
    const st = statics.from(gran, from);
    if (st) for (let i = st.i; i < st.starts.length && st.starts[i] <= to; i++) special.add(st.starts[i]);
    for (const a of deeperMismatch(from, to + cs - 1, gran, v)) special.add(from + Math.floor((a - from) / cs) * cs);
    let pos = from;
    for (const t of [...special].sort((x, y) => x - y)) {
      if (t > pos && v !== b) emit(pos, gran, (t - pos) / cs, v);
      node(t, gran, b, segIdx, segIdx + 1, statics.at(gran, t));
      pos = t + cs;
    }
    if (pos <= to && v !== b) emit(pos, gran, (to + cs - pos) / cs, v);
  };

  // A node (block at granularity g) whose addresses are covered by segments lo..hi-1.
  // `inherited`: the answer tcpserver gives here without a key at this node.
  // `fixed`: the class of a static key at this node (it stands; we cannot replace it).
  const node = (blockStart: number, g: number, inherited: number, lo: number, hi: number, fixed: number | undefined) => {
    const size = blockSize(g);
    const blockEnd = blockStart + size - 1;
    const constant = hi - lo === 1;
    const clean = constant && deeperMismatch(blockStart, blockEnd, g, segCls[lo]).length === 0;
    let b: number;
    if (fixed !== undefined) {
      b = fixed;
      if (g === 32) {
        if (segCls[lo] !== fixed) conflicts.push({ first: blockStart, cls: fixed });
        return;
      }
      if (clean && segCls[lo] === fixed) return;
    } else if (g === 0) {
      b = inherited;
    } else if (constant) {
      if (segCls[lo] !== inherited) emit(blockStart, g as Gran, 1, segCls[lo]);
      if (clean) return;
      b = segCls[lo];
    } else {
      b = background(blockStart, blockEnd, g, inherited, lo, hi);
      if (b !== inherited) emit(blockStart, g as Gran, 1, b);
    }
    const cg = (g + 8) as Gran;
    const cs = blockSize(cg);
    let pos = blockStart;
    let i = lo;
    while (pos <= blockEnd) {
      while (segEnd[i] < pos) i++;
      const childEnd = pos + cs - 1;
      if (segEnd[i] >= childEnd) {
        // Children wholly inside segment i.
        const runEnd = Math.min(segEnd[i], blockEnd);
        const lastChildStart = blockStart + Math.floor((runEnd + 1 - blockStart) / cs) * cs - cs;
        constantRun(pos, lastChildStart, cg, cs, segCls[i], b, i);
        pos = lastChildStart + cs;
      } else {
        let j = i;
        while (segEnd[j] < childEnd) j++;
        node(pos, cg, b, i, j + 1, hasStatics ? statics.at(cg, pos) : undefined);
        pos = childEnd + 1;
      }
    }
  };

  // The class most children of a node want (ties: keep what is inherited, else the first seen).
  // Few classes meet in one node: two small arrays beat a Map.
  const bgCls: number[] = [0, 0, 0, 0, 0, 0, 0, 0];
  const bgN: number[] = [0, 0, 0, 0, 0, 0, 0, 0];
  let bgLen = 0;
  const bgIndex = (cls: number): number => {
    for (let k = 0; k < bgLen; k++) if (bgCls[k] === cls) return k;
    return -1;
  };
  const background = (blockStart: number, blockEnd: number, g: number, inherited: number, lo: number, hi: number): number => {
    const cs = blockSize(g + 8);
    bgLen = 0;
    for (let i = lo; i < hi; i++) {
      const s = Math.max(segStart[i], blockStart) - blockStart;
      const e = Math.min(segEnd[i], blockEnd) - blockStart + 1;
      const n = Math.floor(e / cs) - Math.ceil(s / cs);
      if (n <= 0) continue;
      const k = bgIndex(segCls[i]);
      if (k >= 0) bgN[k] += n;
      else {
        bgCls[bgLen] = segCls[i];
        bgN[bgLen++] = n;
      }
    }
    const ki = bgIndex(inherited);
    let best = inherited;
    let bestScore = ki < 0 ? 0 : bgN[ki];
    for (let k = 0; k < bgLen; k++) {
      if (bgCls[k] === inherited) continue;
      const score = bgN[k] - 1; // a key at this node costs one
      if (score > bestScore) {
        best = bgCls[k];
        bestScore = score;
      }
    }
    return best;
  };

  node(0, 0, input.defaultClass, 0, seg.length, undefined);
  const keysByClass = new Map<number, number>();
  keyCount.forEach((n, cls) => {
    if (n) keysByClass.set(cls, n);
  });
  const out: KeyLines = {
    length: lines.length,
    first: lines.first.subarray(0, lines.length),
    gran: lines.gran.subarray(0, lines.length),
    count: lines.count.subarray(0, lines.length),
    cls: lines.cls.subarray(0, lines.length),
  };
  return { segments: seg, lines: out, keysByClass, conflicts };
}

/** The text of a key line's address part: `a.`, `a.b.c.`, `a.b.c.d`, with `x-y` for count > 1. */
export function keyText(first: number, gran: number, count: number): string {
  const o = [first >>> 24, (first >>> 16) & 255, (first >>> 8) & 255, first & 255];
  const parts = gran / 8;
  const lastPart = parts - 1;
  let s = '';
  for (let p = 0; p < parts; p++) {
    const v = p === lastPart && count > 1 ? `${o[p]}-${o[p] + count - 1}` : String(o[p]);
    s += p === 3 ? v : `${v}.`;
  }
  return s;
}

/** The class of an address from segments (binary search); for checks and tests. */
export function segmentClass(seg: Segments, addr: number): number {
  let lo = 0;
  let hi = seg.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (seg.start[mid] <= addr) lo = mid;
    else hi = mid - 1;
  }
  return seg.cls[lo];
}

/** An IPv4 address as an unsigned number from dotted text (already validated). */
export function v4Number(dotted: string): number {
  const p = dotted.split('.').map(Number);
  return ((p[0] * 256 + p[1]) * 256 + p[2]) * 256 + p[3];
}

/** Dotted text of an unsigned 32-bit address. */
export function v4Text(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}
