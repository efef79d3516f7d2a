// Text from the outside world (spam headers and bodies, envelope addresses, HELO and reverse
// DNS, spam-list lines, reasons and user names the intranet wrote) made safe for an admin's
// terminal: nothing in it can act on the terminal (ANSI/CSI/OSC sequences, C1 controls,
// bidirectional overrides that make "gnp.exe" read "exe.png"), and the admin still sees
// exactly what is there, as visible escapes:
//
//   C0 controls, DEL, C1      \x1b  \x7f  \x9b      (\n \r \t by name)
//   bidi controls, U+2028/9   \u202e  \u2066  \u2028
//   invisible U+200B/2060/FEFF \u200b  \ufeff
//   lone UTF-16 surrogates    \ud800
//   invalid UTF-8 (bytes)     \xff   (also in text decoded by decodeBytes(): each invalid
//                                     byte is carried as U+DC80+byte, Python's surrogateescape)
//   a backslash itself        \\                    (so "\x1b" typed by a spammer reads \\x1b)
//
// forTerminal() escapes one field (single-line by default: a newline in a Subject must not
// forge an output line) or a multi-line text (newline and tab kept, CR shown: a CR-only line
// break cannot overwrite what was printed before). bytesForTerminal() does the same from raw
// bytes, so invalid UTF-8 is shown byte by byte instead of being hidden behind U+FFFD.
// terminalSafe() is the last line of defence at the output sinks (stdout, stderr, syslog):
// every dangerous code point is escaped there too, so a forgotten call site cannot reopen the
// hole; it leaves backslashes alone (fields were escaped already). jsonForTerminal() prints
// JSON whose value is exact while its text carries no dangerous code point either.
// Pure: no I/O.

/** What an escaper changed, for the "[escaped: ...]" notes of `queue show`. */
export interface EscapeStats {
  /** C0 controls (other than kept newlines and tabs), DEL and C1 controls. */
  controls: number;
  /** Bidirectional controls, line/paragraph separators, invisible characters, lone surrogates. */
  bidi: number;
  /** Bytes that are not valid UTF-8. */
  invalid: number;
}

/** A fresh counter. */
export function escapeStats(): EscapeStats {
  return { controls: 0, bidi: 0, invalid: 0 };
}

/** "3 control characters, 1 invalid UTF-8 byte", or '' when nothing was escaped. */
export function describeEscapes(s: EscapeStats): string {
  const part = (n: number, one: string, many: string) => (n === 0 ? [] : [`${n} ${n === 1 ? one : many}`]);
  return [
    ...part(s.controls, 'control character', 'control characters'),
    ...part(s.bidi, 'bidi or invisible character', 'bidi or invisible characters'),
    ...part(s.invalid, 'invalid UTF-8 byte', 'invalid UTF-8 bytes'),
  ].join(', ');
}

// Everything that can act on a terminal or reorder what it shows. The `u` flag makes the
// surrogate range match only lone surrogates (a valid pair is one code point).
const DANGER_SRC = '\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f\\u200b\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2060\\u2066-\\u2069\\ufeff\\ud800-\\udfff';
/** Dangerous code points, newline and tab excepted. */
const DANGER = new RegExp(`[${DANGER_SRC}]`, 'u');
const DANGER_G = new RegExp(`[${DANGER_SRC}]`, 'gu');
/** Field escaping, single line: newline and tab too, and the backslash. */
const FIELD_G = new RegExp(`[${DANGER_SRC}\\n\\t\\\\]`, 'gu');
/** Field escaping, multi-line: newline and tab kept. */
const MULTI_G = new RegExp(`[${DANGER_SRC}\\\\]`, 'gu');

const hex2 = (n: number) => n.toString(16).padStart(2, '0');

/** The visible form of one code point. */
function escapeOne(c: string, stats?: EscapeStats): string {
  if (c === '\\') return '\\\\';
  const code = c.charCodeAt(0);
  if (code < 0xa0) {
    if (stats) stats.controls++;
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    return `\\x${hex2(code)}`;
  }
  if (code >= 0xdc80 && code <= 0xdcff) {
    // An invalid byte carried through decodeBytes().
    if (stats) stats.invalid++;
    return `\\x${hex2(code - 0xdc00)}`;
  }
  if (stats) stats.bidi++;
  return `\\u${code.toString(16).padStart(4, '0')}`;
}

/**
 * One piece of outside text, escaped for a terminal. Single-line by default (newline, CR and
 * tab shown as \n \r \t); `multiline` keeps newlines and tabs (message headers and bodies).
 */
export function forTerminal(text: string | null | undefined, opts: { multiline?: boolean; stats?: EscapeStats } = {}): string {
  if (text === null || text === undefined) return '';
  const re = opts.multiline ? MULTI_G : FIELD_G;
  re.lastIndex = 0;
  if (!re.test(text)) return text;
  re.lastIndex = 0;
  return text.replace(re, (c) => escapeOne(c, opts.stats));
}

/** Length of the valid UTF-8 sequence starting at buf[i], or 0 when it is not one. */
function utf8Length(buf: Uint8Array, i: number): number {
  const b = buf[i];
  if (b < 0x80) return 1;
  const need = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
  if (need === 0 || i + need > buf.length) return 0;
  const b1 = buf[i + 1];
  // Overlong forms, surrogates and code points past U+10FFFF are invalid (RFC 3629).
  if (b === 0xe0 && b1 < 0xa0) return 0;
  if (b === 0xed && b1 > 0x9f) return 0;
  if (b === 0xf0 && b1 < 0x90) return 0;
  if (b === 0xf4 && b1 > 0x8f) return 0;
  for (let k = 1; k < need; k++) if ((buf[i + k] & 0xc0) !== 0x80) return 0;
  return need;
}

/**
 * Raw bytes (a message file, a line of a spam list) as terminal text: valid UTF-8 decoded and
 * escaped as forTerminal() does, every other byte shown as \xNN.
 */
export function bytesForTerminal(buf: Uint8Array, opts: { multiline?: boolean; stats?: EscapeStats } = {}): string {
  let out = '';
  let start = 0;
  let i = 0;
  const flush = (end: number) => {
    if (end > start) out += forTerminal(Buffer.from(buf.buffer, buf.byteOffset + start, end - start).toString('utf8'), opts);
  };
  while (i < buf.length) {
    if (buf[i] < 0x80) {
      i++;
      continue;
    }
    const n = utf8Length(buf, i);
    if (n > 0) {
      i += n;
      continue;
    }
    flush(i);
    out += `\\x${hex2(buf[i])}`;
    if (opts.stats) opts.stats.invalid++;
    i++;
    start = i;
  }
  flush(i);
  return out;
}

/**
 * Bytes as text without losing any: valid UTF-8 is decoded, and each byte that is not is kept
 * as the lone surrogate U+DC80+byte (surrogateescape), which the escapers here show as \xNN.
 * For text that is parsed first and echoed in messages later (a spam-list line).
 */
export function decodeBytes(buf: Uint8Array, start = 0, end = buf.length): string {
  let ascii = true;
  for (let i = start; i < end; i++) {
    if (buf[i] >= 0x80) {
      ascii = false;
      break;
    }
  }
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (ascii) return b.toString('latin1', start, end);
  let out = '';
  let from = start;
  let i = start;
  while (i < end) {
    if (buf[i] < 0x80) {
      i++;
      continue;
    }
    const n = utf8Length(buf.subarray(0, end), i);
    if (n > 0) {
      i += n;
      continue;
    }
    out += b.toString('utf8', from, i) + String.fromCharCode(0xdc00 + buf[i]);
    i++;
    from = i;
  }
  return out + b.toString('utf8', from, end);
}

/**
 * The output sinks' filter: any code point that could act on a terminal is escaped; newline
 * and tab pass, backslashes are left alone. Costs one regex test when the text is clean.
 */
export function terminalSafe(text: string): string {
  if (!DANGER.test(text)) return text;
  DANGER_G.lastIndex = 0;
  return text.replace(DANGER_G, (c) => escapeOne(c));
}

/** Code points JSON.stringify leaves raw that a terminal would act on. */
const JSON_RAW_G = /[\x7f-\x9f\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2060\u2066-\u2069\ufeff]/g;

/**
 * JSON text of a value, exact (JSON.parse gives back the same value) and terminal-safe:
 * the controls JSON.stringify leaves raw are written as \uXXXX escapes.
 */
export function jsonForTerminal(value: unknown, indent?: number): string {
  const s = JSON.stringify(value, null, indent) ?? 'null';
  JSON_RAW_G.lastIndex = 0;
  if (!JSON_RAW_G.test(s)) return s;
  JSON_RAW_G.lastIndex = 0;
  return s.replace(JSON_RAW_G, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
