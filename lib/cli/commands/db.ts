// commander wiring for `qguard db ...`.

import type { Command } from 'commander';
import { withContext } from '../run-main.js';
import { show } from '../output.js';
import { renderDbStatus } from '../render.js';
import { dbMigrate, dbStatus } from '../../admin/db.js';

export function registerDb(program: Command): void {
  const db = program.command('db').description('the database schema');
  db.command('migrate')
    .description('create or upgrade the qguard schema (idempotent)')
    .option('--json', 'print {from, to, applied} as JSON')
    .action(withContext('qguard', async (ctx, opts: { json?: boolean }) => show(ctx, opts.json, await dbMigrate(ctx), () => '')));
  db.command('status')
    .description('database location, schema version, pending migrations')
    .option('--json', 'print as JSON')
    .action(withContext('qguard', async (ctx, opts: { json?: boolean }) => show(ctx, opts.json, await dbStatus(ctx), renderDbStatus)));
}
