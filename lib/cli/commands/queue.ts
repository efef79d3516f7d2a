// commander wiring for `qguard queue ...`.

import type { Command } from 'commander';
import { withContext } from '../run-main.js';
import { show } from '../output.js';
import { renderQueueList, renderQueueShow, renderQueueStats, renderQueueTop } from '../render.js';

type Json = { json?: boolean };
import {
  type QueueLsOptions,
  type QueueShowOptions,
  type QueueTopOptions,
  queueList,
  queueShow,
  queueStats,
  queueShowJson,
  queueTop,
} from '../../admin/queue.js';

const EXAMPLES = `
Examples:
  qguard queue top                      # who fills the queue (all mail servers), with decisions
  qguard queue top --window 1d --json
  qguard queue ls --ip 203.0.113.7      # that sender's queued messages on this server
  qguard queue ls --kind bounce --json
  qguard queue show 1491014             # envelope, header, start of the body (made safe)
  qguard queue stats                    # like qmail-qstat, with kinds and sources

ls, top and stats read what scan-queue recorded; show and the file counts read the queue.`;

export function registerQueue(program: Command): void {
  const queue = program.command('queue').description('review the queued messages and who sent them').addHelpText('after', EXAMPLES);
  queue
    .command('ls')
    .description("this server's queued messages as scan-queue recorded them")
    .option('--ip <address>', 'only messages from this address or network')
    .option('--kind <kind>', 'only network, local, bounce, double-bounce, unknown, or forward (forwarded copies)')
    .option('--all', 'include messages no longer in the queue')
    .option('--all-hosts', 'every mail server sharing the database')
    .option('--limit <n>', 'at most this many')
    .option('--json', 'print as JSON')
    .action(withContext('qguard', async (ctx, opts: QueueLsOptions & Json) => show(ctx, opts.json, await queueList(ctx, opts), (v) => renderQueueList(v, opts))));
  queue
    .command('top')
    .description('source IPs by queued messages within --window (default QGUARD_WINDOW, 3d), every server')
    .option('--limit <n>', 'at most this many IPs (default 50)')
    .option('--json', 'print as JSON')
    .action(withContext('qguard', async (ctx, opts: QueueTopOptions & Json) => show(ctx, opts.json, await queueTop(ctx, opts), renderQueueTop, (v) => v.sources)));
  queue
    .command('show <id>')
    .description('one message from the queue: envelope, header and the start of the body')
    .option('--lines <n>', 'body lines to show (default 40)')
    .option('--json', 'print as JSON')
    .action(withContext('qguard', async (ctx, id: string, opts: QueueShowOptions & Json) => show(ctx, opts.json, await queueShow(ctx, id, opts), renderQueueShow, queueShowJson)));
  queue
    .command('stats')
    .description('counts by directory (like qmail-qstat), kind, state and source')
    .option('--json', 'print as JSON')
    .action(withContext('qguard', async (ctx, opts: Json) => show(ctx, opts.json, await queueStats(ctx), renderQueueStats)));
}
