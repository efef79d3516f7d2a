import { describe, expect, it } from 'vitest';
import { formatAcceptedLine, parseAcceptedLine } from '../../lib/qmail/accepted-spool.js';

const parse = (line: string) => {
  const buf = Buffer.from(`junk${line}\njunk`, 'latin1');
  return parseAcceptedLine(buf, 4, 4 + Buffer.byteLength(line, 'latin1'));
};

describe("the QMAILQUEUE program's spool lines", () => {
  it('reads the time and the address, one spelling per address', () => {
    expect(parse('1796601600 203.0.113.5')).toEqual({ at: 1796601600_000, ip: '203.0.113.5' });
    expect(parse('1796601600 ::ffff:203.0.113.5')).toEqual({ at: 1796601600_000, ip: '203.0.113.5' });
    expect(parse('1796601600 2001:DB8:0:0::1')).toEqual({ at: 1796601600_000, ip: '2001:db8::1' });
    const at = Date.UTC(2026, 11, 7, 6, 0, 0);
    expect(parse(formatAcceptedLine(at + 999, '192.0.2.9').trimEnd())).toEqual({ at, ip: '192.0.2.9' });
  });
  it('anything else is not a line of its', () => {
    for (const l of ['', '1796601600', '1796601600 ', ' 203.0.113.5', 'x 203.0.113.5', '1796601600  203.0.113.5', '1796601600 203.0.113.5 extra', '1796601600 203.0.113.0/24', '1796601600 999.1.1.1', `1796601600 ${'1'.repeat(80)}`, '1234567890123 1.2.3.4']) {
      expect(parse(l), l).toBeNull();
    }
  });
});
