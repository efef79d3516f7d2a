// `qguard db migrate` and `qguard db status`.

import type { RunContext } from '../context.js';
import { appliedMigrations, latestMigration, listMigrations, migrate, schemaVersion } from '../db/migrate.js';
import { changeCounter } from '../db/rules.js';

/** `qguard db migrate`: create or upgrade the schema (idempotent). */
export async function dbMigrate(ctx: RunContext, opts: { json?: boolean }): Promise<void> {
  const db = await ctx.db({ migrating: true });
  const r = await migrate(db);
  for (const m of r.applied) ctx.log.info(`applied ${String(m.id).padStart(3, '0')}_${m.name}`);
  if (opts.json) ctx.printJson({ from: r.from, to: r.to, applied: r.applied.map((m) => m.id) });
}

/** `qguard db status`: where the database is, its schema version, what is pending. */
export async function dbStatus(ctx: RunContext, opts: { json?: boolean }): Promise<void> {
  const db = await ctx.db({ migrating: true });
  const version = await schemaVersion(db);
  const latest = latestMigration();
  const done = await appliedMigrations(db);
  const pending = listMigrations().filter((m) => !done.has(m.id)).map((m) => m.id);
  const counter = version ? await changeCounter(db).catch(() => null) : null;
  const status = {
    database: db.kind,
    location: db.location,
    schemaVersion: version,
    latest,
    pending,
    changeCounter: counter,
    ok: pending.length === 0,
  };
  if (opts.json) ctx.printJson(status);
  else {
    ctx.print(
      `database: ${db.kind} ${db.location}\nschema:   ${version === null ? 'missing' : `version ${version}`}, this qguard ${latest}${
        pending.length ? ` (pending: ${pending.join(', ')}; run \`qguard db migrate\`)` : ' (up to date)'
      }\n`,
    );
  }
}
