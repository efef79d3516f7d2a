import { describe, expect, it } from 'vitest';
import { formatAcceptedLine, formatAcceptedUptimeLine, parseAcceptedLine } from '../../lib/qmail/accepted-spool.js';

const BOOT = '2d9d1777-77bd-46c8-8650-dc8104bc8528';
const clock = { bootId: BOOT, bootMs: Date.UTC(2026, 11, 7, 0, 0, 0) };
const parse = (line: string) => {
  const buf = Buffer.from(`junk${line}\njunk`, 'latin1');
  return parseAcceptedLine(buf, 4, 4 + Buffer.byteLength(line, 'latin1'), clock);
};

describe("the QMAILQUEUE program's spool lines", () => {
  it('reads the time (since the epoch, or since this boot) and the address, one spelling per address', () => {
    expect(parse('1796601600 203.0.113.5')).toEqual({ at: 1796601600_000, ip: '203.0.113.5' });
    expect(parse('1796601600 ::ffff:203.0.113.5')).toEqual({ at: 1796601600_000, ip: '203.0.113.5' });
    expect(parse('1796601600 2001:DB8:0:0::1')).toEqual({ at: 1796601600_000, ip: '2001:db8::1' });
    const at = Date.UTC(2026, 11, 7, 6, 0, 0);
    expect(parse(formatAcceptedLine(at + 999, '192.0.2.9').trimEnd())).toEqual({ at, ip: '192.0.2.9' });
    expect(parse(`u3600.25 ${BOOT} 192.0.2.9`)).toEqual({ at: clock.bootMs + 3600_250, ip: '192.0.2.9' });
    expect(parse(`u3600.5 ${BOOT} 192.0.2.9`)).toEqual({ at: clock.bootMs + 3600_500, ip: '192.0.2.9' });
    expect(parse(`u7 ${BOOT} 2001:db8::1`)).toEqual({ at: clock.bootMs + 7000, ip: '2001:db8::1' });
    expect(parse(formatAcceptedUptimeLine(86_400_120, BOOT, '192.0.2.9').trimEnd())).toEqual({ at: clock.bootMs + 86_400_120, ip: '192.0.2.9' });
  });
  it('a line of an earlier boot is dated at this boot (it was written before)', () => {
    expect(parse('u99999.00 11111111-2222-3333-4444-555555555555 192.0.2.9')).toEqual({ at: clock.bootMs, ip: '192.0.2.9' });
  });
  it('anything else is not a line of its', () => {
    for (const l of [
      '',
      '1796601600',
      '1796601600 ',
      ' 203.0.113.5',
      'x 203.0.113.5',
      '1796601600  203.0.113.5',
      '1796601600 203.0.113.5 extra',
      '1796601600 203.0.113.0/24',
      '1796601600 999.1.1.1',
      `1796601600 ${'1'.repeat(130)}`,
      '1234567890123 1.2.3.4',
      `u12.345 ${BOOT} 1.2.3.4`,
      `u ${BOOT} 1.2.3.4`,
      `12 ${BOOT} 1.2.3.4`,
      `u12 not-a-boot-id 1.2.3.4`,
      `u12 ${BOOT}  1.2.3.4`,
    ]) {
      expect(parse(l), l).toBeNull();
    }
  });
});
