// A unified diff of a file and the text that would replace it, through diff(1): what
// `sync-rules --dry-run` prints. A missing file diffs as empty.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runProgram } from './run-program.js';

/** `diff -u` of `oldFile` (as it is now) and `newText`, labelled with `label`. */
export async function unifiedDiff(label: string, oldFile: string, newText: string | Buffer): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-diff-'));
  try {
    const nf = path.join(dir, 'new');
    fs.writeFileSync(nf, newText);
    const of = fs.existsSync(oldFile) ? oldFile : '/dev/null';
    const r = await runProgram('diff', ['-u', '--label', `${label} (now)`, '--label', `${label} (new)`, of, nf], {
      okExitCodes: [0, 1],
    });
    return r.stdout;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
