// Who sent a queued message: the source IP, HELO, remote host and TCPREMOTEINFO, read ONLY
// from the two Received lines our own qmail wrote — line 1 by qmail-queue
// (`Received: (qmail N invoked from network); DATE`) and line 2 by qmail-smtpd
// (`Received: from HOST (HELO h) ([INFO@]IP)\n  by ME with SMTP; DATE`). Deeper Received lines
// are the client's own claims and are never read: counting them would deny innocent relays.
//
// Wrappers our qmail adds around somebody else's message are unwrapped, outermost first:
//   - a bounce (`invoked for bounce`) quotes the original after the FIRST
//     `--- Below this line is ...` marker line and a `Return-Path:` line; a double bounce
//     quotes the bounce (which may quote the spam in turn): the source is the innermost
//     original's line-2 IP — the client that made us bounce;
//   - a copy forwarded by a .qmail file (`invoked by uid N` / `invoked by alias`, then
//     `Delivered-To:` lines) carries the original with its own line 1 and line 2.
// Locally injected mail (`invoked by uid N`, no Delivered-To) has no source IP.
//
// What this cannot tell: a local user can inject a message shaped like a forward or a bounce
// (they can also send spam directly); scan-queue's exemptions and thresholds still apply.
//
// Pure: works on the first bytes of the mess file (as a latin1 string, one char per byte).
// When the answer could change with more bytes it says `needMore`, and the reader extends
// its read up to a bound, then asks again with `final`.

import { formatAddr, parseIp } from '../net/address.js';
import { type HeaderBlock, clip, decodeHeaderText, findField, headerValue, readHeader } from './message-header.js';

/** How a message got into the queue, as the walker reports it. */
export type MessageKind = 'network' | 'local' | 'bounce' | 'double-bounce' | 'unknown';

export const MESSAGE_KINDS: readonly MessageKind[] = ['network', 'local', 'bounce', 'double-bounce', 'unknown'];

/** Line 1, written by qmail-queue on every message. */
export interface QueueLine {
  text: string;
  /** qmail-queue's pid (qmail-smtpd's `qp`). */
  pid: number;
  /** `network` (uid qmaild), `uid` (a local user, or a forward by one), `alias`, `bounce`. */
  via: 'network' | 'uid' | 'alias' | 'bounce' | 'other';
  uid: number | null;
  date: Date | null;
}

/** Line 2, written by qmail-smtpd (or qmail-qmtpd) right below a `from network` line 1. */
export interface SmtpLine {
  text: string;
  /** TCPREMOTEHOST, `unknown` without reverse DNS; odd characters shown as `?`. */
  remoteHost: string;
  /** HELO argument when it differed from the remote host; null when left out. */
  helo: string | null;
  /** TCPREMOTEINFO (ident), when there was one. */
  remoteInfo: string | null;
  /** TCPREMOTEIP exactly as written (`::ffff:1.2.3.4` kept). */
  ip: string;
  /** The server's own name (TCPLOCALHOST / control/me). */
  localHost: string;
  protocol: string;
  date: Date | null;
}

export type Wrapper = 'bounce' | 'double-bounce' | 'forward';

/** What the header says about where a message came from. */
export interface MessageOrigin {
  kind: MessageKind;
  /** This message is a copy forwarded by a .qmail file. */
  forwarded: boolean;
  /** Wrappers from the outside in (e.g. ['double-bounce', 'bounce']). */
  chain: Wrapper[];
  /** Line 1 of the message itself: with the queue id, the identity of a queued message. */
  queueLine: QueueLine | null;
  /** Line 1 of the innermost original reached (equal to queueLine when not wrapped). */
  rootQueueLine: QueueLine | null;
  /** The qmail-smtpd line of the innermost original, when it came from the network. */
  smtp: SmtpLine | null;
  /** The source IP as recorded (verbatim); null for local mail or when not found. */
  sourceIpRecorded: string | null;
  /** The source IP normalised (`::ffff:a.b.c.d` → `a.b.c.d`, IPv6 compressed). */
  sourceIp: string | null;
  /** Subject of the innermost original (decoded for display), or null. */
  subject: string | null;
  /** The answer may change with more bytes: read further and ask again. */
  needMore: boolean;
  /** Why this message is odd (garbled, truncated, line 2 missing, ...). Empty when normal. */
  problems: string[];
}

/** How deep wrappers may nest (a double bounce of a forwarded bounce is 3). */
const MAX_DEPTH = 8;
/** Subjects are samples for the admin's screen, not archives. */
export const SUBJECT_MAX = 200;

const MONTHS: Record<string, number> = {
  Jan: 0, Feb: 1, Mar: 2, Apr: 3, May: 4, Jun: 5, Jul: 6, Aug: 7, Sep: 8, Oct: 9, Nov: 10, Dec: 11,
};

/** qmail's date822fmt: `28 Nov 2026 00:22:16 -0000` (no weekday). Null when not that. */
export function parseQmailDate(text: string): Date | null {
  const ms = canonicalDate(text);
  if (ms === undefined) return parseDateText(text);
  return Number.isNaN(ms) ? null : new Date(ms);
}

const CACHE_MAX = 10_000;
const ipCache = new Map<string, string | null>();

/** "Jan" .. "Dec" by their three character codes. */
const MONTH_CODES = new Map(Object.entries(MONTHS).map(([name, n]) => [(name.charCodeAt(0) << 16) | (name.charCodeAt(1) << 8) | name.charCodeAt(2), n]));

/** The decimal digit at `i`, or -1. */
function digitAt(t: string, i: number): number {
  const c = t.charCodeAt(i) - 48;
  return c >= 0 && c <= 9 ? c : -1;
}

/** The two-digit number at `i`, or -1. */
function twoDigits(t: string, i: number): number {
  const a = digitAt(t, i);
  const b = digitAt(t, i + 1);
  return a < 0 || b < 0 ? -1 : a * 10 + b;
}

/**
 * The scan's fast path for the date of every line 1 and line 2: exactly qmail's shape
 * (`D Mon YYYY HH:MM:SS +HHMM`, one or two day digits, nothing around it), parsed without a
 * regular expression; the same value parseDateText gives. Undefined for any other shape (then
 * parseDateText decides), NaN for an impossible date.
 */
function canonicalDate(t: string): number | undefined {
  let day = digitAt(t, 0);
  if (day < 0) return undefined;
  let i = 1;
  const d2 = digitAt(t, 1);
  if (d2 >= 0) {
    day = day * 10 + d2;
    i = 2;
  }
  if (t.length !== i + 24) return undefined;
  if (t.charCodeAt(i) !== 32 || t.charCodeAt(i + 4) !== 32 || t.charCodeAt(i + 9) !== 32 || t.charCodeAt(i + 12) !== 58) return undefined;
  if (t.charCodeAt(i + 15) !== 58 || t.charCodeAt(i + 18) !== 32) return undefined;
  const month = MONTH_CODES.get((t.charCodeAt(i + 1) << 16) | (t.charCodeAt(i + 2) << 8) | t.charCodeAt(i + 3));
  if (month === undefined) return undefined;
  const sign = t.charCodeAt(i + 19);
  if (sign !== 43 && sign !== 45) return undefined;
  const y1 = twoDigits(t, i + 5);
  const y2 = twoDigits(t, i + 7);
  const hh = twoDigits(t, i + 10);
  const mm = twoDigits(t, i + 13);
  const ss = twoDigits(t, i + 16);
  const oh = twoDigits(t, i + 20);
  const om = twoDigits(t, i + 22);
  if ((y1 | y2 | hh | mm | ss | oh | om) < 0) return undefined;
  const utc = Date.UTC(y1 * 100 + y2, month, day, hh, mm, ss);
  const offset = (oh * 60 + om) * 60_000 * (sign === 45 ? -1 : 1);
  // What new Date(t).getTime() gives: NaN beyond the range of dates.
  const ms = utc - offset;
  return Math.abs(ms) <= 8.64e15 ? ms : NaN;
}

function parseDateText(text: string): Date | null {
  const m = /^\s*(?:[A-Za-z]{3}, )?(\d{1,2}) ([A-Z][a-z]{2}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})\s*$/.exec(text);
  if (!m || MONTHS[m[2]] === undefined) return null;
  const utc = Date.UTC(Number(m[3]), MONTHS[m[2]], Number(m[1]), Number(m[4]), Number(m[5]), Number(m[6]));
  const offset = (Number(m[8]) * 60 + Number(m[9])) * 60_000 * (m[7] === '-' ? -1 : 1);
  const d = new Date(utc - offset);
  return Number.isNaN(d.getTime()) ? null : d;
}

const LINE1 = /^Received: \(qmail (\d{1,10}) invoked (from network|by uid (\d{1,10})|by alias|for bounce|[^)]*)\); (.*)$/;

/** Parse a line 1 (without its newline). Null when it is not qmail-queue's line. */
export function parseQueueLine(line: string): QueueLine | null {
  const m = LINE1.exec(line);
  if (!m) return null;
  const how = m[2];
  const via: QueueLine['via'] =
    how === 'from network' ? 'network' : how.startsWith('by uid') ? 'uid' : how === 'by alias' ? 'alias' : how === 'for bounce' ? 'bounce' : 'other';
  return { text: line, pid: Number(m[1]), via, uid: m[3] !== undefined ? Number(m[3]) : null, date: parseQmailDate(m[4]) };
}

const SMTP1 = /^Received: from (\S*) (?:\(HELO ([^()\s]*)\) )?\(([^()\s]*)\)$/;
const SMTP2 = /^[ \t]+by (\S*) with (\S+); (.*)$/;

/** Parse line 2 from its two physical lines (without newlines). Null when not that shape. */
export function parseSmtpLine(first: string, second: string): SmtpLine | null {
  const a = SMTP1.exec(first);
  const b = SMTP2.exec(second);
  if (!a || !b) return null;
  const who = a[3];
  // The info part is safeput like the rest, and '@' is allowed in it: the IP follows the last.
  const at = who.lastIndexOf('@');
  return {
    text: `${first}\n${second}`,
    remoteHost: a[1],
    helo: a[2] ?? null,
    remoteInfo: at >= 0 ? who.slice(0, at) : null,
    ip: at >= 0 ? who.slice(at + 1) : who,
    localHost: b[1],
    protocol: b[2],
    date: parseQmailDate(b[3]),
  };
}

const OCTET = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const DOTTED_QUAD = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);

/** Normalise a recorded IP for counting: `::ffff:a.b.c.d` → `a.b.c.d`. Null when not an IP. */
export function normaliseIp(recorded: string): string | null {
  // Fast path: a plain dotted quad without leading zeros is already canonical.
  if (DOTTED_QUAD.test(recorded)) return recorded;
  // The rest (IPv6, junk) is slow to parse, and the same senders come back: cache.
  const hit = ipCache.get(recorded);
  if (hit !== undefined) return hit;
  const r = parseIp(recorded);
  const out = r.ok ? formatAddr(r.net.family, r.net.addr) : null;
  if (ipCache.size >= CACHE_MAX) ipCache.clear();
  ipCache.set(recorded, out);
  return out;
}

/** Read one line at `pos`. Null when the text ends before its newline. */
function lineAt(text: string, pos: number): { line: string; next: number } | null {
  const nl = text.indexOf('\n', pos);
  if (nl < 0) return null;
  const line = text.charCodeAt(nl - 1) === 13 && nl > pos ? text.slice(pos, nl - 1) : text.slice(pos, nl);
  return { line, next: nl + 1 };
}

/** The first `--- Below this line is ...` marker line after `pos` (bounces write it once). */
function findMarker(text: string, pos: number): { which: 'copy' | 'original-bounce'; next: number } | null {
  const re = /\n--- Below this line is (a copy of the message|the original bounce)\.\r?\n/g;
  re.lastIndex = Math.max(0, pos - 1);
  const m = re.exec(text);
  if (!m) return null;
  return { which: m[1] === 'the original bounce' ? 'original-bounce' : 'copy', next: m.index + m[0].length };
}

interface Level {
  origin: MessageOrigin;
  text: string;
  final: boolean;
  /** What the innermost message reached is, before wrappers are considered. */
  rootKind: MessageKind;
}

function subjectOf(block: HeaderBlock): string | null {
  const raw = headerValue(block, 'Subject');
  if (raw === null) return null;
  return clip(decodeHeaderText(raw), SUBJECT_MAX);
}

/** Parse the (possibly quoted) message that starts at `pos`. */
function parseAt(lv: Level, pos: number, depth: number): void {
  const { origin, text, final } = lv;
  if (depth > MAX_DEPTH) {
    origin.problems.push(`wrappers nested more than ${MAX_DEPTH} deep`);
    return;
  }
  const where = depth === 0 ? 'first line' : `line 1 of the quoted message (level ${depth})`;
  const l1 = lineAt(text, pos);
  if (!l1) {
    if (!final) origin.needMore = true;
    else origin.problems.push(text.length - pos === 0 ? (depth === 0 ? 'empty message' : `${where} missing`) : `${where} truncated`);
    return;
  }
  const q = parseQueueLine(l1.line);
  if (!q) {
    origin.problems.push(`${where} is not qmail-queue's Received line: ${JSON.stringify(clip(l1.line, 80))}`);
    return;
  }
  if (depth === 0) origin.queueLine = q;
  origin.rootQueueLine = q;

  if (q.via === 'network') {
    lv.rootKind = 'network';
    const a = lineAt(text, l1.next);
    const b = a ? lineAt(text, a.next) : null;
    if (!a || !b) {
      if (!final) origin.needMore = true;
      else origin.problems.push(`line 2 (qmail-smtpd's Received line) truncated at level ${depth}`);
      return;
    }
    const s = parseSmtpLine(a.line, b.line);
    if (!s) {
      origin.problems.push(`line 2 is not qmail-smtpd's Received line: ${JSON.stringify(clip(a.line, 80))}`);
      return;
    }
    origin.smtp = s;
    origin.sourceIpRecorded = s.ip;
    origin.sourceIp = normaliseIp(s.ip);
    if (origin.sourceIp === null) origin.problems.push(`line 2 names no valid IP address: ${JSON.stringify(clip(s.ip, 60))}`);
    takeSubject(lv, l1.next);
    return;
  }

  if (q.via === 'uid' || q.via === 'alias') {
    // A forward is line 1, then qmail-local's Delivered-To line(s), then the original's line 1.
    let p = l1.next;
    let dt = 0;
    for (;;) {
      const l = lineAt(text, p);
      if (!l) {
        if (!final) {
          origin.needMore = true;
          return;
        }
        break;
      }
      if (!/^Delivered-To: /i.test(l.line)) break;
      dt++;
      p = l.next;
    }
    const after = dt > 0 ? lineAt(text, p) : null;
    if (dt > 0 && !after && !final) {
      origin.needMore = true;
      return;
    }
    if (after && after.line.startsWith('Received: (qmail ')) {
      origin.chain.push('forward');
      if (depth === 0) origin.forwarded = true;
      parseAt(lv, p, depth + 1);
      return;
    }
    lv.rootKind = 'local';
    takeSubject(lv, l1.next);
    return;
  }

  if (q.via === 'bounce') {
    const m = findMarker(text, l1.next);
    if (!m) {
      // Without the marker we cannot tell a bounce from a double bounce; the envelope can.
      lv.rootKind = 'bounce';
      if (!final) origin.needMore = true;
      else origin.problems.push(`bounce without its "--- Below this line" marker within the bytes read (level ${depth})`);
      takeSubject(lv, l1.next);
      return;
    }
    origin.chain.push(m.which === 'copy' ? 'bounce' : 'double-bounce');
    // qmail-send writes a blank line, then `Return-Path: <sender>`, then the message.
    let p = m.next;
    for (;;) {
      const l = lineAt(text, p);
      if (!l) {
        if (!final) origin.needMore = true;
        else origin.problems.push(`quoted message truncated after the bounce marker (level ${depth})`);
        return;
      }
      if (l.line === '') {
        p = l.next;
        continue;
      }
      if (/^Return-Path:/i.test(l.line)) p = l.next;
      break;
    }
    parseAt(lv, p, depth + 1);
    return;
  }

  origin.problems.push(`unknown line 1: ${JSON.stringify(clip(l1.line, 80))}`);
}

/** Take the Subject of the header that starts at `pos` (the innermost message's header). */
function takeSubject(lv: Level, pos: number): void {
  const f = findField(lv.text, pos, 'Subject', lv.final);
  if (f.raw !== null) lv.origin.subject = clip(decodeHeaderText(f.raw), SUBJECT_MAX);
  else if (!f.complete && !lv.final) lv.origin.needMore = true;
}

/**
 * Where the message in `head` (the first bytes of a mess file, latin1) came from.
 * `final`: `head` is all there is or all we will read (the whole file, or the read bound):
 * then missing pieces are problems instead of `needMore`.
 */
export function parseOrigin(head: string, final: boolean): MessageOrigin {
  const origin: MessageOrigin = {
    kind: 'unknown',
    forwarded: false,
    chain: [],
    queueLine: null,
    rootQueueLine: null,
    smtp: null,
    sourceIpRecorded: null,
    sourceIp: null,
    subject: null,
    needMore: false,
    problems: [],
  };
  const lv: Level = { origin, text: head, final, rootKind: 'unknown' };
  parseAt(lv, 0, 0);
  // A bounce is a bounce whatever it quotes; a forwarded copy is what it forwards.
  origin.kind = origin.chain.find((w): w is 'bounce' | 'double-bounce' => w !== 'forward') ?? lv.rootKind;
  return origin;
}

/** The outermost header's Subject (for a bounce: "failure notice"). */
export function outerSubject(head: string, final: boolean): string | null {
  return subjectOf(readHeader(head, 0, final));
}
