// The one exit path of every executable. Builds the commander program with the shared
// config flags, gives each action a RunContext (lib/context.ts) built from its options, maps
// typed errors to exit codes (0 / 2 / 100 / 111) with a `command: fatal: ...` line on stderr,
// and always closes the database and releases locks. Only runMain() calls process.exit.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option } from 'commander';
import { CONFIG_KEYS } from '../config.js';
import { EXIT, LockBusy, QguardError, SilentExit, errorText } from '../errors.js';
import { createLogger } from '../log.js';
import { type OpenContext, type RunContext, createContext } from '../context.js';
import { forTerminal, terminalSafe } from '../text.js';
import { interfaceNets, loadConfig } from './load-config.js';

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
  const fromCli = (option: string): boolean => {
    for (let c: Command | null = cmd; c; c = c.parent) {
      const src = c.getOptionValueSource(option);
      if (src !== undefined) return src === 'cli';
    }
    return false;
  };
  return createContext({ command, config, log, interfaceNets, fromCli });
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
