// The queued-message model: what qguard knows of one message in a qmail queue (its files and
// their stats, the envelope half from todo/intd or info + local + remote, the origin read from
// the header), how a record is assembled from what was read, the kind recorded for it, and the
// change signatures that let a scan skip what did not change. Pure: lib/io/queue-walk.ts does
// the reading and hands the bytes and stats in.

import { type BounceEntry, parseBounceFile, parseEnvelope, parseInfo, parseRecipientList } from './queue-files.js';
import type { MessageKind, MessageOrigin } from './received.js';

/** The queue directories that hold a message's files, in qmail's INTERNALS order. */
export const QUEUE_DIRS = ['mess', 'todo', 'intd', 'info', 'local', 'remote', 'bounce'] as const;
export type QueueDirName = (typeof QUEUE_DIRS)[number];

/** Where the queue is and how it is laid out. */
export interface QueueLayout {
  dir: string;
  /** conf-split: number of numeric subdirectories (23 by default). */
  split: number;
  /** Which directories have the S/ level. */
  splitDirs: Record<QueueDirName, boolean>;
}

/** One file's stat, what change detection needs. */
export interface FileStat {
  ino: number;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
}

export type MessageStats = Partial<Record<QueueDirName, FileStat>>;

/** Where a message is in qmail's lifecycle (names as in the fixtures' ground truth). */
export type MessageState = 'preprocessed' | 'todo' | 'in-flight-intd' | 'in-flight-mess-only';

/** One envelope recipient and where its state is kept. */
export interface QueuedRecipient {
  address: string;
  done: boolean;
  queue: 'local' | 'remote' | 'todo' | 'intd';
}

/** The envelope half of a message: from todo/intd, or from info + local + remote. */
export interface EnvelopeState {
  state: MessageState;
  /** Envelope sender: "" for a bounce, "#@[]" for a double bounce; null when none yet. */
  sender: string | null;
  recipients: QueuedRecipient[];
  /** False while qmail-queue is still writing intd/N (its tail cut mid-address). */
  envelopeComplete: boolean;
  /** uid and pid from todo/intd (gone once preprocessed). */
  uid: number | null;
  pid: number | null;
  /** Arrival: info/ mtime (qmail's birth time), or todo/, intd/, mess/ mtime before that. */
  arrival: Date;
  /** Failures waiting in bounce/N, or null. */
  bounceReport: BounceEntry[] | null;
  problems: string[];
}

/** Everything known about one queued message, read fresh from the queue. */
export interface QueuedMessage extends EnvelopeState {
  /** Queue id: the file name (an inode number on the machine that wrote it). */
  id: string;
  split: number;
  /** Paths relative to the queue directory of every file of this message that exists. */
  files: string[];
  /** The same files as absolute paths, by directory. */
  paths: Partial<Record<QueueDirName, string>>;
  stats: MessageStats;
  /** Size of mess/S/N in bytes. */
  size: number;
  /**
   * The first line of mess/S/N (qmail-queue's pid and date): with the id, the identity of the
   * message, because inode numbers are reused. "" when the file is still empty.
   */
  line1: string;
  /** The date in line 1 (qmail-queue's clock), or null. */
  birth: Date | null;
  origin: MessageOrigin;
  /** How many bytes of mess were read to find the origin. */
  headBytes: number;
  /** Change detection: equal signatures mean the files did not change. */
  sig: string;
  messSig: string;
}

/** What reading the head of mess/S/N gave: the origin, line 1, bytes read, the size when read whole. */
export interface HeadRead {
  origin: MessageOrigin;
  line1: string;
  headBytes: number;
  size: number | null;
}

/** The split subdirectory of a message id. Ids are inode numbers; may exceed 2^53 in theory. */
export function splitOf(id: string, split: number): number {
  if (id.length <= 15) return Number(id) % split;
  return Number(BigInt(id) % BigInt(split));
}

/** Path of a message's file relative to the queue (qmail's fmtqfn). */
export function relPath(layout: QueueLayout, dir: QueueDirName, id: string): string {
  return layout.splitDirs[dir] ? `${dir}/${splitOf(id, layout.split)}/${id}` : `${dir}/${id}`;
}

export function absPath(layout: QueueLayout, dir: QueueDirName, id: string): string {
  // layout.dir is absolute and normalised (openQueue): plain concatenation, no path.join per file.
  return `${layout.dir}/${relPath(layout, dir, id)}`;
}

/** Change signature of a message's files: equal → nothing on disk changed. */
export function messageSignature(stats: MessageStats): { sig: string; messSig: string } {
  let sig = '';
  for (let i = 0; i < QUEUE_DIRS.length; i++) {
    const s = stats[QUEUE_DIRS[i]];
    if (s) sig += `${i}${s.ino}:${s.size}:${s.mtimeMs} `;
  }
  const m = stats.mess;
  return { sig, messSig: m ? `${m.ino}:${m.size}:${m.mtimeMs}:${m.ctimeMs}` : '' };
}

/**
 * messageSignature with the parts of the `reuse` directories taken from a `stored` signature
 * instead of a stat (for files that cannot have changed since: see scan-queue's rotation);
 * `listed`: the directories that hold a file of the message now. Null when `stored` lacks one.
 */
export function signatureReusing(
  stats: MessageStats,
  stored: string,
  reuse: readonly QueueDirName[],
  listed: readonly QueueDirName[],
): string | null {
  let sig = '';
  for (let i = 0; i < QUEUE_DIRS.length; i++) {
    const d = QUEUE_DIRS[i];
    if (reuse.includes(d)) {
      if (!listed.includes(d)) continue;
      // Parts are `<dir index><ino>:<size>:<mtime> `, in QUEUE_DIRS order.
      let at = 0;
      if (!stored.startsWith(String(i))) {
        at = stored.indexOf(` ${i}`) + 1;
        if (at === 0) return null;
      }
      const end = stored.indexOf(' ', at);
      if (end < 0) return null;
      sig += stored.slice(at, end + 1);
      continue;
    }
    const s = stats[d];
    if (s) sig += `${i}${s.ino}:${s.size}:${s.mtimeMs} `;
  }
  return sig;
}

/**
 * readEnvelope's decisions, with the files' presence and reading given: `read(d)` returns the
 * bytes of the file (valid until the next call) and, when the caller learns the file's stat
 * only by opening it, has put it in `stats` by the time it returns.
 */
export function envelopeVia(has: (d: QueueDirName) => boolean, read: (d: QueueDirName) => Buffer, stats: MessageStats): EnvelopeState {
  const problems: string[] = [];
  const recipients: QueuedRecipient[] = [];
  let state: MessageState;
  let sender: string | null = null;
  let envelopeComplete = true;
  let uid: number | null = null;
  let pid: number | null = null;
  let arrivalMs: number;
  const fromTodo = (which: 'todo' | 'intd') => {
    const env = parseEnvelope(read(which));
    sender = env.sender;
    uid = env.uid;
    pid = env.pid;
    envelopeComplete = env.complete;
    for (const r of env.recipients) recipients.push({ address: r, done: false, queue: which });
    for (const p of env.problems) problems.push(`${which}: ${p}`);
    // A todo/N cut short is damage; an intd/N cut short is qmail-queue still writing it.
    if (!env.complete && which === 'todo') problems.push(`todo: truncated envelope (${JSON.stringify(env.truncatedTail)})`);
  };
  if (has('todo')) {
    state = 'todo';
    fromTodo('todo');
    arrivalMs = stats.todo!.mtimeMs;
  } else if (has('info')) {
    state = 'preprocessed';
    const info = parseInfo(read('info'));
    sender = info.sender;
    for (const p of info.problems) problems.push(`info: ${p}`);
    arrivalMs = stats.info!.mtimeMs;
    for (const q of ['local', 'remote'] as const) {
      if (!has(q)) continue;
      const list = parseRecipientList(read(q));
      for (const r of list.recipients) recipients.push({ address: r.address, done: r.done, queue: q });
      for (const p of list.problems) problems.push(`${q}: ${p}`);
    }
  } else if (has('intd')) {
    state = 'in-flight-intd';
    fromTodo('intd');
    arrivalMs = stats.intd!.mtimeMs;
  } else {
    state = 'in-flight-mess-only';
    envelopeComplete = false;
    arrivalMs = stats.mess?.mtimeMs ?? Date.now();
  }
  let bounceReport: BounceEntry[] | null = null;
  if (has('bounce')) {
    const b = parseBounceFile(read('bounce').toString('utf8'));
    bounceReport = b.entries;
    for (const p of b.problems) problems.push(`bounce: ${p}`);
  }
  return { state, sender, recipients, envelopeComplete, uid, pid, arrival: new Date(Math.floor(arrivalMs)), bounceReport, problems };
}

function relFiles(layout: QueueLayout, id: string, split: number, stats: MessageStats) {
  const files: string[] = [];
  const paths: Partial<Record<QueueDirName, string>> = {};
  for (const d of QUEUE_DIRS) {
    if (!stats[d]) continue;
    // relPath and absPath, with the split computed once.
    const rel = layout.splitDirs[d] ? `${d}/${split}/${id}` : `${d}/${id}`;
    files.push(rel);
    paths[d] = `${layout.dir}/${rel}`;
  }
  return { files, paths };
}

/** The message record from what was read (head: readOrigin's answer). */
export function messageOf(
  layout: QueueLayout,
  id: string,
  stats: MessageStats & { mess: FileStat },
  head: HeadRead,
  env: EnvelopeState,
): QueuedMessage {
  const split = splitOf(id, layout.split);
  const { files, paths } = relFiles(layout, id, split, stats);
  const { sig, messSig } = messageSignature(stats);
  const problems = head.origin.problems.length ? [...head.origin.problems, ...env.problems] : env.problems;
  return {
    id,
    split,
    files,
    paths,
    stats,
    size: head.size ?? stats.mess.size,
    line1: head.line1,
    birth: head.origin.queueLine?.date ?? null,
    origin: head.origin,
    headBytes: head.headBytes,
    sig,
    messSig,
    // The envelope's fields one by one: cheaper than spreading them, once per message.
    state: env.state,
    sender: env.sender,
    recipients: env.recipients,
    envelopeComplete: env.envelopeComplete,
    uid: env.uid,
    pid: env.pid,
    arrival: env.arrival,
    bounceReport: env.bounceReport,
    problems,
  };
}

/**
 * The kind to record: the header's answer, with the envelope settling what the header could
 * not (a bounce cut before its marker: `#@[]` makes it a double bounce).
 */
export function kindOf(m: Pick<QueuedMessage, 'origin' | 'sender'>): MessageKind {
  const k = m.origin.kind;
  if (k === 'bounce' && m.origin.chain.length === 0 && m.sender === '#@[]') return 'double-bounce';
  return k;
}
