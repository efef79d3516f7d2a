#!/usr/bin/env node
// purge-queue: the daily purge — take spam and our backscatter out of the qmail queue, with
// qmail-send stopped and its lock held, each message kept in the quarantine first. Flags only:
// the work is in lib/jobs/purge-queue.ts.

import { newProgram, runMain, withContext } from '../lib/cli/run-main.js';
import { type PurgeOptions, purgeQueue } from '../lib/jobs/purge-queue.js';

const EXAMPLES = `
Examples:
  30 4 * * * purge-queue                # crontab: daily, quiet unless something is wrong
  purge-queue --dry-run                 # list what would go (id, source, sender, reason)
  purge-queue --older-than 5d           # also null-sender bounces and double bounces stuck 5 days
  purge-queue --ip 203.0.113.0/24 --dry-run
  purge-queue --sender '*@winbig.test'
  purge-queue --id 1491014 1491022      # exactly these (even local or relay mail)
  * * * * * purge-queue --requests      # crontab: what operators asked for on qguard web

Policies (default: denied,backscatter; an admin selection alone replaces them):
  denied       mail whose source IP's decision is now deny (scan, list or manual rule)
  backscatter  bounces and double bounces of mail from denied addresses
  stale        with --older-than: messages with sender <> or #@[] queued that long
Never, unless named by --id: mail from relay/trust/protected addresses, locally injected
mail, mail with no known source; never at all: messages qmail-queue is still writing.
Selects from what scan-queue recorded, reads each message again before removing it.
qmail-send is stopped with QGUARD_QMAIL_STOP only when it runs (queue/lock/sendmutex is held),
and started again with QGUARD_QMAIL_START afterwards. Removed messages are kept in
QGUARD_QUARANTINE_DIR for QGUARD_QUARANTINE_KEEP (30d): see qguard quarantine.
Exit: 0 done (or another run holds the lock), 100 refused (--max, bad config),
111 temporary (qmail-send could not be stopped or its lock taken, database, disk).`;

const program = newProgram('purge-queue', 'remove spam from the qmail queue, quarantined first')
  .option('-n, --dry-run', 'list what would be removed; change nothing')
  .option('--policy <list>', 'policies to apply: denied, backscatter, stale (comma-separated), or none')
  .option('--older-than <dur>', 'add the stale policy: null-sender messages queued at least this long')
  .option('--ip <cidr>', 'remove messages from this address or network')
  .option('--sender <pattern>', "remove messages with this envelope sender (* and ? wildcards; '<>' for bounces)")
  .option('--id <ids...>', 'remove exactly these queue ids')
  .option('--max <n>', 'refuse to remove more than this many in one run (default 100000)')
  .option('--force', 'over --max: remove the oldest --max messages instead of refusing')
  .option('--stop-wait <dur>', 'how long qmail-send may take to stop (default 5m)')
  .option('--requests', "carry out the review page's purge and restore requests for this host (cron: every minute)")
  .option('--json', 'print a JSON summary on stdout')
  .addHelpText('after', EXAMPLES)
  .action(withContext('purge-queue', (ctx, opts: PurgeOptions) => purgeQueue(ctx, opts)));

await runMain(program);
