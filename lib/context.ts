// What every job and admin command is handed: the resolved config, the logger, the database
// (opened on first use, schema checked), this host's job locks with the run's record, and the
// output channels. The library depends on this, never on the CLI: lib/cli/run-main.ts builds
// one per run from commander's options, a test or the web server can build one from a config.
// Printing goes through terminal-safe sinks (lib/text.ts) whatever the caller formatted.

import path from 'node:path';
import { type Config, protectedNets } from './config.js';
import { LockBusy, errorText } from './errors.js';
import type { Logger } from './log.js';
import type { Net } from './net/address.js';
import { type Db, adminUser, currentActor, openDb } from './db/connect.js';
import { checkSchema } from './db/migrate.js';
import { recordJobRun } from './db/jobs.js';
import { type FileLock, lockFile } from './io/lock.js';
import { jsonForTerminal, terminalSafe } from './text.js';

/** Everything an action needs; created per run, closed by its creator. */
export interface RunContext {
  readonly command: string;
  readonly config: Config;
  readonly log: Logger;
  /** Who acts (the admin behind sudo or the login user; the operator on the review page). */
  readonly user: string;
  /** How the audit trail names this actor: `alice (qguard)`, `web:alice`. */
  readonly actor: string;
  /** The database, opened on first use; the schema is checked unless `migrating`. */
  db(opts?: { migrating?: boolean }): Promise<Db>;
  /** Loopback, QGUARD_PROTECT and this machine's addresses. */
  protectedNets(): Net[];
  /**
   * Take this host's lock for a job (`sync-rules`, `scan-queue`, ...). When another run holds
   * it, throws LockBusy: the run ends quietly with exit 0, like `setlock -nx`. The run is then
   * recorded in qguard.job_runs when it ends (ok or failed, with its summary and error) unless
   * `record` is false (dry runs).
   */
  jobLock(job: string, opts?: { record?: boolean }): Promise<void>;
  /** The job's summary (its --json document), kept with the job record. */
  jobSummary(summary: unknown): void;
  /**
   * For a job that keeps running (`sync-rules --watch`): record the pass that just ended as
   * a run of its own, so `qguard status` sees it working, and start the next one.
   */
  jobCheckpoint(exitCode: number, error: string | null): Promise<void>;
  /** Was this option given on the command line (not from env, file or default)? */
  fromCli(option: string): boolean;
  /** Write text to stdout (made terminal-safe). */
  print(text: string): void;
  /** Write exactly one JSON document to stdout (exact, and terminal-safe). */
  printJson(value: unknown): void;
  /** Run `fn` when the run ends (after the action, before exit). */
  defer(fn: () => void | Promise<void>): void;
}

/** What the creator of a context needs beyond RunContext. */
export interface OpenContext extends RunContext {
  /** Record a job run (when jobLock was taken) with its outcome. */
  recordRun(exitCode: number, error: string | null): Promise<void>;
  /** Run the deferred work, close the database, release the locks, flush the log. */
  close(): Promise<void>;
}

export interface ContextInputs {
  command: string;
  config: Config;
  log: Logger;
  /** This machine's addresses (never denied). */
  interfaceNets: () => Net[];
  /** See RunContext.fromCli; default: nothing came from the command line. */
  fromCli?: (option: string) => boolean;
  /** Where print/printJson write (default stdout). */
  write?: (text: string) => void;
  /** The actor (default: adminUser() and `USER (command)`). */
  user?: string;
  actor?: string;
  /**
   * A database opened by the creator and shared by many contexts (the review page); this
   * context then does not close it, and the creator sets the audit actor around each change.
   */
  sharedDb?: Db;
}

/** A context for one run. */
export function createContext(inputs: ContextInputs): OpenContext {
  const { command, config, log } = inputs;
  const user = inputs.user ?? adminUser();
  const actor = inputs.actor ?? currentActor(command);
  const write = inputs.write ?? ((text: string) => void process.stdout.write(text));
  let db: Db | null = null;
  let dbPromise: Promise<Db> | null = null;
  let schemaChecked = false;
  let prot: Net[] | null = null;
  const locks: FileLock[] = [];
  const deferred: (() => void | Promise<void>)[] = [];
  let job: { name: string; startedAt: Date; summary: unknown } | null = null;
  return {
    command,
    config,
    log,
    user,
    actor,
    async db(opts = {}) {
      if (!dbPromise) {
        dbPromise = (async () => {
          if (inputs.sharedDb) return inputs.sharedDb; // its owner sets the actor around each change
          const d = await openDb(config, command, lockFile);
          db = d;
          await d.query("SELECT set_config('qguard.actor', $1, false)", [actor]);
          return d;
        })();
      }
      const d = await dbPromise;
      if (!opts.migrating && !schemaChecked) {
        await checkSchema(d);
        schemaChecked = true;
      }
      return d;
    },
    protectedNets() {
      prot ??= protectedNets(config, inputs.interfaceNets());
      return prot;
    },
    async jobLock(name, opts = {}) {
      const lock = await lockFile(path.join(config.stateDir, 'locks', `${name}.lock`), { waitSeconds: 0 });
      if (!lock) throw new LockBusy(`another ${name} is running on this host`);
      locks.push(lock);
      if (opts.record !== false) job = { name, startedAt: new Date(), summary: null };
    },
    jobSummary(summary) {
      if (job) job.summary = summary;
    },
    async jobCheckpoint(exitCode, error) {
      await this.recordRun(exitCode, error);
      if (job) job = { name: job.name, startedAt: new Date(), summary: null };
    },
    async recordRun(exitCode, error) {
      if (!job || !db || !schemaChecked) return; // (a shared database records no job runs)
      try {
        await recordJobRun(db as Db, { host: config.host, job: job.name, startedAt: job.startedAt, exitCode, summary: job.summary, error });
      } catch (err) {
        log.warn(`unable to record this run: ${errorText(err)}`);
      }
    },
    fromCli(option) {
      return inputs.fromCli?.(option) ?? false;
    },
    print(text) {
      // Fields from outside were escaped where they were formatted; this catches any that were not.
      write(terminalSafe(text));
    },
    printJson(value) {
      write(`${jsonForTerminal(value, 2)}\n`);
    },
    defer(fn) {
      deferred.push(fn);
    },
    async close() {
      for (const fn of deferred.reverse()) {
        try {
          await fn();
        } catch (err) {
          log.warn(`cleanup failed: ${errorText(err)}`);
        }
      }
      if (dbPromise) {
        try {
          await dbPromise;
        } catch {
          // never opened
        }
      }
      if (db) await (db as Db).close().catch(() => {});
      for (const l of locks) l.release();
      await log.close();
    },
  };
}
