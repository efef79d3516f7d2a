import { describe, expect, it } from 'vitest';
import { formatNet, netContains, parseIp, parseNet } from '../../lib/net/address.js';

const ok = (s: string) => {
  const r = parseNet(s);
  if (!r.ok) throw new Error(r.error);
  return formatNet(r.net);
};
const err = (s: string) => {
  const r = parseNet(s);
  if (r.ok) throw new Error(`accepted ${s}`);
  return r.error;
};

describe('parseNet', () => {
  it('accepts addresses and CIDRs in canonical form', () => {
    expect(ok('1.2.3.4')).toBe('1.2.3.4/32');
    expect(ok(' 10.0.0.0/8 ')).toBe('10.0.0.0/8');
    expect(ok('2001:DB8::25')).toBe('2001:db8::25/128');
    expect(ok('2001:db8::/32')).toBe('2001:db8::/32');
    expect(ok('0.0.0.0/0')).toBe('0.0.0.0/0');
  });

  it('stores IPv4-mapped IPv6 as IPv4', () => {
    expect(ok('::ffff:1.2.3.4')).toBe('1.2.3.4/32');
    expect(ok('::ffff:1.2.3.0/120')).toBe('1.2.3.0/24');
    expect(err('::ffff:1.2.3.0/90')).toMatch(/96/);
  });

  it('refuses what is not exactly an address', () => {
    expect(err('999.1.1.1')).toMatch(/not an IPv4/);
    expect(err('1.2.3')).toMatch(/not an IPv4/);
    expect(err('01.2.3.4')).toMatch(/octal/);
    expect(err('1.2.3.4/33')).toMatch(/longer than \/32/);
    expect(err('1.2.3.4/08')).toMatch(/bad prefix/);
    expect(err('')).toMatch(/empty/);
    expect(err('   ')).toMatch(/empty/);
    expect(err('1.2.3.4; drop table x')).toMatch(/not an IP/);
    expect(err('x'.repeat(10_000))).toMatch(/10000 chars/);
    expect(err('fe80::1%eth0')).toMatch(/zone/);
    expect(err('::ffff:01.2.3.4')).toMatch(/embedded IPv4/);
    expect(err('0x1.2.3.4')).toMatch(/not an IP/);
  });

  it('refuses host bits and names the network meant', () => {
    expect(err('10.0.0.5/24')).toMatch(/did you mean 10\.0\.0\.0\/24/);
    expect(err('2001:db8::1/64')).toMatch(/did you mean 2001:db8::\/64/);
    const r = parseNet('10.0.0.5/24', { allowHostBits: true });
    expect(r.ok && formatNet(r.net)).toBe('10.0.0.0/24');
  });

  it('parseIp wants one address', () => {
    expect(parseIp('1.2.3.0/24').ok).toBe(false);
    expect(parseIp('1.2.3.4').ok).toBe(true);
  });

  it('containment', () => {
    const n = (s: string) => (parseNet(s) as { net: never }).net;
    expect(netContains(n('10.0.0.0/8'), n('10.1.2.3'))).toBe(true);
    expect(netContains(n('10.0.0.0/8'), n('11.0.0.0'))).toBe(false);
    expect(netContains(n('10.0.0.0/8'), n('10.0.0.0/8'))).toBe(true);
    expect(netContains(n('10.1.0.0/16'), n('10.0.0.0/8'))).toBe(false);
    expect(netContains(n('::/1'), n('10.0.0.0/8'))).toBe(false);
  });
});
