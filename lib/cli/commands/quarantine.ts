// commander wiring for `qguard quarantine ...`.

import type { Command } from 'commander';
import { withContext } from '../run-main.js';
import { show } from '../output.js';
import { renderQuarantineList, renderQuarantineShow } from '../render.js';

type Json = { json?: boolean };
import {
  type QuarantineLsOptions,
  type RestoreOptions,
  quarantineList,
  quarantinePrune,
  quarantineRestore,
  quarantineShow,
  quarantineShowJson,
  restoreVerdict,
} from '../../admin/quarantine.js';

const EXAMPLES = `
Examples:
  qguard quarantine ls                      # what purge-queue removed, newest first
  qguard quarantine ls --ip 198.51.100.0/24 --json
  qguard quarantine show 42                 # record, header and start of the body (made safe)
  qguard quarantine restore 42 43           # queue them again through qmail-queue
  qguard quarantine prune --older-than 30d

Ids are quarantine ids (first column of ls), not queue ids. restore hands the message to
QGUARD_QMAIL_QUEUE (default $QMAIL_HOME/bin/qmail-queue) with its original sender and its
pending recipients; the daily purge-queue prunes entries older than QGUARD_QUARANTINE_KEEP.`;

export function registerQuarantine(program: Command): void {
  const q = program.command('quarantine').description('messages purge-queue removed: list, show, restore, prune').addHelpText('after', EXAMPLES);
  q.command('ls')
    .description("this server's quarantined messages, newest first")
    .option('--ip <address>', 'only messages from this address or network')
    .option('--all-hosts', 'every mail server sharing the database')
    .option('--limit <n>', 'at most this many')
    .option('--json', 'print as JSON')
    .action(withContext('qguard', async (ctx, opts: QuarantineLsOptions & Json) => show(ctx, opts.json, await quarantineList(ctx, opts), (v) => renderQuarantineList(v, opts))));
  q.command('show <id>')
    .description('one quarantined message: why, envelope, header and the start of the body')
    .option('--lines <n>', 'body lines to show (default 40)')
    .option('--json', 'print as JSON')
    .action(withContext('qguard', async (ctx, id: string, opts: { lines?: string } & Json) => show(ctx, opts.json, await quarantineShow(ctx, id, opts), renderQuarantineShow, quarantineShowJson)));
  q.command('restore <ids...>')
    .description('re-inject messages through qmail-queue with their original envelope')
    .option('--force', 'restore again a message already restored (or whose restore was interrupted)')
    .option('--json', 'print the outcome of each as JSON')
    .action(withContext('qguard', async (ctx, ids: string[], opts: RestoreOptions & Json) => {
        const results = await quarantineRestore(ctx, ids, opts);
        show(ctx, opts.json, results, () => '', (v) => v.map(({ permanent: _p, ...r }) => r));
        const failure = restoreVerdict(ctx, results);
        if (failure) throw failure;
      }));
  q.command('prune')
    .description("drop this server's entries older than --older-than (default QGUARD_QUARANTINE_KEEP, 30d)")
    .option('--older-than <dur>', 'age (90s, 15m, 12h, 3d, 2w)')
    .option('--json', 'print {"pruned": N}')
    .action(withContext('qguard', async (ctx, opts: { olderThan?: string } & Json) => show(ctx, opts.json, await quarantinePrune(ctx, opts), () => '')));
}
