// The ipset + iptables side of the firewall as text: the `ipset restore` input that fills a
// temporary hash:net set and swaps it in (atomic for the packets: the live set is either the
// old one or the new one), the `iptables-restore --noflush` input for our own QGUARD chain,
// the one jump from INPUT, and readers for `ipset list -t` and `iptables-save`. Pure: no
// I/O; lib/io/firewall/ runs the programs. Touches no chain but QGUARD and one
// `-A INPUT -j QGUARD` rule.

import type { Family, Net } from '../net/address.js';
import { type DenySet, assertSafeSet, elementTexts } from './deny-set.js';
import type { BlockPolicy } from './nft-script.js';

/** Live set names per family, and the temporary ones filled before the swap. */
export const IPSET_NAMES = { 4: 'qguard4', 6: 'qguard6' } as const;
export const IPSET_TMP = { 4: 'qguard4-tmp', 6: 'qguard6-tmp' } as const;
/** Our iptables/ip6tables chain in table filter. */
export const IPT_CHAIN = 'QGUARD';
/** The jump, as `iptables -C/-I/-D` arguments. */
export const IPT_JUMP: readonly string[] = ['INPUT', '-j', IPT_CHAIN];

const IPSET_FAMILY: Record<Family, string> = { 4: 'inet', 6: 'inet6' };
/** iptables' multiport match takes at most 15 ports per rule. */
const MULTIPORT_MAX = 15;

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * Size a hash:net set for `count` entries: maxelem at least the count (ipset refuses more),
 * never below ipset's default 65536; hashsize about a quarter of it so buckets stay short
 * without resizing while the set is filled.
 */
export function ipsetSizing(count: number): { hashsize: number; maxelem: number } {
  return {
    hashsize: Math.min(1 << 20, Math.max(1024, nextPow2(Math.ceil(count / 4)))),
    maxelem: Math.max(65536, nextPow2(count)),
  };
}

/**
 * `ipset restore` input replacing both live sets. Each family: create the temporary set sized
 * to its elements, fill it, then `swap` it with the live set and `destroy` the old content —
 * or `rename` it when there is no live set yet (first run, after a reboot). `existing` names
 * the sets the kernel has now (from `ipset list -n`/`-t`): a temporary set left by a crashed
 * run is destroyed first. Nothing before the swap touches the live sets, so a failure leaves
 * them as they were. Throws (PermanentError) when the set is unsafe.
 */
export function renderIpsetRestore(set: DenySet, protectedNets: readonly Net[], existing: ReadonlySet<string>): string {
  assertSafeSet(set, protectedNets);
  const out: string[] = [];
  for (const family of [4, 6] as const) {
    const live = IPSET_NAMES[family];
    const tmp = IPSET_TMP[family];
    const texts = elementTexts(family === 4 ? set.v4 : set.v6);
    const { hashsize, maxelem } = ipsetSizing(texts.length);
    if (existing.has(tmp)) out.push(`destroy ${tmp}`);
    out.push(`create ${tmp} hash:net family ${IPSET_FAMILY[family]} hashsize ${hashsize} maxelem ${maxelem}`);
    for (const t of texts) out.push(`add ${tmp} ${t}`);
    if (existing.has(live)) {
      out.push(`swap ${tmp} ${live}`, `destroy ${tmp}`);
    } else {
      out.push(`rename ${tmp} ${live}`);
    }
  }
  out.push('');
  return out.join('\n');
}

/** The rules of chain QGUARD exactly as `iptables-save` prints them. */
export function iptablesChainRules(family: Family, policy: BlockPolicy): string[] {
  if (policy.ports.length === 0) throw new Error('no ports to block');
  const target = policy.action === 'reject' ? 'REJECT --reject-with tcp-reset' : 'DROP';
  const out: string[] = [];
  for (let i = 0; i < policy.ports.length; i += MULTIPORT_MAX) {
    const ports = policy.ports.slice(i, i + MULTIPORT_MAX).join(',');
    out.push(`-A ${IPT_CHAIN} -p tcp -m multiport --dports ${ports} -m set --match-set ${IPSET_NAMES[family]} src -j ${target}`);
  }
  return out;
}

/**
 * `iptables-restore --noflush` (or ip6tables-restore) input that creates chain QGUARD if
 * needed and replaces its rules in one commit; no other chain is named, so with --noflush
 * nothing else changes. The jump from INPUT is ensured separately (check, then insert).
 */
export function renderIptablesRestore(family: Family, policy: BlockPolicy): string {
  return ['*filter', `:${IPT_CHAIN} - [0:0]`, ...iptablesChainRules(family, policy), 'COMMIT', ''].join('\n');
}

/** One set's header from `ipset list -t`. */
export interface IpsetHeader {
  name: string;
  type: string;
  family: string | null;
  maxelem: number | null;
  entries: number | null;
}

/** Parse `ipset list -t` (headers, no members): every set by name. */
export function parseIpsetHeaders(text: string): Map<string, IpsetHeader> {
  const out = new Map<string, IpsetHeader>();
  let cur: IpsetHeader | null = null;
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z ]+):\s*(.*)$/.exec(line);
    if (!m) continue;
    const [, key, value] = m;
    if (key === 'Name') {
      cur = { name: value.trim(), type: '', family: null, maxelem: null, entries: null };
      out.set(cur.name, cur);
    } else if (cur && key === 'Type') {
      cur.type = value.trim();
    } else if (cur && key === 'Header') {
      cur.family = /\bfamily (\S+)/.exec(value)?.[1] ?? null;
      const max = /\bmaxelem (\d+)/.exec(value)?.[1];
      cur.maxelem = max === undefined ? null : Number(max);
    } else if (cur && key === 'Number of entries') {
      cur.entries = Number(value.trim());
    }
  }
  return out;
}

/**
 * Do the live sets hold what the last apply put there (type, family and, when `expected` is
 * given, the entry count: a set flushed behind our back shows here)?
 */
export function checkIpsets(
  headers: ReadonlyMap<string, IpsetHeader>,
  expected: { v4: number; v6: number } | null,
): { present: boolean; intact: boolean; problem: string | null } {
  let present = false;
  for (const family of [4, 6] as const) {
    const name = IPSET_NAMES[family];
    const h = headers.get(name);
    if (!h) return { present, intact: false, problem: `ipset ${name} is missing` };
    present = true;
    if (h.type !== 'hash:net' || h.family !== IPSET_FAMILY[family]) {
      return { present, intact: false, problem: `ipset ${name} is not a hash:net set of family ${IPSET_FAMILY[family]}` };
    }
    const want = expected === null ? h.entries : family === 4 ? expected.v4 : expected.v6;
    if (h.entries !== want) {
      return { present, intact: false, problem: `ipset ${name} holds ${h.entries ?? '?'} entries, the last apply put ${want}` };
    }
  }
  return { present, intact: true, problem: null };
}

/** Our chain and jump as `iptables-save -t filter` shows them. */
export interface IptablesCheck {
  /** Chain QGUARD exists. */
  chain: boolean;
  /** How many `-A INPUT -j QGUARD` rules there are (we keep exactly one). */
  jumps: number;
  /** Chain rules equal iptablesChainRules() and exactly one jump. */
  intact: boolean;
  problem: string | null;
}

/** Read `iptables-save -t filter` (or ip6tables-save) for our chain and jump. */
export function checkIptablesSave(text: string, family: Family, policy: BlockPolicy): IptablesCheck {
  let inFilter = false;
  let chain = false;
  let jumps = 0;
  const rules: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim().replace(/\s+/g, ' ');
    if (line.startsWith('*')) inFilter = line === '*filter';
    if (!inFilter) continue;
    if (line.startsWith(`:${IPT_CHAIN} `)) chain = true;
    else if (line === `-A INPUT -j ${IPT_CHAIN}`) jumps++;
    else if (line.startsWith(`-A ${IPT_CHAIN} `)) rules.push(line);
  }
  const tool = family === 4 ? 'iptables' : 'ip6tables';
  const want = iptablesChainRules(family, policy);
  let problem: string | null = null;
  if (!chain) problem = `${tool} chain ${IPT_CHAIN} is missing`;
  else if (rules.join('\n') !== want.join('\n')) problem = `${tool} chain ${IPT_CHAIN} holds other rules than expected`;
  else if (jumps !== 1) problem = `${tool} INPUT has ${jumps} jumps to ${IPT_CHAIN}, not one`;
  return { chain, jumps, intact: problem === null, problem };
}
