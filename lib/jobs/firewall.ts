// The firewall part of sync-rules: keep a kernel set (nftables or ipset) of exactly the
// addresses whose decision is deny, blocked on QGUARD_FIREWALL_PORTS.
// STUB: the interface sync-rules calls; implemented by the firewall issue.

import type { RunContext } from '../cli/run-main.js';
import { TemporaryError } from '../errors.js';
import type { Net } from '../net/address.js';
import type { PolicyRule } from '../policy/decide.js';

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
}

/**
 * Cheap check that our table/sets are still in the kernel as the last run left them (a reboot
 * or `nft flush ruleset` empties them). Always true for backend `none`.
 */
export async function firewallInPlace(ctx: RunContext): Promise<boolean> {
  if (ctx.config.firewall === 'none') return true;
  return false;
}

/**
 * Make the kernel set equal the deny spans of the policy (no call at all when it already is).
 * Throws TemporaryError when the firewall program fails; the previous set stays in place.
 */
export async function applyFirewall(
  ctx: RunContext,
  input: FirewallInput,
  opts: { dryRun: boolean },
): Promise<FirewallResult> {
  void input;
  void opts;
  if (ctx.config.firewall === 'none') return { backend: 'none', changed: false, v4: 0, v6: 0 };
  throw new TemporaryError(`firewall backend ${ctx.config.firewall} is not implemented yet`);
}
