// commander wiring for `qguard quarantine ...`.

import type { Command } from 'commander';
import { withContext } from '../run-main.js';
import {
  type QuarantineLsOptions,
  type RestoreOptions,
  quarantineList,
  quarantinePrune,
  quarantineRestore,
  quarantineShow,
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
    .action(withContext('qguard', (ctx, opts: QuarantineLsOptions) => quarantineList(ctx, opts)));
  q.command('show <id>')
    .description('one quarantined message: why, envelope, header and the start of the body')
    .option('--lines <n>', 'body lines to show (default 40)')
    .option('--json', 'print as JSON')
    .action(withContext('qguard', (ctx, id: string, opts: { json?: boolean; lines?: string }) => quarantineShow(ctx, id, opts)));
  q.command('restore <ids...>')
    .description('re-inject messages through qmail-queue with their original envelope')
    .option('--force', 'restore again a message already restored (or whose restore was interrupted)')
    .option('--json', 'print the outcome of each as JSON')
    .action(withContext('qguard', (ctx, ids: string[], opts: RestoreOptions) => quarantineRestore(ctx, ids, opts)));
  q.command('prune')
    .description("drop this server's entries older than --older-than (default QGUARD_QUARANTINE_KEEP, 30d)")
    .option('--older-than <dur>', 'age (90s, 15m, 12h, 3d, 2w)')
    .option('--json', 'print {"pruned": N}')
    .action(withContext('qguard', (ctx, opts: { olderThan?: string; json?: boolean }) => quarantinePrune(ctx, opts)));
}
