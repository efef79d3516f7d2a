// commander wiring for `qguard ip ...`.

import type { Command } from 'commander';
import { withContext } from '../run-main.js';
import { show } from '../output.js';
import { renderRules, renderWhy } from '../render.js';

type Json = { json?: boolean };
import { type IpAddOptions, ipAdd, ipList, ipRemove, ipWhy } from '../../admin/ip.js';
import type { Action } from '../../policy/decide.js';

const EXAMPLES = `
Examples:
  qguard ip deny 203.0.113.0/24 --reason "spam run" --for 30d
  qguard ip allow 198.51.100.7 --user alice --for 8h     # may relay (RELAYCLIENT)
  qguard ip trust 192.0.2.80 --reason "partner MTA"     # never auto-denied, no relay
  qguard ip rm 203.0.113.0/24
  qguard ip ls --action deny --json
  qguard ip why 203.0.113.5

--host NAME on deny/allow/trust scopes the rule to that mail server only.`;

export function registerIp(program: Command): void {
  const ip = program.command('ip').description('IP rules: deny, allow (relay), trust').addHelpText('after', EXAMPLES);
  const add = (name: string, action: Action, what: string) =>
    ip
      .command(`${name} <address>`)
      .description(what)
      .option('--for <duration>', 'lapse after this long (90s, 15m, 12h, 3d, 2w); default never')
      .option('--reason <text>', 'why (kept in the database and the audit, never in tcp.smtp)')
      .option('--source <name>', 'who owns the rule: manual (default), login, scan, list:NAME, ...')
      .option('--user <name>', 'the user this is for (intranet user name) or the admin')
      .option('--json', 'print the stored rule as JSON')
      .action(withContext('qguard', async (ctx, addr: string, opts: IpAddOptions & Json) => show(ctx, opts.json, await ipAdd(ctx, action, addr, opts), () => '')));
  add('deny', 'deny', 'refuse mail from an address or network (tcp.smtp deny, firewall)');
  add('allow', 'relay', 'let an address or network relay (RELAYCLIENT)');
  add('trust', 'trust', 'never deny an address or network automatically (no relay)');
  ip.command('rm <address>')
    .description('remove the rules for exactly this address or network')
    .option('--source <name>', 'only the rule of this source')
    .option('--json', 'print the removed rules as JSON')
    .action(withContext('qguard', async (ctx, addr: string, opts: { source?: string } & Json) => show(ctx, opts.json, await ipRemove(ctx, addr, opts), () => '')));
  ip.command('ls')
    .description('list the live rules')
    .option('--action <action>', 'only relay (allow), trust or deny')
    .option('--source <name>', 'only this source')
    .option('--json', 'print as JSON')
    .action(withContext('qguard', async (ctx, opts: { action?: string; source?: string } & Json) => show(ctx, opts.json, await ipList(ctx, opts), renderRules)));
  ip.command('why <ip>')
    .description('the decision for an address, the rule that makes it, and every other rule that contains it')
    .option('--json', 'print as JSON')
    .action(withContext('qguard', async (ctx, addr: string, opts: Json) => show(ctx, opts.json, await ipWhy(ctx, addr), renderWhy)));
}
