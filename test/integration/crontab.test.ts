// crontab.example is what admins copy: parse it, check it keeps the seed's rhythm, and run
// every command line as cron would (sh -c, the file's PATH and SHELL) in a sandbox: a temp
// queue, temp rules paths, a test database, a stand-in curl that serves sample lists. Every
// line must succeed and print nothing (cron mails any output).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestDb, createTestDb } from '../helpers/db.js';
import { ROOT } from '../helpers/cli.js';
import { QueueBuilder, networkMessage, plainMessage } from '../helpers/queue-builder.js';
import { haveTools } from '../helpers/tools.js';

interface CronLine {
  schedule: string[];
  command: string;
}

/** Parse a crontab: environment lines and job lines (five time fields, then the command). */
function parseCrontab(text: string): { env: Record<string, string>; jobs: CronLine[]; problems: string[] } {
  const env: Record<string, string> = {};
  const jobs: CronLine[] = [];
  const problems: string[] = [];
  const field = /^(\*|\d+(-\d+)?)(\/\d+)?(,(\*|\d+(-\d+)?)(\/\d+)?)*$/;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const e = /^([A-Z_]+)=(.*)$/.exec(line);
    if (e) {
      env[e[1]] = e[2];
      return;
    }
    const parts = line.split(/\s+/);
    const schedule = parts.slice(0, 5);
    if (parts.length < 6 || !schedule.every((f) => field.test(f))) {
      problems.push(`line ${i + 1}: not a cron line: ${line}`);
      return;
    }
    jobs.push({ schedule, command: line.replace(/^(\S+\s+){5}/, '') });
  });
  return { env, jobs, problems };
}

const text = fs.readFileSync(path.join(ROOT, 'crontab.example'), 'utf8');
const crontab = parseCrontab(text);

describe('crontab.example', () => {
  it('parses, with PATH and MAILTO', () => {
    expect(crontab.problems).toEqual([]);
    expect(crontab.env.PATH).toMatch(/\/usr\/local\/bin/);
    expect(crontab.env.PATH).toMatch(/\/usr\/sbin/); // nft, ipset, iptables
    expect(crontab.env.MAILTO).toBeTruthy();
  });

  it("keeps the seed's rhythm: every minute scan-queue then sync-rules; daily purge; daily lists", () => {
    const everyMinute = crontab.jobs.filter((j) => j.schedule.every((f) => f === '*'));
    expect(everyMinute).toHaveLength(1);
    const cmd = everyMinute[0].command;
    expect(cmd.indexOf('scan-queue')).toBeGreaterThanOrEqual(0);
    expect(cmd.indexOf('sync-rules')).toBeGreaterThan(cmd.indexOf('scan-queue'));
    const daily = (j: CronLine) => /^\d+$/.test(j.schedule[0]) && /^\d+$/.test(j.schedule[1]) && j.schedule.slice(2).every((f) => f === '*');
    expect(crontab.jobs.filter((j) => daily(j) && /^purge-queue\b/.test(j.command))).toHaveLength(1);
    const imports = crontab.jobs.filter((j) => daily(j) && /import-spamlist/.test(j.command));
    expect(imports.length).toBeGreaterThanOrEqual(2);
    for (const j of imports) expect(j.command).toMatch(/^curl -fsS https:\/\/\S+ \| import-spamlist --source [a-z0-9-]+ --replace/);
  });
});

describe.skipIf(!haveTools('tcprules', 'tcprulescheck', 'flock'))('every crontab.example line, run as cron runs it', () => {
  let t: TestDb;
  let dir: string;
  let env: Record<string, string>;
  let queue: QueueBuilder;

  beforeAll(async () => {
    t = await createTestDb();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-cron-'));
    const bin = path.join(dir, 'bin');
    fs.mkdirSync(bin);
    for (const b of ['qguard', 'sync-rules', 'scan-queue', 'purge-queue', 'import-spamlist']) {
      fs.writeFileSync(path.join(bin, b), `#!/bin/sh\nexec "${process.execPath}" "${path.join(ROOT, 'dist/bin', `${b}.js`)}" "$@"\n`, { mode: 0o755 });
    }
    // The stand-in curl answers each URL with a small list in that list's own format.
    fs.writeFileSync(
      path.join(bin, 'curl'),
      `#!/bin/sh
for a in "$@"; do url="$a"; done
case "$url" in
  *dropv6*) printf '; Spamhaus DROPv6\\n2001:db8:66::/48 ; SBL1\\n' ;;
  *drop.txt) printf '; Spamhaus DROP List\\n203.0.113.0/25 ; SBL2\\n198.51.100.128/26 ; SBL3\\n' ;;
  *) printf '# list\\n198.51.100.66\\n198.51.100.67\\n' ;;
esac
`,
      { mode: 0o755 },
    );
    // A queue with a spammer over the threshold, its backscatter, and a partner's mail.
    queue = QueueBuilder.create({ dir: path.join(dir, 'queue') });
    for (let i = 0; i < 25; i++) {
      queue.add({
        mess: networkMessage({ ip: '198.51.100.14', helo: 'spam.example', pid: 5000 + i, content: plainMessage({ subject: `offer ${i}` }) }),
        sender: `x${i}@spam.example`,
        recipients: ['nobody@remote.example'],
      });
    }
    queue.add({ mess: networkMessage({ ip: '192.0.2.80', remoteHost: 'mail.partner.example', pid: 6000 }), recipients: ['alice@example.net'] });
    env = {
      ...t.env,
      PATH: `${bin}:${crontab.env.PATH}`,
      SHELL: crontab.env.SHELL ?? '/bin/sh',
      HOME: dir,
      QGUARD_QUEUE: queue.dir,
      QGUARD_RULES: path.join(dir, 'tcp.smtp'),
      QGUARD_RULES_CDB: path.join(dir, 'tcp.smtp.cdb'),
      QGUARD_RULES_STATIC: path.join(dir, 'tcp.smtp.static'),
      QGUARD_CONTROL: path.join(dir, 'control'),
      QGUARD_QUARANTINE_DIR: path.join(dir, 'quarantine'),
      QGUARD_QMAIL_STOP: 'false',
      QGUARD_QMAIL_START: 'false',
    };
  });
  afterAll(async () => {
    await t?.drop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('each line succeeds and prints nothing', async () => {
    // Lists first, then the minute, then the day, as a day of cron would have it.
    const order = [
      ...crontab.jobs.filter((j) => /import-spamlist/.test(j.command)),
      ...crontab.jobs.filter((j) => /scan-queue/.test(j.command)),
      ...crontab.jobs.filter((j) => /^purge-queue/.test(j.command)),
    ];
    expect(order).toHaveLength(crontab.jobs.length);
    for (const j of order) {
      const r = await execa(env.SHELL, ['-c', j.command], { env, extendEnv: false, reject: false, cwd: dir });
      expect({ command: j.command, code: r.exitCode, stdout: r.stdout, stderr: r.stderr }).toEqual({
        command: j.command,
        code: 0,
        stdout: '',
        stderr: '',
      });
    }
    // What the day did: the lists and the scan denied, sync-rules published, purge removed.
    const why = async (ip: string) =>
      JSON.parse((await execa('qguard', ['ip', 'why', ip, '--json'], { env, extendEnv: false })).stdout).decision;
    expect(await why('203.0.113.9')).toBe('deny');
    expect(await why('198.51.100.14')).toBe('deny');
    expect(await why('192.0.2.80')).toBe('default');
    const rules = fs.readFileSync(env.QGUARD_RULES, 'utf8');
    expect(rules).toMatch(/^198\.51\.100\.14:deny$/m);
    const check = await execa('tcprulescheck', [env.QGUARD_RULES_CDB], { env: { TCPREMOTEIP: '198.51.100.14' } });
    expect(check.stdout).toMatch(/deny connection/);
    const left = fs.readdirSync(path.join(queue.dir, 'info')).flatMap((s) => fs.readdirSync(path.join(queue.dir, 'info', s)));
    expect(left).toHaveLength(1); // only the partner's message stays
  });
});
