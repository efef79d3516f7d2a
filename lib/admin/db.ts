// `qguard db migrate` and `qguard db status`.

import type { RunContext } from '../context.js';
import { appliedMigrations, latestMigration, listMigrations, migrate, schemaVersion } from '../db/migrate.js';
import { changeCounter } from '../db/rules.js';

/** `qguard db migrate`: create or upgrade the schema (idempotent). */
export async function dbMigrate(ctx: RunContext) {
  const db = await ctx.db({ migrating: true });
  const r = await migrate(db);
  for (const m of r.applied) ctx.log.info(`applied ${String(m.id).padStart(3, '0')}_${m.name}`);
  return { from: r.from, to: r.to, applied: r.applied.map((m) => m.id) };
}

/** `qguard db status`: where the database is, its schema version, what is pending. */
export async function dbStatus(ctx: RunContext) {
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
  return status;
}

export type DbStatusView = Awaited<ReturnType<typeof dbStatus>>;
