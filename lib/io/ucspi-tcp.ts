// ucspi-tcp's rule compiler and checker, as sync-rules uses them: compile a rules text with the
// real `tcprules` into a cdb (tcprules writes its temp file, fsyncs and renames: the cdb is
// never half-written), and ask the real `tcprulescheck` what a compiled cdb answers for a few
// addresses. Through lib/io/run-program.ts; the only shell is a fixed loop that starts
// tcprulescheck once per address (the addresses are its arguments, never its text).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TemporaryError } from '../errors.js';
import { runProgram } from './run-program.js';

/**
 * `tcprules newCdb tmp < textFile` with umask 022 (tcpserver runs unprivileged and must read
 * the cdb). `tmp` must be a fresh name: tcprules' open_trunc keeps an old file's mode.
 */
export async function compileCdb(tcprules: string, textFile: string, newCdb: string, tmp: string): Promise<void> {
  const fd = fs.openSync(textFile, 'r');
  try {
    await runProgram(tcprules, [newCdb, tmp], { stdinFd: fd, umask: 0o022, timeoutMs: 600_000 });
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * What tcprulescheck says for each address: its lines without the `rule KEY:` / `default:`
 * header (`set environment variable X=Y`..., then `allow connection` or `deny connection`).
 */
export async function checkCdbAnswers(tcprulescheck: string, cdb: string, ips: readonly string[]): Promise<string[][]> {
  if (ips.length === 0) return [];
  // One process start from node for all of them: forking node while it holds a million
  // rules' plan is slow (spawn was 62 ms of a full rebuild's profile, one per address), a
  // shell's fork is not. Each answer ends with a NUL line, which tcprulescheck never prints.
  const loop = 'check=$1 cdb=$2; shift 2; for ip do TCPREMOTEIP=$ip "$check" "$cdb" || exit; printf "\\0\\n"; done';
  let r;
  try {
    r = await runProgram('/bin/sh', ['-c', loop, 'sh', tcprulescheck, cdb, ...ips], {
      timeoutMs: 60_000,
      env: { TCPREMOTEHOST: undefined, TCPREMOTEINFO: undefined },
    });
  } catch (err) {
    throw new TemporaryError(`${tcprulescheck} could not check ${cdb}: ${(err as Error).message}`, { cause: err });
  }
  const answers = r.stdout.split('\0\n');
  if (answers.length !== ips.length + 1 || answers[ips.length] !== '') {
    throw new TemporaryError(`${tcprulescheck} gave ${answers.length - 1} answers for ${ips.length} addresses`);
  }
  return answers.slice(0, ips.length).map((a) => a.split('\n').filter((l) => l !== '' && !l.startsWith('rule ') && l !== 'default:'));
}

/**
 * The cdb's answer for one address as tcprulescheck gives it: the key that matched (`rule
 * 203.0.113.:` → `203.0.113.`; null for the default) and the instructions. Null when the cdb
 * or tcprulescheck cannot be used here.
 */
export async function cdbAnswer(tcprulescheck: string, cdb: string, ip: string): Promise<{ key: string | null; lines: string[] } | null> {
  try {
    const r = await runProgram(tcprulescheck, [cdb], {
      timeoutMs: 10_000,
      env: { TCPREMOTEIP: ip, TCPREMOTEHOST: undefined, TCPREMOTEINFO: undefined },
    });
    const lines = r.stdout.split('\n').filter((l) => l !== '');
    const head = lines[0] ?? '';
    const m = /^rule (.*):$/.exec(head);
    return { key: m ? m[1] : null, lines: lines.slice(m || head === 'default:' ? 1 : 0) };
  } catch {
    return null;
  }
}

/**
 * Whether `tcprules` is the IPv6 one (ucspi-tcp-ipv6): it takes `::1:allow` as the key `::1`,
 * where the original refuses the line (its address ends at the first colon).
 */
export async function tcprulesTakesIpv6(tcprules: string): Promise<boolean> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-tcprules-'));
  const text = path.join(dir, 'rules');
  try {
    fs.writeFileSync(text, '::1:allow\n');
    await compileCdb(tcprules, text, path.join(dir, 'cdb'), path.join(dir, 'tmp'));
    return true;
  } catch {
    return false;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Where a program named like `tcprules` is (PATH searched as execvp does), with its inode, size and mtime: it changes when the package does. */
export function programStamp(program: string): string {
  const dirs = program.includes('/') ? [''] : (process.env.PATH ?? '/usr/bin:/bin').split(':');
  for (const d of dirs) {
    const file = d === '' ? program : path.join(d, program);
    try {
      const st = fs.statSync(file);
      if (st.isFile()) return `${file} ${st.ino} ${st.size} ${st.mtimeMs}`;
    } catch {
      // not here
    }
  }
  return `${program} (not found)`;
}
