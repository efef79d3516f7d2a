// The envelope qmail-queue reads on descriptor 1, as qmail-queue(8) defines it: the sender
// preceded by `F` and terminated by a 0 byte, each recipient preceded by `T` and terminated by
// a 0 byte, and the list of recipients terminated by an EXTRA 0 byte — without it qmail-queue
// sees end-of-file first and aborts without queueing (exit 54). qmail-queue.c copies at most
// ADDR = 1003 bytes per address including its 0 byte, so an address is at most 1002 bytes
// (exit 11 "address too long" otherwise); any byte other than `T` or the final 0 where a
// recipient starts is an envelope format error (exit 91).
//
// This is NOT the format of todo/N and intd/N (those have `u` and `p` fields first and no
// extra 0 byte: lib/qmail/queue-files.ts reads them).
//
// Also: qmail-send writes recipients of virtual domains to local/N with the domain's prefix
// (`prefix-user@domain`); fed back to qmail-queue as they are they would be prefixed twice.
// stripVdomPrepend undoes it exactly as qmail-send's own stripvdomprepend() does for bounces.
//
// Pure: strings and bytes in, values and problems out.

/** qmail-queue.c: `#define ADDR 1003`, counting the terminating 0 byte. */
export const QQ_ADDR_MAX = 1002;

/** A message's envelope as qmail-queue takes it. */
export interface QqEnvelope {
  /** "" for a bounce (`<>`), "#@[]" for a double bounce. */
  sender: string;
  recipients: string[];
}

/** Why an address cannot be handed to qmail-queue, or null when it can. */
export function addressProblem(address: string): string | null {
  if (address.includes('\0')) return 'contains a NUL byte';
  const n = Buffer.byteLength(address, 'utf8');
  if (n > QQ_ADDR_MAX) return `longer than ${QQ_ADDR_MAX} bytes (${n})`;
  return null;
}

/**
 * The bytes for qmail-queue's descriptor 1: `F<sender>\0T<rcpt>\0...T<rcpt>\0\0`.
 * Refuses (with the address named) what qmail-queue would refuse.
 */
export function renderQmailQueueEnvelope(env: QqEnvelope): { ok: true; bytes: Buffer } | { ok: false; error: string } {
  const p = addressProblem(env.sender);
  if (p) return { ok: false, error: `sender ${shown(env.sender)}: ${p}` };
  const parts: string[] = [`F${env.sender}\0`];
  for (const r of env.recipients) {
    const q = addressProblem(r);
    if (q) return { ok: false, error: `recipient ${shown(r)}: ${q}` };
    parts.push(`T${r}\0`);
  }
  parts.push('\0');
  return { ok: true, bytes: Buffer.from(parts.join(''), 'utf8') };
}

/**
 * Read such bytes back, strictly as qmail-queue would: an F field first, T fields, the extra
 * 0 byte, and nothing after it.
 */
export function parseQmailQueueEnvelope(buf: Buffer): { ok: true; envelope: QqEnvelope } | { ok: false; error: string } {
  if (buf.length === 0 || buf[0] !== 0x46 /* F */) return { ok: false, error: 'does not start with an F field' };
  let pos = 1;
  const field = (): string | null => {
    const nul = buf.indexOf(0, pos);
    if (nul < 0) return null;
    const s = buf.toString('utf8', pos, nul);
    pos = nul + 1;
    return s;
  };
  const sender = field();
  if (sender === null) return { ok: false, error: 'sender not terminated by a 0 byte' };
  if (Buffer.byteLength(sender) > QQ_ADDR_MAX) return { ok: false, error: `sender longer than ${QQ_ADDR_MAX} bytes` };
  const recipients: string[] = [];
  for (;;) {
    if (pos >= buf.length) return { ok: false, error: 'ends before the extra 0 byte that closes the recipient list' };
    const c = buf[pos++];
    if (c === 0) break;
    if (c !== 0x54 /* T */) return { ok: false, error: `byte ${c} where a T field or the final 0 byte belongs (offset ${pos - 1})` };
    const r = field();
    if (r === null) return { ok: false, error: `recipient ${recipients.length + 1} not terminated by a 0 byte` };
    if (Buffer.byteLength(r) > QQ_ADDR_MAX) return { ok: false, error: `recipient ${recipients.length + 1} longer than ${QQ_ADDR_MAX} bytes` };
    recipients.push(r);
  }
  if (pos !== buf.length) return { ok: false, error: `${buf.length - pos} bytes after the final 0 byte` };
  return { ok: true, envelope: { sender, recipients } };
}

/** control/virtualdomains: key (domain, `.suffix`, `user@domain`, or "" = every domain) → prefix. */
export type VirtualDomains = Map<string, string>;

/**
 * Parse control/virtualdomains the way qmail reads it (control_readfile + constmap): one
 * `key:prefix` per line, `#` comments and empty lines skipped, trailing blanks stripped, keys
 * compared without case. The first line for a key wins (constmap keeps the first).
 */
export function parseVirtualDomains(text: string): { map: VirtualDomains; problems: string[] } {
  const map: VirtualDomains = new Map();
  const problems: string[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/[ \t\r]+$/, '');
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    if (colon < 0) {
      problems.push(`line ${i + 1}: no colon: ${shown(line)}`);
      return;
    }
    const key = line.slice(0, colon).toLowerCase();
    if (!map.has(key)) map.set(key, line.slice(colon + 1));
  });
  return { map, problems };
}

/**
 * Undo qmail-send's virtual-domain rewriting of a local/ recipient (`prefix-user@domain` →
 * `user@domain`), exactly as qmail-send.c's stripvdomprepend(): look the domain up, then each
 * `.suffix` of it, then the wildcard ""; the first entry found decides — an empty prefix
 * (an exception line) or an address that does not start with `prefix-` leaves it unchanged.
 */
export function stripVdomPrepend(recipient: string, vdoms: VirtualDomains): string {
  if (vdoms.size === 0) return recipient;
  const at = recipient.lastIndexOf('@');
  if (at < 0) return recipient;
  const domain = recipient.slice(at + 1);
  for (let i = 0; i <= domain.length; i++) {
    if (!(i === 0 || i === domain.length || domain[i] === '.')) continue;
    const prefix = vdoms.get(domain.slice(i).toLowerCase());
    if (prefix === undefined) continue;
    if (prefix === '') break;
    if (!recipient.startsWith(prefix) || recipient[prefix.length] !== '-') break;
    return recipient.slice(prefix.length + 1);
  }
  return recipient;
}

/** qmail-queue's exit codes (qmail-queue(8)): 0 queued, 11-40 permanent, others temporary. */
export function qmailQueueExit(code: number): { outcome: 'ok' | 'permanent' | 'temporary'; text: string } {
  if (code === 0) return { outcome: 'ok', text: 'queued' };
  const known: Record<number, string> = {
    11: 'address too long',
    31: 'mail server permanently refuses to send the message to any recipients',
    51: 'out of memory',
    52: 'timeout',
    53: 'write error (disk full?)',
    54: 'unable to read the message or envelope',
    55: 'unable to read a configuration file',
    56: 'problem making a network connection',
    61: 'problem with the qmail home directory',
    62: 'problem with the queue directory',
    63: 'problem with queue/pid',
    64: 'problem with queue/mess',
    65: 'problem with queue/intd',
    66: 'problem with queue/todo',
    71: 'mail server temporarily refuses to send the message',
    72: 'connection to mail server timed out',
    73: 'connection to mail server rejected',
    74: 'communication with mail server failed',
    81: 'internal bug',
    82: 'refused with a custom message on descriptor 6',
    91: 'envelope format error',
  };
  const text = `exit ${code}: ${known[code] ?? (code >= 11 && code <= 40 ? 'permanent error' : 'temporary error')}`;
  return { outcome: code >= 11 && code <= 40 ? 'permanent' : 'temporary', text };
}

function shown(s: string): string {
  return JSON.stringify(s.length > 60 ? `${s.slice(0, 60)}…` : s);
}
