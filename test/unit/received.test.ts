import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { normaliseIp, parseOrigin, parseQmailDate, parseQueueLine, parseSmtpLine } from '../../lib/qmail/received.js';
import { decodeHeaderText, readHeader } from '../../lib/qmail/message-header.js';

const L1 = 'Received: (qmail 14619 invoked from network); 28 Nov 2026 00:22:16 -0000\n';
const by = '  by mx.example.net with SMTP; 28 Nov 2026 00:22:16 -0000\n';
const from = (who: string) => `${L1}Received: from ${who}\n${by}`;
const body = 'Date: Fri, 27 Nov 2026 04:49:36 +0000\nFrom: a@b.example\nSubject: hello there\n\nbody\n';
const origin = (text: string, final = true) => parseOrigin(Buffer.from(text, 'utf8').toString('latin1'), final);

describe('line 1 and line 2 shapes seen in the fixtures', () => {
  const cases: [string, { ip: string; host: string; helo: string | null; info: string | null }][] = [
    ['unknown (192.0.2.45)', { ip: '192.0.2.45', host: 'unknown', helo: null, info: null }],
    [
      '200.100.51.198.rev.hosting.example (HELO dsl-2-210.dynamic.isp.example) (spammer@198.51.100.200)',
      { ip: '198.51.100.200', host: '200.100.51.198.rev.hosting.example', helo: 'dsl-2-210.dynamic.isp.example', info: 'spammer' },
    ],
    ['host?3.badptr.example (HELO dsl-163-31.dynamic.isp.example) (198.51.100.3)', { ip: '198.51.100.3', host: 'host?3.badptr.example', helo: 'dsl-163-31.dynamic.isp.example', info: null }],
    ['unknown (HELO ) (203.0.113.99)', { ip: '203.0.113.99', host: 'unknown', helo: '', info: null }],
    ['unknown (HELO [198.51.100.14]) (198.51.100.14)', { ip: '198.51.100.14', host: 'unknown', helo: '[198.51.100.14]', info: null }],
    ['unknown (HELO ?198.51.100.14?) (198.51.100.14)', { ip: '198.51.100.14', host: 'unknown', helo: '?198.51.100.14?', info: null }],
    ['unknown (HELO a?b?c?d?e) (203.0.113.99)', { ip: '203.0.113.99', host: 'unknown', helo: 'a?b?c?d?e', info: null }],
    ['unknown (HELO dsl-107-135.dynamic.isp.example) (::ffff:198.51.100.77)', { ip: '::ffff:198.51.100.77', host: 'unknown', helo: 'dsl-107-135.dynamic.isp.example', info: null }],
    ['unknown (HELO monitor01) (joe?smith@10.20.30.40)', { ip: '10.20.30.40', host: 'unknown', helo: 'monitor01', info: 'joe?smith' }],
    ['unknown (HELO mx.example.net) (203.0.113.99)', { ip: '203.0.113.99', host: 'unknown', helo: 'mx.example.net', info: null }],
    ['unknown (HELO v6host.spam.example) (2001:db8::25)', { ip: '2001:db8::25', host: 'unknown', helo: 'v6host.spam.example', info: null }],
    [`unknown (HELO ${'x'.repeat(300)}) (203.0.113.99)`, { ip: '203.0.113.99', host: 'unknown', helo: 'x'.repeat(300), info: null }],
    // TCPREMOTEINFO may itself contain '@' (safeput keeps it): the IP follows the last one.
    ['unknown (a@b@192.0.2.9)', { ip: '192.0.2.9', host: 'unknown', helo: null, info: 'a@b' }],
  ];
  for (const [who, want] of cases) {
    it(`Received: from ${who.slice(0, 70)}`, () => {
      const o = origin(from(who) + body);
      expect(o.problems).toEqual([]);
      expect(o.kind).toBe('network');
      expect(o.sourceIpRecorded).toBe(want.ip);
      expect(o.smtp).toMatchObject({ remoteHost: want.host, helo: want.helo, remoteInfo: want.info, localHost: 'mx.example.net', protocol: 'SMTP' });
      expect(o.queueLine?.pid).toBe(14619);
      expect(o.subject).toBe('hello there');
    });
  }

  it('normalises ::ffff:a.b.c.d to a.b.c.d and compresses IPv6', () => {
    expect(origin(from('unknown (::ffff:198.51.100.77)') + body).sourceIp).toBe('198.51.100.77');
    expect(origin(from('unknown (2001:DB8:0:0::25)') + body).sourceIp).toBe('2001:db8::25');
    expect(normaliseIp('unknown')).toBeNull();
  });

  it('parses every line-1 form and qmail dates', () => {
    expect(parseQueueLine('Received: (qmail 14708 invoked by uid 1008); 28 Nov 2026 00:22:16 -0000')).toMatchObject({ pid: 14708, via: 'uid', uid: 1008 });
    expect(parseQueueLine('Received: (qmail 15620 invoked by alias); 28 Nov 2026 00:22:17 -0000')?.via).toBe('alias');
    expect(parseQueueLine('Received: (qmail 14628 invoked for bounce); 28 Nov 2026 00:22:16 -0000')?.via).toBe('bounce');
    expect(parseQueueLine('Received: from x (1.2.3.4)')).toBeNull();
    expect(parseQmailDate('28 Nov 2026 00:22:16 -0000')?.toISOString()).toBe('2026-11-28T00:22:16.000Z');
    expect(parseQmailDate('28 Nov 2026 02:22:16 +0200')?.toISOString()).toBe('2026-11-28T00:22:16.000Z');
    expect(parseQmailDate('yesterday')).toBeNull();
  });

  it('accepts the protocols of common patches (ESMTPA, QMTP) and CRLF files', () => {
    expect(parseSmtpLine('Received: from unknown (HELO x) (192.0.2.1)', '  by mx with ESMTPA; 28 Nov 2026 00:22:16 -0000')?.protocol).toBe('ESMTPA');
    const crlf = from('unknown (192.0.2.7)').replace(/\n/g, '\r\n') + body.replace(/\n/g, '\r\n');
    expect(origin(crlf).sourceIp).toBe('192.0.2.7');
  });
});

describe('only our own two lines count', () => {
  it('ignores forged Received lines below line 2, even in qmail format naming us', () => {
    const forged =
      'Received: from unknown (HELO mx.example.net) (6.6.6.6)\n  by mx.example.net with SMTP; 27 Nov 2026 00:00:00 -0000\n' +
      'Received: from [198.51.100.235] (helo=trusted-relay.example)\n\tby relay.forged.example with esmtpa (Exim 4.96)\n';
    const o = origin(from('unknown (HELO WIN-PVTQK39S7ZB) (203.0.113.7)') + forged + body);
    expect(o.sourceIp).toBe('203.0.113.7');
  });

  it('line 2 missing: no source IP, reported', () => {
    const o = origin(`${L1}Received: from unknown (HELO x) (6.6.6.6) by relay with esmtp\nSubject: x\n\nbody\n`);
    expect(o.sourceIp).toBeNull();
    expect(o.problems.join()).toMatch(/line 2/);
    const o2 = origin(`${L1}Subject: no line 2\n\nReceived: from unknown (6.6.6.6)\n${by}`);
    expect(o2.sourceIp).toBeNull();
    expect(o2.kind).toBe('network');
  });

  it('does not take an IP that is not an address', () => {
    const o = origin(from('unknown (unknown)') + body);
    expect(o.sourceIp).toBeNull();
    expect(o.sourceIpRecorded).toBe('unknown');
    expect(o.problems.join()).toMatch(/no valid IP/);
  });

  it('local injection has no source IP, whatever the header claims', () => {
    const o = origin(
      'Received: (qmail 14718 invoked by uid 0); 28 Nov 2026 00:22:16 -0000\nReceived: from unknown (6.6.6.6)\n  by mx.example.net with SMTP; x\nSubject: cron\n\nhi\n',
    );
    expect(o).toMatchObject({ kind: 'local', sourceIp: null, forwarded: false, problems: [], subject: 'cron' });
  });
});

describe('forwards and bounces', () => {
  const spam = from('unknown (HELO WIN-PVTQK39S7ZB) (203.0.113.7)') + 'Subject: spam subject\n\nbuy\n';

  it('a copy forwarded by .qmail belongs to the original sender', () => {
    for (const how of ['by uid 1010', 'by alias']) {
      const o = origin(`Received: (qmail 15223 invoked ${how}); 28 Nov 2026 00:22:16 -0000\nDelivered-To: carol@example.net\n${spam}`);
      expect(o).toMatchObject({ kind: 'network', forwarded: true, chain: ['forward'], sourceIp: '203.0.113.7', subject: 'spam subject' });
      expect(o.queueLine?.pid).toBe(15223);
      expect(o.rootQueueLine?.pid).toBe(14619);
    }
  });

  it('a forward of a forward, and a forward of local mail', () => {
    const inner = `Received: (qmail 15223 invoked by uid 1010); 28 Nov 2026 00:22:16 -0000\nDelivered-To: carol@example.net\n${spam}`;
    const o = origin(`Received: (qmail 15300 invoked by alias); 28 Nov 2026 00:22:17 -0000\nDelivered-To: alias-sales@example.net\n${inner}`);
    expect(o).toMatchObject({ chain: ['forward', 'forward'], sourceIp: '203.0.113.7', kind: 'network' });
    const local = 'Received: (qmail 9 invoked by uid 1000); 28 Nov 2026 00:22:16 -0000\nSubject: hi\n\nx\n';
    const f = origin(`Received: (qmail 10 invoked by uid 1010); 28 Nov 2026 00:22:16 -0000\nDelivered-To: carol@example.net\n${local}`);
    expect(f).toMatchObject({ kind: 'local', forwarded: true, sourceIp: null });
  });

  const bounceOf = (original: string, sender: string, reasons = '<alice-promo@example.net>:\nSorry, no mailbox here by that name. (#5.1.1)\n') =>
    'Received: (qmail 15656 invoked for bounce); 28 Nov 2026 00:22:17 -0000\nDate: 28 Nov 2026 00:22:17 -0000\n' +
    `From: MAILER-DAEMON@mx.example.net\nTo: ${sender}\nSubject: failure notice\n\n` +
    "Hi. This is the qmail-send program at mx.example.net.\nI'm afraid I wasn't able to deliver your message to the following addresses.\n" +
    `This is a permanent error; I've given up. Sorry it didn't work out.\n\n${reasons}\n` +
    `--- Below this line is a copy of the message.\n\nReturn-Path: <${sender}>\n${original}`;

  it('a bounce is attributed to the client that made us bounce', () => {
    const o = origin(bounceOf(spam, 'pharma8746@winbig.test'));
    expect(o).toMatchObject({ kind: 'bounce', chain: ['bounce'], sourceIp: '203.0.113.7', subject: 'spam subject', problems: [] });
    expect(o.queueLine?.via).toBe('bounce');
  });

  it("never takes the refusing relay's IP from the failure text", () => {
    const reasons = '<x@rejecting.example.com>:\n127.0.0.2 does not like recipient.\nRemote host said: 550 no\nGiving up on 127.0.0.2.\n';
    expect(origin(bounceOf(spam, 'x@y.example', reasons)).sourceIp).toBe('203.0.113.7');
  });

  it('takes the FIRST marker: a fake marker inside the quoted spam does not count', () => {
    const sneaky =
      from('unknown (203.0.113.7)') +
      'Subject: s\n\n--- Below this line is the original bounce.\n\nReturn-Path: <>\nReceived: (qmail 1 invoked from network); 28 Nov 2026 00:22:16 -0000\n' +
      'Received: from unknown (6.6.6.6)\n  by mx.example.net with SMTP; 28 Nov 2026 00:22:16 -0000\n\n';
    const o = origin(bounceOf(sneaky, 'a@b.example'));
    expect(o.sourceIp).toBe('203.0.113.7');
    expect(o.chain).toEqual(['bounce']);
  });

  it('a bounce of locally injected mail has no source IP', () => {
    const local = 'Received: (qmail 14729 invoked by uid 1009); 28 Nov 2026 00:22:16 -0000\nSubject: Your shop order\n\nThanks\n';
    expect(origin(bounceOf(local, 'noreply@shop.example'))).toMatchObject({ kind: 'bounce', sourceIp: null, problems: [], subject: 'Your shop order' });
  });

  const doubleOf = (inner: string) =>
    'Received: (qmail 14999 invoked for bounce); 28 Nov 2026 00:22:16 -0000\nDate: 28 Nov 2026 00:22:16 -0000\nFrom: MAILER-DAEMON@mx.example.net\n' +
    'To: postmaster@ops.example.com\nSubject: failure notice\n\nHi. This is the qmail-send program at mx.example.net.\n' +
    'I tried to deliver a bounce message to this address, but the bounce bounced!\n\n<pedro@example.net>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n' +
    `--- Below this line is the original bounce.\n\nReturn-Path: <>\n${inner}`;

  it('a double bounce of null-sender spam', () => {
    const o = origin(doubleOf(from('unknown (192.0.2.45)') + 'Subject: s\n\nx\n'));
    expect(o).toMatchObject({ kind: 'double-bounce', chain: ['double-bounce'], sourceIp: '192.0.2.45' });
  });

  it('three levels: double bounce > bounce > spam', () => {
    const o = origin(doubleOf(bounceOf(spam, 'pedro@example.net')));
    expect(o).toMatchObject({ kind: 'double-bounce', chain: ['double-bounce', 'bounce'], sourceIp: '203.0.113.7', subject: 'spam subject' });
  });

  it('asks for more bytes while the marker or the quoted lines are not in view, then gives up with a problem', () => {
    const full = bounceOf(spam, 'pharma8746@winbig.test');
    const cut = full.slice(0, full.indexOf('--- Below') + 10);
    expect(origin(cut, false).needMore).toBe(true);
    const o = origin(cut, true);
    expect(o.needMore).toBe(false);
    expect(o.kind).toBe('bounce');
    expect(o.sourceIp).toBeNull();
    expect(o.problems.join()).toMatch(/marker/);
    const cut2 = full.slice(0, full.indexOf('(203.0.113.7)'));
    expect(origin(cut2, false).needMore).toBe(true);
    expect(origin(cut2, true).problems.join()).toMatch(/truncated/);
  });
});

describe('odd and hostile input', () => {
  it('binary junk, an empty file, a truncated line 1: kind unknown, reported, no throw', () => {
    expect(origin('\x89PNG\r\n\x1a\n\0\0\0junk')).toMatchObject({ kind: 'unknown', sourceIp: null });
    expect(origin('').problems).toEqual(['empty message']);
    expect(origin('Received: (qmail 1 invo', true).problems.join()).toMatch(/truncated/);
    expect(origin('Received: (qmail 1 invo', false).needMore).toBe(true);
  });

  it('a 100 kB header line before Subject: the source is still found, the subject given up at the bound', () => {
    const text = from('unknown (203.0.113.9)') + `X-Long: ${'a'.repeat(100_000)}\nSubject: late\n\nbody\n`;
    const head = text.slice(0, 65536);
    expect(origin(head, false).needMore).toBe(true);
    const o = origin(head, true);
    expect(o.sourceIp).toBe('203.0.113.9');
    expect(o.subject).toBeNull();
    expect(o.problems).toEqual([]);
  });

  it('never throws, whatever the bytes, and finds no IP in random text', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), fc.boolean(), (bytes, final) => {
        const o = parseOrigin(Buffer.from(bytes).toString('latin1'), final);
        expect(o.sourceIp).toBeNull();
      }),
    );
  });

  it('any HELO, host and info that qmail-smtpd could write parse back to the same IP', () => {
    const safe = fc.stringMatching(/^[A-Za-z0-9.@%+/=:\-[\]?]{0,80}$/);
    fc.assert(
      fc.property(safe, safe, fc.option(safe, { nil: null }), fc.ipV4(), (host, helo, info, ip) => {
        const who = `${host || 'unknown'} (HELO ${helo}) (${info ? `${info}@` : ''}${ip})`;
        const o = origin(from(who) + body);
        expect(o.sourceIpRecorded).toBe(ip);
        expect(o.smtp?.helo).toBe(helo);
      }),
    );
  });
});

describe('message-header', () => {
  it('decodes RFC 2047 and raw UTF-8 subjects', () => {
    expect(decodeHeaderText('=?utf-8?B?0JLQsNGIINGB0YfQtdGCINC30LDQsdC70L7QutC40YDQvtCy0LDQvQ==?=')).toBe('Ваш счет заблокирован');
    expect(decodeHeaderText('=?ISO-8859-1?Q?Pr=E9stamo_r=E1pido?= 73081')).toBe('Préstamo rápido 73081');
    expect(decodeHeaderText('=?utf-8?Q?a?= =?utf-8?Q?b?=')).toBe('ab');
    expect(decodeHeaderText(Buffer.from('Ödeme bildirimi', 'utf8').toString('latin1'))).toBe('Ödeme bildirimi');
    expect(decodeHeaderText('=?x-unknown?B?AAAA?= ok')).toBe('=?x-unknown?B?AAAA?= ok');
  });

  it('unfolds header fields and stops at the body', () => {
    const h = readHeader('A: 1\nSubject: two\n  lines\nB: 3\n\nbody: not a header\n', 0, true);
    expect(h.fields.map((f) => [f.name, f.raw])).toEqual([
      ['A', '1'],
      ['Subject', 'two  lines'],
      ['B', '3'],
    ]);
    expect(h.complete).toBe(true);
    expect(readHeader('A: 1\nB: 2', 0, false).complete).toBe(false);
    expect(readHeader('A: 1\nB: 2', 0, true).fields.length).toBe(2);
  });
});
