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

/** `qguard firewall status [--json]` */
export async function firewallStatus(ctx: RunContext, opts: { json?: boolean }): Promise<void> {
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
  if (opts.json) {
    ctx.printJson({
      backend: config.firewall,
      ports: config.firewallPorts,
      action: config.firewallAction,
      lastApply: applied,
      kernel: kernel ?? (kernelError ? { error: kernelError } : null),
    });
    return;
  }
  const lines: string[] = [];
  lines.push(`backend:     ${config.firewall}${config.firewall !== 'none' ? ` (${describeBackend(config.firewall)})` : ''}`);
  lines.push(`blocks:      tcp ports ${config.firewallPorts.join(',')} for denied addresses, ${config.firewallAction}`);
  lines.push(
    applied
      ? `last apply:  ${applied.appliedAt} by ${applied.backend}: ${applied.v4} IPv4 + ${applied.v6} IPv6 elements, ports ${applied.ports.join(',')} ${applied.action}`
      : 'last apply:  never (or removed)',
  );
  if (kernel) {
    const counts = kernel.v4 === null && kernel.v6 === null ? '' : `: ${kernel.v4 ?? 0} IPv4 + ${kernel.v6 ?? 0} IPv6 elements`;
    if (kernel.inPlace) lines.push(`kernel:      in place${counts}`);
    else if (kernel.present) lines.push(`kernel:      NOT as applied (${kernel.problem})${counts}`);
    else lines.push(`kernel:      missing (${kernel.problem})`);
    if (config.firewall === 'none' && kernel.present) {
      lines.push(`note:        the backend is none but the ${kernel.backend} objects are still there: run qguard firewall remove`);
    } else if (!kernel.inPlace && config.firewall !== 'none') {
      lines.push('note:        the next sync-rules run puts it back');
    }
  } else if (kernelError) {
    lines.push(`kernel:      unable to look: ${kernelError}`);
  }
  ctx.print(`${lines.join('\n')}\n`);
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
