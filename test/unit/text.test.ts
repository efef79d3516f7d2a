// The one escaper for outside text: nothing that acts on a terminal gets through, and what
// was there stays readable and unambiguous.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { bytesForTerminal, decodeBytes, describeEscapes, escapeStats, forTerminal, jsonForTerminal, terminalSafe } from '../../lib/text.js';

/** Every code point that may act on a terminal or reorder its text (newline and tab aside). */
const DANGEROUS = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2060\u2066-\u2069\ufeff]|[\ud800-\udfff]/u;

/** Undo forTerminal's single-line escapes: proves nothing was lost or made ambiguous. */
function unescape(s: string): string {
  return s.replace(/\\(\\|n|r|t|x[0-9a-f]{2}|u[0-9a-f]{4})/g, (_, e: string) => {
    if (e === '\\') return '\\';
    if (e === 'n') return '\n';
    if (e === 'r') return '\r';
    if (e === 't') return '\t';
    return String.fromCharCode(parseInt(e.slice(1), 16));
  });
}

describe('forTerminal', () => {
  it('shows escapes instead of obeying them', () => {
    expect(forTerminal('\x1b[31mred\x1b[0m')).toBe('\\x1b[31mred\\x1b[0m');
    expect(forTerminal('\x1b]52;c;ZXZpbA==\x07')).toBe('\\x1b]52;c;ZXZpbA==\\x07');
    expect(forTerminal('a\x9b2Jb\x85')).toBe('a\\x9b2Jb\\x85');
    expect(forTerminal('rtl \u202egnp.exe')).toBe('rtl \\u202egnp.exe');
    expect(forTerminal('\u2066x\u2069\u200f')).toBe('\\u2066x\\u2069\\u200f');
    expect(forTerminal('pay\u200bpal \ufeffbom')).toBe('pay\\u200bpal \\ufeffbom');
    expect(forTerminal('nul\x00del\x7f')).toBe('nul\\x00del\\x7f');
  });

  it('a single-line field cannot forge a line; a multi-line text keeps its lines but not a bare CR', () => {
    expect(forTerminal('Subject\nX-Fake: yes\r\tz')).toBe('Subject\\nX-Fake: yes\\r\\tz');
    expect(forTerminal('line 1\nline 2\r overwritten\ttab', { multiline: true })).toBe('line 1\nline 2\\r overwritten\ttab');
  });

  it('a backslash is doubled, so a typed "\\x1b" is not mistaken for an escape', () => {
    expect(forTerminal('C:\\x1b')).toBe('C:\\\\x1b');
    expect(forTerminal('\x1b')).not.toBe(forTerminal('\\x1b'));
  });

  it('leaves ordinary text, accents and emoji alone, and counts what it escaped', () => {
    expect(forTerminal('Grüße — 日本 🎉 ok')).toBe('Grüße — 日本 🎉 ok');
    const stats = escapeStats();
    forTerminal('\x1b[1m\u202e\x85', { stats });
    expect(stats).toEqual({ controls: 2, bidi: 1, invalid: 0 });
    expect(describeEscapes(stats)).toBe('2 control characters, 1 bidi or invisible character');
    expect(forTerminal(null)).toBe('');
  });

  it('for any text: no dangerous code point out, and the original comes back', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (s) => {
        const out = forTerminal(s);
        expect(DANGEROUS.test(out)).toBe(false);
        expect(out).not.toMatch(/[\n\t]/);
        expect(unescape(out)).toBe(s);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('bytesForTerminal', () => {
  it('decodes UTF-8 and shows every invalid byte as \\xNN', () => {
    const stats = escapeStats();
    const buf = Buffer.concat([Buffer.from('caf\u00e9 '), Buffer.from([0xff, 0xc3, 0x28, 0x80]), Buffer.from(' \x1b[2J')]);
    expect(bytesForTerminal(buf, { stats })).toBe('café \\xff\\xc3(\\x80 \\x1b[2J');
    expect(stats).toEqual({ controls: 1, bidi: 0, invalid: 3 });
  });

  it('refuses overlong forms and encoded surrogates, as RFC 3629 does', () => {
    expect(bytesForTerminal(Buffer.from([0xc0, 0xaf]))).toBe('\\xc0\\xaf');
    expect(bytesForTerminal(Buffer.from([0xed, 0xa0, 0x80]))).toBe('\\xed\\xa0\\x80');
    expect(bytesForTerminal(Buffer.from([0xf4, 0x90, 0x80, 0x80]))).toBe('\\xf4\\x90\\x80\\x80');
    expect(bytesForTerminal(Buffer.from('\u202e', 'utf8'))).toBe('\\u202e');
  });

  it('for any bytes: no dangerous code point out', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        expect(DANGEROUS.test(bytesForTerminal(bytes))).toBe(false);
        expect(DANGEROUS.test(bytesForTerminal(bytes, { multiline: true }))).toBe(false);
      }),
      { numRuns: 2000 },
    );
  });

  it('valid UTF-8 comes back exactly (after unescaping)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 80 }), (s) => {
        expect(unescape(bytesForTerminal(Buffer.from(s, 'utf8')))).toBe(s);
      }),
    );
  });
});

describe('decodeBytes', () => {
  it('keeps every invalid byte, to be shown as \\xNN wherever the text is echoed', () => {
    const buf = Buffer.from([0x31, 0xff, 0xc3, 0xa9, 0x80, 0x0a]);
    const s = decodeBytes(buf, 0, 5);
    expect(s.length).toBe(4);
    expect(forTerminal(s)).toBe('1\\xffé\\x80');
    const stats = escapeStats();
    forTerminal(s, { stats });
    expect(stats.invalid).toBe(2);
    expect(decodeBytes(Buffer.from('plain ascii'))).toBe('plain ascii');
  });

  it('for any bytes: valid UTF-8 decoded, the escaped form equals bytesForTerminal', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        expect(forTerminal(decodeBytes(bytes), { multiline: true })).toBe(bytesForTerminal(bytes, { multiline: true }));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('the sinks', () => {
  it('terminalSafe escapes what forgotten call sites would let through, keeps lines and backslashes', () => {
    expect(terminalSafe('ok\n\ttab \\ back')).toBe('ok\n\ttab \\ back');
    expect(terminalSafe('x\x1b[2Jy\u202ez\r')).toBe('x\\x1b[2Jy\\u202ez\\r');
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (s) => {
        expect(DANGEROUS.test(terminalSafe(s))).toBe(false);
      }),
    );
  });

  it('jsonForTerminal: the value is exact, the text is safe', () => {
    const v = { subject: 'rtl \u202egnp.exe \x1b[31m\x85\u2028\u2066', list: ['\x7f', '\ud800'] };
    const text = jsonForTerminal(v, 2);
    expect(DANGEROUS.test(text)).toBe(false);
    expect(JSON.parse(text)).toEqual(v);
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 100 }), (s) => {
        const t = jsonForTerminal({ s });
        expect(DANGEROUS.test(t)).toBe(false);
        expect(JSON.parse(t)).toEqual({ s });
      }),
    );
  });
});
