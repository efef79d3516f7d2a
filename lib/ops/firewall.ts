// The firewall part of sync-rules, and `qguard firewall status|remove`: keep a kernel set of
// exactly the addresses whose decision is deny, blocked on QGUARD_FIREWALL_PORTS, through the
// configured backend (lib/io/firewall/: nftables or ipset). Plan, then apply: the set is
// computed from the rules, compared with what the last run applied (a small record in
// QGUARD_STATE_DIR) and with one cheap read-only look at the kernel; only a difference costs a
// write. Every write is atomic (the backend's own way); a failure is a TemporaryError carrying
// the program's words and leaves the previous set in place. Backend `none` runs nothing.

import { createHash } from 'node:crypto';
import type { RunContext } from '../context.js';
import type { Config } from '../config.js';
import { errorText } from '../errors.js';
import type { Net } from '../net/address.js';
import type { PolicyRule } from '../policy/decide.js';
import { assertSafeSet, denySet, elementTexts } from '../firewall/deny-set.js';
import type { FirewallBackendName, FirewallResult } from '../firewall/backends.js';
import type { BlockPolicy } from '../firewall/nft-script.js';
import type { AppliedFirewall, KernelCheck } from '../io/firewall/backend.js';
import { forgetAppliedFirewall, readAppliedFirewall, writeAppliedFirewall } from '../io/firewall/applied.js';
import { allFirewallBackends, firewallBackend } from '../io/firewall/index.js';

export { readAppliedFirewall };
export type { AppliedFirewall, FirewallResult };

export interface FirewallInput {
  /** Every live rule that applies on this host (IPv4 and IPv6). */
  rules: readonly PolicyRule[];
  /** Loopback, QGUARD_PROTECT, this machine: never in the set. */
  protectedNets: readonly Net[];
}

const policyOf = (config: Config): BlockPolicy => ({ ports: config.firewallPorts, action: config.firewallAction });

function samePolicy(a: AppliedFirewall, backend: FirewallBackendName, p: BlockPolicy): boolean {
  return a.backend === backend && a.action === p.action && a.ports.join(',') === p.ports.join(',');
}

/**
 * One look at the kernel per run: what firewallInPlace saw is handed to the applyFirewall that
 * follows it (once, and only while fresh: under `sync-rules --watch` the context lives on).
 */
const lookedAt = new WeakMap<RunContext, { at: number; seen: Look }>();
const LOOK_FRESH_MS = 10_000;

type Look = { check: KernelCheck | null; error: string | null };

async function look(ctx: RunContext, backend: FirewallBackendName, applied: AppliedFirewall | null): Promise<Look> {
  try {
    return { check: await firewallBackend(backend).check(policyOf(ctx.config), applied), error: null };
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
export async function applyFirewall(ctx: RunContext, input: FirewallInput, opts: { dryRun: boolean }): Promise<FirewallResult> {
  const name = ctx.config.firewall;
  if (name === 'none') return { backend: 'none', changed: false, v4: 0, v6: 0, repaired: false };
  const backend = firewallBackend(name);
  const set = denySet(input.rules, input.protectedNets);
  assertSafeSet(set, input.protectedNets);
  const policy = policyOf(ctx.config);
  const digest = digestOf(elementTexts(set.v4), elementTexts(set.v6));
  const counts = { v4: set.v4.length, v6: set.v6.length };
  const applied = readAppliedFirewall(ctx.config);
  const same = applied !== null && samePolicy(applied, name, policy) && applied.digest === digest;
  const cached = lookedAt.get(ctx);
  lookedAt.delete(ctx);
  const seen = cached && Date.now() - cached.at < LOOK_FRESH_MS ? cached.seen : await look(ctx, name, same ? applied : null);
  if (same && seen.check?.intact) return { backend: name, changed: false, ...counts, repaired: false };

  const repaired = same;
  // Lost behind our back (reboot, flush, a firewall reload): worth one line in cron's mail.
  // When the kernel could not even be read, the apply below fails with the program's words.
  if (repaired && seen.check && !opts.dryRun) {
    ctx.log.warn(`firewall: ${seen.check.problem ?? 'not in place'}: restoring the ${name} set of ${counts.v4 + counts.v6} elements`);
  }
  if (opts.dryRun) return { backend: name, changed: true, ...counts, repaired };

  const started = Date.now();
  await backend.apply(set, policy, input.protectedNets, seen.check);
  writeAppliedFirewall(ctx.config, {
    backend: name,
    ports: [...policy.ports],
    action: policy.action,
    digest,
    ...counts,
    appliedAt: new Date().toISOString(),
  });
  ctx.log.info(
    `firewall: ${name} set written: ${counts.v4} IPv4 + ${counts.v6} IPv6 elements, tcp ports ${policy.ports.join(',')} ${policy.action} (${Date.now() - started} ms)`,
  );
  // Switched backends: take the other one's objects out now that the new one blocks.
  if (applied && applied.backend !== name) {
    try {
      await firewallBackend(applied.backend).remove();
      ctx.log.info(`firewall: removed the previous ${applied.backend} objects`);
    } catch (err) {
      ctx.log.warn(`firewall: unable to remove the previous ${applied.backend} objects: ${errorText(err)}`);
    }
  }
  return { backend: name, changed: true, ...counts, repaired };
}

/**
 * `qguard firewall remove`: take out whatever qguard put in the kernel, for every backend
 * whose programs are installed, and forget the last apply. Returns what was removed.
 */
export async function removeFirewall(config: Config): Promise<string[]> {
  const removed: string[] = [];
  for (const b of allFirewallBackends()) if (b.installed()) removed.push(...(await b.remove()));
  forgetAppliedFirewall(config);
  return removed;
}

/** What `qguard firewall status` reports about the kernel. */
export interface KernelStatus {
  backend: FirewallBackendName;
  present: boolean;
  inPlace: boolean;
  problem: string | null;
  /** Elements in the kernel's sets now (null when a set is missing). */
  v4: number | null;
  v6: number | null;
}

/** Look at one backend's objects, counting the elements (nft lists them: slower, admin only). */
export async function kernelStatus(config: Config, name: FirewallBackendName, applied: AppliedFirewall | null): Promise<KernelStatus> {
  const backend = firewallBackend(name);
  const mine = applied && applied.backend === name ? applied : null;
  const check = await backend.check(mine ? { ports: mine.ports, action: mine.action } : policyOf(config), mine);
  const { v4, v6 } = await backend.count(check);
  return { backend: name, present: check.present, inPlace: check.intact, problem: check.problem, v4, v6 };
}

/** The kernel objects a backend owns, for status output. */
export function describeBackend(name: FirewallBackendName): string {
  return firewallBackend(name).describe();
}
