// A database of its own for each test file: a fresh database on the local PostgreSQL server
// (QGUARD_TEST_ADMIN_URL, default postgresql://postgres@127.0.0.1/postgres), migrated by the
// real migration code. Without a reachable server (and outside CI) it falls back to the
// embedded PGlite in a temp directory, so `npm test` passes on a machine without PostgreSQL.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { resolveConfig, type Config } from '../../lib/config.js';
import { type Db, openDb } from '../../lib/db/connect.js';
import { lockFile } from '../../lib/io/lock.js';
import { migrate } from '../../lib/db/migrate.js';
import { IN_CI } from './tools.js';

export const ADMIN_URL = process.env.QGUARD_TEST_ADMIN_URL ?? 'postgresql://postgres@127.0.0.1/postgres';

let serverChecked: Promise<boolean> | null = null;

/** Is the PostgreSQL server reachable? In CI it must be. */
export function serverAvailable(): Promise<boolean> {
  serverChecked ??= (async () => {
    const c = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: 3000 });
    try {
      await c.connect();
      await c.end();
      return true;
    } catch (err) {
      if (IN_CI) throw new Error(`PostgreSQL server not reachable at ${ADMIN_URL} in CI: ${(err as Error).message}`);
      process.stderr.write(`no PostgreSQL server at ${ADMIN_URL}: tests use the embedded database\n`);
      return false;
    }
  })();
  return serverChecked;
}

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: ADMIN_URL });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export interface TestDb {
  kind: 'server' | 'embedded';
  /** Server URL, or null for embedded. */
  url: string | null;
  /** A state directory of its own (embedded database, locks, quarantine). */
  stateDir: string;
  /** Environment for running the built executables against this database. */
  env: Record<string, string>;
  /** A resolved config pointing at this database (defaults otherwise). */
  config: Config;
  /** Open a connection (close it yourself, before the next CLI run when embedded). */
  open(): Promise<Db>;
  /** Drop the database and remove the state directory. */
  drop(): Promise<void>;
}

function configFor(url: string | null, stateDir: string, extra: Record<string, string> = {}): Config {
  return resolveConfig({
    flags: {},
    env: { ...(url ? { QGUARD_DATABASE_URL: url } : {}), QGUARD_STATE_DIR: stateDir, QGUARD_LOCK_WAIT: '120s', ...extra },
    file: null,
    hostname: 'test-host',
  });
}

/**
 * Create and migrate a database for one test file. `kind` forces one (the embedded database
 * is always available); default: the server when reachable.
 */
export async function createTestDb(opts: { kind?: 'server' | 'embedded'; migrate?: boolean } = {}): Promise<TestDb> {
  const kind = opts.kind ?? ((await serverAvailable()) ? 'server' : 'embedded');
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-test-'));
  let url: string | null = null;
  let dbName: string | null = null;
  if (kind === 'server') {
    dbName = `qguard_t_${process.pid}_${Math.random().toString(36).slice(2, 10)}`;
    await admin((c) => c.query(`CREATE DATABASE ${dbName}`));
    const u = new URL(ADMIN_URL);
    u.pathname = `/${dbName}`;
    url = u.toString();
  }
  const config = configFor(url, stateDir);
  const env: Record<string, string> = {
    QGUARD_STATE_DIR: stateDir,
    QGUARD_CONFIG: '/dev/null',
    QGUARD_HOST: 'test-host',
    QGUARD_LOCK_WAIT: '120s',
    ...(url ? { QGUARD_DATABASE_URL: url } : {}),
  };
  const t: TestDb = {
    kind,
    url,
    stateDir,
    env,
    config,
    open: () => openDb(config, 'qguard-test', lockFile),
    async drop() {
      if (dbName) {
        await admin((c) => c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`)).catch(() => {});
      }
      fs.rmSync(stateDir, { recursive: true, force: true });
    },
  };
  if (opts.migrate !== false) {
    const db = await t.open();
    try {
      await migrate(db);
    } finally {
      await db.close();
    }
  }
  return t;
}
