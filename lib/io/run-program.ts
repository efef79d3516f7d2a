// The one door to other programs (tcprules, tcprulescheck, nft, ipset, iptables, flock, svc,
// qmail-queue, logger). Argument arrays, never shell strings; data on stdin; a timeout; a
// failure becomes a TemporaryError that carries the program's own words.

import { spawn } from 'node:child_process';
import type { Options } from 'execa';
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

/**
 * Run a program and wait for it. Throws TemporaryError when it cannot be started, times out,
 * is killed, or exits with a code not in `okExitCodes`.
 */
export async function runProgram(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  let cmd = file;
  let argv = [...args];
  if (opts.umask !== undefined) {
    argv = ['-c', `umask ${opts.umask.toString(8).padStart(3, '0')} && exec "$@"`, 'sh', file, ...args];
    cmd = '/bin/sh';
  }
  const stdio = [
    opts.stdinFd ?? (opts.input === undefined ? 'ignore' : 'pipe'),
    opts.stdoutFd ?? 'pipe',
    'pipe',
    ...(opts.extraFds ?? []),
  ] as Options['stdio'];
  // execa is loaded on first use: most runs of the every-minute jobs never start a program.
  const { execa } = await import('execa');
  let result;
  try {
    result = await execa(cmd, argv, {
      input: opts.input,
      stdio,
      timeout: opts.timeoutMs ?? 60_000,
      env: opts.env,
      extendEnv: !opts.cleanEnv,
      cwd: opts.cwd,
      reject: false,
      stripFinalNewline: false,
      encoding: opts.binary ? 'buffer' : 'utf8',
      maxBuffer: 512 * 1024 * 1024,
    });
  } catch (err) {
    throw new TemporaryError(`unable to run ${file}: ${(err as Error).message}`, { cause: err });
  }
  if ((result as { code?: string }).code === 'ENOENT') {
    throw new TemporaryError(`unable to run ${file}: program not found`);
  }
  const stdoutBuffer = opts.binary ? Buffer.from(result.stdout as unknown as Uint8Array) : undefined;
  const stdout = opts.binary ? '' : String(result.stdout ?? '');
  const stderr = String(result.stderr ?? '');
  const ok = opts.okExitCodes ?? [0];
  if (result.timedOut) {
    throw new TemporaryError(`${file} timed out after ${Math.round((opts.timeoutMs ?? 60_000) / 1000)}s`);
  }
  if (result.exitCode === undefined || result.signal) {
    throw new TemporaryError(
      `${file} ${result.signal ? `was killed by ${result.signal}` : 'could not be started'}${stderr ? `: ${tail(stderr)}` : `: ${result.shortMessage ?? ''}`}`,
    );
  }
  if (!ok.includes(result.exitCode)) {
    throw new TemporaryError(`${file} failed (exit ${result.exitCode})${stderr.trim() ? `: ${tail(stderr)}` : ''}`);
  }
  return { exitCode: result.exitCode, stdout, stderr, stdoutBuffer };
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

/**
 * A small program with no input and little output (flock, a probe), run with node's own
 * child_process: the every-minute jobs take their lock this way without loading execa.
 * Same error rules as runProgram.
 */
export function runSmall(
  file: string,
  args: readonly string[],
  opts: { timeoutMs?: number; okExitCodes?: number[]; extraFds?: number[] } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe', ...(opts.extraFds ?? [])] });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new TemporaryError(`unable to run ${file}: ${err.code === 'ENOENT' ? 'program not found' : err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === null) return reject(new TemporaryError(`${file} was killed by ${signal}`));
      if (!(opts.okExitCodes ?? [0]).includes(code)) {
        return reject(new TemporaryError(`${file} failed (exit ${code})${stderr.trim() ? `: ${tail(stderr)}` : ''}`));
      }
      resolve({ exitCode: code, stdout, stderr });
    });
  });
}
