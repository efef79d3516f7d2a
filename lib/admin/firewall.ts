// `qguard firewall status|remove`: what qguard's firewall holds (backend, element counts,
// ports, last apply, in place or missing) and how to take it out cleanly. The kernel work is
// in lib/ops/firewall.ts; this module decides what to say.

import path from 'node:path';
import type { RunContext } from '../context.js';
import { TemporaryError } from '../errors.js';
import { lockFile } from '../io/lock.js';
import { type KernelStatus, describeBackend, kernelStatus, readAppliedFirewall, removeFirewall } from '../ops/firewall.js';

/** Hold sync-rules' lock so a run in progress cannot re-add what we take out, or race a status. */
async function holdSyncLock(ctx: RunContext): Promise<void> {
  const file = path.join(ctx.config.stateDir, 'locks', 'sync-rules.lock');
  const lock = await lockFile(file, { waitSeconds: ctx.config.lockWaitSeconds });
  if (!lock) throw new TemporaryError(`sync-rules is still running after ${ctx.config.lockWaitSeconds}s (lock ${file})`);
  ctx.defer(() => lock.release());
}

/** `qguard firewall status`: the configuration, the last apply and what the kernel holds. */
export async function firewallStatus(ctx: RunContext) {
  const { config } = ctx;
  const applied = readAppliedFirewall(config);
  // Look at the configured backend; with `none`, at the one a past run left behind, if any.
  const look = config.firewall !== 'none' ? config.firewall : (applied?.backend ?? null);
  let kernel: KernelStatus | null = null;
  let kernelError: string | null = null;
  if (look) {
    try {
      kernel = await kernelStatus(config, look, applied);
    } catch (err) {
      kernelError = (err as Error).message;
    }
  }
  return {
    backend: config.firewall,
    description: config.firewall !== 'none' ? describeBackend(config.firewall) : null,
    ports: config.firewallPorts,
    action: config.firewallAction,
    lastApply: applied,
    kernel,
    kernelError,
  };
}

export type FirewallStatusView = Awaited<ReturnType<typeof firewallStatus>>;

/** `firewall status --json` (INTERFACE.md). */
export function firewallStatusJson(v: FirewallStatusView) {
  return {
    backend: v.backend,
    ports: v.ports,
    action: v.action,
    lastApply: v.lastApply,
    kernel: v.kernel ?? (v.kernelError ? { error: v.kernelError } : null),
  };
}

/** `qguard firewall remove` */
export async function firewallRemove(ctx: RunContext): Promise<void> {
  await holdSyncLock(ctx);
  const removed = await removeFirewall(ctx.config);
  for (const r of removed) ctx.log.info(`removed ${r}`);
  if (removed.length === 0) ctx.log.info('nothing of qguard was in the firewall');
  if (ctx.config.firewall !== 'none') {
    ctx.log.warn(`QGUARD_FIREWALL is ${ctx.config.firewall}: the next sync-rules puts the firewall back (set QGUARD_FIREWALL=none to keep it out)`);
  }
}
