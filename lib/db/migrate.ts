// Schema migrations: numbered plain SQL files in sql/ (`001_foundation.sql`, ...), applied in
// order, each in one transaction that records its id first, under an advisory lock so two
// admins migrating at once do not collide. Every other command calls checkSchema() and is
// refused (exit 100, naming `qguard db migrate`) when the schema is missing or old.

import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { PermanentError } from '../errors.js';
import type { Db, Queryable } from './connect.js';

export interface Migration {
  id: number;
  name: string;
  file: string;
}

/** Arbitrary constant for pg_advisory_lock: "qguard migrate". */
const MIGRATE_LOCK = 7_403_311_001;

/** The sql/ directory shipped with this qguard (works from lib/ sources and from dist/). */
export function sqlDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const up of ['../..', '../../..']) {
    const dir = path.resolve(here, up, 'sql');
    if (fs.existsSync(dir)) return dir;
  }
  throw new Error(`sql/ directory not found near ${here}`);
}

/** The migrations this qguard knows, in order. */
export function listMigrations(dir = sqlDir()): Migration[] {
  const out: Migration[] = [];
  for (const f of fs.readdirSync(dir)) {
    const m = /^(\d+)_([a-z0-9_]+)\.sql$/.exec(f);
    if (m) out.push({ id: Number(m[1]), name: m[2], file: path.join(dir, f) });
  }
  return out.sort((a, b) => a.id - b.id);
}

/** The highest migration this qguard knows. */
export function latestMigration(): number {
  const all = listMigrations();
  return all.length ? all[all.length - 1].id : 0;
}

/** Whether qguard.migrations exists (the qguard schema is there). */
async function migrationsPresent(db: Queryable): Promise<boolean> {
  const r = await db.query<{ present: boolean }>("SELECT to_regclass('qguard.migrations') IS NOT NULL AS present");
  return Boolean(r.rows[0]?.present);
}

/** The schema version in the database: null when the qguard schema does not exist. */
export async function schemaVersion(db: Queryable): Promise<number | null> {
  if (!(await migrationsPresent(db))) return null;
  const v = await db.query<{ v: number | null }>('SELECT max(id) AS v FROM qguard.migrations');
  return v.rows[0]?.v ?? 0;
}

/** The migration ids recorded in the database (empty when the schema is missing): two short queries. */
export async function appliedMigrations(db: Queryable): Promise<Set<number>> {
  if (!(await migrationsPresent(db))) return new Set();
  const r = await db.query<{ id: number }>('SELECT id FROM qguard.migrations');
  return new Set(r.rows.map((row) => Number(row.id)));
}

/**
 * Refuse to work on a schema that is missing, older or newer than this qguard (every cron run
 * starts with this: appliedMigrations' two queries).
 */
export async function checkSchema(db: Queryable): Promise<void> {
  const applied = await appliedMigrations(db);
  const have = Math.max(0, ...applied);
  if (have === 0) {
    throw new PermanentError('the qguard schema is missing from this database: run `qguard db migrate` first');
  }
  const known = listMigrations();
  const want = known.length ? known[known.length - 1].id : 0;
  const pending = known.filter((m) => !applied.has(m.id));
  if (pending.length > 0) {
    throw new PermanentError(
      `the database schema is at version ${have}, this qguard needs ${want} (missing ${pending.map((m) => m.id).join(', ')}): run \`qguard db migrate\``,
    );
  }
  if (have > want) {
    throw new PermanentError(`the database schema (version ${have}) is newer than this qguard (${want}): upgrade qguard`);
  }
}

export interface MigrateResult {
  from: number;
  to: number;
  applied: Migration[];
}

/** Apply every migration not yet applied. Idempotent. */
export async function migrate(db: Db): Promise<MigrateResult> {
  await db.query('SELECT pg_advisory_lock($1)', [MIGRATE_LOCK]);
  try {
    await db.exec(`
      CREATE SCHEMA IF NOT EXISTS qguard;
      CREATE TABLE IF NOT EXISTS qguard.migrations (
        id integer PRIMARY KEY,
        name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      );`);
    const from = (await schemaVersion(db)) ?? 0;
    const done = await appliedMigrations(db);
    const applied: Migration[] = [];
    for (const m of listMigrations()) {
      if (done.has(m.id)) continue;
      const sql = fs.readFileSync(m.file, 'utf8');
      await db.transaction(async (tx) => {
        await tx.query('INSERT INTO qguard.migrations (id, name) VALUES ($1, $2)', [m.id, m.name]);
        await tx.exec(sql);
      });
      applied.push(m);
    }
    return { from, to: Math.max(from, ...applied.map((m) => m.id)), applied };
  } finally {
    await db.query('SELECT pg_advisory_unlock($1)', [MIGRATE_LOCK]).catch(() => {});
  }
}
