// The one door to PostgreSQL. A server through node-postgres when a URL (or libpq's PG*
// variables) names one; otherwise the embedded PGlite in $QGUARD_STATE_DIR/pgdata. PGlite is
// single-process, so opening it first takes an exclusive kernel lock on pgdata.lock and waits
// a bounded time: two cron jobs in the same minute queue up instead of corrupting it.
// Both drivers are loaded only when used, to keep every-minute start-up lean.

import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import type pg from 'pg';
import type { Config } from '../config.js';
import { PermanentError, TemporaryError } from '../errors.js';
import { terminalSafe } from '../text.js';
import { type ConnTarget, describeOrigins, describeTarget, pgpassLookup, resolveConnInfo } from './conninfo.js';

export type Row = Record<string, unknown>;

export interface QueryResult<T = Row> {
  rows: T[];
  rowCount: number;
}

/** Anything that runs a query: the database itself, or a transaction inside it. */
export interface Queryable {
  query<T = Row>(sql: string, params?: readonly unknown[]): Promise<QueryResult<T>>;
  /** Run a script of several statements (no parameters). */
  exec(sql: string): Promise<void>;
}

export interface Db extends Queryable {
  readonly kind: 'server' | 'embedded';
  /** Where it is, for messages: the server URL without password, or the data directory. */
  readonly location: string;
  /** Run `fn` in one transaction: COMMIT when it returns, ROLLBACK when it throws. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /** The node-postgres client, for COPY and LISTEN (server only). */
  readonly pgClient: pg.Client | null;
  close(): Promise<void>;
}

/** SQLSTATE classes that mean "your input was refused", not "the database is in trouble". */
function isInputError(code: string | undefined): boolean {
  if (!code) return false;
  return code.startsWith('22') || code.startsWith('23') || code === 'P0001' || code === '42501';
}

/**
 * Turn a driver error into a typed one: refused input (bad value, constraint, a RAISE in our
 * functions) is permanent (100); everything else (connection, timeouts, server trouble) is
 * temporary (111). Our own typed errors pass through.
 */
export function dbError(err: unknown, what = 'database query failed'): Error {
  if (err instanceof PermanentError || err instanceof TemporaryError) return err;
  const e = err as { code?: string; message?: string };
  const msg = `${what}: ${e.message ?? String(err)}`;
  return isInputError(e.code) ? new PermanentError(msg, { cause: err }) : new TemporaryError(msg, { cause: err });
}

// ---------------------------------------------------------------------------------------
// Server

/** Resolve the configured server the libpq way (lib/db/conninfo.ts), probing this machine. */
export function connTarget(config: Config): ConnTarget {
  let home = process.env.HOME ?? '';
  let osUser = '';
  try {
    const u = os.userInfo();
    osUser = u.username;
    home ||= u.homedir;
  } catch {
    osUser = String(process.getuid?.() ?? '');
  }
  return resolveConnInfo(
    config.databaseUrl,
    config.pgEnv,
    {
      osUser,
      home,
      socketExists: (dir, port) => {
        try {
          return fs.statSync(path.join(dir, `.s.PGSQL.${port}`)).isSocket();
        } catch {
          return false;
        }
      },
      readFile: (file) => {
        try {
          return fs.readFileSync(file, 'utf8');
        } catch {
          return null;
        }
      },
    },
    config.databaseUrlFrom ?? 'QGUARD_DATABASE_URL',
  );
}

/**
 * The password from the target's password file, read only when the server asks (as libpq
 * does). Like libpq, a file that group or others can read is ignored, with a warning.
 */
function passwordFromFile(t: ConnTarget, warn: (msg: string) => void): string | undefined {
  let text: string;
  try {
    const st = fs.statSync(t.passfile);
    if (!st.isFile()) return undefined;
    if ((st.mode & 0o077) !== 0) {
      warn(`password file "${t.passfile}" has group or world access; permissions should be u=rw (0600) or less`);
      return undefined;
    }
    text = fs.readFileSync(t.passfile, 'utf8');
  } catch {
    return undefined;
  }
  return pgpassLookup(text, t) ?? undefined;
}

/** A certificate or key file named in the connection settings, or libpq's default under ~/.postgresql/. */
function readTlsFile(file: string | null, dflt: string | null, what: string): string | undefined {
  const name = file ?? dflt;
  if (!name) return undefined;
  try {
    return fs.readFileSync(name, 'utf8');
  } catch (err) {
    if (file === null && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new PermanentError(`unable to read ${what} ${name}: ${(err as Error).message}`);
  }
}

/** node-postgres' ssl setting for a libpq sslmode (false: plain; null: try TLS, then plain). */
function tlsOptions(t: ConnTarget): { ssl: false | import('node:tls').ConnectionOptions; fallback: boolean } {
  if (t.socket || t.sslmode === 'disable' || t.sslmode === 'allow') return { ssl: false, fallback: false };
  const dir = path.join(os.homedir(), '.postgresql');
  const cert = readTlsFile(t.sslcert, path.join(dir, 'postgresql.crt'), 'sslcert');
  const key = cert ? readTlsFile(t.sslkey, path.join(dir, 'postgresql.key'), 'sslkey') : undefined;
  const verify = t.sslmode === 'verify-ca' || t.sslmode === 'verify-full';
  const rootFile = t.sslrootcert === 'system' ? null : t.sslrootcert;
  const ca = rootFile || verify ? readTlsFile(rootFile, verify ? path.join(dir, 'root.crt') : null, 'sslrootcert') : undefined;
  if (verify && !ca && t.sslrootcert !== 'system') {
    throw new PermanentError(`sslmode ${t.sslmode} needs a root certificate: sslrootcert, or ${path.join(dir, 'root.crt')}`);
  }
  const opts: import('node:tls').ConnectionOptions = { ...(cert ? { cert } : {}), ...(key ? { key } : {}), ...(ca ? { ca } : {}) };
  if (t.sslmode === 'verify-full') return { ssl: { ...opts, servername: t.host }, fallback: false };
  // require with a root certificate behaves as verify-ca (libpq); verify-ca checks the chain, not the name.
  if (t.sslmode === 'verify-ca' || ca) return { ssl: { ...opts, checkServerIdentity: () => undefined }, fallback: false };
  return { ssl: { ...opts, rejectUnauthorized: false }, fallback: t.sslmode === 'prefer' };
}

/**
 * node-postgres, loaded without Node's fetch: at load time pg asks whether it runs in a
 * Cloudflare Worker by constructing a `Response`, which makes Node 20 load its whole fetch
 * implementation (undici) — 20-30 ms of every cron run, for nothing. The global is hidden
 * while pg loads (nothing else runs then: loading a CommonJS module is synchronous).
 */
async function importPg(): Promise<typeof import('pg').default> {
  const response = Object.getOwnPropertyDescriptor(globalThis, 'Response');
  if (response?.configurable) Object.defineProperty(globalThis, 'Response', { value: undefined, configurable: true, writable: true });
  try {
    return (await import('pg')).default;
  } finally {
    if (response?.configurable) Object.defineProperty(globalThis, 'Response', response);
  }
}

async function openServer(config: Config, appName: string): Promise<Db> {
  const target = connTarget(config);
  const pgModule = await importPg();
  // Dates go to the server as UTC (every column is timestamptz: the same instant), which spares
  // Node loading the local time zone for the first parameter (about 10 ms of a cron run).
  pgModule.defaults.parseInputDatesAsUTC = true;
  // Counts and ids come back as numbers, as with PGlite; our bigints stay far below 2^53.
  const types = {
    getTypeParser(oid: number, format?: 'text' | 'binary') {
      if (oid === 20) return (v: string) => Number(v);
      return pgModule.types.getTypeParser(oid, format as 'text');
    },
  };
  const location = `PostgreSQL ${describeTarget(target)}`;
  const warn = (msg: string) => process.stderr.write(terminalSafe(`${appName}: warning: ${msg}\n`));
  const tls = tlsOptions(target);
  // Every parameter is explicit, so node-postgres' own defaults (TCP localhost, $USER, its
  // reading of PG* variables) never apply.
  const clientConfig = (ssl: false | import('node:tls').ConnectionOptions): pg.ClientConfig => ({
    host: target.hostaddr ?? target.host,
    port: target.port,
    user: target.user,
    database: target.database,
    password: target.password ?? (async () => {
      const p = passwordFromFile(target, warn);
      if (p === undefined) throw new Error(`the server asks for a password and none was given (URL, PGPASSWORD or ${target.passfile})`);
      return p;
    }),
    ssl,
    application_name: target.applicationName ?? appName,
    ...(target.fallbackApplicationName ? { fallback_application_name: target.fallbackApplicationName } : {}),
    ...(target.options ? { options: target.options } : {}),
    ...(target.clientEncoding ? { client_encoding: target.clientEncoding } : {}),
    ...(target.keepalives !== null ? { keepAlive: target.keepalives } : {}),
    ...(target.keepalivesIdleSeconds !== null ? { keepAliveInitialDelayMillis: target.keepalivesIdleSeconds * 1000 } : {}),
    types: types as pg.CustomTypesConfig,
    connectionTimeoutMillis: (target.connectTimeoutSeconds ?? 15) * 1000,
  });
  const connect = async (ssl: false | import('node:tls').ConnectionOptions): Promise<pg.Client> => {
    const c = new pgModule.Client(clientConfig(ssl));
    // An idle-connection error (server restart) must not crash the process with an unhandled event.
    c.on('error', () => {});
    try {
      await c.connect();
      return c;
    } catch (err) {
      await c.end().catch(() => {});
      throw err;
    }
  };
  let client: pg.Client;
  try {
    try {
      client = await connect(tls.ssl);
    } catch (err) {
      // sslmode=prefer (libpq's default): a server without TLS is spoken to in plain.
      if (!tls.fallback || !/does not support SSL/i.test((err as Error).message)) throw err;
      client = await connect(false);
    }
  } catch (err) {
    throw new TemporaryError(
      `unable to connect to database ${target.masked ?? '(PG* environment)'} (${config.databaseUrlFrom ?? 'PG* environment'}; tried ${describeTarget(target)}; ${describeOrigins(target)}): ${(err as Error).message}`,
      { cause: err },
    );
  }
  const run = async <T>(sql: string, params?: readonly unknown[]): Promise<QueryResult<T>> => {
    try {
      const r = await client.query(sql, params as unknown[] | undefined);
      return { rows: r.rows as T[], rowCount: r.rowCount ?? 0 };
    } catch (err) {
      throw dbError(err);
    }
  };
  const exec = async (sql: string) => {
    try {
      await client.query(sql);
    } catch (err) {
      throw dbError(err);
    }
  };
  let inTx = false;
  return {
    kind: 'server',
    location,
    pgClient: client,
    query: run,
    exec,
    async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
      if (inTx) throw new Error('nested transaction');
      inTx = true;
      try {
        await run('BEGIN');
        try {
          const out = await fn({ query: run, exec });
          await run('COMMIT');
          return out;
        } catch (err) {
          await client.query('ROLLBACK').catch(() => {});
          throw err;
        }
      } finally {
        inTx = false;
      }
    },
    async close() {
      // Terminate is sent and our side of the socket shut once it is written; the server's
      // hang-up after it is not waited for (2-6 ms of every cron run). Nothing is in flight:
      // every statement's result was awaited.
      await new Promise<void>((resolve) => {
        const stream = (client as unknown as { connection?: { stream?: NodeJS.EventEmitter } }).connection?.stream;
        stream?.once('finish', () => resolve());
        client.end().then(
          () => resolve(),
          () => resolve(),
        );
      });
    },
  };
}

// ---------------------------------------------------------------------------------------
// Embedded

/** How the embedded database is locked: lib/io/lock.ts's lockFile (injected, so this module needs no I/O helpers). */
export type LockFn = (file: string, opts: { waitSeconds: number }) => Promise<{ release(): void } | null>;

async function openEmbedded(config: Config, lockFile: LockFn): Promise<Db> {
  const dataDir = path.join(config.stateDir, 'pgdata');
  try {
    fs.mkdirSync(config.stateDir, { recursive: true, mode: 0o750 });
  } catch (err) {
    throw new TemporaryError(`unable to create state directory ${config.stateDir}: ${(err as Error).message}`);
  }
  const lock = await lockFile(path.join(config.stateDir, 'pgdata.lock'), {
    waitSeconds: config.lockWaitSeconds,
  });
  if (!lock) {
    throw new TemporaryError(
      `embedded database ${dataDir} is busy: another qguard command held it for ${config.lockWaitSeconds}s`,
    );
  }
  let db;
  try {
    const { PGlite } = await import('@electric-sql/pglite');
    db = await PGlite.create(dataDir);
  } catch (err) {
    lock.release();
    throw new TemporaryError(`unable to open embedded database ${dataDir}: ${(err as Error).message}`, { cause: err });
  }
  const pgl = db;
  const wrap = (q: { query: typeof pgl.query; exec: typeof pgl.exec }): Queryable => ({
    async query<T>(sql: string, params?: readonly unknown[]): Promise<QueryResult<T>> {
      try {
        const r = await q.query<T>(sql, params as unknown[] | undefined);
        return { rows: r.rows, rowCount: r.affectedRows ?? r.rows.length };
      } catch (err) {
        throw dbError(err);
      }
    },
    async exec(sql: string) {
      try {
        await q.exec(sql);
      } catch (err) {
        throw dbError(err);
      }
    },
  });
  const top = wrap(pgl);
  return {
    kind: 'embedded',
    location: dataDir,
    pgClient: null,
    query: top.query,
    exec: top.exec,
    async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
      try {
        return await pgl.transaction(async (tx) => fn(wrap(tx)));
      } catch (err) {
        throw dbError(err);
      }
    },
    async close() {
      try {
        await pgl.close();
      } finally {
        lock.release();
      }
    },
  };
}

/** Open the configured database; `lockFile` guards the embedded one (lib/io/lock.ts). */
export async function openDb(config: Config, appName: string, lockFile: LockFn): Promise<Db> {
  if (config.databaseUrl || config.usePgEnv) return openServer(config, appName);
  return openEmbedded(config, lockFile);
}

/** The admin running us: the user behind sudo, or the login user. */
export function adminUser(): string {
  if (process.env.SUDO_USER) return process.env.SUDO_USER;
  try {
    return os.userInfo().username;
  } catch {
    return String(process.getuid?.() ?? 'unknown');
  }
}

/** Who is acting, for the audit trail. */
export function currentActor(command: string): string {
  return `${adminUser()} (${command})`;
}
