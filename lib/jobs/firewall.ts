// The firewall part of sync-rules: keep a kernel set (nftables or ipset) of exactly the
// addresses whose decision is deny, blocked on QGUARD_FIREWALL_PORTS. Plan, then apply: the
// set is computed from the rules, compared with what the last run applied (a small state file
// in QGUARD_STATE_DIR) and with one cheap read-only look at the kernel; only a difference
// costs a write. Every write is atomic (one `nft -f` transaction checked first with `nft -c`,
// or an ipset filled aside and swapped in); a failure is a TemporaryError carrying the
// program's words and leaves the previous set in place. Backend `none` runs nothing.
// Also the kernel-side helpers of `qguard firewall status|remove` (lib/admin/firewall.ts).

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { RunContext } from '../context.js';
import type { Config } from '../config.js';
import { TemporaryError, errorText } from '../errors.js';
import { type RunResult, runProgram } from '../io/run-program.js';
import type { Family, Net } from '../net/address.js';
import type { PolicyRule } from '../policy/decide.js';
import { type DenySet, assertSafeSet, denySet, elementTexts } from '../firewall/deny-set.js';
import {
  type BlockPolicy,
  NFT_FAMILY,
  NFT_SETS,
  NFT_TABLE,
  checkNftRuleset,
  countNftElements,
  renderNftRemove,
  renderNftScript,
} from '../firewall/nft-script.js';
import {
  IPSET_NAMES,
  IPSET_TMP,
  IPT_CHAIN,
  IPT_JUMP,
  type IpsetHeader,
  checkIpsets,
  checkIptablesSave,
  parseIpsetHeaders,
  renderIptablesRestore,
  renderIpsetRestore,
} from '../firewall/ipset-script.js';

export interface FirewallInput {
  /** Every live rule that applies on this host (IPv4 and IPv6). */
  rules: readonly PolicyRule[];
  /** Loopback, QGUARD_PROTECT, this machine: never in the set. */
  protectedNets: readonly Net[];
}

export interface FirewallResult {
  backend: 'none' | 'nft' | 'ipset';
  /** True when the kernel set was (or, with dryRun, would be) rewritten. */
  changed: boolean;
  /** Elements in the set (aggregated CIDRs), per family. */
  v4: number;
  v6: number;
  /** True when the set was unchanged but the kernel had lost it (reboot, flush): restored. */
  repaired: boolean;
}

type Backend = 'nft' | 'ipset';

/** What the last successful apply put in the kernel; `$QGUARD_STATE_DIR/firewall.json`. */
export interface AppliedFirewall {
  backend: Backend;
  ports: number[];
  action: BlockPolicy['action'];
  /** sha256 of the element lists: equal digest, equal set. */
  digest: string;
  v4: number;
  v6: number;
  appliedAt: string;
}

const STATE_FILE = 'firewall.json';
/** Big sets take seconds to load; a minute is not enough at a million elements. */
const APPLY_TIMEOUT_MS = 10 * 60_000;
const ANY_EXIT = Array.from({ length: 256 }, (_, i) => i);

function statePath(config: Config): string {
  return path.join(config.stateDir, STATE_FILE);
}

/** The last apply's record, or null (never applied, removed, unreadable). */
export function readAppliedFirewall(config: Config): AppliedFirewall | null {
  let text: string;
  try {
    text = fs.readFileSync(statePath(config), 'utf8');
  } catch {
    return null;
  }
  try {
    const s = JSON.parse(text) as AppliedFirewall;
    if ((s.backend === 'nft' || s.backend === 'ipset') && typeof s.digest === 'string' && Array.isArray(s.ports)) return s;
  } catch {
    // A torn or foreign file: treat as never applied, the next apply rewrites it.
  }
  return null;
}

/** Temp file in the same directory, fsync, rename: the record is old or new, never torn. */
function writeAppliedFirewall(config: Config, state: AppliedFirewall): void {
  const file = statePath(config);
  const tmp = `${file}.tmp${process.pid}`;
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const fd = fs.openSync(tmp, 'w', 0o644);
    try {
      fs.writeSync(fd, `${JSON.stringify(state, null, 2)}\n`);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (err) {
    // The kernel has the new set; without the record the next run rewrites it once more.
    throw new TemporaryError(`unable to write ${file}: ${errorText(err)}`, { cause: err });
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/** Forget the last apply (after `qguard firewall remove`). */
export function forgetAppliedFirewall(config: Config): void {
  fs.rmSync(statePath(config), { force: true });
}

// ---------------------------------------------------------------------------------------
// Programs. cron's PATH (/usr/bin:/bin) usually lacks /usr/sbin, where nft, ipset and
// iptables live: look on PATH first (so a test can put a program in front), then in sbin.

const SBIN = ['/usr/sbin', '/sbin', '/usr/local/sbin'];
const found = new Map<string, string | null>();

/** Absolute path of a firewall program, or null when it is not installed. */
export function firewallProgram(name: string): string | null {
  if (!found.has(name)) {
    let hit: string | null = null;
    for (const dir of [...(process.env.PATH ?? '').split(':').filter(Boolean), ...SBIN]) {
      const p = path.join(dir, name);
      try {
        fs.accessSync(p, fs.constants.X_OK);
        if (fs.statSync(p).isFile()) {
          hit = p;
          break;
        }
      } catch {
        // not here
      }
    }
    found.set(name, hit);
  }
  return found.get(name)!;
}

/** The line of a program's stderr that says what went wrong, kept short (nft echoes input). */
function firstProblem(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean);
  const line = lines.find((l) => /error/i.test(l)) ?? lines[0] ?? '';
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}

/**
 * Run a firewall program; exit codes outside `ok` become a TemporaryError with the
 * program's own message, e.g. `nft -f failed (exit 1): /dev/stdin:7:1-40: Error: ...`.
 */
async function fw(
  name: string,
  args: readonly string[],
  opts: { input?: string; ok?: number[]; timeoutMs?: number } = {},
): Promise<RunResult> {
  const file = firewallProgram(name);
  if (!file) throw new TemporaryError(`unable to run ${name}: program not found (looked on PATH and in ${SBIN.join(', ')})`);
  const r = await runProgram(file, args, { input: opts.input, okExitCodes: ANY_EXIT, timeoutMs: opts.timeoutMs ?? 60_000 });
  if (!(opts.ok ?? [0]).includes(r.exitCode)) {
    const shown = args.filter((a) => a !== '-w' && a !== '-').join(' ');
    const why = firstProblem(r.stderr);
    throw new TemporaryError(`${name} ${shown} failed (exit ${r.exitCode})${why ? `: ${why}` : ''}`);
  }
  return r;
}

const iptables = (family: Family) => (family === 4 ? 'iptables' : 'ip6tables');

// ---------------------------------------------------------------------------------------
// The cheap look at the kernel: one read-only call for nft, three for ipset (the set
// headers carry entry counts, no members; iptables-save shows our chain and jump).

/** Our firewall objects as the kernel has them now. */
export interface KernelCheck {
  backend: Backend;
  /** Some of our objects exist. */
  present: boolean;
  /** Everything is there as the last apply left it (for ipset: with the same entry counts). */
  intact: boolean;
  problem: string | null;
  /** ipset: the headers of every set (names tell which of ours exist). */
  ipsets?: Map<string, IpsetHeader>;
  /** ipset: jumps from INPUT to QGUARD per family. */
  jumps?: Record<Family, number>;
}

/** Look at the kernel. `expected` (the last apply) lets the ipset check compare counts. */
export async function checkKernel(backend: Backend, policy: BlockPolicy, expected: AppliedFirewall | null): Promise<KernelCheck> {
  if (backend === 'nft') {
    const r = await fw('nft', ['-t', '-j', 'list', 'ruleset', NFT_FAMILY]);
    return { backend, ...checkNftRuleset(r.stdout, policy) };
  }
  const headers = parseIpsetHeaders((await fw('ipset', ['list', '-t'])).stdout);
  const sets = checkIpsets(headers, expected);
  const jumps: Record<Family, number> = { 4: 0, 6: 0 };
  let present = sets.present;
  let problem = sets.problem;
  for (const family of [4, 6] as const) {
    const save = await fw(`${iptables(family)}-save`, ['-t', 'filter']);
    const c = checkIptablesSave(save.stdout, family, policy);
    jumps[family] = c.jumps;
    present ||= c.chain || c.jumps > 0;
    problem ??= c.problem;
  }
  if (!expected && problem === null) problem = 'never applied by this host';
  return { backend, present, intact: problem === null, problem, ipsets: headers, jumps };
}

const policyOf = (config: Config): BlockPolicy => ({ ports: config.firewallPorts, action: config.firewallAction });

function samePolicy(a: AppliedFirewall, backend: Backend, p: BlockPolicy): boolean {
  return a.backend === backend && a.action === p.action && a.ports.join(',') === p.ports.join(',');
}

/**
 * One look at the kernel per run: what firewallInPlace saw is handed to the applyFirewall that
 * follows it (once, and only while fresh: under `sync-rules --watch` the context lives on).
 */
const lookedAt = new WeakMap<RunContext, { at: number; seen: Look }>();
const LOOK_FRESH_MS = 10_000;

type Look = { check: KernelCheck | null; error: string | null };

async function look(ctx: RunContext, backend: Backend, applied: AppliedFirewall | null): Promise<Look> {
  try {
    return { check: await checkKernel(backend, policyOf(ctx.config), applied), error: null };
  } catch (err) {
    return { check: null, error: errorText(err) };
  }
}

/**
 * Cheap check that our table/sets are still in the kernel as the last run left them (a reboot
 * or `nft flush ruleset` empties them). Always true for backend `none`. Never throws for a
 * firewall program's failure: it answers false, and applyFirewall then reports the failure.
 */
export async function firewallInPlace(ctx: RunContext): Promise<boolean> {
  const backend = ctx.config.firewall;
  if (backend === 'none') return true;
  const applied = readAppliedFirewall(ctx.config);
  if (!applied || !samePolicy(applied, backend, policyOf(ctx.config))) return false;
  const seen = await look(ctx, backend, applied);
  lookedAt.set(ctx, { at: Date.now(), seen });
  if (seen.error) ctx.log.info(`firewall: unable to look at the kernel: ${seen.error}`);
  return seen.check?.intact ?? false;
}

/** sha256 over both element lists: the identity of a set. */
function digestOf(v4: readonly string[], v6: readonly string[]): string {
  const h = createHash('sha256');
  h.update(v4.join(','));
  h.update('|');
  h.update(v6.join(','));
  return h.digest('hex');
}

/**
 * Make the kernel set equal the deny spans of the policy (no call at all when it already is).
 * Throws TemporaryError when the firewall program fails; the previous set stays in place.
 * Throws PermanentError when the set would block a protected address or everything (a bug).
 */
export async function applyFirewall(
  ctx: RunContext,
  input: FirewallInput,
  opts: { dryRun: boolean },
): Promise<FirewallResult> {
  const backend = ctx.config.firewall;
  if (backend === 'none') return { backend: 'none', changed: false, v4: 0, v6: 0, repaired: false };
  const set = denySet(input.rules, input.protectedNets);
  assertSafeSet(set, input.protectedNets);
  const policy = policyOf(ctx.config);
  const digest = digestOf(elementTexts(set.v4), elementTexts(set.v6));
  const counts = { v4: set.v4.length, v6: set.v6.length };
  const applied = readAppliedFirewall(ctx.config);
  const same = applied !== null && samePolicy(applied, backend, policy) && applied.digest === digest;
  const cached = lookedAt.get(ctx);
  lookedAt.delete(ctx);
  const seen = cached && Date.now() - cached.at < LOOK_FRESH_MS ? cached.seen : await look(ctx, backend, same ? applied : null);
  if (same && seen.check?.intact) return { backend, changed: false, ...counts, repaired: false };

  const repaired = same;
  // Lost behind our back (reboot, flush, a firewall reload): worth one line in cron's mail.
  // When the kernel could not even be read, the apply below fails with the program's words.
  if (repaired && seen.check && !opts.dryRun) {
    ctx.log.warn(`firewall: ${seen.check.problem ?? 'not in place'}: restoring the ${backend} set of ${counts.v4 + counts.v6} elements`);
  }
  if (opts.dryRun) return { backend, changed: true, ...counts, repaired };

  const started = Date.now();
  if (backend === 'nft') {
    await applyNft(set, policy, input.protectedNets);
  } else {
    await applyIpset(set, policy, input.protectedNets, seen.check);
  }
  writeAppliedFirewall(ctx.config, {
    backend,
    ports: [...policy.ports],
    action: policy.action,
    digest,
    ...counts,
    appliedAt: new Date().toISOString(),
  });
  ctx.log.info(
    `firewall: ${backend} set written: ${counts.v4} IPv4 + ${counts.v6} IPv6 elements, tcp ports ${policy.ports.join(',')} ${policy.action} (${Date.now() - started} ms)`,
  );
  // Switched backends: take the other one's objects out now that the new one blocks.
  if (applied && applied.backend !== backend) {
    try {
      await removeBackend(applied.backend);
      ctx.log.info(`firewall: removed the previous ${applied.backend} objects`);
    } catch (err) {
      ctx.log.warn(`firewall: unable to remove the previous ${applied.backend} objects: ${errorText(err)}`);
    }
  }
  return { backend, changed: true, ...counts, repaired };
}

/** One transaction, checked first: a refused script changes nothing. */
async function applyNft(set: DenySet, policy: BlockPolicy, protectedNets: readonly Net[]): Promise<void> {
  const script = renderNftScript(set, policy, protectedNets);
  await fw('nft', ['-c', '-f', '-'], { input: script, timeoutMs: APPLY_TIMEOUT_MS });
  await fw('nft', ['-f', '-'], { input: script, timeoutMs: APPLY_TIMEOUT_MS });
}

/** Fill aside and swap; then our chain (one iptables-restore commit) and exactly one jump. */
async function applyIpset(set: DenySet, policy: BlockPolicy, protectedNets: readonly Net[], seen: KernelCheck | null): Promise<void> {
  const headers = seen?.ipsets ?? parseIpsetHeaders((await fw('ipset', ['list', '-t'])).stdout);
  const script = renderIpsetRestore(set, protectedNets, new Set(headers.keys()));
  try {
    await fw('ipset', ['restore'], { input: script, timeoutMs: APPLY_TIMEOUT_MS });
  } catch (err) {
    // The live sets are untouched (the swap is the last step); drop the half-filled ones.
    await dropTemporarySets().catch(() => {});
    throw err;
  }
  for (const family of [4, 6] as const) {
    const tool = iptables(family);
    await fw(`${tool}-restore`, ['-w', '--noflush'], { input: renderIptablesRestore(family, policy) });
    const has = await fw(tool, ['-w', '-C', ...IPT_JUMP], { ok: [0, 1] });
    if (has.exitCode === 1) {
      await fw(tool, ['-w', '-I', 'INPUT', '1', '-j', IPT_CHAIN]);
    } else {
      // Exactly one: drop duplicates someone (or an old version) added.
      for (let n = seen?.jumps?.[family] ?? 1; n > 1; n--) await fw(tool, ['-w', '-D', ...IPT_JUMP]);
    }
  }
}

async function dropTemporarySets(): Promise<void> {
  const headers = parseIpsetHeaders((await fw('ipset', ['list', '-t'])).stdout);
  for (const name of Object.values(IPSET_TMP)) if (headers.has(name)) await fw('ipset', ['destroy', name]);
}

/** Take one backend's objects out of the kernel; idempotent, never touches anything else. */
async function removeBackend(backend: Backend): Promise<string[]> {
  const removed: string[] = [];
  if (backend === 'nft') {
    const r = await fw('nft', ['-t', '-j', 'list', 'ruleset', NFT_FAMILY]);
    if (checkNftRuleset(r.stdout, { ports: [25], action: 'drop' }).present) {
      await fw('nft', ['-f', '-'], { input: renderNftRemove() });
      removed.push(`nft table ${NFT_FAMILY} ${NFT_TABLE}`);
    }
    return removed;
  }
  for (const family of [4, 6] as const) {
    const tool = iptables(family);
    if (!firewallProgram(tool)) continue;
    const save = checkIptablesSave((await fw(`${tool}-save`, ['-t', 'filter'])).stdout, family, { ports: [25], action: 'drop' });
    for (let n = save.jumps; n > 0; n--) await fw(tool, ['-w', '-D', ...IPT_JUMP]);
    if (save.chain) {
      await fw(tool, ['-w', '-F', IPT_CHAIN]);
      await fw(tool, ['-w', '-X', IPT_CHAIN]);
    }
    if (save.chain || save.jumps > 0) removed.push(`${tool} chain ${IPT_CHAIN}`);
  }
  const headers = parseIpsetHeaders((await fw('ipset', ['list', '-t'])).stdout);
  for (const name of [...Object.values(IPSET_NAMES), ...Object.values(IPSET_TMP)]) {
    if (headers.has(name)) {
      await fw('ipset', ['destroy', name]);
      removed.push(`ipset ${name}`);
    }
  }
  return removed;
}

/**
 * `qguard firewall remove`: take out whatever qguard put in the kernel, for every backend
 * whose programs are installed, and forget the last apply. Returns what was removed.
 */
export async function removeFirewall(config: Config): Promise<string[]> {
  const removed: string[] = [];
  if (firewallProgram('nft')) removed.push(...(await removeBackend('nft')));
  if (firewallProgram('ipset')) removed.push(...(await removeBackend('ipset')));
  forgetAppliedFirewall(config);
  return removed;
}

/** What `qguard firewall status` reports about the kernel. */
export interface KernelStatus {
  backend: Backend;
  present: boolean;
  inPlace: boolean;
  problem: string | null;
  /** Elements in the kernel's sets now (null when a set is missing). */
  v4: number | null;
  v6: number | null;
}

/** Look at one backend's objects, counting the elements (nft lists them: slower, admin only). */
export async function kernelStatus(config: Config, backend: Backend, applied: AppliedFirewall | null): Promise<KernelStatus> {
  const policy = applied && applied.backend === backend ? { ports: applied.ports, action: applied.action } : policyOf(config);
  const check = await checkKernel(backend, policy, applied && applied.backend === backend ? applied : null);
  let v4: number | null = null;
  let v6: number | null = null;
  if (backend === 'nft') {
    if (check.present) {
      const count = async (family: Family) => {
        const r = await fw('nft', ['-j', 'list', 'set', NFT_FAMILY, NFT_TABLE, NFT_SETS[family]], { ok: [0, 1] });
        return r.exitCode === 0 ? countNftElements(r.stdout) : null;
      };
      v4 = await count(4);
      v6 = await count(6);
    }
  } else {
    v4 = check.ipsets?.get(IPSET_NAMES[4])?.entries ?? null;
    v6 = check.ipsets?.get(IPSET_NAMES[6])?.entries ?? null;
  }
  return { backend, present: check.present, inPlace: check.intact, problem: check.problem, v4, v6 };
}
