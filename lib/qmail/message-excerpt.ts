// The part of a queued (or quarantined) message an admin reads before deciding: the header
// and the first lines of the body, from the first bytes of the file. Two forms: the exact text
// for --json (UTF-8 where the bytes are UTF-8, Latin-1 otherwise), and the terminal form, where
// every control character, bidi override and invalid UTF-8 byte is a visible escape and a
// last line says what was cut and what was escaped. Pure: the caller reads the file.

import { type EscapeStats, bytesForTerminal, describeEscapes, escapeStats } from '../text.js';
import { bytesToText, readHeader } from './message-header.js';

export interface MessageExcerpt {
  /** The header block as text (exact form), without its final blank line. */
  header: string;
  /** The first body lines (exact form). */
  body: string;
  /** True when the message goes on past what is shown. */
  truncated: boolean;
  /** The same, for a terminal. */
  terminal: { header: string; body: string; note: string | null };
}

/**
 * `head` is the first bytes of the message file, `size` the file's size, `bodyLines` how many
 * body lines to keep.
 */
export function messageExcerpt(head: Buffer, size: number, bodyLines: number): MessageExcerpt {
  const whole = head.length >= size;
  const text = head.toString('latin1');
  const h = readHeader(text, 0, whole);
  let headerEnd = h.end;
  while (headerEnd > 0 && text[headerEnd - 1] === '\n') headerEnd--;
  const bodyAll = text.slice(h.end).split('\n');
  const kept = bodyAll.slice(0, bodyLines).join('\n');
  const bodyBytes = head.subarray(h.end, h.end + kept.length);
  const lines = Math.min(bodyLines, bodyAll.length);
  const truncated = bodyAll.length > bodyLines || !whole;
  const shownBytes = h.end + kept.length;
  const stats: EscapeStats = escapeStats();
  const terminal = {
    header: bytesForTerminal(head.subarray(0, headerEnd), { multiline: true, stats }),
    body: bytesForTerminal(bodyBytes, { multiline: true, stats }),
    note: null as string | null,
  };
  const notes: string[] = [];
  if (truncated) {
    notes.push(`cut: ${lines} body line${lines === 1 ? '' : 's'} shown, ${shownBytes} of ${size} bytes`);
  }
  const escaped = describeEscapes(stats);
  if (escaped) notes.push(`escaped: ${escaped}`);
  if (notes.length) terminal.note = `[${notes.join('; ')}]`;
  return {
    header: bytesToText(text.slice(0, headerEnd)),
    body: bytesToText(kept),
    truncated,
    terminal,
  };
}
