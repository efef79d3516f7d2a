// commander wiring for `qguard status`.

import type { Command } from 'commander';
import { withContext } from '../run-main.js';
import { show } from '../output.js';
import { renderStatus } from '../render.js';
import { SilentExit } from '../../errors.js';
import { status } from '../../admin/status.js';

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('is qguard doing its job? exit 0 OK, 1 WARNING, 2 CRITICAL (a Nagios/Icinga check)')
    .option('--json', 'print the whole report as JSON')
    .option('--all', 'every mail server sharing the database, not only this one')
    .addHelpText(
      'after',
      `
CRITICAL: sync-rules has not succeeded for 5 minutes on this host (or never), or the database
cannot be reached. WARNING: scan-queue not for 10 minutes, purge-queue not for 26 hours,
import-spamlist not for 50 hours (once they have run here), or the last run of a job failed.

Examples:
  qguard status
  qguard status --all --json
  command[check_qguard]=/usr/local/bin/qguard status     # nrpe.cfg`,
    )
    .action(withContext('qguard', async (ctx, opts: { json?: boolean; all?: boolean }) => {
        const now = new Date();
        const report = await status(ctx, opts, now);
        show(ctx, opts.json, report, (r) => renderStatus(r, now));
        if (report.exitCode !== 0) throw new SilentExit(report.exitCode);
      }));
}
