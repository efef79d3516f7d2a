// The one door to other programs (tcprules, tcprulescheck, nft, ipset, iptables, flock, svc,
// qmail-queue, logger). Argument arrays, never shell strings; data on stdin; a timeout; a
// failure becomes a TemporaryError that carries the program's own words.

import { type ChildProcess, type StdioOptions, spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { TemporaryError } from '../errors.js';

export interface RunOptions {
  /** Data for the program's stdin. */
  input?: string | Buffer | Readable;
  /** Milliseconds before the program is killed (default 60 s). */
  timeoutMs?: number;
  /** Exit codes that are not a failure (default [0]). */
  okExitCodes?: number[];
  env?: Record<string, string | undefined>;
  /** Replace the environment instead of extending it. */
  cleanEnv?: boolean;
  cwd?: string;
  /** Extra file descriptors handed to the child as fd 3, 4, ... */
  extraFds?: number[];
  /** Set the child's umask, e.g. 0o022 (runs it through `sh -c 'umask X; exec "$@"'`). */
  umask?: number;
  /** Stdout as a Buffer instead of text. */
  binary?: boolean;
  /**
   * An open file descriptor to give the child as its fd 0 / fd 1 instead of a pipe (qmail-queue
   * reads the message on fd 0 and the envelope on fd 1: both are files opened read-only).
   * With `stdoutFd` the result's stdout is empty.
   */
  stdinFd?: number;
  stdoutFd?: number;
}

export interface RunResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  stdoutBuffer?: Buffer;
}

/** Last lines of a program's stderr, for an error message. */
function tail(text: string): string {
  const lines = text.trim().split('\n').filter(Boolean);
  return lines.slice(-3).join(' / ');
}

/** Output kept per stream at most; a program that writes more is killed (it is not one of ours). */
const MAX_OUTPUT = 512 * 1024 * 1024;

/**
 * Run a program and wait for it. Throws TemporaryError when it cannot be started, times out,
 * is killed, or exits with a code not in `okExitCodes`. (node's own child_process: loading a
 * process library cost sync-rules 60-90 ms of every run that compiles the rules.)
 */
export async function runProgram(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  let cmd = file;
  let argv = [...args];
  if (opts.umask !== undefined) {
    argv = ['-c', `umask ${opts.umask.toString(8).padStart(3, '0')} && exec "$@"`, 'sh', file, ...args];
    cmd = '/bin/sh';
  }
  const stdio: StdioOptions = [
    opts.stdinFd ?? (opts.input === undefined ? 'ignore' : 'pipe'),
    opts.stdoutFd ?? 'pipe',
    'pipe',
    ...(opts.extraFds ?? []),
  ];
  const env = opts.cleanEnv ? { ...opts.env } : { ...process.env, ...opts.env };
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const outcome = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: Buffer; stderr: string; timedOut: boolean; error: NodeJS.ErrnoException | null }>(
    (resolve) => {
      let child: ChildProcess;
      try {
        child = spawn(cmd, argv, { stdio, env, cwd: opts.cwd });
      } catch (err) {
        resolve({ code: null, signal: null, stdout: Buffer.alloc(0), stderr: '', timedOut: false, error: err as NodeJS.ErrnoException });
        return;
      }
      // What the program writes, kept up to MAX_OUTPUT per stream.
      const collect = (stream: Readable | null) => {
        const parts: Buffer[] = [];
        let bytes = 0;
        stream?.on('data', (d: Buffer) => {
          bytes += d.length;
          if (bytes > MAX_OUTPUT) child.kill('SIGKILL');
          else parts.push(d);
        });
        return parts;
      };
      const out = collect(child.stdout);
      const err = collect(child.stderr);
      let timedOut = false;
      let failure: NodeJS.ErrnoException | null = null;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, timeoutMs);
      // A program that exits without reading all of its input is answered by its exit code.
      child.stdin?.on('error', () => {});
      if (child.stdin && opts.input !== undefined) {
        if (typeof opts.input === 'string' || Buffer.isBuffer(opts.input)) child.stdin.end(opts.input);
        else {
          opts.input.on('error', (e: Error) => {
            failure ??= e as NodeJS.ErrnoException;
            child.kill('SIGKILL');
          });
          opts.input.pipe(child.stdin);
        }
      }
      child.on('error', (e: NodeJS.ErrnoException) => {
        failure ??= e;
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString(), timedOut, error: failure });
      });
    },
  );
  const { stderr } = outcome;
  if (outcome.error) {
    const e = outcome.error;
    throw new TemporaryError(`unable to run ${file}: ${e.code === 'ENOENT' ? 'program not found' : e.message}`, { cause: e });
  }
  if (outcome.timedOut) {
    throw new TemporaryError(`${file} timed out after ${Math.round(timeoutMs / 1000)}s`);
  }
  if (outcome.code === null) {
    throw new TemporaryError(`${file} was killed by ${outcome.signal}${stderr.trim() ? `: ${tail(stderr)}` : ''}`);
  }
  const ok = opts.okExitCodes ?? [0];
  if (!ok.includes(outcome.code)) {
    throw new TemporaryError(`${file} failed (exit ${outcome.code})${stderr.trim() ? `: ${tail(stderr)}` : ''}`);
  }
  return {
    exitCode: outcome.code,
    stdout: opts.binary ? '' : outcome.stdout.toString(),
    stderr,
    stdoutBuffer: opts.binary ? outcome.stdout : undefined,
  };
}

/** Split a configured command line (`svc -d /service/qmail-send`) into argv, honouring quotes. */
export function splitCommand(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quote: string | null = null;
  let has = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = null;
      else if (c === '\\' && quote === '"' && i + 1 < line.length) cur += line[++i];
      else cur += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      has = true;
    } else if (c === '\\' && i + 1 < line.length) {
      cur += line[++i];
      has = true;
    } else if (/\s/.test(c)) {
      if (has || cur) out.push(cur);
      cur = '';
      has = false;
    } else {
      cur += c;
    }
  }
  if (quote) throw new Error(`unbalanced quote in ${JSON.stringify(line)}`);
  if (has || cur) out.push(cur);
  return out;
}
