// `qguard demo`: the README's "see it work" command runs the real pipeline on a temp embedded
// database and says what happened at each step; it leaves nothing behind.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { haveTools } from '../helpers/tools.js';

describe('qguard demo', () => {
  it('shows import, scan, sync, purge --dry-run and why, on its own database, and cleans up', async () => {
    const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-demo-test-'));
    const dir = path.join(parent, 'demo');
    try {
      // Whatever database the environment names, the demo uses its own embedded one.
      const r = await runCli('qguard', ['demo', '--dir', dir], {
        env: { QGUARD_DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/never-used' },
        timeoutMs: 600_000,
      });
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const out = r.stdout;
      expect(out).toMatch(/read 8 lines: 5 valid, 1 invalid, 1 refused, 4 added/);
      expect(out).toMatch(/scanned 125 messages; denied: 203\.0\.113\.7, 198\.51\.100\.14\n/);
      expect(out).toMatch(/not denied: 198\.51\.100\.150 \(trust/);
      expect(out).toMatch(/not denied: 10\.0\.0\.15 /);
      if (haveTools('tcprules', 'tcprulescheck')) {
        expect(out).toMatch(/tcpserver for 203\.0\.113\.7: deny connection/);
        expect(out).toMatch(/tcpserver for 198\.51\.100\.23: set environment variable RELAYCLIENT=; allow connection/);
      }
      expect(out).toMatch(/would remove 63 messages \(57 denied, 6 backscatter\)/);
      expect(out).toMatch(/203\.0\.113\.7: deny .*\n.*source scan.*34 queued messages in 3d/);
      expect(fs.existsSync(dir)).toBe(false);
    } finally {
      fs.rmSync(parent, { recursive: true, force: true });
    }
  });
});
