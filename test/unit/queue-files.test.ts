import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isMessageId, parseBounceFile, parseEnvelope, parseInfo, parseRecipientList } from '../../lib/qmail/queue-files.js';

const b = (s: string) => Buffer.from(s, 'utf8');

describe('parseEnvelope (todo/N, intd/N)', () => {
  it('reads uid, pid, sender and recipients in envelope order', () => {
    const e = parseEnvelope(b('u1002\0p16598\0Fsupport2575@parcel-track.test\0Twebmaster@example.org\0Tinfo@example.net\0Tdave@example.net\0'));
    expect(e).toMatchObject({
      uid: 1002,
      pid: 16598,
      sender: 'support2575@parcel-track.test',
      recipients: ['webmaster@example.org', 'info@example.net', 'dave@example.net'],
      complete: true,
      truncatedTail: null,
      problems: [],
    });
  });

  it('keeps the null sender and the double-bounce sender apart', () => {
    expect(parseEnvelope(b('u1007\0p1\0F\0Tx@example.net\0')).sender).toBe('');
    expect(parseEnvelope(b('u1007\0p1\0F#@[]\0Tpostmaster@ops.example.com\0')).sender).toBe('#@[]');
  });

  it('an intd/N caught in flight: the cut-off address is not a recipient', () => {
    const e = parseEnvelope(b('u1002\0p16720\0Fpromo1656@promo-mailer.example\0Ta@secondary.example.com\0Tloan12@se'));
    expect(e.complete).toBe(false);
    expect(e.truncatedTail).toBe('Tloan12@se');
    expect(e.recipients).toEqual(['a@secondary.example.com']);
    expect(e.problems).toEqual([]);
  });

  it('reports garbage instead of throwing', () => {
    expect(parseEnvelope(Buffer.alloc(0)).problems).toContain('empty envelope');
    const junk = parseEnvelope(b('\x89PNG\r\n\x1a\n\0zz\0'));
    expect(junk.sender).toBeNull();
    expect(junk.problems.length).toBeGreaterThan(0);
    expect(parseEnvelope(b('uabc\0p1\0Fx\0')).problems[0]).toMatch(/bad uid/);
  });

  it('never throws on any bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const e = parseEnvelope(Buffer.from(bytes));
        expect(Array.isArray(e.recipients)).toBe(true);
      }),
    );
  });
});

describe('parseInfo (info/S/N)', () => {
  it('reads F<sender>\\0', () => {
    expect(parseInfo(b('Falice@example.net\0'))).toEqual({ sender: 'alice@example.net', problems: [] });
    expect(parseInfo(b('F\0')).sender).toBe('');
    expect(parseInfo(b('F#@[]\0')).sender).toBe('#@[]');
  });
  it('reports an empty or odd file', () => {
    expect(parseInfo(Buffer.alloc(0))).toEqual({ sender: null, problems: ['empty info file'] });
    expect(parseInfo(b('Xjunk')).sender).toBeNull();
  });
});

describe('parseRecipientList (local/S/N, remote/S/N)', () => {
  it('reads T (to do) and D (done) entries in file order', () => {
    const r = parseRecipientList(b('Dm.jones@example.net\0Tdave@example.net\0Dhr@example.net\0Dbob@mx.example.net\0'));
    expect(r.recipients).toEqual([
      { address: 'm.jones@example.net', done: true },
      { address: 'dave@example.net', done: false },
      { address: 'hr@example.net', done: true },
      { address: 'bob@mx.example.net', done: true },
    ]);
    expect(r.problems).toEqual([]);
  });
  it('reports a truncated entry and keeps the rest', () => {
    const r = parseRecipientList(b('Tpurchasing@customer.example\0Dy.tan'));
    expect(r.recipients).toEqual([{ address: 'purchasing@customer.example', done: false }]);
    expect(r.problems[0]).toMatch(/truncated/);
  });
});

describe('parseBounceFile (bounce/N)', () => {
  it('reads one block per failed recipient', () => {
    const r = parseBounceFile(
      '<typo-customer@example.net>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n<x@rejecting.example.com>:\n127.0.0.2 does not like recipient.\nRemote host said: 550 no\nGiving up on 127.0.0.2.\n\n',
    );
    expect(r.entries).toEqual([
      { address: 'typo-customer@example.net', reason: 'Sorry, no mailbox here by that name. (#5.1.1)' },
      { address: 'x@rejecting.example.com', reason: '127.0.0.2 does not like recipient.\nRemote host said: 550 no\nGiving up on 127.0.0.2.' },
    ]);
    expect(r.problems).toEqual([]);
  });
});

describe('isMessageId', () => {
  it('accepts inode numbers only', () => {
    expect(isMessageId('1491014')).toBe(true);
    for (const bad of ['', '0', '01', '12a', '../1', '1 ', '.nfs123', '123456789012345678901']) expect(isMessageId(bad)).toBe(false);
  });
});
