// The nftables side of the firewall as text: the `nft -f` script that makes table
// `inet qguard` hold exactly the deny set (one transaction: declare, flush, refill), the
// script that removes it, and readers of nft's JSON output (is our table intact? how many
// elements?). Pure: no I/O; lib/io/firewall/ runs nft. Never names another table.

import type { Net } from '../net/address.js';
import { type DenySet, assertSafeSet, elementTexts } from './deny-set.js';

/** Our table; nothing else is ever touched. */
export const NFT_FAMILY = 'inet';
export const NFT_TABLE = 'qguard';
export const NFT_CHAIN = 'input';
/** Set names per address family. */
export const NFT_SETS = { 4: 'deny_v4', 6: 'deny_v6' } as const;
/** Before the usual filter chains (priority 0), after conntrack (-200); numeric for older nft. */
export const NFT_PRIORITY = '-10';

/** What is blocked and how: TCP ports and the verdict. */
export interface BlockPolicy {
  ports: readonly number[];
  action: 'drop' | 'reject';
}

/** Elements per `add element` statement: keeps lines (and nft's error echoes) short. */
const DEFAULT_CHUNK = 2000;

const verdict = (action: BlockPolicy['action']) => (action === 'reject' ? 'reject with tcp reset' : 'drop');

function portList(ports: readonly number[]): string {
  if (ports.length === 0) throw new Error('no ports to block');
  return `{ ${ports.join(', ')} }`;
}

/**
 * The whole update as one `nft -f` script, hence one kernel transaction: the table, sets and
 * chain are declared (created when missing, left alone when present), the chain and both sets
 * are flushed and refilled. Run it twice and the second run changes nothing; run it after
 * `nft flush ruleset` and everything is back. Throws (PermanentError) when the set is unsafe.
 *
 * `fresh`: for a kernel without our table (as a check just saw it): the table is created with
 * `create table`, which the kernel refuses (and with it the whole script) if the table exists
 * after all, and nothing is flushed. nft 1.0.6 took 0.95-1.0 s for a first apply of 100,000
 * elements with the flushes, 0.60-0.64 s without (the elements loaded alone: 0.61-0.67 s).
 */
export function renderNftScript(
  set: DenySet,
  policy: BlockPolicy,
  protectedNets: readonly Net[],
  opts: { chunk?: number; fresh?: boolean } = {},
): string {
  assertSafeSet(set, protectedNets);
  const chunk = opts.chunk ?? DEFAULT_CHUNK;
  const t = `${NFT_FAMILY} ${NFT_TABLE}`;
  const ports = portList(policy.ports);
  const out: string[] = [
    ...(opts.fresh ? [`create table ${t}`] : []),
    `table ${t} {`,
    `\tset ${NFT_SETS[4]} { type ipv4_addr; flags interval; }`,
    `\tset ${NFT_SETS[6]} { type ipv6_addr; flags interval; }`,
    `\tchain ${NFT_CHAIN} { type filter hook input priority ${NFT_PRIORITY}; policy accept; }`,
    '}',
    ...(opts.fresh ? [] : [`flush chain ${t} ${NFT_CHAIN}`, `flush set ${t} ${NFT_SETS[4]}`, `flush set ${t} ${NFT_SETS[6]}`]),
    `add rule ${t} ${NFT_CHAIN} tcp dport ${ports} ip saddr @${NFT_SETS[4]} ${verdict(policy.action)}`,
    `add rule ${t} ${NFT_CHAIN} tcp dport ${ports} ip6 saddr @${NFT_SETS[6]} ${verdict(policy.action)}`,
  ];
  for (const family of [4, 6] as const) {
    const texts = elementTexts(family === 4 ? set.v4 : set.v6);
    for (let i = 0; i < texts.length; i += chunk) {
      out.push(`add element ${t} ${NFT_SETS[family]} { ${texts.slice(i, i + chunk).join(', ')} }`);
    }
  }
  out.push('');
  return out.join('\n');
}

/**
 * Remove our table. Declaring it first makes the delete succeed whether or not it exists, so
 * removal is one idempotent transaction.
 */
export function renderNftRemove(): string {
  return `table ${NFT_FAMILY} ${NFT_TABLE}\ndelete table ${NFT_FAMILY} ${NFT_TABLE}\n`;
}

/** Our table as the kernel has it, from `nft -t -j list ruleset inet` (terse: no elements). */
export interface NftTableCheck {
  /** Table `inet qguard` exists. */
  present: boolean;
  /** Table, sets, chain and rules are exactly what renderNftScript makes for `policy`. */
  intact: boolean;
  /** Why not intact, for --verbose and `qguard firewall status`. */
  problem: string | null;
}

type Json = Record<string, unknown>;

function nftObjects(jsonText: string): Json[] | null {
  let doc: unknown;
  try {
    doc = JSON.parse(jsonText);
  } catch {
    return null;
  }
  const list = (doc as { nftables?: unknown })?.nftables;
  return Array.isArray(list) ? (list as Json[]) : null;
}

/** Ports of a `tcp dport` match's right-hand side: 25, {set:[25,110]}, {range:[a,b]}. */
function portsOf(right: unknown): number[] | null {
  const out: number[] = [];
  const add = (v: unknown): boolean => {
    if (typeof v === 'number') {
      out.push(v);
      return true;
    }
    const range = (v as { range?: unknown })?.range;
    if (Array.isArray(range) && typeof range[0] === 'number' && typeof range[1] === 'number' && range[1] - range[0] < 65536) {
      for (let p = range[0]; p <= range[1]; p++) out.push(p);
      return true;
    }
    return false;
  };
  const set = (right as { set?: unknown })?.set;
  if (Array.isArray(set)) {
    for (const v of set) if (!add(v)) return null;
  } else if (!add(right)) {
    return null;
  }
  return out.sort((a, b) => a - b);
}

/** A rule as `ip @deny_v4 25,110 drop`, or null when it is not one of ours. */
function ruleSignature(expr: unknown): string | null {
  if (!Array.isArray(expr) || expr.length !== 3) return null;
  const [m1, m2, v] = expr as Json[];
  const dport = m1?.match as Json | undefined;
  const saddr = m2?.match as Json | undefined;
  if (!dport || !saddr || dport.op !== '==' || saddr.op !== '==') return null;
  const dp = (dport.left as Json)?.payload as Json | undefined;
  const sa = (saddr.left as Json)?.payload as Json | undefined;
  if (dp?.protocol !== 'tcp' || dp?.field !== 'dport') return null;
  if ((sa?.protocol !== 'ip' && sa?.protocol !== 'ip6') || sa?.field !== 'saddr') return null;
  if (typeof saddr.right !== 'string') return null;
  const ports = portsOf(dport.right);
  if (!ports) return null;
  let act: string;
  if (v && 'drop' in v) act = 'drop';
  else if (v && (v.reject as Json | undefined)?.type === 'tcp reset') act = 'reject';
  else return null;
  return `${sa.protocol} ${saddr.right} ${ports.join(',')} ${act}`;
}

function expectedSignatures(policy: BlockPolicy): string[] {
  const ports = [...policy.ports].sort((a, b) => a - b).join(',');
  return [`ip @${NFT_SETS[4]} ${ports} ${policy.action}`, `ip6 @${NFT_SETS[6]} ${ports} ${policy.action}`];
}

/**
 * Is our table in the kernel as renderNftScript leaves it? Reads the terse JSON listing
 * (`nft -t -j list ruleset inet`), which is cheap at any set size because it carries no
 * elements. Element content is not compared (see the job: the last apply is trusted for it).
 */
export function checkNftRuleset(jsonText: string, policy: BlockPolicy): NftTableCheck {
  const objects = nftObjects(jsonText);
  if (!objects) return { present: false, intact: false, problem: 'unreadable nft JSON output' };
  const ours = (o: Json | undefined): o is Json => !!o && o.family === NFT_FAMILY && o.table === NFT_TABLE;
  const table = objects.find((o) => o.table && (o.table as Json).family === NFT_FAMILY && (o.table as Json).name === NFT_TABLE);
  if (!table) return { present: false, intact: false, problem: `table ${NFT_FAMILY} ${NFT_TABLE} is missing` };
  const fail = (problem: string): NftTableCheck => ({ present: true, intact: false, problem });
  const sets = objects.map((o) => o.set as Json | undefined).filter(ours);
  for (const [name, type] of [
    [NFT_SETS[4], 'ipv4_addr'],
    [NFT_SETS[6], 'ipv6_addr'],
  ]) {
    const s = sets.find((x) => x.name === name);
    if (!s) return fail(`set ${name} is missing`);
    if (s.type !== type || !Array.isArray(s.flags) || !s.flags.includes('interval')) return fail(`set ${name} has the wrong type or flags`);
  }
  const chains = objects.map((o) => o.chain as Json | undefined).filter(ours);
  const chain = chains.find((c) => c.name === NFT_CHAIN);
  if (!chain) return fail(`chain ${NFT_CHAIN} is missing`);
  if (chain.type !== 'filter' || chain.hook !== 'input' || chain.policy !== 'accept') return fail(`chain ${NFT_CHAIN} is not an input filter chain with policy accept`);
  const rules = objects
    .map((o) => o.rule as Json | undefined)
    .filter((r): r is Json => ours(r) && r.chain === NFT_CHAIN);
  const got = rules.map((r) => ruleSignature(r.expr) ?? 'other').sort();
  const want = expectedSignatures(policy).sort();
  if (got.join('\n') !== want.join('\n')) {
    return fail(`chain ${NFT_CHAIN} holds other rules than the ports ${policy.ports.join(',')} ${policy.action} rules`);
  }
  return { present: true, intact: true, problem: null };
}

/** Elements in a set, from `nft -j list set inet qguard NAME` (for status; it lists them all). */
export function countNftElements(jsonText: string): number | null {
  const objects = nftObjects(jsonText);
  if (!objects) return null;
  const set = objects.map((o) => o.set as Json | undefined).find((s) => s && s.table === NFT_TABLE);
  if (!set) return null;
  return Array.isArray(set.elem) ? set.elem.length : 0;
}
