// IPv6 keys for tcp.smtp, for the IPv6 ucspi-tcp (Debian's ucspi-tcp-ipv6, Felix von Leitner's
// patch). Pure. What that tcpserver does, from experiments with the package's own tcpserver,
// tcprules and tcprulescheck (test/integration/ipv6-rules.test.ts repeats them):
//
//   - TCPREMOTEIP is the address in lower-case hex without leading zeros, its longest run of
//     zero groups (even a single one; the first of equal runs) written `::`:
//     2001:db8:0:1:1:1:1:1 -> 2001:db8::1:1:1:1:1, 2001:0:0:1:0:0:1:1 -> 2001::1:0:0:1:1,
//     1:2:3:4:5:6:7:0 -> 1:2:3:4:5:6:7::. An IPv4 client on an IPv6 socket (::ffff:a.b.c.d) is
//     a.b.c.d: it meets the IPv4 keys.
//   - the lookup is by text, as for IPv4: the whole address, then every shorter prefix of it
//     that ends with `.` or `:`, longest first, then the empty key.
//   - tcprules ends a line's address at the first colon that `allow` or `deny` follows, so the
//     key `2001:db8:` is written `2001:db8::allow`.
//
// So a key is a string prefix of the compressed text, and a network is exactly a set of keys
// only in some shapes. With k = ceil(prefix/16) groups fixed (the last one expanded over its
// free bits), the addresses whose text starts `G0:…:Gk-1:` are exactly those of the block when
// no group before the last is zero (a zero run cannot begin before group k-1, and one that
// begins there is the key `G0:…:Gk-2::`). Where a zero group comes earlier, the compressed text
// no longer tells which groups follow the `::` (2001:db8::1:2:3:4 is 2001:db8:0:0:1:2:3:4,
// 2001:db8::1:2:3:4:5 is 2001:db8:0:1:2:3:4:5): such a network is not written, nor is any
// network containing it with another outcome, so that an address gets either its decision or
// the default line — never a relay it should not have. Single addresses (/128) are always
// written exactly (and a /116 or longer as its single addresses). The firewall set stays exact
// for all of them.

import { type Net, formatNetShort, netContains, netFirst } from './address.js';
import { type Action, type PolicyRule, comparePrecedence } from '../policy/decide.js';

/** More keys than this for one network (a prefix far from a group boundary) and it is not written. */
export const MAX_KEYS_PER_NETWORK = 4096;

const groupsOf = (addr: bigint): number[] => Array.from({ length: 8 }, (_, i) => Number((addr >> BigInt(112 - 16 * i)) & 0xffffn));

/** TCPREMOTEIP as the IPv6 tcpserver sets it. */
export function tcpserverText6(addr: bigint): string {
  if (addr >> 32n === 0xffffn) {
    const v = Number(addr & 0xffffffffn);
    return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
  }
  const g = groupsOf(addr);
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** tcpserver's lookup over `keys` for an address text: the answer (class) of the key it uses, or `fallback`. */
export function lookupKeys(keys: ReadonlyMap<string, number>, text: string, fallback: number): number {
  const exact = keys.get(text);
  if (exact !== undefined) return exact;
  for (let n = text.length - 1; n > 0; n--) {
    const c = text.charCodeAt(n - 1);
    if (c !== 46 && c !== 58) continue;
    const k = keys.get(text.slice(0, n));
    if (k !== undefined) return k;
  }
  return keys.get('') ?? fallback;
}

export interface Keys6Input {
  /** The IPv6 rules that apply on this host. */
  rules: readonly PolicyRule[];
  /** Classes (lib/qmail/rules-plan.ts) of relay, trust and deny, and of the default line. */
  actionClass: readonly [number, number, number];
  defaultClass: number;
  /** IPv6 networks never denied. */
  protectedNets: readonly Net[];
}

/** A network whose outcome tcp.smtp does not give (the default line does instead). */
export interface Unwritten6 {
  net: Net;
  cls: number;
  why: string;
}

export interface Keys6Plan {
  /** Key -> class; render as `KEY:instruction` (a key ending in `:` then shows `::`). */
  keys: Map<string, number>;
  unwritten: Unwritten6[];
  /** A few addresses per written network, with the class the keys give them (for tcprulescheck). */
  samples: { ip: string; cls: number }[];
}

interface Entry {
  net: Net;
  cls: number;
  parent: Entry | null;
  written: boolean;
  why: string;
}

const ACTION_INDEX: Record<Action, 0 | 1 | 2> = { relay: 0, trust: 1, deny: 2 };
const MAPPED = { family: 6, addr: 0xffffn << 32n, prefix: 96 } as Net;

/** Why `net` cannot be written as keys, or null. */
export function unwritable(net: Net): string | null {
  if (net.prefix === 0) return '::/0 would be the default line of IPv4 too';
  if (netContains(MAPPED, net)) return 'IPv4-mapped: tcpserver looks these addresses up as IPv4';
  const k = Math.ceil(net.prefix / 16);
  if (k === 8) {
    if (2 ** (128 - net.prefix) > MAX_KEYS_PER_NETWORK) return `a /${net.prefix} would take ${2 ** (128 - net.prefix)} keys`;
    // An address whose text ends with a `::` of two or more groups (2001:db8::) is a key that
    // tcpserver also takes as the prefix of every 2001:db8::… address.
    for (let a = net.addr, end = net.addr + (1n << BigInt(128 - net.prefix)); a < end; a++) {
      if (tcpserverText6(a).endsWith('::') && (a & 0xffffffffn) === 0n) return `${tcpserverText6(a)} as a key is also the prefix of other addresses`;
    }
    return null;
  }
  const g = groupsOf(net.addr);
  for (let i = 0; i < k - 1; i++) {
    if (g[i] === 0) return `group ${i + 1} is zero: tcpserver's compressed text (::) does not tell these addresses from others`;
  }
  if (2 ** (16 * k - net.prefix) > MAX_KEYS_PER_NETWORK) return `a /${net.prefix} would take ${2 ** (16 * k - net.prefix)} keys (prefixes a multiple of 16 take one)`;
  return null;
}

/** Plan the IPv6 keys. */
export function planKeys6(input: Keys6Input): Keys6Plan {
  const { actionClass, defaultClass } = input;
  const prot = input.protectedNets.filter((n) => n.family === 6);
  // One outcome per network (relay > trust > deny on equal networks); deny rules inside a
  // protected network do not count, and a protected network inside a deny rule gets what the
  // other rules give it.
  const best = new Map<string, PolicyRule>();
  const keyOf = (n: Net) => `${n.addr}/${n.prefix}`;
  const rules = input.rules.filter((r) => r.net.family === 6 && !(r.action === 'deny' && prot.some((p) => netContains(p, r.net))));
  for (const r of rules) {
    const have = best.get(keyOf(r.net));
    if (!have || comparePrecedence(r, have) < 0) best.set(keyOf(r.net), r);
  }
  const entries: Entry[] = [...best.values()].map((r) => ({ net: r.net, cls: actionClass[ACTION_INDEX[r.action]], parent: null, written: true, why: '' }));
  for (const p of prot) {
    if (best.has(keyOf(p)) || !rules.some((r) => r.action === 'deny' && netContains(r.net, p))) continue;
    const above = rules.filter((r) => r.action !== 'deny' && netContains(r.net, p)).sort(comparePrecedence)[0];
    entries.push({ net: p, cls: above ? actionClass[ACTION_INDEX[above.action]] : defaultClass, parent: null, written: true, why: '' });
  }

  // The nesting: CIDRs either nest or are apart, so a sweep in address order with a stack of
  // the open networks finds each one's closest container.
  entries.sort((a, b) => (a.net.addr < b.net.addr ? -1 : a.net.addr > b.net.addr ? 1 : a.net.prefix - b.net.prefix));
  const open: Entry[] = [];
  for (const e of entries) {
    while (open.length && !netContains(open[open.length - 1].net, e.net)) open.pop();
    e.parent = open.length ? open[open.length - 1] : null;
    open.push(e);
  }

  for (const e of entries) {
    const why = unwritable(e.net);
    if (why) {
      e.written = false;
      e.why = why;
    }
  }
  // An address of a network left out gets the answer of the closest written network around it:
  // that must be its own outcome or the default's, or that network is left out too (and then
  // the same holds for it), until nothing changes.
  for (let changed = true; changed; ) {
    changed = false;
    for (const e of entries) {
      if (e.written) continue;
      let a = e.parent;
      while (a && !a.written) a = a.parent;
      if (!a || a.cls === e.cls || a.cls === defaultClass) continue;
      a.written = false;
      a.why = `it holds ${formatNetShort(e.net)}, which tcp.smtp cannot express, with another outcome`;
      changed = true;
    }
  }

  // Keys: every written network's blocks; on one key the most specific network wins.
  const owner = new Map<string, { prefix: number; cls: number }>();
  const put = (key: string, prefix: number, cls: number) => {
    const o = owner.get(key);
    if (!o || prefix > o.prefix) owner.set(key, { prefix, cls });
  };
  for (const e of entries) {
    if (!e.written) continue;
    const n = e.net;
    const k = Math.ceil(n.prefix / 16);
    if (k === 8) {
      // single addresses: their own text, exactly
      for (let a = n.addr, end = n.addr + (1n << BigInt(128 - n.prefix)); a < end; a++) put(tcpserverText6(a), n.prefix, e.cls);
      continue;
    }
    const g = groupsOf(n.addr).slice(0, k);
    const count = 2 ** (16 * k - n.prefix);
    for (let v = 0; v < count; v++) {
      const last = g[k - 1] + v;
      const head = g.slice(0, k - 1).map((x) => x.toString(16));
      put([...head, last.toString(16)].join(':') + ':', n.prefix, e.cls);
      if (last === 0) put(`${head.join(':')}::`, n.prefix, e.cls);
    }
  }
  const keys = new Map<string, number>();
  for (const [k, o] of owner) keys.set(k, o.cls);

  const samples: { ip: string; cls: number }[] = [];
  const perClass = new Map<number, number>();
  for (const e of entries) {
    if (!e.written || (perClass.get(e.cls) ?? 0) >= 3) continue;
    perClass.set(e.cls, (perClass.get(e.cls) ?? 0) + 1);
    for (const a of [netFirst(e.net), netFirst(e.net) + 1n]) {
      const text = tcpserverText6(a);
      samples.push({ ip: text, cls: lookupKeys(keys, text, defaultClass) });
    }
  }
  const unwritten = entries.filter((e) => !e.written && lookupAnswer(e, defaultClass) !== e.cls).map((e) => ({ net: e.net, cls: e.cls, why: e.why }));
  return { keys, unwritten, samples };
}

/** What an address of `e` (outside its sub-networks) gets: the closest written network's class, or the default. */
function lookupAnswer(e: Entry, defaultClass: number): number {
  for (let a: Entry | null = e; a; a = a.parent) if (a.written) return a.cls;
  return defaultClass;
}
