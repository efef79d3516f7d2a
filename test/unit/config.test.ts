import { describe, expect, it } from 'vitest';
import { parseConfigText, protectedNets, resolveConfig } from '../../lib/config.js';
import { PermanentError, UsageError } from '../../lib/errors.js';
import { formatNet } from '../../lib/net/address.js';

const resolve = (over: { flags?: Record<string, string>; env?: Record<string, string>; file?: Record<string, string> }) =>
  resolveConfig({
    flags: over.flags ?? {},
    env: over.env ?? {},
    file: over.file ? { name: '/etc/qguard/qguard.conf', values: over.file } : null,
    hostname: 'mx1.example.net',
  });

describe('configuration', () => {
  it('has the documented defaults', () => {
    const c = resolve({});
    expect(c.databaseUrl).toBeNull();
    expect(c.stateDir).toBe('/var/lib/qguard');
    expect(c.host).toBe('mx1.example.net');
    expect(c.queueDir).toBe('/var/qmail/queue');
    expect(c.controlDir).toBe('/var/qmail/control');
    expect(c.rulesFile).toBe('/etc/tcp.smtp');
    expect(c.rulesCdb).toBe('/etc/tcp.smtp.cdb');
    expect(c.rulesStatic).toBe('/etc/qguard/tcp.smtp.static');
    expect(c.firewall).toBe('none');
    expect(c.firewallPorts).toEqual([25, 110]);
    expect(c.threshold).toBe(20);
    expect(c.windowSeconds).toBe(3 * 86400);
    expect(c.qmailStop).toBe('svc -d /service/qmail-send');
    expect(c.qmailQueue).toBe('/var/qmail/bin/qmail-queue');
    expect(c.quarantineDir).toBe('/var/lib/qguard/quarantine');
    expect(c.minPrefix).toEqual({ 4: 8, 6: 32 });
    expect(c.scanExempt.map(formatNet)).toContain('192.168.0.0/16');
  });

  it('flags beat the environment, which beats the file, which beats defaults', () => {
    const file = { QGUARD_THRESHOLD: '5', QGUARD_WINDOW: '1d', QMAIL_HOME: '/opt/qmail' };
    expect(resolve({ file }).threshold).toBe(5);
    expect(resolve({ file, env: { QGUARD_THRESHOLD: '7' } }).threshold).toBe(7);
    expect(resolve({ file, env: { QGUARD_THRESHOLD: '7' }, flags: { QGUARD_THRESHOLD: '9' } }).threshold).toBe(9);
    const c = resolve({ file });
    expect(c.windowSeconds).toBe(86400);
    expect(c.queueDir).toBe('/opt/qmail/queue');
    expect(resolve({ file, env: { QGUARD_QUEUE: '/q' } }).queueDir).toBe('/q');
  });

  it('QGUARD_DATABASE_URL wins over DATABASE_URL; PG* variables select a server', () => {
    expect(resolve({ env: { DATABASE_URL: 'postgresql://a/b' } }).databaseUrl).toBe('postgresql://a/b');
    expect(resolve({ env: { DATABASE_URL: 'postgresql://a/b', QGUARD_DATABASE_URL: 'postgresql://c/d' } }).databaseUrl).toBe(
      'postgresql://c/d',
    );
    const pgEnv = resolve({ env: { PGHOST: '/var/run/postgresql' } });
    expect(pgEnv.databaseUrl).toBeNull();
    expect(pgEnv.usePgEnv).toBe(true);
  });

  it('bad flag values are usage errors (2), bad env/file values permanent (100), naming the key', () => {
    expect(() => resolve({ flags: { QGUARD_THRESHOLD: 'many' } })).toThrow(UsageError);
    expect(() => resolve({ flags: { QGUARD_THRESHOLD: 'many' } })).toThrow(/--threshold/);
    expect(() => resolve({ env: { QGUARD_WINDOW: '3 days' } })).toThrow(PermanentError);
    expect(() => resolve({ env: { QGUARD_WINDOW: '3 days' } })).toThrow(/QGUARD_WINDOW/);
    expect(() => resolve({ file: { QGUARD_FIREWALL: 'pf' } })).toThrow(/qguard.conf: QGUARD_FIREWALL/);
    expect(() => resolve({ env: { QGUARD_FIREWALL_PORTS: '25,99999' } })).toThrow(/not a TCP port/);
    expect(() => resolve({ env: { QGUARD_PROTECT: '10.0.0.1/8' } })).toThrow(/host bits/);
    expect(() => resolve({ env: { QGUARD_MIN_PREFIX: '0' } })).toThrow(/out of range/);
  });

  it('parses KEY=value files with comments and quotes; unknown keys and junk are named by line', () => {
    const r = parseConfigText('# qguard\nQGUARD_THRESHOLD = 30\n\nQGUARD_QMAIL_STOP="svc -d /service/qmail-send"\r\n');
    expect(r.problems).toEqual([]);
    expect(r.values).toEqual({ QGUARD_THRESHOLD: '30', QGUARD_QMAIL_STOP: 'svc -d /service/qmail-send' });
    const bad = parseConfigText('QGUARD_TRESHOLD=3\njust words\n');
    expect(bad.problems).toEqual(['line 1: unknown key QGUARD_TRESHOLD', 'line 2: expected KEY=value: "just words"']);
  });

  it('protection always includes loopback, whatever QGUARD_PROTECT says', () => {
    const c = resolve({ env: { QGUARD_PROTECT: '192.0.2.0/24' } });
    const nets = protectedNets(c, []).map(formatNet);
    expect(nets).toEqual(['127.0.0.0/8', '::1/128', '192.0.2.0/24']);
  });
});
