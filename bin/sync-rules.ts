#!/usr/bin/env node
// sync-rules: the database becomes tcp.smtp, tcp.smtp.cdb, rcpthosts and the firewall set —
// only when something changed (cron, every minute; or --watch). Flags only: the work is in
// lib/jobs/sync-rules.ts.

import { newProgram, runMain, withContext } from '../lib/cli/run-main.js';
import { type SyncOptions, syncRules } from '../lib/jobs/sync-rules.js';

const EXAMPLES = `
Examples:
  * * * * * sync-rules                  # crontab: quiet unless something is wrong
  sync-rules --dry-run                  # the diff of tcp.smtp that a run would write
  sync-rules --json                     # {"changed":…,"rules":{…},"keys":…,"firewall":…}
  sync-rules --watch                    # under supervise: apply each change within a second

tcpserver reads the compiled rules:  tcpserver -x /etc/tcp.smtp.cdb ... qmail-smtpd
Exit: 0 done (or another run holds the lock), 100 refused (bad static file or config, a safety
guard), 111 temporary (database, tcprules, firewall).`;

const program = newProgram('sync-rules', 'write tcp.smtp, tcp.smtp.cdb, rcpthosts and the firewall set from the database')
  .option('-n, --dry-run', 'print the unified diff of what would be written; change nothing')
  .option('--json', 'print a JSON summary on stdout')
  .option('--force', 'publish even when more than half of the deny keys would disappear')
  .option('--watch', 'keep running: apply every change within about a second (PostgreSQL server only)')
  .addHelpText('after', EXAMPLES)
  .action(withContext('sync-rules', (ctx, opts: SyncOptions) => syncRules(ctx, opts)));

await runMain(program);
