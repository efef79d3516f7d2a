// The small binary files of a qmail queue, parsed from bytes: the envelope qmail-queue writes
// to intd/N and todo/N, the sender line qmail-send keeps in info/S/N, the per-recipient
// T/D entries of local/S/N and remote/S/N, and the pending failure text of bounce/N.
// Formats as in qmail's INTERNALS and test/fixtures/qmail-queue/README.md. Pure: bytes in,
// values and a list of problems out. Truncation (a file caught while it is being written) is
// reported, not thrown: the readers must keep going when the queue changes under them.

/** One recipient of a message with its delivery state. */
export interface Recipient {
  address: string;
  /** `D` in local/ or remote/: delivered, or failed for good (then listed in bounce/N). */
  done: boolean;
}

/** A parsed todo/N or intd/N: what qmail-queue received from the injecting program. */
export interface Envelope {
  /** `u` field: uid of the injecting process (qmaild for SMTP); null when missing. */
  uid: number | null;
  /** `p` field: qmail-queue's pid, the N of `Received: (qmail N invoked ...)`. */
  pid: number | null;
  /** `F` field: envelope sender, "" for <>, "#@[]" for a double bounce; null when missing. */
  sender: string | null;
  /** Every complete `T` field, in envelope order. */
  recipients: string[];
  /** False when the file stops in the middle of a field (qmail-queue still writing intd/N). */
  complete: boolean;
  /** The cut-off last field, as read (e.g. `Tloan12@se`), when not complete. */
  truncatedTail: string | null;
  problems: string[];
}

/** Addresses are bytes; UTF-8 is how non-ASCII ones are written in practice. */
function text(buf: Buffer, start: number, end: number): string {
  return buf.toString('utf8', start, end);
}

/** Split NUL-terminated fields; the last one, when not NUL-terminated, is the tail. */
function fields(buf: Buffer): { fields: string[]; tail: string | null } {
  const out: string[] = [];
  let start = 0;
  for (;;) {
    const nul = buf.indexOf(0, start);
    if (nul < 0) break;
    out.push(text(buf, start, nul));
    start = nul + 1;
  }
  return { fields: out, tail: start < buf.length ? text(buf, start, buf.length) : null };
}

/** Shorten a field for a problem message. */
function shown(s: string): string {
  return JSON.stringify(s.length > 60 ? `${s.slice(0, 60)}…` : s);
}

/**
 * Parse todo/N or intd/N: `u<uid>\0p<pid>\0F<sender>\0T<rcpt>\0...`. An intd/N caught in
 * flight stops at a 256-byte boundary, often inside an address: that tail is not a recipient.
 */
export function parseEnvelope(buf: Buffer): Envelope {
  const env: Envelope = { uid: null, pid: null, sender: null, recipients: [], complete: true, truncatedTail: null, problems: [] };
  const { fields: list, tail } = fields(buf);
  if (tail !== null) {
    env.complete = false;
    env.truncatedTail = tail;
  }
  if (buf.length === 0) {
    env.complete = false;
    env.problems.push('empty envelope');
    return env;
  }
  for (const f of list) {
    const tag = f.charAt(0);
    const value = f.slice(1);
    if (tag === 'u' && env.uid === null && env.sender === null) {
      if (/^\d{1,10}$/.test(value)) env.uid = Number(value);
      else env.problems.push(`bad uid field ${shown(f)}`);
    } else if (tag === 'p' && env.pid === null && env.sender === null) {
      if (/^\d{1,10}$/.test(value)) env.pid = Number(value);
      else env.problems.push(`bad pid field ${shown(f)}`);
    } else if (tag === 'F' && env.sender === null) {
      env.sender = value;
    } else if (tag === 'T' && env.sender !== null) {
      env.recipients.push(value);
    } else if (f === '' ) {
      // qmail-queue's own input ends with an empty field; tolerate it if ever copied.
    } else {
      env.problems.push(`unexpected field ${shown(f)}`);
    }
  }
  if (env.sender === null && env.complete) env.problems.push('no sender (F) field');
  return env;
}

/** Parse info/S/N: `F<sender>\0`. Returns null (with a problem) when it is not that. */
export function parseInfo(buf: Buffer): { sender: string | null; problems: string[] } {
  const { fields: list, tail } = fields(buf);
  const problems: string[] = [];
  if (list.length === 0 || !list[0].startsWith('F')) {
    problems.push(buf.length === 0 ? 'empty info file' : `info file does not start with an F field${tail !== null ? ' (truncated?)' : ''}`);
    return { sender: null, problems };
  }
  if (list.length > 1 || tail !== null) problems.push('extra data after the sender in info file');
  return { sender: list[0].slice(1), problems };
}

/**
 * Parse local/S/N or remote/S/N: one `T<addr>\0` (to do) or `D<addr>\0` (done) per recipient.
 * qmail-send rewrites the first byte in place when a delivery ends, so the file never shrinks.
 */
export function parseRecipientList(buf: Buffer): { recipients: Recipient[]; problems: string[] } {
  const { fields: list, tail } = fields(buf);
  const recipients: Recipient[] = [];
  const problems: string[] = [];
  for (const f of list) {
    const tag = f.charAt(0);
    if (tag === 'T' || tag === 'D') recipients.push({ address: f.slice(1), done: tag === 'D' });
    else if (f !== '') problems.push(`unexpected entry ${shown(f)}`);
  }
  if (tail !== null) problems.push(`truncated entry ${shown(tail)}`);
  return { recipients, problems };
}

/** One permanently failed recipient waiting in bounce/N. */
export interface BounceEntry {
  address: string;
  reason: string;
}

/**
 * Parse bounce/N: blocks of `<addr>:\n<reason lines>\n\n`. qmail-send turns them into a
 * bounce message once no recipient of the message is pending any more.
 */
export function parseBounceFile(content: string): { entries: BounceEntry[]; problems: string[] } {
  const entries: BounceEntry[] = [];
  const problems: string[] = [];
  for (const block of content.split(/\n\n+/)) {
    if (block.trim() === '') continue;
    const nl = block.indexOf('\n');
    const head = nl < 0 ? block : block.slice(0, nl);
    const m = /^<(.*)>:$/.exec(head);
    if (!m) {
      problems.push(`unexpected bounce block ${shown(head)}`);
      continue;
    }
    entries.push({ address: m[1], reason: nl < 0 ? '' : block.slice(nl + 1).trim() });
  }
  return { entries, problems };
}

/** A queue file name is a message id: decimal digits only, no leading zero (an inode number). */
export function isMessageId(name: string): boolean {
  return /^[1-9]\d{0,19}$/.test(name);
}
