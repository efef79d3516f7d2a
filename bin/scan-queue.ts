#!/usr/bin/env node
// scan-queue: who is filling the queue — read each queued message once, find the IP that sent
// it, count per IP over every mail server, deny an IP that reaches the threshold. Flags only:
// the work is in lib/jobs/scan-queue.ts.

import { newProgram, runMain, withContext } from '../lib/cli/run-main.js';
import { type ScanOptions, scanQueue } from '../lib/jobs/scan-queue.js';

const EXAMPLES = `
Examples:
  * * * * * scan-queue && sync-rules     # crontab: quiet unless something is wrong
  scan-queue --dry-run --json           # what it would record and deny; changes nothing
  scan-queue --no-deny --verbose        # record and count only, explain on stderr
  scan-queue --threshold 50 --window 1d

Counts distinct queued messages (bounces and forwarded copies included) per source IP that
arrived within the window, over every mail server sharing the database. Never denied:
relay/trust addresses, protected ones, QGUARD_SCAN_EXEMPT (default private ranges), mail
without a source IP. A denial takes effect at the next sync-rules.
Exit: 0 done (or another run holds the lock), 100 refused (not a queue, bad config),
111 temporary (database).`;

const program = newProgram('scan-queue', 'record the queued messages and deny IPs that fill the queue')
  .option('-n, --dry-run', 'read, count and report what would be denied; change nothing')
  .option('--no-deny', 'record and count only: create no deny rule')
  .option('--json', 'print a JSON summary on stdout')
  .addHelpText('after', EXAMPLES)
  .action(withContext('scan-queue', (ctx, opts: ScanOptions) => scanQueue(ctx, opts)));

await runMain(program);
