// `qguard demo`: the main job end to end, for a newcomer, with nothing installed but qguard:
// a fresh embedded database and a sample queue in a temp directory, then the real programs
// one after the other — migrate, a partner and a login, a public spam list, scan-queue,
// queue top, sync-rules (compiled with tcprules when installed, shown as text otherwise),
// purge-queue --dry-run, ip why — printing what each did. Touches nothing outside the temp
// directory (no qmail, no root, no firewall), and removes it unless --keep.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RunContext } from '../context.js';
import { TemporaryError } from '../errors.js';
import { runProgram } from '../io/run-program.js';
import { LISTED_IP, SAMPLE_SENDERS, SAMPLE_SPAM_LIST, writeSampleQueue } from '../demo/sample-queue.js';

/** The executables: beside this code when bundled (dist/bin/qguard.js), else ../../bin from lib/admin. */
const HERE = path.dirname(fileURLToPath(import.meta.url));
const BIN_DIR = path.basename(HERE) === 'bin' ? HERE : path.resolve(HERE, '../../bin');

/** Is a program on PATH? (tcprules is optional for the demo.) */
function onPath(program: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d !== '' && fs.existsSync(path.join(d, program)));
}

export async function demo(ctx: RunContext, opts: { keep?: boolean; dir?: string }): Promise<void> {
  const dir = opts.dir ? path.resolve(opts.dir) : fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-demo-'));
  fs.mkdirSync(dir, { recursive: true });
  const out = (text = '') => ctx.print(`${text}\n`);
  const env: Record<string, string | undefined> = {
    QGUARD_CONFIG: '/dev/null',
    QGUARD_DATABASE_URL: undefined,
    DATABASE_URL: undefined,
    PGHOST: undefined,
    PGDATABASE: undefined,
    PGSERVICE: undefined,
    QGUARD_STATE_DIR: path.join(dir, 'state'),
    QGUARD_HOST: 'demo-mx',
    QGUARD_QUEUE: path.join(dir, 'queue'),
    QGUARD_CONTROL: path.join(dir, 'control'),
    QGUARD_RULES: path.join(dir, 'tcp.smtp'),
    QGUARD_RULES_CDB: path.join(dir, 'tcp.smtp.cdb'),
    QGUARD_RULES_STATIC: path.join(dir, 'tcp.smtp.static'),
    QGUARD_FIREWALL: 'none',
    QGUARD_QMAIL_STOP: 'true',
    QGUARD_QMAIL_START: 'true',
    QGUARD_SYSLOG: '0',
  };
  for (const k of Object.keys(process.env)) if (k.startsWith('QGUARD_') && !(k in env)) env[k] = undefined;

  /** Run one of our programs as an admin would, show the command and what it said. */
  const run = async (bin: string, args: string[], input?: string): Promise<string> => {
    out(`$ ${bin} ${args.map((a) => (/\s/.test(a) ? `'${a}'` : a)).join(' ')}${input !== undefined ? ' < sample-list.txt' : ''}`);
    const r = await runProgram(process.execPath, [path.join(BIN_DIR, `${bin}.js`), ...args], {
      input,
      env,
      okExitCodes: [0, 1, 2, 100, 111],
      timeoutMs: 300_000,
    });
    for (const line of r.stderr.split('\n').filter(Boolean)) out(`  ${line}`);
    if (r.exitCode !== 0) throw new TemporaryError(`${bin} ${args.join(' ')} exited ${r.exitCode}`);
    return r.stdout;
  };
  const json = async (bin: string, args: string[], input?: string) => JSON.parse(await run(bin, args, input));

  try {
    out(`qguard demo in ${dir}: an embedded database and a sample queue; nothing else is touched.`);
    out();
    out('1. The database (embedded PostgreSQL in the state directory).');
    await run('qguard', ['db', 'migrate']);
    out();

    const n = writeSampleQueue(path.join(dir, 'queue'));
    out(`2. A sample qmail queue of ${n} messages (${path.join(dir, 'queue')}):`);
    for (const s of SAMPLE_SENDERS) out(`   ${s.ip.padEnd(15)} ${String(s.count).padStart(3)} messages  ${s.role}`);
    out(`   ${LISTED_IP.padEnd(15)}   6 bounces    spam to missing users, bounced to forged senders (backscatter)`);
    out(`   ${'(local)'.padEnd(15)}   3 messages  injected by a local user`);
    out();

    out('3. A partner is trusted; an intranet user logs in and may relay.');
    await run('qguard', ['ip', 'trust', '198.51.100.150', '--reason', 'partner MTA']);
    await run('qguard', ['ip', 'allow', '198.51.100.23', '--user', 'alice', '--for', '8h', '--source', 'login']);
    out();

    out('4. A public spam list arrives through a pipe (guards refuse what must never be denied).');
    const imp = await json('import-spamlist', ['--source', 'demo-drop', '--max-invalid', '20', '--json'], SAMPLE_SPAM_LIST);
    out(`   read ${imp.read} lines: ${imp.valid} valid, ${imp.invalid} invalid, ${imp.refused} refused, ${imp.added} added`);
    out();

    out('5. scan-queue reads every queued message, finds who sent it, and denies the IPs at the threshold (20 in 3 days).');
    const scan = await json('scan-queue', ['--json']);
    out(`   scanned ${scan.scanned} messages; denied: ${scan.denied.length ? scan.denied.join(', ') : 'none'}`);
    for (const nd of (scan.notDenied ?? []) as { ip: string; why?: string; reason?: string }[]) {
      out(`   not denied: ${nd.ip} (${nd.why ?? nd.reason ?? 'exempt'})`);
    }
    out();

    out('6. Who fills the queue (the screen an admin reads before denying by hand):');
    const top = (await json('qguard', ['queue', 'top', '--json'])) as { ip: string; count: number; decision: string; sample: string }[];
    for (const row of top) out(`   ${row.ip.padEnd(15)} ${String(row.count).padStart(3)}  ${row.decision.padEnd(7)} ${row.sample ?? ''}`);
    out();

    if (onPath('tcprules') && onPath('tcprulescheck')) {
      out('7. sync-rules writes tcp.smtp and compiles tcp.smtp.cdb with tcprules:');
      const sync = await json('sync-rules', ['--json']);
      out(`   rules: ${JSON.stringify(sync.rules)}, ${sync.keys} keys written`);
      const text = fs.readFileSync(path.join(dir, 'tcp.smtp'), 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
      for (const line of text.slice(0, 12)) out(`   ${line}`);
      if (text.length > 12) out(`   ... (${text.length} lines)`);
      for (const ip of ['203.0.113.7', '198.51.100.23', '198.51.100.150']) {
        const r = await runProgram('tcprulescheck', [path.join(dir, 'tcp.smtp.cdb')], { env: { TCPREMOTEIP: ip } });
        out(`   tcpserver for ${ip}: ${r.stdout.trim().split('\n').filter((l) => !l.startsWith('rule') && !l.startsWith('default')).join('; ')}`);
      }
    } else {
      out('7. sync-rules (tcprules is not installed here: the text it would compile):');
      const diff = await run('sync-rules', ['--dry-run']);
      for (const line of diff.split('\n').filter((l) => /^\+[^+]/.test(l)).slice(0, 14)) out(`   ${line.slice(1)}`);
      out('   (apt-get install ucspi-tcp to compile it into tcp.smtp.cdb)');
    }
    out();

    out('8. purge-queue --dry-run: what the daily purge would take out of the queue (nothing is removed).');
    const purge = await json('purge-queue', ['--dry-run', '--json']);
    const byReason = new Map<string, number>();
    for (const m of (purge.messages ?? []) as { reason?: string; policy?: string }[]) {
      const key = m.policy ?? m.reason ?? 'selected';
      byReason.set(key, (byReason.get(key) ?? 0) + 1);
    }
    out(`   would remove ${purge.selected} messages${byReason.size ? ` (${[...byReason].map(([k, v]) => `${v} ${k}`).join(', ')})` : ''}; the partner's, the intranet's and local mail stay`);
    out();

    out('9. Why is an address treated the way it is?');
    for (const ip of ['203.0.113.7', '198.51.100.150']) {
      for (const line of (await run('qguard', ['ip', 'why', ip])).split('\n').filter(Boolean)) out(`   ${line}`);
    }
    out();
    out(opts.keep ? `Kept ${dir}: rerun the commands above with QGUARD_STATE_DIR=${path.join(dir, 'state')}.` : 'Done; the temp directory is removed (--keep keeps it).');
  } finally {
    if (!opts.keep) fs.rmSync(dir, { recursive: true, force: true });
  }
}
