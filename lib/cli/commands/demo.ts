// commander wiring for `qguard demo`.

import type { Command } from 'commander';
import { withContext } from '../run-main.js';
import { demo } from '../../admin/demo.js';

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('see it work: a sample queue and spam list through import, scan, sync and purge --dry-run, on a temp embedded database')
    .option('--keep', 'keep the temp directory (database, queue, tcp.smtp) afterwards')
    .option('--dir <dir>', 'work in this directory instead of a new temp one')
    .addHelpText('after', '\nExamples:\n  qguard demo\n  npx qguard demo --keep')
    .action(withContext('qguard', (ctx, opts: { keep?: boolean; dir?: string }) => demo(ctx, opts)));
}
