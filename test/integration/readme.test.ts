// The README is the front door: every qguard command it shows in a ```sh block is run here,
// in README order, as an admin would type it — in a network namespace of its own (so the
// firewall commands touch nothing of this machine), against a test database, with a real
// qmail queue (the processed fixture), temp rules paths, a stand-in curl, svc and qmail-queue.
// A line ending in a comment `# exit N` (or `# exit N-M`) must exit so; every other line 0.
// `sync-rules --watch` and `qguard web` run until stopped: they are run here for a few seconds,
// stopped with SIGTERM and must exit 0. The review page needs a PostgreSQL server: its lines are
// skipped only where the tests fall back to the embedded database (never in CI).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestDb, createTestDb } from '../helpers/db.js';
import { ROOT } from '../helpers/cli.js';
import { unpackFixture } from '../helpers/queue-builder.js';
import { haveRoot, haveTools } from '../helpers/tools.js';

const OURS = ['qguard', 'sync-rules', 'scan-queue', 'purge-queue', 'import-spamlist'];

interface ReadmeCommand {
  line: number;
  command: string;
  exit: [number, number];
}

/** Every command of ours in the README's ```sh blocks, with the exit it promises. */
export function readmeCommands(text: string): ReadmeCommand[] {
  const out: ReadmeCommand[] = [];
  const lines = text.split('\n');
  let inSh = false;
  let pending = '';
  let start = 0;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i];
    if (/^\s*```/.test(raw)) {
      inSh = !inSh && /^\s*```sh\s*$/.test(raw);
      pending = '';
      continue;
    }
    if (!inSh) continue;
    if (pending === '') start = i + 1;
    if (raw.endsWith('\\')) {
      pending += `${raw.slice(0, -1)} `;
      continue;
    }
    const full = (pending + raw).trim();
    pending = '';
    if (full === '' || full.startsWith('#')) continue;
    // A trailing comment starts at " #" outside quotes (our examples keep # out of quotes).
    const m = /^(.*?)\s+#\s?(.*)$/.exec(full);
    const command = (m ? m[1] : full).trim();
    const comment = m ? m[2] : '';
    const words = command.split(/\s+/);
    const ours = OURS.includes(words[0]) || (words[0] === 'curl' && /\|\s*import-spamlist\b/.test(command));
    if (!ours) continue;
    const e = /\bexit (\d+)(?:-(\d+))?/.exec(comment);
    out.push({ line: start, command, exit: e ? [Number(e[1]), Number(e[2] ?? e[1])] : [0, 0] });
  }
  return out;
}

const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const commands = readmeCommands(README);

describe('README commands', () => {
  it('shows commands of every program', () => {
    for (const p of OURS) expect(commands.some((c) => c.command.startsWith(p) || c.command.includes(`| ${p}`)), p).toBe(true);
  });
});

const RUN = haveRoot() && haveTools('ip', 'nft', 'tcprules', 'tcprulescheck', 'flock');
const NS = `qgreadme-${process.pid}`;

describe.skipIf(!RUN)('every README command, run in order', () => {
  let t: TestDb;
  let dir: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    t = await createTestDb();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-readme-'));
    const bin = path.join(dir, 'bin');
    fs.mkdirSync(bin);
    for (const b of OURS) {
      fs.writeFileSync(path.join(bin, b), `#!/bin/sh\nexec "${process.execPath}" "${path.join(ROOT, 'dist/bin', `${b}.js`)}" "$@"\n`, { mode: 0o755 });
    }
    // Stand-ins for what a mail server has: the network (curl), daemontools (svc), qmail-queue.
    fs.writeFileSync(
      path.join(bin, 'curl'),
      `#!/bin/sh\nfor a in "$@"; do url="$a"; done\ncase "$url" in\n  *v6*) printf '2001:db8:66::/48 ; SBL1\\n' ;;\n  *.json) printf '{"cidr":"203.0.113.0/25","sblid":"SBL2"}\\n{"type":"metadata","records":1}\\n' ;;\n  *block.txt) printf '# DShield\\n198.51.100.128\\t198.51.100.255\\t25\\n' ;;\n  *) printf '; list\\n203.0.113.0/25 ; SBL2\\n198.51.100.66\\n' ;;\nesac\n`,
      { mode: 0o755 },
    );
    fs.writeFileSync(path.join(bin, 'svc'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
    fs.writeFileSync(path.join(dir, 'qmail-queue'), '#!/bin/sh\ncat >/dev/null\nexit 0\n', { mode: 0o755 });
    const queue = unpackFixture('processed', path.join(dir, 'queue'));
    const u = new URL(t.url ?? 'postgresql://postgres@localhost/none');
    env = {
      ...t.env,
      // Inside the namespace 127.0.0.1 is the namespace's own: reach PostgreSQL by its socket.
      ...(t.url ? { QGUARD_DATABASE_URL: `postgresql://${u.username || 'postgres'}@/${u.pathname.slice(1)}?host=%2Fvar%2Frun%2Fpostgresql` } : {}),
      PATH: `${bin}:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin`,
      HOME: dir,
      QGUARD_QUEUE: queue,
      QGUARD_CONTROL: path.join(dir, 'control'),
      QGUARD_RULES: path.join(dir, 'tcp.smtp'),
      QGUARD_RULES_CDB: path.join(dir, 'tcp.smtp.cdb'),
      QGUARD_RULES_STATIC: path.join(dir, 'tcp.smtp.static'),
      QGUARD_QUARANTINE_DIR: path.join(dir, 'quarantine'),
      QGUARD_QMAIL_QUEUE: path.join(dir, 'qmail-queue'),
    };
    await execa('ip', ['netns', 'add', NS]);
    await execa('ip', ['netns', 'exec', NS, 'ip', 'link', 'set', 'lo', 'up']);
  });

  afterAll(async () => {
    await execa('ip', ['netns', 'delete', NS], { reject: false });
    await t?.drop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it.each(commands.map((c) => [`line ${c.line}: ${c.command}`, c] as const))('%s', async (_name, c) => {
    const watch = /--watch\b/.test(c.command) || /^qguard web(\s+--\S+)*$/.test(c.command);
    if (/\bqguard web\b/.test(c.command) && !t.url) return;
    // A long-running command is exec'd, so that SIGTERM reaches it and not only the shell.
    const run = execa('ip', ['netns', 'exec', NS, 'sh', '-c', watch ? `exec ${c.command}` : c.command], {
      env,
      extendEnv: false,
      reject: false,
      cwd: dir,
      timeout: watch ? undefined : 300_000,
    });
    if (watch) {
      await new Promise((r) => setTimeout(r, 4000));
      run.kill('SIGTERM');
    }
    const r = await run;
    const code = r.exitCode ?? -1;
    const detail = `exit ${code}\nstdout: ${String(r.stdout).slice(0, 2000)}\nstderr: ${String(r.stderr).slice(0, 2000)}`;
    expect(code >= c.exit[0] && code <= c.exit[1], detail).toBe(true);
    if (c.exit[0] === 0 && c.exit[1] === 0) expect(String(r.stderr), detail).not.toMatch(/fatal:/);
  });
});
