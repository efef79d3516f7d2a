// commander wiring for `qguard domain ...`.

import type { Command } from 'commander';
import { withContext } from '../run-main.js';
import { show } from '../output.js';
import { renderDomains } from '../render.js';
import { domainAdd, domainList, domainRemove } from '../../admin/domain.js';

export function registerDomain(program: Command): void {
  const domain = program
    .command('domain')
    .description('hosts for control/rcpthosts (written by sync-rules with QGUARD_MANAGE_RCPTHOSTS=1)')
    .addHelpText('after', '\nExamples:\n  qguard domain add example.net .example.net\n  qguard domain rm old.example\n  qguard domain ls');
  domain
    .command('add <name...>')
    .description('accept mail for these domains (".example.net" = every subdomain)')
    .action(withContext('qguard', (ctx, names: string[]) => domainAdd(ctx, names)));
  domain
    .command('rm <name...>')
    .description('stop accepting mail for these domains')
    .action(withContext('qguard', (ctx, names: string[]) => domainRemove(ctx, names)));
  domain
    .command('ls')
    .description('list the domains')
    .option('--json', 'print as JSON')
    .action(withContext('qguard', async (ctx, opts: { json?: boolean }) => show(ctx, opts.json, await domainList(ctx), renderDomains)));
}
