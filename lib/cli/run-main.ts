// The one exit path of every executable. Builds the commander program with the shared
// config flags, gives each action a RunContext (config, logger, lazily opened database,
// job lock), maps typed errors to exit codes (0 / 2 / 100 / 111) with a `command: fatal: ...`
// line on stderr, and always closes the database and releases locks. Only runMain() calls
// process.exit.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option } from 'commander';
import { CONFIG_KEYS, type Config, protectedNets } from '../config.js';
import { EXIT, LockBusy, QguardError, SilentExit, errorText } from '../errors.js';
import { type Logger, createLogger } from '../log.js';
import type { Net } from '../net/address.js';
import { type Db, currentActor, openDb } from '../db/connect.js';
import { checkSchema } from '../db/migrate.js';
import { type FileLock, lockFile } from '../io/lock.js';
import { forTerminal, jsonForTerminal, terminalSafe } from '../text.js';
import { interfaceNets, loadConfig } from './load-config.js';

/** Everything an action needs; created per run, closed by runMain. */
export interface RunContext {
  readonly command: string;
  readonly config: Config;
  readonly log: Logger;
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
  /** Write text to stdout. */
  print(text: string): void;
  /** Write exactly one JSON document to stdout. */
  printJson(value: unknown): void;
  /** Run `fn` when the run ends (after the action, before exit). */
  defer(fn: () => void | Promise<void>): void;
}

/** The version in package.json. */
export function packageVersion(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const up of ['../..', '../../..']) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.resolve(here, up, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'qguard' && pkg.version) return pkg.version;
    } catch {
      // try the next level
    }
  }
  return 'unknown';
}

const optionName = (flag: string) =>
  flag
    .replace(/^--/, '')
    .split(' ')[0]
    .replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** Add the shared configuration flags to a command. */
export function addConfigOptions(cmd: Command): Command {
  // Listed after the command's own options: they are the same for every qguard program.
  const group = 'Configuration (every qguard program; also QGUARD_* variables and qguard.conf):';
  cmd.addOption(new Option('--config <file>', 'config file (default /etc/qguard/qguard.conf)').helpGroup(group));
  for (const spec of CONFIG_KEYS) {
    if (spec.flag) cmd.addOption(new Option(spec.flag, spec.help ?? '').helpGroup(group));
  }
  cmd.option('-v, --verbose', 'explain what is done, on stderr');
  return cmd;
}

/** A new program with the shared flags, usage-error handling and version. */
export function newProgram(name: string, description: string): Command {
  const program = new Command(name);
  program
    .description(description)
    .version(packageVersion(), '-V, --version')
    .exitOverride()
    .showHelpAfterError(`(run ${name} --help for usage)`)
    .configureOutput({
      // commander echoes the arguments it refused: they may be anything.
      outputError: (str, write) => write(terminalSafe(`${name}: fatal: ${str.replace(/^error: /, '')}`)),
    });
  addConfigOptions(program);
  return program;
}

const openContexts: OpenContext[] = [];

/**
 * A job's summary as kept in its record: long lists cut to their first 20 entries (the
 * every-minute runs must not store a thousand-entry list each time); the --json output is
 * not affected.
 */
export function summaryForRecord(value: unknown): unknown {
  if (Array.isArray(value)) {
    const head = value.slice(0, 20).map(summaryForRecord);
    return value.length > 20 ? [...head, `... ${value.length - 20} more`] : head;
  }
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, summaryForRecord(v)]));
  }
  return value;
}

/** What runMain needs beyond the RunContext. */
interface OpenContext extends RunContext {
  /** Record a job run (when jobLock was taken) with its outcome. */
  recordRun(exitCode: number, error: string | null): Promise<void>;
  close(): Promise<void>;
}

function makeContext(command: string, cmd: Command): OpenContext {
  const all = cmd.optsWithGlobals() as Record<string, unknown>;
  const flags: Record<string, string | undefined> = {};
  for (const spec of CONFIG_KEYS) {
    if (!spec.flag) continue;
    const v = all[optionName(spec.flag)];
    if (v !== undefined) flags[spec.key] = String(v);
  }
  const config = loadConfig(flags, all.config as string | undefined);
  const log = createLogger(command, { verbose: Boolean(all.verbose), syslog: config.syslog });
  let db: Db | null = null;
  let dbPromise: Promise<Db> | null = null;
  let schemaChecked = false;
  let prot: Net[] | null = null;
  const locks: FileLock[] = [];
  const deferred: (() => void | Promise<void>)[] = [];
  let job: { name: string; startedAt: Date; summary: unknown } | null = null;
  const sources = (option: string): string | undefined => {
    for (let c: Command | null = cmd; c; c = c.parent) {
      const src = c.getOptionValueSource(option);
      if (src !== undefined) return src;
    }
    return undefined;
  };
  return {
    command,
    config,
    log,
    async db(opts = {}) {
      if (!dbPromise) {
        dbPromise = (async () => {
          const d = await openDb(config, command);
          db = d;
          await d.query("SELECT set_config('qguard.actor', $1, false)", [currentActor(command)]);
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
      prot ??= protectedNets(config, interfaceNets());
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
      if (!job || !db || !schemaChecked) return;
      try {
        await (db as Db).query(
          `INSERT INTO qguard.job_runs (host, job, started_at, ok, exit_code, summary, error)
           VALUES ($1, $2, $3, $4, $5, $6, $7)`,
          [config.host, job.name, job.startedAt, exitCode === 0, exitCode, job.summary === null ? null : JSON.stringify(summaryForRecord(job.summary)), error],
        );
        await (db as Db).query("DELETE FROM qguard.job_runs WHERE finished_at < now() - interval '14 days'");
      } catch (err) {
        log.warn(`unable to record this run: ${errorText(err)}`);
      }
    },
    fromCli(option) {
      return sources(option) === 'cli';
    },
    print(text) {
      // Fields from outside were escaped where they were formatted; this catches any that were not.
      process.stdout.write(terminalSafe(text));
    },
    printJson(value) {
      process.stdout.write(`${jsonForTerminal(value, 2)}\n`);
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

/**
 * Wrap an action: build the RunContext from the command's options, run `fn`, close it.
 * Commander passes (args..., options, command); `fn` gets (ctx, args..., options).
 */
export function withContext<A extends unknown[]>(
  command: string,
  fn: (ctx: RunContext, ...args: A) => Promise<void>,
): (...args: unknown[]) => Promise<void> {
  return async (...args: unknown[]) => {
    const cmd = args[args.length - 1] as Command;
    const ctx = makeContext(command, cmd);
    openContexts.push(ctx);
    await fn(ctx, ...(args.slice(0, -1) as A));
  };
}

/** Last words before exit: make sure piped stdout is written out. */
async function drainStdout(): Promise<void> {
  await new Promise<void>((resolve) => {
    if (process.stdout.writableLength === 0) return resolve();
    process.stdout.write('', () => resolve());
  });
}

/** Parse, run, map errors to exit codes, close everything, exit. */
export async function runMain(program: Command, argv: string[] = process.argv): Promise<never> {
  const name = program.name();
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    // A reader that went away (`qguard ip ls | head`) is not our failure.
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  });
  let code: number = EXIT.ok;
  let fatal: string | null = null;
  let verbose = false;
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      code = err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    } else if (err instanceof SilentExit) {
      code = err.exitCode;
    } else if (err instanceof LockBusy) {
      code = EXIT.ok;
      verbose = Boolean(program.opts().verbose);
      if (verbose) process.stderr.write(`${name}: ${forTerminal(err.message)}\n`);
    } else if (err instanceof QguardError) {
      code = err.exitCode;
      fatal = err.message;
    } else {
      code = EXIT.temporary;
      fatal = `internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`;
    }
  }
  const contexts = openContexts.splice(0);
  if (fatal !== null) {
    const line = fatal.split('\n')[0];
    if (contexts.length > 0) contexts[0].log.fatal(line);
    else process.stderr.write(`${name}: fatal: ${forTerminal(line)}\n`);
  }
  for (const ctx of contexts) {
    try {
      await ctx.recordRun(code, fatal === null ? null : fatal.split('\n')[0]);
      await ctx.close();
    } catch (err) {
      process.stderr.write(`${name}: warning: closing: ${forTerminal(errorText(err))}\n`);
    }
  }
  await drainStdout();
  process.exit(code);
}
