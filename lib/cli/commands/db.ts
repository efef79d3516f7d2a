// commander wiring for `qguard db ...`.

import type { Command } from 'commander';
import { withContext } from '../run-main.js';
import { dbMigrate, dbStatus } from '../../admin/db.js';

export function registerDb(program: Command): void {
  const db = program.command('db').description('the database schema');
  db.command('migrate')
    .description('create or upgrade the qguard schema (idempotent)')
    .option('--json', 'print {from, to, applied} as JSON')
    .action(withContext('qguard', (ctx, opts: { json?: boolean }) => dbMigrate(ctx, opts)));
  db.command('status')
    .description('database location, schema version, pending migrations')
    .option('--json', 'print as JSON')
    .action(withContext('qguard', (ctx, opts: { json?: boolean }) => dbStatus(ctx, opts)));
}
