// IPv6 in tcp.smtp, against Debian's IPv6 ucspi-tcp (package ucspi-tcp-ipv6; it conflicts with
// ucspi-tcp, so .ci/run unpacks it into /opt/ucspi-tcp-ipv6 beside the installed one):
//   - its tcpserver, in a network namespace, sets TCPREMOTEIP as tcpserverText6 says, for
//     clients from many zero-heavy addresses; an IPv4 client on its IPv6 socket is a.b.c.d;
//   - random nested IPv6 policies (and IPv4 ones beside them) through sync-rules with its
//     tcprules (found to be the IPv6 one by itself), thousands of probes through its real
//     tcprulescheck: each answer is the decision (as `qguard ip why` gives it), or the default
//     line inside a network the plan left out, and exactly the decision where every network can
//     be written;
//   - real connections: an IPv6 relay client gets RELAYCLIENT, a denied one is refused, an IPv4
//     client gets its IPv4 rule;
//   - with the original tcprules nothing IPv6 is written, and QGUARD_TCPRULES_IPV6=on says why.

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { askTcprulescheck } from '../helpers/tcprulescheck.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { type TestDb, createTestDb } from '../helpers/db.js';
import { IN_CI, haveRoot, haveTools } from '../helpers/tools.js';
import { netOf, probes, randomAddr, randomPolicy6, rng } from '../helpers/ipv6-policy.js';
import type { Db } from '../../lib/db/connect.js';
import { type Net, formatNet, netContains } from '../../lib/net/address.js';
import { type PolicyRule, decide } from '../../lib/policy/decide.js';
import { planKeys6, tcpserverText6, unwritable } from '../../lib/net/tcprules-keys6.js';
import { protectedNets, resolveConfig } from '../../lib/config.js';
import { interfaceNets } from '../../lib/cli/load-config.js';

const BIN = process.env.QGUARD_TEST_UCSPI_IPV6 ?? '/opt/ucspi-tcp-ipv6/usr/bin';
const HAVE6 = ((): boolean => {
  if (['tcprules', 'tcprulescheck', 'tcpserver', 'tcpclient'].every((p) => fs.existsSync(path.join(BIN, p)))) return true;
  const msg = `the IPv6 ucspi-tcp is not in ${BIN} (.ci/run unpacks it: apt-get download ucspi-tcp-ipv6; dpkg-deb -x ucspi-tcp-ipv6_*.deb /opt/ucspi-tcp-ipv6)`;
  if (IN_CI) throw new Error(`${msg}; CI must run every test`);
  process.stderr.write(`skipping tests: ${msg}\n`);
  return false;
})();
const SEED = Number(process.env.QGUARD_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));
const hex = (a: bigint) => formatNet({ family: 6, addr: a, prefix: 128 }).replace(/\/128$/, '');

let tdb: TestDb;
let db: Db;
let dir: string;
beforeAll(async () => {
  if (!HAVE6) return;
  tdb = await createTestDb();
  db = await tdb.open();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-ipv6-'));
});
afterAll(async () => {
  await db?.close();
  await tdb?.drop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const env = (extra: Record<string, string> = {}) => ({
  ...tdb.env,
  QGUARD_RULES: path.join(dir, 'tcp.smtp'),
  QGUARD_RULES_CDB: path.join(dir, 'tcp.smtp.cdb'),
  QGUARD_RULES_STATIC: path.join(dir, 'none'),
  QGUARD_TCPRULES: path.join(BIN, 'tcprules'),
  QGUARD_TCPRULESCHECK: path.join(BIN, 'tcprulescheck'),
  QGUARD_HOST: 'test-host',
  ...extra,
});

async function setRules(rules: readonly PolicyRule[]): Promise<void> {
  await db.exec('DELETE FROM qguard.rules');
  // a source per rule: equal networks with other outcomes are kept, as from several lists
  await db.query(`INSERT INTO qguard.rules (network, action, source, reason) SELECT n, a, s, 'test' FROM unnest($1::cidr[], $2::text[], $3::text[]) AS u(n, a, s)`, [
    rules.map((x) => formatNet(x.net)),
    rules.map((x) => x.action),
    rules.map((_, i) => `t${i}`),
  ]);
}

const tcprulescheck = (cdb: string, ips: string[]) => askTcprulescheck(cdb, ips, path.join(BIN, 'tcprulescheck'));

const classify = (answer: string) => (answer.includes('deny connection') ? 'deny' : /RELAYCLIENT=/.test(answer) ? 'relay' : 'allow');
const expected = (d: string) => (d === 'deny' ? 'deny' : d === 'relay' ? 'relay' : 'allow');

describe.skipIf(!HAVE6)('IPv6 rules in tcp.smtp, with the IPv6 ucspi-tcp', () => {
  it(`every probed address gets its decision, or the default line inside a network left out (seed ${SEED})`, async () => {
    const r = rng(SEED);
    const config = resolveConfig({ flags: {}, env: env(), file: null, hostname: 'test-host' });
    const prot = protectedNets(config, interfaceNets());
    let probed = 0;
    let exactRounds = 0;
    try {
      for (let round = 0; round < 6; round++) {
        let rules = randomPolicy6(r, r.int(20, 80));
        // every other round only networks tcp.smtp can express: then it must be exact everywhere
        const writableOnly = round % 2 === 1;
        if (writableOnly) rules = rules.filter((x) => unwritable(x.net) === null);
        // IPv4 beside them, and this machine's own IPv6 addresses inside a deny rule
        const mine = prot.filter((n) => n.family === 6 && n.prefix === 128 && n.addr !== 1n && !netContains({ family: 6, addr: 0xfe80n << 112n, prefix: 10 }, n));
        const v4: PolicyRule[] = [{ net: { family: 4, addr: 0xc6336400n, prefix: 24 }, action: 'deny' }];
        const extra: PolicyRule[] = mine.length ? [{ net: netOf(mine[0].addr, 32), action: 'deny' }] : [];
        await setRules([...rules, ...v4, ...extra]);
        const run = await runCli('sync-rules', ['--force'], { env: env() });
        expect(run.code, run.stderr).toBe(0);
        const all = [...rules, ...extra];
        const plan = planKeys6({ rules: all, actionClass: [0, 1, 2], defaultClass: 3, protectedNets: prot });
        if (!writableOnly && plan.unwritten.length) expect(run.stderr).toMatch(/IPv6 network\(s\) left to the default line of .*tcp\.smtp/);
        if (writableOnly) expect(plan.unwritten).toEqual([]);
        const text = fs.readFileSync(path.join(dir, 'tcp.smtp'), 'utf8');
        expect(text).toMatch(/^# ---- IPv6 \(the IPv6 ucspi-tcp\): \d+ keys ----$/m);
        const addrs = [...probes(r, all, 400), ...mine.map((m) => m.addr)].filter((a) => a >> 32n !== 0xffffn);
        const texts = addrs.map(tcpserverText6);
        const answers = await tcprulescheck(path.join(dir, 'tcp.smtp.cdb'), texts);
        addrs.forEach((a, i) => {
          const ip: Net = { family: 6, addr: a, prefix: 128 };
          const want = expected(decide(ip, all, prot).decision);
          const got = classify(answers[i]);
          const where = `round ${round} ${hex(a)} (${texts[i]}): ${answers[i].trim()}`;
          if (got !== want || writableOnly) expect(got, where).toBe(writableOnly ? want : 'allow');
          if (got !== want) expect(plan.unwritten.some((u) => netContains(u.net, ip)), where).toBe(true);
        });
        // IPv4 unchanged beside them
        expect(classify((await tcprulescheck(path.join(dir, 'tcp.smtp.cdb'), ['198.51.100.7']))[0])).toBe('deny');
        // and `qguard ip why` says the same for a few of them
        for (const a of addrs.slice(0, 4)) {
          const w = await runCli('qguard', ['ip', 'why', hex(a), '--json'], { env: env() });
          expect((JSON.parse(w.stdout) as { decision: string }).decision).toBe(decide({ family: 6, addr: a, prefix: 128 }, all, prot).decision);
        }
        probed += addrs.length;
        if (writableOnly) exactRounds++;
      }
    } catch (err) {
      throw new Error(`seed ${SEED} (QGUARD_TEST_SEED=${SEED} reproduces): ${(err as Error).message}`, { cause: err });
    }
    expect(probed).toBeGreaterThan(1500);
    expect(exactRounds).toBe(3);
  });

  it('with the original tcprules nothing IPv6 is written; QGUARD_TCPRULES_IPV6=on with it fails and says where', async () => {
    if (!haveTools('tcprules')) return;
    await setRules([{ net: netOf(0x20010db8n << 96n, 32), action: 'deny' }]);
    const r = await runCli('sync-rules', ['--force'], { env: env({ QGUARD_TCPRULES: 'tcprules', QGUARD_TCPRULESCHECK: 'tcprulescheck' }) });
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readFileSync(path.join(dir, 'tcp.smtp'), 'utf8')).not.toMatch(/2001:db8/);
    const on = await runCli('sync-rules', ['--force'], { env: env({ QGUARD_TCPRULES: 'tcprules', QGUARD_TCPRULESCHECK: 'tcprulescheck', QGUARD_TCPRULES_IPV6: 'on' }) });
    expect(on.code).not.toBe(0);
    expect(on.stderr).toMatch(/tcprules.*unable to parse this line: 2001:db8::deny/);
    // and the installed files are the last good ones
    expect(fs.readFileSync(path.join(dir, 'tcp.smtp'), 'utf8')).not.toMatch(/2001:db8/);
  });
});

describe.skipIf(!HAVE6 || !haveRoot() || !haveTools('ip'))("the IPv6 tcpserver's own answers, in a network namespace", () => {
  const ns = `qg6-${process.pid}`;
  const sh = (cmd: string) => execFileSync('ip', ['netns', 'exec', ns, 'sh', '-c', cmd], { encoding: 'utf8', timeout: 60_000 });
  let server: ChildProcess | null = null;
  const r = rng(SEED + 1);
  const clients = Array.from({ length: 40 }, () => randomAddr(r));
  clients.push(0x20010db8_00000000_00010000_00000005n, 0x20010db8_00abcdef_00000000_00000001n, 0x20010db8_0005_0000_0000_0000_0000_0009n);
  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', ns]);
    sh('ip link set lo up');
    for (const a of new Set(clients)) sh(`ip addr add ${hex(a)}/128 dev lo nodad`);
    sh('ip addr add 10.9.9.9/32 dev lo');
  });
  afterAll(() => {
    if (server?.pid) {
      try {
        process.kill(-server.pid, 'SIGTERM');
      } catch {
        // gone
      }
    }
    execFileSync('ip', ['netns', 'del', ns]);
  });

  it('sets TCPREMOTEIP as tcpserverText6 does; an IPv4 client on its IPv6 socket is a.b.c.d', () => {
    const script = [
      `${BIN}/tcpserver -R -H -l0 0 7025 sh -c 'echo "$TCPREMOTEIP"' & s=$!; sleep 0.3`,
      `for a in "$@"; do ${BIN}/tcpclient -RHl0 -i "$a" ::1 7025 sh -c 'cat <&6'; done`,
      `${BIN}/tcpclient -RHl0 -i 10.9.9.9 10.9.9.9 7025 sh -c 'cat <&6'`,
      'kill $s',
    ].join('\n');
    const out = execFileSync('ip', ['netns', 'exec', ns, 'sh', '-c', script, 'sh', ...clients.map(hex)], { encoding: 'utf8', timeout: 60_000 });
    expect(out.trim().split('\n')).toEqual([...clients.map(tcpserverText6), '10.9.9.9']);
  });

  it("sync-rules' cdb as its tcpserver uses it: relay, deny and the IPv4 rule on one IPv6 listener", async () => {
    const relay = netOf(0x20010db8_00abcdef_00000000_00000001n, 48);
    const deny = netOf(0x20010db8_0005_0000_0000_0000_0000_0009n, 32 + 16);
    await setRules([
      { net: relay, action: 'relay' },
      { net: deny, action: 'deny' },
      { net: { family: 4, addr: 0x0a090909n, prefix: 32 }, action: 'deny' },
    ]);
    const run = await runCli('sync-rules', ['--force'], { env: env({ QGUARD_PROTECT: '' }) });
    expect(run.code, run.stderr).toBe(0);
    const cdb = path.join(dir, 'tcp.smtp.cdb');
    const script = [
      `${BIN}/tcpserver -R -H -l0 -x ${cdb} 0 7026 sh -c 'echo "ok ${'$'}{RELAYCLIENT+relay}"' & s=$!; sleep 0.3`,
      `for a in "$@"; do printf '%s ' "$a"; ${BIN}/tcpclient -RHl0 -i "$a" ::1 7026 sh -c 'cat <&6; echo' 2>&1 | head -1; done`,
      `printf '10.9.9.9 '; ${BIN}/tcpclient -RHl0 -i 10.9.9.9 10.9.9.9 7026 sh -c 'cat <&6; echo' 2>&1 | head -1`,
      'kill $s',
    ].join('\n');
    const out = execFileSync('ip', ['netns', 'exec', ns, 'sh', '-c', script, 'sh', hex(0x20010db8_00abcdef_00000000_00000001n), hex(0x20010db8_0005_0000_0000_0000_0000_0009n), hex(0x20010db8_00000000_00010000_00000005n)], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    const lines = out.replace(/\n$/, '').split('\n');
    expect(lines[0]).toMatch(/^2001:db8:ab:cdef::1 ok relay$/);
    expect(lines[1]).toMatch(/^2001:db8:5::9 $/); // refused: the connection closes at once
    expect(lines[2]).toMatch(/^2001:db8::1:0:0:5 ok $/);
    expect(lines[3]).toMatch(/^10\.9\.9\.9 $/);
  });
});
