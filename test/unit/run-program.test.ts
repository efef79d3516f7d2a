// runProgram, the one door to other programs, on real ones (sh, cat, wc): what reaches the
// program, what comes back, and what a failure says.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { TemporaryError } from '../../lib/errors.js';
import { runProgram } from '../../lib/io/run-program.js';

describe('runProgram', () => {
  it('hands over the input (text, bytes or a stream) and returns the output', async () => {
    expect((await runProgram('cat', [], { input: 'one\ntwo\n' })).stdout).toBe('one\ntwo\n');
    const bytes = Buffer.from([0, 255, 10, 128]);
    const r = await runProgram('cat', [], { input: bytes, binary: true });
    expect(r.stdoutBuffer).toEqual(bytes);
    expect(r.stdout).toBe('');
    // Several MB from a stream, in pieces: every byte arrives.
    const chunks = Array.from({ length: 64 }, (_, i) => Buffer.alloc(65536, i));
    const wc = await runProgram('wc', ['-c'], { input: Readable.from(chunks) });
    expect(Number(wc.stdout.trim())).toBe(64 * 65536);
  });

  it('a program that exits without reading its input is answered by its exit code', async () => {
    const r = await runProgram('true', [], { input: Buffer.alloc(8 << 20) });
    expect(r.exitCode).toBe(0);
    await expect(runProgram('false', [], { input: Buffer.alloc(8 << 20) })).rejects.toThrow(/false failed \(exit 1\)/);
  });

  it('a failure names the program, its exit code and the last lines of its stderr', async () => {
    const run = runProgram('sh', ['-c', 'echo first >&2; echo second >&2; echo third >&2; echo last >&2; exit 3']);
    await expect(run).rejects.toBeInstanceOf(TemporaryError);
    await expect(run).rejects.toThrow('sh failed (exit 3): second / third / last');
    const ok = await runProgram('sh', ['-c', 'echo x; exit 75'], { okExitCodes: [0, 75] });
    expect(ok).toMatchObject({ exitCode: 75, stdout: 'x\n' });
  });

  it('a missing program, a timeout and a signal are each said so', async () => {
    await expect(runProgram('/nonexistent/qguard-no-such-program', [])).rejects.toThrow(
      'unable to run /nonexistent/qguard-no-such-program: program not found',
    );
    const t0 = Date.now();
    await expect(runProgram('sleep', ['30'], { timeoutMs: 300 })).rejects.toThrow('sleep timed out after 0s');
    expect(Date.now() - t0).toBeLessThan(10_000);
    await expect(runProgram('sh', ['-c', 'kill -TERM $$'])).rejects.toThrow('sh was killed by SIGTERM');
  });

  it('environment, working directory, umask and extra file descriptors', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-run-'));
    try {
      expect((await runProgram('sh', ['-c', 'echo "$QGUARD_T"'], { env: { QGUARD_T: 'seen' } })).stdout).toBe('seen\n');
      // A clean environment has only what is given.
      const clean = await runProgram('/usr/bin/env', [], { env: { ONLY: '1' }, cleanEnv: true });
      expect(clean.stdout).toBe('ONLY=1\n');
      expect((await runProgram('pwd', [], { cwd: dir })).stdout.trim()).toBe(fs.realpathSync(dir));
      await runProgram('sh', ['-c', 'echo x > made'], { cwd: dir, umask: 0o077 });
      expect(fs.statSync(path.join(dir, 'made')).mode & 0o777).toBe(0o600);
      const file = path.join(dir, 'fd3');
      fs.writeFileSync(file, 'via fd 3\n');
      const fd = fs.openSync(file, 'r');
      try {
        expect((await runProgram('sh', ['-c', 'cat <&3'], { extraFds: [fd] })).stdout).toBe('via fd 3\n');
      } finally {
        fs.closeSync(fd);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
