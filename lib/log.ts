// One line per event on stderr, prefixed with the command (`sync-rules: warning: ...`), the
// way qmail's programs talk. Quiet on success: `info` is shown only under --verbose. With
// QGUARD_SYSLOG=1 every line (info included) also goes to syslog through `logger -t qguard`,
// which is where qmail admins look.

import { spawn, type ChildProcess } from 'node:child_process';
import { terminalSafe } from './text.js';

export interface Logger {
  readonly verbose: boolean;
  /** Shown with --verbose; always sent to syslog when enabled. */
  info(message: string): void;
  /** Always shown. */
  warn(message: string): void;
  /** The fatal line (used by runMain only). */
  fatal(message: string): void;
  /** Flush and stop the syslog writer. */
  close(): Promise<void>;
}

/**
 * One log line: line breaks and tabs (from a program's stderr, say) become spaces; anything
 * else that could act on a terminal or on a syslog reader is shown escaped (lib/text.ts).
 */
function oneLine(text: string): string {
  return terminalSafe(text.replace(/[\n\t]+/g, ' '));
}

export function createLogger(command: string, opts: { verbose: boolean; syslog: boolean }): Logger {
  let logger: ChildProcess | null = null;
  let loggerFailed = false;
  const toSyslog = (level: string, message: string) => {
    if (!opts.syslog || loggerFailed) return;
    if (!logger) {
      logger = spawn('logger', ['-t', 'qguard'], { stdio: ['pipe', 'ignore', 'ignore'] });
      logger.on('error', () => {
        loggerFailed = true;
      });
      logger.stdin?.on('error', () => {});
    }
    logger.stdin?.write(`${command}: ${level}${oneLine(message)}\n`);
  };
  const err = (line: string) => {
    try {
      process.stderr.write(`${line}\n`);
    } catch {
      // stderr closed: nothing more we can do
    }
  };
  return {
    verbose: opts.verbose,
    info(message) {
      if (opts.verbose) err(`${command}: ${oneLine(message)}`);
      toSyslog('', message);
    },
    warn(message) {
      err(`${command}: warning: ${oneLine(message)}`);
      toSyslog('warning: ', message);
    },
    fatal(message) {
      err(`${command}: fatal: ${oneLine(message)}`);
      toSyslog('fatal: ', message);
    },
    async close() {
      const l = logger as ChildProcess | null;
      if (!l || loggerFailed) return;
      await new Promise<void>((resolve) => {
        l.on('close', () => resolve());
        l.on('error', () => resolve());
        l.stdin?.end();
      });
    },
  };
}
