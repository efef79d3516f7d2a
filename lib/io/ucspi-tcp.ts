// ucspi-tcp's rule compiler and checker, as sync-rules uses them: compile a rules text with the
// real `tcprules` into a cdb (tcprules writes its temp file, fsyncs and renames: the cdb is
// never half-written), and ask the real `tcprulescheck` what a compiled cdb answers for a few
// addresses. Through lib/io/run-program.ts; no shell.

import fs from 'node:fs';
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
  return Promise.all(
    ips.map(async (ip) => {
      const r = await runProgram(tcprulescheck, [cdb], {
        timeoutMs: 60_000,
        env: { TCPREMOTEIP: ip, TCPREMOTEHOST: undefined, TCPREMOTEINFO: undefined },
      });
      return r.stdout.split('\n').filter((l) => l !== '' && !l.startsWith('rule ') && l !== 'default:');
    }),
  );
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
