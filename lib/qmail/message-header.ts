// Reading the header of a queued message (RFC 5322 as qmail stores it: LF line ends), for
// the Subject sample shown to the admin and the header block `qguard queue show` prints.
// Works on "binary" (latin1) strings so that one character is one byte and offsets into the
// text are offsets into the file. Pure.

/** One header field: its name, its value unfolded (still raw bytes as latin1), its extent. */
export interface HeaderField {
  name: string;
  /** The value with folding removed, leading space trimmed, as latin1 bytes. */
  raw: string;
  start: number;
  end: number;
}

export interface HeaderBlock {
  fields: HeaderField[];
  /** Offset just after the header (after the blank line), or where the data ran out. */
  end: number;
  /** True when the blank line that ends the header was seen (or the file ended). */
  complete: boolean;
}

/**
 * Split the header that starts at `pos` into fields. `eof` says the text is the whole file:
 * a header that runs to the end of the file is then complete (a message with no body).
 * A line that does not look like a field (no colon) ends the header, as mail readers do.
 */
export function readHeader(text: string, pos = 0, eof = false): HeaderBlock {
  const fields: HeaderField[] = [];
  let i = pos;
  let current: { name: string; parts: string[]; start: number } | null = null;
  const close = (end: number) => {
    if (current) {
      const raw = current.parts.join('').trim();
      fields.push({ name: current.name, raw, start: current.start, end });
      current = null;
    }
  };
  while (i < text.length) {
    const nl = text.indexOf('\n', i);
    if (nl < 0) {
      // A last line without its newline: complete only at the end of the file.
      if (!eof) {
        close(i);
        return { fields, end: i, complete: false };
      }
    }
    const lineEnd = nl < 0 ? text.length : nl;
    const next = nl < 0 ? text.length : nl + 1;
    let line = text.slice(i, lineEnd);
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (line === '') {
      close(i);
      return { fields, end: next, complete: true };
    }
    if ((line[0] === ' ' || line[0] === '\t') && current) {
      (current as { parts: string[] }).parts.push(line);
    } else {
      const colon = line.indexOf(':');
      if (colon <= 0 || /[\s]/.test(line.slice(0, colon))) {
        // Not a header line: the body starts here (no blank line before it).
        close(i);
        return { fields, end: i, complete: true };
      }
      close(i);
      current = { name: line.slice(0, colon), parts: [line.slice(colon + 1)], start: i };
    }
    i = next;
  }
  close(i);
  return { fields, end: i, complete: eof };
}

/** The first field of that name (case-insensitive), or null. */
export function headerValue(block: HeaderBlock, name: string): string | null {
  const want = name.toLowerCase();
  for (const f of block.fields) if (f.name.toLowerCase() === want) return f.raw;
  return null;
}

/**
 * The raw value of the first field called `name` in the header starting at `pos`, without
 * splitting the whole header (the scan's hot path). `complete` false: the text ended before
 * the field or the end of the header was seen (and `eof` is false): read more and ask again.
 */
export function findField(text: string, pos: number, name: string, eof: boolean): { raw: string | null; complete: boolean } {
  const want = `${name.toLowerCase()}:`;
  let i = pos;
  while (i < text.length) {
    let nl = text.indexOf('\n', i);
    if (nl < 0) {
      if (!eof) return { raw: null, complete: false };
      nl = text.length;
    }
    const c = text.charCodeAt(i);
    // A blank line ends the header.
    if (c === 10 || (c === 13 && nl === i + 1)) return { raw: null, complete: true };
    if (c !== 32 && c !== 9) {
      const colon = text.indexOf(':', i);
      // A line that is not a field: the body started without a blank line.
      if (colon < 0 || colon > nl) return { raw: null, complete: true };
      if (colon - i + 1 === want.length && text.slice(i, colon + 1).toLowerCase() === want) {
        const parts = [text.slice(colon + 1, nl)];
        let j = nl + 1;
        while (j < text.length && (text.charCodeAt(j) === 32 || text.charCodeAt(j) === 9)) {
          let nl2 = text.indexOf('\n', j);
          if (nl2 < 0) {
            if (!eof) return { raw: null, complete: false };
            nl2 = text.length;
          }
          parts.push(text.slice(j, nl2));
          j = nl2 + 1;
        }
        if (j >= text.length && !eof) return { raw: null, complete: false };
        return { raw: parts.join('').trim(), complete: true };
      }
    }
    i = nl + 1;
  }
  return { raw: null, complete: eof };
}

const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/** Bytes (as a latin1 string) to text: UTF-8 when they are valid UTF-8, else Latin-1. */
export function bytesToText(latin1: string): string {
  // Pure ASCII is the common case and needs no decoding.
  if (!/[\x80-\xff]/.test(latin1)) return latin1;
  try {
    return utf8Strict.decode(Buffer.from(latin1, 'latin1'));
  } catch {
    return latin1;
  }
}

function decodeWord(charset: string, encoding: string, data: string): string | null {
  let bytes: Buffer;
  if (encoding.toUpperCase() === 'B') {
    if (!/^[A-Za-z0-9+/]*=*$/.test(data)) return null;
    bytes = Buffer.from(data, 'base64');
  } else {
    const s = data.replace(/_/g, ' ');
    const out: number[] = [];
    for (let i = 0; i < s.length; i++) {
      const c = s[i];
      if (c === '=' && /^[0-9A-Fa-f]{2}$/.test(s.slice(i + 1, i + 3))) {
        out.push(parseInt(s.slice(i + 1, i + 3), 16));
        i += 2;
      } else {
        out.push(s.charCodeAt(i) & 0xff);
      }
    }
    bytes = Buffer.from(out);
  }
  const decoder = decoderFor(charset);
  return decoder === null ? null : decoder.decode(bytes);
}

/** TextDecoders by charset (null: unknown): spam repeats a few charsets, each made once. */
const decoders = new Map<string, { decode(bytes: Uint8Array): string } | null>();

function decoderFor(charset: string): { decode(bytes: Uint8Array): string } | null {
  // RFC 2231 language suffix: charset*lang.
  const name = charset.replace(/\*.*$/, '').toLowerCase();
  let d = decoders.get(name);
  if (d === undefined) {
    try {
      d = new TextDecoder(name);
    } catch {
      d = null;
    }
    if (decoders.size >= 100) decoders.clear();
    decoders.set(name, d);
  }
  return d;
}

/**
 * Decode an unstructured header value (such as Subject) for display: raw 8-bit text as UTF-8
 * (or Latin-1), RFC 2047 encoded words (`=?utf-8?B?...?=`) decoded, whitespace between
 * adjacent encoded words dropped. Undecodable words are left as they are. Control characters
 * are NOT removed here: the printer neutralises them (lib/text.ts).
 */
export function decodeHeaderText(raw: string): string {
  // The common case: plain ASCII, nothing encoded.
  if (!raw.includes('=?') && !/[\x80-\xff]/.test(raw)) {
    // Most often already single-spaced, with nothing to trim.
    return /[\t\n\v\f\r]| {2}|^ | $/.test(raw) ? raw.replace(/\s+/g, ' ').trim() : raw;
  }
  // Spam repeats its subjects: decode each once.
  const hit = decoded.get(raw);
  if (hit !== undefined) return hit;
  // Copies: `raw` (and so the answer) may be a slice of a whole message head, which the cache
  // must not keep alive.
  const out = (` ${decodeEncoded(raw)}`).slice(1);
  if (decoded.size >= 1000) decoded.clear();
  decoded.set((` ${raw}`).slice(1), out);
  return out;
}

const decoded = new Map<string, string>();

/** decodeHeaderText for text with 8-bit bytes or encoded words. */
function decodeEncoded(raw: string): string {
  const text = bytesToText(raw);
  const re = /=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=/g;
  let out = '';
  let last = 0;
  let prevWasWord = false;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    const between = text.slice(last, m.index);
    const decoded = decodeWord(m[1], m[2], m[3]);
    if (decoded === null) {
      out += between + m[0];
      prevWasWord = false;
    } else {
      if (!(prevWasWord && /^[ \t\r\n]*$/.test(between))) out += between;
      out += decoded;
      prevWasWord = true;
    }
    last = re.lastIndex;
  }
  out += text.slice(last);
  return out.replace(/\s+/g, ' ').trim();
}

/** Shorten text for storage or display, marking the cut. */
export function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
