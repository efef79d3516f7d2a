// `qguard db|ip|domain` as an admin runs them: the built executable, real database, exit codes,
// stderr text, JSON on stdout, and "nothing written" for every refused input.

import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestDb, createTestDb } from '../helpers/db.js';
import { runCli } from '../helpers/cli.js';

let t: TestDb;
const q = (args: string[], env: Record<string, string> = {}) => runCli('qguard', args, { env: { ...t.env, ...env } });

/** Rule and audit row counts: what "nothing written" is checked against. */
async function footprint(): Promise<string> {
  const db = await t.open();
  try {
    const r = await db.query<{ rules: number; audit: number; seq: number }>(
      'SELECT (SELECT count(*) FROM qguard.rules) AS rules, (SELECT count(*) FROM qguard.audit) AS audit, (SELECT change_seq FROM qguard.state) AS seq',
    );
    return JSON.stringify(r.rows[0]);
  } finally {
    await db.close();
  }
}

beforeAll(async () => {
  t = await createTestDb();
});
afterAll(async () => {
  await t?.drop();
});

describe('qguard ip: the issue scenario', () => {
  it('deny a /24, allow one address inside it for 1h, and ask why', async () => {
    for (const args of [
      ['ip', 'deny', '203.0.113.0/24'],
      ['ip', 'allow', '203.0.113.5', '--for', '1h'],
    ]) {
      const r = await q(args);
      expect(r, args.join(' ')).toMatchObject({ code: 0, stdout: '', stderr: '' });
    }
    const why = async (ip: string) => {
      const r = await q(['ip', 'why', ip, '--json']);
      expect(r.code).toBe(0);
      return JSON.parse(r.stdout);
    };
    const relay = await why('203.0.113.5');
    expect(relay).toMatchObject({ ip: '203.0.113.5', decision: 'relay', rule: { cidr: '203.0.113.5/32', action: 'relay', source: 'manual' } });
    expect(Date.parse(relay.rule.expiresAt) - Date.now()).toBeGreaterThan(3500_000);
    expect(relay.others.map((o: { cidr: string }) => o.cidr)).toEqual(['203.0.113.0/24']);
    expect(await why('203.0.113.6')).toMatchObject({ decision: 'deny', rule: { cidr: '203.0.113.0/24', action: 'deny', expiresAt: null } });
    expect(await why('198.51.100.1')).toMatchObject({ decision: 'default', rule: null, others: [] });
    const text = await q(['ip', 'why', '203.0.113.5']);
    expect(text.stdout).toMatch(/^203\.0\.113\.5: relay/);
    expect(text.stdout).toMatch(/also: 203\.0\.113\.0\/24 deny/);
  });

  it('lists rules as JSON with the documented fields', async () => {
    const r = await q(['ip', 'ls', '--json']);
    expect(r.code).toBe(0);
    const rules = JSON.parse(r.stdout);
    expect(rules).toHaveLength(2);
    expect(Object.keys(rules[0]).sort()).toEqual(['action', 'cidr', 'createdAt', 'expiresAt', 'host', 'reason', 'source', 'who'].sort());
    const deny = JSON.parse((await q(['ip', 'ls', '--action', 'deny', '--json'])).stdout);
    expect(deny.map((x: { cidr: string }) => x.cidr)).toEqual(['203.0.113.0/24']);
  });

  it('warns that relay/trust rules inside a new deny stay allowed', async () => {
    const r = await q(['ip', 'deny', '203.0.0.0/16', '--reason', 'whole block']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/qguard: warning: 203\.0\.0\.0\/16 contains 1 relay\/trust rule\(s\) that stay allowed: 203\.0\.113\.5 relay/);
    expect((await q(['ip', 'rm', '203.0.0.0/16'])).code).toBe(0);
  });

  it('stores ::ffff:1.2.3.4 as 1.2.3.4, and rm finds it by either spelling', async () => {
    expect((await q(['ip', 'trust', '::ffff:192.0.2.80', '--reason', 'partner'])).code).toBe(0);
    const why = JSON.parse((await q(['ip', 'why', '192.0.2.80', '--json'])).stdout);
    expect(why).toMatchObject({ decision: 'trust', rule: { cidr: '192.0.2.80/32', reason: 'partner' } });
    expect((await q(['ip', 'rm', '::ffff:192.0.2.80'])).code).toBe(0);
    expect(JSON.parse((await q(['ip', 'why', '192.0.2.80', '--json'])).stdout).decision).toBe('default');
  });

  it('several sources may list one network; rm --source removes only that one', async () => {
    await q(['ip', 'deny', '198.51.100.0/24', '--source', 'list:a']);
    await q(['ip', 'deny', '198.51.100.0/24', '--source', 'list:b']);
    expect((await q(['ip', 'rm', '198.51.100.0/24', '--source', 'list:a'])).code).toBe(0);
    const left = JSON.parse((await q(['ip', 'ls', '--json'])).stdout).filter((r: { cidr: string }) => r.cidr === '198.51.100.0/24');
    expect(left.map((r: { source: string }) => r.source)).toEqual(['list:b']);
    const missing = await q(['ip', 'rm', '198.51.100.7']);
    expect(missing.code).toBe(100);
    expect(missing.stderr).toMatch(/no rule for 198\.51\.100\.7\/32; it is inside 198\.51\.100\.0\/24 deny \(list:b\)/);
  });

  it('the login source goes through the intranet door', async () => {
    expect((await q(['ip', 'allow', '192.0.2.99', '--user', 'alice', '--for', '8h', '--source', 'login'])).code).toBe(0);
    const why = JSON.parse((await q(['ip', 'why', '192.0.2.99', '--json'])).stdout);
    expect(why.rule).toMatchObject({ source: 'login', who: 'alice', action: 'relay' });
    expect((await q(['ip', 'allow', '192.0.2.0/24', '--user', 'alice', '--for', '8h', '--source', 'login'])).code).toBe(2);
  });

  it('scopes a rule to one mail server with --host', async () => {
    expect((await q(['ip', 'deny', '100.64.0.200', '--host', 'mx2'])).code).toBe(0);
    expect(JSON.parse((await q(['ip', 'why', '100.64.0.200', '--json', '--host', 'mx2'])).stdout).decision).toBe('deny');
    expect(JSON.parse((await q(['ip', 'why', '100.64.0.200', '--json'])).stdout).decision).toBe('default');
    expect(JSON.parse((await q(['ip', 'why', '100.64.0.200', '--json'], { QGUARD_HOST: 'mx2' })).stdout).decision).toBe('deny');
  });
});

describe('qguard ip: bad input is refused, named, and changes nothing', () => {
  const cases: [string[], number, RegExp][] = [
    [['ip', 'deny', '999.1.1.1'], 2, /not an IPv4 address.*"999\.1\.1\.1"/],
    [['ip', 'deny', '1.2.3'], 2, /"1\.2\.3"/],
    [['ip', 'deny', '01.2.3.4'], 2, /octal/],
    [['ip', 'deny', '1.2.3.4/33'], 2, /\/33 is longer than \/32/],
    [['ip', 'deny', '10.0.0.5/24'], 2, /host bits set in "10\.0\.0\.5\/24": did you mean 10\.0\.0\.0\/24\?/],
    [['ip', 'deny', '0.0.0.0/0'], 100, /0\.0\.0\.0\/0 is every address/],
    [['ip', 'deny', '::/0'], 100, /::\/0 is every address/],
    [['ip', 'allow', '0.0.0.0/0'], 100, /every address/],
    [['ip', 'deny', '10.0.0.0/7'], 100, /broader than \/8/],
    [['ip', 'deny', '2001:db8::/31'], 100, /broader than \/32/],
    [['ip', 'deny', '127.0.0.1'], 100, /127\.0\.0\.1 is protected/],
    [['ip', 'deny', '126.0.0.0/7'], 100, /broader|protected/],
    [['ip', 'deny', '127.0.0.0/8'], 100, /protected/],
    [['ip', 'deny', '::1'], 100, /protected/],
    [['ip', 'deny', ''], 2, /empty address/],
    [['ip', 'deny', '   '], 2, /empty address/],
    [['ip', 'deny', '1'.repeat(10_000)], 2, /not an IP address or network: "1{60}…\(10000 chars\)"/],
    [['ip', 'deny', '1.2.3.4; drop table x'], 2, /not an IP address: "1\.2\.3\.4; drop table x"/],
    [['ip', 'deny', '1.2.3.4', '--for', 'soon'], 2, /--for: not a duration/],
    [['ip', 'deny', '1.2.3.4', '--source', 'Bad Source'], 2, /--source: bad source name/],
    [['ip', 'deny', '1.2.3.4', '--reason', 'x'.repeat(1001)], 2, /--reason: longer than 1000/],
    [['ip', 'frobnicate', '1.2.3.4'], 2, /unknown command 'frobnicate'/],
    [['ip', 'deny'], 2, /missing required argument/],
    [['ip', 'deny', '1.2.3.4', '--bogus'], 2, /unknown option '--bogus'/],
    [['ip', 'why', '1.2.3.0/24'], 2, /a single address is needed/],
    [['frob'], 2, /unknown command 'frob'/],
  ];
  it.each(cases)('qguard %j -> exit %i', async (args, code, message) => {
    const before = await footprint();
    const r = await q(args);
    expect(r.code).toBe(code);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^qguard: fatal: /);
    expect(r.stderr).toMatch(message);
    expect(await footprint()).toBe(before);
  });

  it('the local machine is protected: its own addresses cannot be denied', async () => {
    const r = await execa('hostname', ['-I'], { reject: false });
    const own = String(r.stdout).trim().split(/\s+/).find((a) => /^\d+\.\d+\.\d+\.\d+$/.test(a) && !a.startsWith('127.'));
    if (!own) return; // no address but loopback: nothing to check
    const out = await q(['ip', 'deny', own]);
    expect(out.code).toBe(100);
    expect(out.stderr).toMatch(/protected/);
  });
});

describe('qguard: the database', () => {
  it('no database reachable: exit 111 naming it', async () => {
    const r = await q(['ip', 'ls'], { QGUARD_DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/nowhere' });
    expect(r.code).toBe(111);
    expect(r.stderr).toMatch(/^qguard: fatal: unable to connect to database postgresql:\/\/postgres@127\.0\.0\.1:1\/nowhere/);
  });

  it('schema missing: exit 100 naming qguard db migrate; migrate then works and is idempotent', async () => {
    const fresh = await createTestDb({ migrate: false });
    try {
      const env = fresh.env;
      const r = await runCli('qguard', ['ip', 'deny', '192.0.2.1'], { env });
      expect(r.code).toBe(100);
      expect(r.stderr).toMatch(/run `qguard db migrate`/);
      const m = await runCli('qguard', ['db', 'migrate', '--json'], { env });
      expect(m.code).toBe(0);
      expect(JSON.parse(m.stdout).applied).toContain(1);
      const again = await runCli('qguard', ['db', 'migrate', '--json'], { env });
      expect(JSON.parse(again.stdout).applied).toEqual([]);
      const s = await runCli('qguard', ['db', 'status', '--json'], { env });
      expect(JSON.parse(s.stdout)).toMatchObject({ ok: true, pending: [] });
    } finally {
      await fresh.drop();
    }
  });

  it('a bad config file is a permanent error naming file and line', async () => {
    const fs = await import('node:fs');
    const file = `${t.stateDir}/bad.conf`;
    fs.writeFileSync(file, '# ok\nQGUARD_TRESHOLD=3\n');
    const r = await q(['ip', 'ls'], { QGUARD_CONFIG: file });
    expect(r.code).toBe(100);
    expect(r.stderr).toMatch(/bad\.conf: line 2: unknown key QGUARD_TRESHOLD/);
  });
});

describe('qguard domain', () => {
  it('adds, lists, removes; refuses what is not a domain', async () => {
    expect((await q(['domain', 'add', 'Example.NET', '.example.org'])).code).toBe(0);
    expect((await q(['domain', 'add', 'example.net'])).code).toBe(0); // already there: fine
    expect(JSON.parse((await q(['domain', 'ls', '--json'])).stdout).map((d: { name: string }) => d.name)).toEqual([
      '.example.org',
      'example.net',
    ]);
    const bad = await q(['domain', 'add', 'exa mple.net']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/not a domain name/);
    expect((await q(['domain', 'rm', 'example.net'])).code).toBe(0);
    expect((await q(['domain', 'rm', 'example.net'])).code).toBe(100);
    expect((await q(['domain', 'ls'])).stdout).toBe('.example.org\n');
  });
});
