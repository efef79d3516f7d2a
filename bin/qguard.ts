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

const program = newProgram('qguard', 'spam blocking for qmail: IP rules, domains, queue review, quarantine, status');
registerDb(program);
registerIp(program);
registerDomain(program);
registerFirewall(program);
registerQueue(program);
registerQuarantine(program);
registerStatus(program);

await runMain(program);
