#!/usr/bin/env node
// qguard: the admin's command. Flags and subcommands only; the work is in lib/admin/.

import { newProgram, runMain } from '../lib/cli/run-main.js';
import { registerDb } from '../lib/cli/commands/db.js';
import { registerIp } from '../lib/cli/commands/ip.js';
import { registerDomain } from '../lib/cli/commands/domain.js';
import { registerFirewall } from '../lib/cli/commands/firewall.js';
import { registerQueue } from '../lib/cli/commands/queue.js';
import { registerQuarantine } from '../lib/cli/commands/quarantine.js';
import { registerStatus } from '../lib/cli/commands/status.js';
import { registerDemo } from '../lib/cli/commands/demo.js';
import { registerWeb } from '../lib/cli/commands/web.js';

const program = newProgram('qguard', 'spam blocking for qmail: IP rules, domains, queue review, quarantine, status');
registerDb(program);
registerIp(program);
registerDomain(program);
registerFirewall(program);
registerQueue(program);
registerQuarantine(program);
registerStatus(program);
registerDemo(program);
registerWeb(program);
program.addHelpText(
  'after',
  `
Examples:
  qguard db migrate                          # create or upgrade the schema
  qguard ip deny 203.0.113.0/24 --for 30d    # refuse a network (tcp.smtp deny, firewall)
  qguard ip allow 198.51.100.7 --for 8h      # let an address relay
  qguard ip why 203.0.113.5                  # the decision and the rules behind it
  qguard queue top                           # who fills the queue
  qguard quarantine ls                       # what purge-queue removed
  qguard status                              # 0 OK, 1 WARNING, 2 CRITICAL

Run \`qguard COMMAND --help\` for each command's options and examples.`,
);

await runMain(program);
