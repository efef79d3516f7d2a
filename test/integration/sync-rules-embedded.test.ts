// sync-rules on the embedded database (PGlite, no server): the basic run writes the same exact
// cdb (the rules are read as one aggregated text instead of COPY), the unchanged run does
// nothing, and --watch is refused with a clear message (no LISTEN/NOTIFY between processes).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestDb, createTestDb } from '../helpers/db.js';
import { runCli } from '../helpers/cli.js';
import { haveTools } from '../helpers/tools.js';

const TOOLS = haveTools('tcprules', 'tcprulescheck');

let tdb: TestDb;
let dir: string;
let env: Record<string, string>;

function check(ip: string): string {
  const out = execFileSync('tcprulescheck', [path.join(dir, 'tcp.smtp.cdb')], { env: { TCPREMOTEIP: ip }, encoding: 'utf8' });
  if (out.includes('deny connection')) return 'deny';
  return /RELAYCLIENT=/.test(out) ? 'relay' : 'allow';
}

beforeAll(async () => {
  if (!TOOLS) return;
  tdb = await createTestDb({ kind: 'embedded' });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-sync-emb-'));
  env = {
    ...tdb.env,
    QGUARD_RULES: path.join(dir, 'tcp.smtp'),
    QGUARD_RULES_CDB: path.join(dir, 'tcp.smtp.cdb'),
    QGUARD_RULES_STATIC: path.join(dir, 'tcp.smtp.static'),
    QGUARD_CONTROL: dir,
    QGUARD_MANAGE_RCPTHOSTS: '1',
  };
  const db = await tdb.open();
  try {
    await db.query(
      `INSERT INTO qguard.rules (network, action) VALUES
         ('203.0.113.0/24', 'deny'), ('203.0.113.5/32', 'relay'), ('10.16.0.0/12', 'deny'),
         ('10.20.0.0/16', 'trust'), ('2001:db8::/32', 'deny')`,
    );
    await db.query("INSERT INTO qguard.domains (name) VALUES ('example.net'), ('.example.net')");
  } finally {
    await db.close(); // PGlite serves one process at a time: let the CLI have it
  }
});

afterAll(async () => {
  await tdb?.drop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!TOOLS)('sync-rules on the embedded database', () => {
  it('writes tcp.smtp, the cdb and rcpthosts; the next run does nothing', async () => {
    const r = await runCli('sync-rules', ['--json'], { env });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ changed: true, rules: { relay: 1, trust: 1, deny: 3 }, rcpthosts: 2 });
    const text = fs.readFileSync(path.join(dir, 'tcp.smtp'), 'utf8');
    expect(text).toContain('\n10.16-19.:deny\n10.21-31.:deny\n203.0.113.:deny\n203.0.113.5:allow,RELAYCLIENT=""\n');
    expect(check('203.0.113.5')).toBe('relay');
    expect(check('203.0.113.6')).toBe('deny');
    expect(check('10.17.1.1')).toBe('deny');
    expect(check('10.20.1.1')).toBe('allow');
    expect(check('10.32.1.1')).toBe('allow');
    expect(fs.readFileSync(path.join(dir, 'rcpthosts'), 'utf8')).toBe('.example.net\nexample.net\n');
    const mtime = fs.statSync(path.join(dir, 'tcp.smtp.cdb')).mtimeMs;
    const again = await runCli('sync-rules', ['--json'], { env });
    expect(JSON.parse(again.stdout)).toMatchObject({ changed: false, wrote: [] });
    expect(fs.statSync(path.join(dir, 'tcp.smtp.cdb')).mtimeMs).toBe(mtime);
  });

  it('refuses --watch: it needs a PostgreSQL server', async () => {
    const r = await runCli('sync-rules', ['--watch'], { env });
    expect(r.code).toBe(100);
    expect(r.stderr).toMatch(/^sync-rules: fatal: --watch needs a PostgreSQL server/);
  });
});
