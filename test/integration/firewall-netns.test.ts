// The firewall against the real kernel, with real packets: a "server" network namespace with
// listeners on ports 25, 110 and 80, a "client" namespace with several source addresses on a
// veth pair. The firewall job runs INSIDE the server namespace; real TCP connects from the
// client must fail exactly for denied sources on 25 and 110, and succeed on 80 and for
// everyone else. Then the policy changes, the kernel is flushed behind our back, a firewall
// program fails — and the connections follow. Both backends (nft, ipset + iptables).
// The namespaces are ours (unique names) and always deleted; the host's own firewall and
// network are never touched.

import { type ResultPromise, execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, runCli } from '../helpers/cli.js';
import { type TestDb, createTestDb } from '../helpers/db.js';
import { haveRoot, haveTools } from '../helpers/tools.js';

const RUN = haveRoot() && haveTools('ip', 'nft', 'ipset', 'iptables', 'ip6tables', 'iptables-restore', 'iptables-save', 'tcprules', 'tcprulescheck');

/** Run a command inside a namespace (or on the host with ns null). Never throws. */
async function sh(ns: string | null, cmd: string[], opts: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {}) {
  const argv = ns ? ['netns', 'exec', ns, ...cmd] : cmd.slice(1);
  const r = await execa(ns ? 'ip' : cmd[0], argv, {
    reject: false,
    env: opts.env,
    extendEnv: opts.env === undefined,
    input: opts.input,
    timeout: opts.timeoutMs ?? 120_000,
  });
  return { code: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

async function must(ns: string | null, cmd: string[]) {
  const r = await sh(ns, cmd);
  if (r.code !== 0) throw new Error(`${cmd.join(' ')} (in ${ns ?? 'host'}): exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

// Addresses: the server has .1 / ::1 on each subnet (its own addresses: protected).
const SUBNETS_V4 = ['203.0.113', '198.18.0'];
const SUBNETS_V6 = ['2001:db8:bad:', '2001:db8:600d:'];
const CLIENTS = {
  denied: '198.18.0.9',
  inDenied24: '203.0.113.5', // denied by the /24
  allowedIn24: '203.0.113.7', // relay inside the denied /24
  relay: '198.18.0.20',
  unknown: '198.18.0.30',
  denied6: '2001:db8:bad::5', // denied by 2001:db8:bad::/48
  unknown6: '2001:db8:600d::5',
} as const;
type Client = keyof typeof CLIENTS;
const PORTS = [25, 110, 80];

function serverFor(src: string): string {
  if (src.includes(':')) return `${src.slice(0, src.lastIndexOf(':'))}:1`;
  return `${src.slice(0, src.lastIndexOf('.'))}.1`;
}

/** Listeners on 25, 110 and 80 (all addresses, v4 and v6): accept and close. */
const LISTENER = `
const net = require('node:net');
let n = 0;
for (const port of ${JSON.stringify(PORTS)}) {
  net.createServer((s) => { s.on('error', () => {}); s.end('hi\\n'); }).listen({ port, host: '::', ipv6Only: false }, () => {
    if (++n === ${PORTS.length}) console.log('ready');
  });
}`;

/** Try every (source, port) connect at once; print {"src port": "ok"|"timeout"|"ECONNREFUSED"...}. */
const PROBE = `
const net = require('node:net');
const probes = JSON.parse(process.argv[1]);
const out = {};
Promise.all(probes.map(([src, dst, port]) => new Promise((resolve) => {
  const s = net.connect({ host: dst, port, localAddress: src, timeout: 1500 });
  const done = (how) => { if (!(src + ' ' + port in out)) out[src + ' ' + port] = how; s.destroy(); resolve(); };
  s.once('connect', () => done('ok'));
  s.once('timeout', () => done('timeout'));
  s.on('error', (e) => done(e.code || 'error'));
}))).then(() => console.log(JSON.stringify(out)));`;

/** Two namespaces joined by a veth pair, listeners in the server one. */
class Lab {
  readonly srv: string;
  readonly cli: string;
  private listener: ResultPromise | null = null;

  constructor(tag: string) {
    this.srv = `qgfw-${process.pid}-${tag}-srv`;
    this.cli = `qgfw-${process.pid}-${tag}-cli`;
  }

  async up(): Promise<void> {
    const vs = `qg${process.pid % 100000}${this.srv.includes('-n-') ? 'n' : 'i'}s`;
    const vc = vs.replace(/s$/, 'c');
    await must(null, ['ip', 'netns', 'add', this.srv]);
    await must(null, ['ip', 'netns', 'add', this.cli]);
    // Create the pair inside the server namespace: the host never holds the interfaces.
    await must(this.srv, ['ip', 'link', 'add', vs, 'type', 'veth', 'peer', 'name', vc, 'netns', this.cli]);
    for (const [ns, dev] of [
      [this.srv, vs],
      [this.cli, vc],
    ]) {
      await must(ns, ['ip', 'link', 'set', 'lo', 'up']);
      await must(ns, ['ip', 'link', 'set', dev, 'up']);
    }
    for (const p of SUBNETS_V4) await must(this.srv, ['ip', 'addr', 'add', `${p}.1/24`, 'dev', vs]);
    for (const p of SUBNETS_V6) await must(this.srv, ['ip', '-6', 'addr', 'add', `${p}:1/64`, 'dev', vs, 'nodad']);
    for (const a of Object.values(CLIENTS)) {
      await must(this.cli, ['ip', ...(a.includes(':') ? ['-6', 'addr', 'add', `${a}/64`, 'dev', vc, 'nodad'] : ['addr', 'add', `${a}/24`, 'dev', vc])]);
    }
    this.listener = execa('ip', ['netns', 'exec', this.srv, process.execPath, '-e', LISTENER], { reject: false });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('listeners did not start')), 20_000);
      this.listener!.stdout!.on('data', (d: Buffer) => {
        if (d.toString().includes('ready')) {
          clearTimeout(t);
          resolve();
        }
      });
    });
  }

  /** How each client's connect to each port ends: `{denied: {25: 'timeout', 110: 'timeout', 80: 'ok'}, ...}` */
  async connects(): Promise<Record<Client, Record<number, string>>> {
    const probes = Object.values(CLIENTS).flatMap((src) => PORTS.map((port) => [src, serverFor(src), port]));
    const r = await must(this.cli, [process.execPath, '-e', PROBE, JSON.stringify(probes)]);
    const raw = JSON.parse(r) as Record<string, string>;
    const out = {} as Record<Client, Record<number, string>>;
    for (const [name, src] of Object.entries(CLIENTS) as [Client, string][]) {
      out[name] = Object.fromEntries(PORTS.map((p) => [p, raw[`${src} ${p}`]]));
    }
    return out;
  }

  /** Can each client reach each port? `{denied: {25: false, 110: false, 80: true}, ...}` */
  async reach(): Promise<Record<Client, Record<number, boolean>>> {
    const c = await this.connects();
    const out = {} as Record<Client, Record<number, boolean>>;
    for (const name of Object.keys(c) as Client[]) {
      out[name] = Object.fromEntries(PORTS.map((p) => [p, c[name][p] === 'ok']));
    }
    return out;
  }

  async down(): Promise<void> {
    if (this.listener?.pid) {
      try {
        process.kill(this.listener.pid);
      } catch {
        // already gone
      }
      await this.listener.catch(() => {});
    }
    // Deleting a namespace takes its interfaces, nft tables, ipsets and iptables rules along.
    await sh(null, ['ip', 'netns', 'delete', this.srv]);
    await sh(null, ['ip', 'netns', 'delete', this.cli]);
  }
}

/** What the policy should look like from the client: blocked on 25/110 for `blocked` only. */
function expectReach(got: Record<Client, Record<number, boolean>>, blocked: Client[]): void {
  const want = {} as Record<Client, Record<number, boolean>>;
  for (const c of Object.keys(CLIENTS) as Client[]) {
    const b = blocked.includes(c);
    want[c] = { 25: !b, 110: !b, 80: true };
  }
  expect(got).toEqual(want);
}

/** A PostgreSQL URL that works from inside a namespace: the Unix socket, not 127.0.0.1. */
function socketUrl(url: string): string {
  const u = new URL(url);
  const sock = process.env.QGUARD_TEST_PG_SOCKET ?? '/var/run/postgresql';
  return `postgresql://${u.username || 'postgres'}@/${u.pathname.slice(1)}?host=${encodeURIComponent(sock)}`;
}

describe.skipIf(!RUN).each(['nft', 'ipset'] as const)('firewall backend %s in network namespaces', (backend) => {
  const lab = new Lab(backend === 'nft' ? 'n' : 'i');
  let db: TestDb;
  let env: Record<string, string>;
  let tmp: string;
  let hostEnv: Record<string, string>;

  /** The real sync-rules, inside the server namespace, as cron runs it. */
  const sync = (extra: Record<string, string> = {}, args: string[] = []) =>
    sh(lab.srv, [process.execPath, path.join(ROOT, 'dist/bin/sync-rules.js'), ...args], { env: { ...env, ...extra } });
  const qguard = (args: string[], extra: Record<string, string> = {}) =>
    sh(lab.srv, [process.execPath, path.join(ROOT, 'dist/bin/qguard.js'), ...args], { env: { ...env, ...extra } });
  const admin = (args: string[]) => runCli('qguard', args, { env: hostEnv });

  beforeAll(async () => {
    db = await createTestDb();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qgfw-'));
    hostEnv = { ...db.env };
    const dbEnv: Record<string, string> = db.url ? { ...db.env, QGUARD_DATABASE_URL: socketUrl(db.url) } : { ...db.env };
    env = {
      PATH: '/usr/bin:/bin', // cron's PATH: nft, ipset and iptables are found in /usr/sbin anyway
      HOME: tmp,
      ...dbEnv,
      QGUARD_FIREWALL: backend,
      QGUARD_RULES: path.join(tmp, 'tcp.smtp'),
      QGUARD_RULES_CDB: path.join(tmp, 'tcp.smtp.cdb'),
      QGUARD_RULES_STATIC: path.join(tmp, 'tcp.smtp.static'),
      QGUARD_CONTROL: path.join(tmp, 'control'),
      QMAIL_HOME: path.join(tmp, 'qmail'),
    };
    await lab.up();
    for (const [verb, addr] of [
      ['deny', '203.0.113.0/24'],
      ['allow', '203.0.113.7'],
      ['deny', '198.18.0.9'],
      ['allow', '198.18.0.20'],
      ['deny', '2001:db8:bad::/48'],
    ]) {
      const r = await admin(['ip', verb, addr]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
    }
  });

  afterAll(async () => {
    await lab.down();
    await db?.drop();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('before any sync everyone reaches every port', async () => {
    expectReach(await lab.reach(), []);
  });

  it('after sync, denied sources fail on 25 and 110 only; allowed, relay, unknown and port 80 pass', async () => {
    const r = await sync();
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('');
    expect(r.code).toBe(0);
    expectReach(await lab.reach(), ['denied', 'inDenied24', 'denied6']);
  });

  /** Something that changes whenever our kernel objects are rewritten. */
  const kernelIdentity = async () => {
    if (backend === 'nft') {
      // Rule handles: a rewrite flushes the chain and adds the rules again, with new handles.
      const j = JSON.parse(await must(lab.srv, ['nft', '-t', '-j', 'list', 'ruleset', 'inet'])) as { nftables: Record<string, { handle?: number }>[] };
      return JSON.stringify(j.nftables.filter((o) => o.rule).map((o) => o.rule.handle));
    }
    // initval is drawn at random when a set is created: a swap brings a new one.
    const t = await must(lab.srv, ['ipset', 'list', '-t']);
    const save = async (t: string) => (await must(lab.srv, [t, '-t', 'filter'])).replace(/^#.*$/gm, '').replace(/\[\d+:\d+\]/g, '');
    return [...t.matchAll(/initval (\S+)/g)].map((m) => m[1]).join(',') + (await save('iptables-save')) + (await save('ip6tables-save'));
  };

  it('an unchanged run writes nothing to the kernel and says nothing', async () => {
    const before = await kernelIdentity();
    const r = await sync({}, ['--json']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const summary = JSON.parse(r.stdout) as { changed: boolean; firewall: { backend: string; v4: number; v6: number } };
    expect(summary.changed).toBe(false);
    expect(summary.firewall).toMatchObject({ backend, v4: 10, v6: 80 });
    expect(await kernelIdentity()).toBe(before);
  });

  it('qguard firewall status tells the backend, counts, ports and that it is in place', async () => {
    const r = await qguard(['firewall', 'status', '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s).toMatchObject({ backend, ports: [25, 110], action: 'drop', lastApply: { backend }, kernel: { backend, present: true, inPlace: true } });
    expect(s.kernel.v4).toBe(s.lastApply.v4);
    expect(s.kernel.v6).toBe(s.lastApply.v6);
    // The /24 minus .1 (the server's own, protected) and .7 (relay) is 9 CIDRs; plus 198.18.0.9.
    expect(s.lastApply.v4).toBe(10);
    expect(s.lastApply.v6).toBe(80); // 2001:db8:bad::/48 minus ::1 (the server's own): one CIDR per bit
    const text = await qguard(['firewall', 'status']);
    expect(text.stdout).toMatch(/kernel:\s+in place/);
  });

  it('follows a policy change', async () => {
    expect((await admin(['ip', 'rm', '198.18.0.9'])).code).toBe(0);
    expect((await admin(['ip', 'deny', '198.18.0.30'])).code).toBe(0);
    expect((await admin(['ip', 'allow', '2001:db8:bad::5'])).code).toBe(0);
    const r = await sync();
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expectReach(await lab.reach(), ['unknown', 'inDenied24']);
  });

  it('restores the set after a flush behind its back (a reboot)', async () => {
    await must(lab.srv, ['nft', 'flush', 'ruleset']); // iptables-nft rules live there too
    if (backend === 'ipset') {
      for (const t of ['iptables', 'ip6tables']) {
        await sh(lab.srv, [t, '-D', 'INPUT', '-j', 'QGUARD']);
        await sh(lab.srv, [t, '-F', 'QGUARD']);
        await sh(lab.srv, [t, '-X', 'QGUARD']);
      }
      await must(lab.srv, ['ipset', 'destroy']);
    }
    expectReach(await lab.reach(), []);
    const r = await sync();
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/firewall: .*missing.*restoring/);
    expectReach(await lab.reach(), ['unknown', 'inDenied24']);
    const again = await sync();
    expect(again.stderr).toBe('');
  });

  // nft only: its first apply into a kernel without our table flushes nothing (create table).
  if (backend === 'nft') it('a table that appears between the look and the first apply is replaced whole, not added to', async () => {
    await must(lab.srv, ['nft', 'flush', 'ruleset']);
    // A fake nft in front: before the first script reaches the real nft, our table appears
    // with an element qguard never denied (another writer, a restore of an old ruleset).
    const bin = path.join(tmp, 'fakebin-nft-race');
    fs.mkdirSync(bin, { recursive: true });
    const mark = path.join(bin, 'raced');
    fs.writeFileSync(
      path.join(bin, 'nft'),
      `#!/bin/sh\ncase "$*" in *-f*) if [ ! -e ${mark} ]; then : > ${mark}; printf '%s\\n' 'table inet qguard { set deny_v4 { type ipv4_addr; flags interval; elements = { 198.18.0.77 } }; }' | /usr/sbin/nft -f - || exit 9; fi;; esac\nexec /usr/sbin/nft "$@"\n`,
      { mode: 0o755 },
    );
    const r = await sync({ PATH: `${bin}:/usr/bin:/bin` });
    expect(fs.existsSync(mark)).toBe(true);
    expect(r.code).toBe(0);
    const set = await must(lab.srv, ['nft', 'list', 'set', 'inet', 'qguard', 'deny_v4']);
    expect(set).not.toContain('198.18.0.77');
    expect(set).toContain('203.0.113.0');
    expectReach(await lab.reach(), ['unknown', 'inDenied24']);
    expect((await sync()).stderr).toBe('');
  });

  it('QGUARD_FIREWALL_ACTION=reject answers with a TCP reset, on the configured ports only', async () => {
    const before = await lab.connects();
    expect(before.inDenied24[25]).toBe('timeout'); // drop: the connect times out
    const r = await sync({ QGUARD_FIREWALL_ACTION: 'reject', QGUARD_FIREWALL_PORTS: '25' });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const after = await lab.connects();
    expect(after.inDenied24).toEqual({ 25: 'ECONNREFUSED', 110: 'ok', 80: 'ok' });
    expect(after.unknown).toEqual({ 25: 'ECONNREFUSED', 110: 'ok', 80: 'ok' });
    expect(after.relay).toEqual({ 25: 'ok', 110: 'ok', 80: 'ok' });
    // Back to the defaults: drop on 25 and 110.
    expect((await sync()).code).toBe(0);
    expectReach(await lab.reach(), ['unknown', 'inDenied24']);
    expect((await lab.connects()).unknown[110]).toBe('timeout');
  });

  it('a failing firewall program exits 111 with its message and leaves the previous set in place', async () => {
    // A fake program in front on PATH: reads pass through to the real one, writes fail the
    // way a kernel refusal would.
    const bin = path.join(tmp, 'fakebin');
    fs.mkdirSync(bin, { recursive: true });
    const real = backend === 'nft' ? '/usr/sbin/nft' : '/usr/sbin/ipset';
    const name = backend === 'nft' ? 'nft' : 'ipset';
    const writes = backend === 'nft' ? '*-f*' : '*restore*';
    fs.writeFileSync(
      path.join(bin, name),
      `#!/bin/sh\ncase "$*" in ${writes}) echo "${name}: Error: Could not process rule: Operation not supported (fake)" >&2; exit 1;; esac\nexec ${real} "$@"\n`,
      { mode: 0o755 },
    );
    expect((await admin(['ip', 'deny', '198.18.0.20'])).code).toBe(0); // relay -> deny
    const r = await sync({ PATH: `${bin}:/usr/bin:/bin` });
    expect(r.code).toBe(111);
    expect(r.stderr).toMatch(new RegExp(`fatal: ${name} .*failed \\(exit 1\\): .*Operation not supported \\(fake\\)`));
    expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
    expectReach(await lab.reach(), ['unknown', 'inDenied24']);
    // The tcp.smtp part of the run still happened: the cdb denies the new address.
    const check = await sh(null, ['tcprulescheck', env.QGUARD_RULES_CDB], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TCPREMOTEIP: CLIENTS.relay } });
    expect(check.stdout).toContain('deny connection');
    // The real program works again: the next run catches up.
    const ok = await sync();
    expect(ok.code).toBe(0);
    expectReach(await lab.reach(), ['unknown', 'inDenied24', 'relay']);
  });

  // nft only: ipset's atomicity is the swap of a freshly filled set (the failing-program test above).
  if (backend === 'nft') it('a script the kernel refuses at its last line changes nothing: the whole script is one transaction', async () => {
    // The real nft, handed our script with one more line it will refuse (a set that does not
    // exist). The lines before it flush the table and add the new elements: none may take effect.
    const bin = path.join(tmp, 'fakebin-nft-tail');
    fs.mkdirSync(bin, { recursive: true });
    fs.writeFileSync(
      path.join(bin, 'nft'),
      `#!/bin/sh\ncase "$*" in *-f*) { cat; echo 'add element inet qguard no_such_set { 192.0.2.99 }'; } | /usr/sbin/nft "$@"; exit $?;; esac\nexec /usr/sbin/nft "$@"\n`,
      { mode: 0o755 },
    );
    const before = await must(lab.srv, ['nft', 'list', 'table', 'inet', 'qguard']);
    expect((await lab.connects()).denied[25]).toBe('ok'); // its deny was removed above
    expect((await admin(['ip', 'deny', '198.18.0.9'])).code).toBe(0);
    const r = await sync({ PATH: `${bin}:/usr/bin:/bin` });
    expect(r.code).toBe(111);
    expect(r.stderr).toMatch(/fatal: nft -f failed \(exit 1\): .*Error: No such file or directory/); // the kernel refused the batch
    expect(await must(lab.srv, ['nft', 'list', 'table', 'inet', 'qguard'])).toBe(before);
    expect((await lab.connects()).denied[25]).toBe('ok');
    const ok = await sync();
    expect(ok.code).toBe(0);
    expect((await lab.connects()).denied[25]).toBe('timeout');
    expect((await admin(['ip', 'rm', '198.18.0.9'])).code).toBe(0);
    expect((await sync()).code).toBe(0);
  });

  it('qguard firewall remove takes out our objects only, cleanly', async () => {
    // Someone else's table and INPUT rule must survive.
    await must(lab.srv, ['nft', 'add', 'table', 'inet', 'theirs']);
    await must(lab.srv, ['iptables', '-A', 'INPUT', '-p', 'tcp', '--dport', '2222', '-j', 'ACCEPT']);
    const r = await qguard(['firewall', 'remove'], { QGUARD_FIREWALL: 'none' });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expectReach(await lab.reach(), []);
    const tables = await must(lab.srv, ['nft', 'list', 'tables']);
    expect(tables).toContain('table inet theirs');
    expect(tables).not.toContain('qguard');
    expect(await must(lab.srv, ['ipset', 'list', '-n'])).toBe('');
    const save = await must(lab.srv, ['iptables-save', '-t', 'filter']);
    expect(save).not.toContain('QGUARD');
    expect(save).toContain('-A INPUT -p tcp -m tcp --dport 2222 -j ACCEPT');
    const s = JSON.parse((await qguard(['firewall', 'status', '--json'], { QGUARD_FIREWALL: 'none' })).stdout);
    expect(s).toMatchObject({ backend: 'none', lastApply: null, kernel: null });
    // With backend none, sync runs no firewall program at all (these would fail): nothing comes back.
    const bin = path.join(tmp, 'failbin');
    fs.mkdirSync(bin, { recursive: true });
    for (const p of ['nft', 'ipset', 'iptables', 'ip6tables', 'iptables-save', 'ip6tables-save', 'iptables-restore', 'ip6tables-restore']) {
      fs.writeFileSync(path.join(bin, p), '#!/bin/sh\necho "called $0" >&2\nexit 1\n', { mode: 0o755 });
    }
    const none = await sync({ QGUARD_FIREWALL: 'none', PATH: `${bin}:/usr/bin:/bin` });
    expect(none.stderr).toBe('');
    expect(none.code).toBe(0);
    expect(await must(lab.srv, ['nft', 'list', 'tables'])).not.toContain('qguard');
  });
});
