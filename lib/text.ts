// Text from the outside world (spam headers, reasons typed by other people, user names) made
// safe to print on an admin's terminal: control characters and ANSI escapes are shown, not
// obeyed. Pure.

/** Replace control characters (C0, DEL, C1, and so every ANSI escape) with visible forms. */
export function safeForTerminal(text: string, opts: { keepNewlines?: boolean } = {}): string {
  return text.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => {
    if (opts.keepNewlines && (c === '\n' || c === '\t')) return c;
    const code = c.charCodeAt(0);
    if (code === 0x1b) return '^[';
    if (code < 0x20) return `^${String.fromCharCode(code + 64)}`;
    return `\\x${code.toString(16).padStart(2, '0')}`;
  });
}
