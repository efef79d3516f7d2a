// commander wiring for `qguard firewall ...`.

import type { Command } from 'commander';
import { withContext } from '../run-main.js';
import { show } from '../output.js';
import { renderFirewallStatus } from '../render.js';
import { firewallRemove, firewallStatus, firewallStatusJson } from '../../admin/firewall.js';

const EXAMPLES = `
The set itself is kept by sync-rules (QGUARD_FIREWALL=nft|ipset, QGUARD_FIREWALL_PORTS,
QGUARD_FIREWALL_ACTION=drop|reject). To take qguard out of the firewall for good, set
QGUARD_FIREWALL=none first, then run \`qguard firewall remove\`.

Examples:
  qguard firewall status
  qguard firewall status --json
  qguard --firewall none firewall remove`;

/** `qguard firewall status|remove`. */
export function registerFirewall(program: Command): void {
  const fw = program.command('firewall').description("qguard's kernel set of denied addresses").addHelpText('after', EXAMPLES);
  fw.command('status')
    .description('backend, element counts, ports, last apply, in place or missing')
    .option('--json', 'print as JSON')
    .action(withContext('qguard', async (ctx, opts: { json?: boolean }) => show(ctx, opts.json, await firewallStatus(ctx), renderFirewallStatus, firewallStatusJson)));
  fw.command('remove')
    .description("take qguard's table, sets, chain and jump out of the kernel (nothing else)")
    .action(withContext('qguard', (ctx) => firewallRemove(ctx)));
}
