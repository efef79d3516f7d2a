// The envelope for qmail-queue's descriptor 1, byte for byte as qmail-queue(8) and
// qmail-queue.c read it, and the undoing of qmail-send's virtual-domain prefixes.

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  QQ_ADDR_MAX,
  parseQmailQueueEnvelope,
  parseVirtualDomains,
  qmailQueueExit,
  renderQmailQueueEnvelope,
  stripVdomPrepend,
} from '../../lib/qmail/qmail-queue-envelope.js';

const bytes = (env: { sender: string; recipients: string[] }) => {
  const r = renderQmailQueueEnvelope(env);
  if (!r.ok) throw new Error(r.error);
  return r.bytes;
};

describe('renderQmailQueueEnvelope', () => {
  it('writes F<sender>\\0, T<rcpt>\\0 for each recipient and the extra 0 byte', () => {
    expect(bytes({ sender: 'alice@example.net', recipients: ['bob@example.org', 'carol@example.com'] })).toEqual(
      Buffer.from('Falice@example.net\0Tbob@example.org\0Tcarol@example.com\0\0', 'latin1'),
    );
  });

  it('a bounce has an empty sender, a double bounce #@[]', () => {
    expect(bytes({ sender: '', recipients: ['x@example.com'] }).toString('latin1')).toBe('F\0Tx@example.com\0\0');
    expect(bytes({ sender: '#@[]', recipients: ['postmaster@ops.example.com'] }).toString('latin1')).toBe('F#@[]\0Tpostmaster@ops.example.com\0\0');
  });

  it('no recipients is the sender and two 0 bytes (qmail-queue accepts it; restore refuses it earlier)', () => {
    expect(bytes({ sender: 'a@b', recipients: [] }).toString('latin1')).toBe('Fa@b\0\0');
  });

  it('UTF-8 addresses are written as their bytes', () => {
    expect(bytes({ sender: 'jörg@example.de', recipients: [] })).toEqual(Buffer.concat([Buffer.from('F'), Buffer.from('jörg@example.de', 'utf8'), Buffer.from([0, 0])]));
  });

  it('refuses what qmail-queue would refuse: a NUL inside an address, an address over 1002 bytes', () => {
    expect(renderQmailQueueEnvelope({ sender: 'a\0b', recipients: [] })).toMatchObject({ ok: false, error: expect.stringMatching(/sender .*NUL/) });
    const long = `${'x'.repeat(QQ_ADDR_MAX - 12)}@example.com`;
    expect(Buffer.byteLength(long)).toBe(QQ_ADDR_MAX);
    expect(renderQmailQueueEnvelope({ sender: '', recipients: [long] }).ok).toBe(true);
    expect(renderQmailQueueEnvelope({ sender: '', recipients: ['ok@x', `y${long}`] })).toMatchObject({
      ok: false,
      error: expect.stringMatching(/recipient "y+.*longer than 1002 bytes \(1003\)/),
    });
  });
});

describe('parseQmailQueueEnvelope', () => {
  it('reads back what render wrote', () => {
    expect(parseQmailQueueEnvelope(Buffer.from('Fa@b\0Tc@d\0Te@f\0\0', 'latin1'))).toEqual({ ok: true, envelope: { sender: 'a@b', recipients: ['c@d', 'e@f'] } });
  });

  it('is strict as qmail-queue: the extra 0 byte is required, nothing may follow it', () => {
    expect(parseQmailQueueEnvelope(Buffer.from('Fa@b\0Tc@d\0', 'latin1'))).toMatchObject({ ok: false, error: expect.stringMatching(/extra 0 byte/) });
    expect(parseQmailQueueEnvelope(Buffer.from('Fa@b\0Tc@d\0\0X', 'latin1'))).toMatchObject({ ok: false, error: expect.stringMatching(/1 bytes after/) });
    expect(parseQmailQueueEnvelope(Buffer.from('Ta@b\0\0', 'latin1'))).toMatchObject({ ok: false, error: expect.stringMatching(/F field/) });
    expect(parseQmailQueueEnvelope(Buffer.from('Fa@b\0Xc@d\0\0', 'latin1'))).toMatchObject({ ok: false, error: expect.stringMatching(/byte 88/) });
    expect(parseQmailQueueEnvelope(Buffer.from('Fa@b', 'latin1'))).toMatchObject({ ok: false });
    expect(parseQmailQueueEnvelope(Buffer.from('Fa@b\0Tc@d', 'latin1'))).toMatchObject({ ok: false, error: expect.stringMatching(/recipient 1 not terminated/) });
    // The todo/N format (u and p fields, no extra 0) is not this format.
    expect(parseQmailQueueEnvelope(Buffer.from('u1002\0p4242\0Fa@b\0Tc@d\0', 'latin1')).ok).toBe(false);
  });

  it('render then parse is the identity for any addresses qmail-queue accepts', () => {
    const addr = fc.string({ unit: 'grapheme', maxLength: 60 }).filter((s) => !s.includes('\0'));
    fc.assert(
      fc.property(addr, fc.array(addr, { maxLength: 8 }), (sender, recipients) => {
        const r = renderQmailQueueEnvelope({ sender, recipients });
        expect(r.ok).toBe(true);
        if (!r.ok) return;
        expect(parseQmailQueueEnvelope(r.bytes)).toEqual({ ok: true, envelope: { sender, recipients } });
        // Exactly one byte more than the fields: the list terminator.
        expect(r.bytes[r.bytes.length - 1]).toBe(0);
        expect(r.bytes[r.bytes.length - 2]).toBe(0);
      }),
    );
  });
});

describe('virtual domains', () => {
  const vd = parseVirtualDomains(
    '# comment\nexample.com:example.com\n.lists.example.org:listowner  \nexcept.example.com:\n:catchall\nbroken-line\nEXAMPLE.com:second\n',
  );

  it('parses control/virtualdomains like qmail (comments, trailing blanks, first key wins, no case)', () => {
    expect([...vd.map.entries()]).toEqual([
      ['example.com', 'example.com'],
      ['.lists.example.org', 'listowner'],
      ['except.example.com', ''],
      ['', 'catchall'],
    ]);
    expect(vd.problems).toEqual(['line 6: no colon: "broken-line"']);
  });

  it("strips the prefix qmail-send added, like its stripvdomprepend()", () => {
    // vpopmail style: domain:domain → local/ holds "example.com-bob@example.com".
    expect(stripVdomPrepend('example.com-bob@example.com', vd.map)).toBe('bob@example.com');
    expect(stripVdomPrepend('example.com-bob@Example.COM', vd.map)).toBe('bob@Example.COM');
    // .suffix entries apply to subdomains.
    expect(stripVdomPrepend('listowner-dev@a.lists.example.org', vd.map)).toBe('dev@a.lists.example.org');
    // An exception line (empty prefix) stops the search: unchanged.
    expect(stripVdomPrepend('except.example.com-x@except.example.com', vd.map)).toBe('except.example.com-x@except.example.com');
    // The wildcard.
    expect(stripVdomPrepend('catchall-joe@other.example', vd.map)).toBe('joe@other.example');
    // Not carrying the prefix: unchanged (the first entry found decides).
    expect(stripVdomPrepend('bob@example.com', vd.map)).toBe('bob@example.com');
    expect(stripVdomPrepend('no-at-sign', vd.map)).toBe('no-at-sign');
    expect(stripVdomPrepend('example.com-bob@example.com', new Map())).toBe('example.com-bob@example.com');
  });
});

describe('qmailQueueExit', () => {
  it('follows qmail-queue(8): 0 queued, 11-40 permanent, everything else temporary', () => {
    expect(qmailQueueExit(0).outcome).toBe('ok');
    expect(qmailQueueExit(11)).toEqual({ outcome: 'permanent', text: 'exit 11: address too long' });
    expect(qmailQueueExit(31).outcome).toBe('permanent');
    expect(qmailQueueExit(40).outcome).toBe('permanent');
    expect(qmailQueueExit(41).outcome).toBe('temporary');
    expect(qmailQueueExit(53)).toEqual({ outcome: 'temporary', text: 'exit 53: write error (disk full?)' });
    expect(qmailQueueExit(81).outcome).toBe('temporary');
    expect(qmailQueueExit(91).outcome).toBe('temporary');
    expect(qmailQueueExit(1).outcome).toBe('temporary');
  });
});
