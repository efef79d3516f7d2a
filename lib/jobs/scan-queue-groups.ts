// scan-queue's reading of one split group (mess/S, info/S, local/S, remote/S and the group's
// share of todo/, intd/, bounce/): list it, compare each message with what is stored, read
// what changed, and hand the results to a sink (the batched writer). The same code runs in
// the main thread and, for the first scan of a host with a large queue, in reader threads:
// with nothing stored to compare with, groups are independent, so several threads read
// several groups at once and send back the new rows as COPY text.
//
// Reads are synchronous (many small files: far cheaper than the thread pool) and never write
// the queue; see lib/io/queue-walk.ts.

import os from 'node:os';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { StoredSignature } from '../db/messages.js';
import { CopyRows, copyHostField, messageRow } from '../db/message-writer.js';
import {
  type ReadOutcome,
  QueueChanged,
  groupDirs,
  listIds,
  readEnvelope,
  readListedMessage,
  readMessageWith,
  statMessage,
} from '../io/queue-walk.js';
import {
  type EnvelopeState,
  type QueueDirName,
  type QueueLayout,
  type QueuedMessage,
  messageSignature,
  signatureReusing,
  splitOf,
} from '../qmail/queued-message.js';

/** The files whose recorded stat may stand for a new one (see readGroup). */
const MESS_AND_INFO: readonly QueueDirName[] = ['mess', 'info'];
const INFO: readonly QueueDirName[] = ['info'];

/** Where the reading of a group goes. */
export interface GroupSink {
  insert(m: QueuedMessage): void;
  update(rowId: number, m: QueuedMessage): void;
  envelope(rowId: number, envelope: EnvelopeState, sig: string): void;
  /** Bound memory: send what is gathered when it is a full batch. */
  flushIfFull(): Promise<void>;
  /** Something odd about a message (counted as an error, explained under --verbose). */
  odd(what: string): void;
  /** Something worth saying under --verbose. */
  info(what: string): void;
}

/** What reading a group found, besides what went to the sink. */
export interface GroupResult {
  /** Stored rows still in the queue (the others are gone). */
  keep: Set<number>;
  /** Something could not be read or changed under us: look at this group again next run. */
  unsettle: boolean;
  new: number;
  updated: number;
  unchanged: number;
  skipped: number;
  ms: { list: number; stat: number; read: number; db: number };
}

/** Messages read between two yields to the event loop. */
const YIELD_EVERY = 256;
/** Let the event loop run (the database's replies, and the rest of a COPY waiting for the socket). */
const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

function errCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * Read group `s`: list its directories (plus its share of the unsplit ones, `flat`), compare
 * each message with its stored rows, and read what is new or changed. `keepStrings` false
 * when the sink encodes each message at once (see ReadOptions.keep).
 */
export async function readGroup(
  layout: QueueLayout,
  s: number,
  flat: ReadonlyMap<string, readonly QueueDirName[]>,
  /** The group's stored rows by id; awaited once the directories are listed (the query runs meanwhile). */
  storedRows: ReadonlyMap<string, readonly StoredSignature[]> | Promise<ReadonlyMap<string, readonly StoredSignature[]>>,
  sink: GroupSink,
  opts: {
    /** See ReadOptions.keep. */
    keepStrings: boolean;
    /** The group's own directories (mess/S, info/S, ...) have the signatures of the last scan. */
    dirsUnchanged: boolean;
  },
): Promise<GroupResult> {
  const out: GroupResult = { keep: new Set(), unsettle: false, new: 0, updated: 0, unchanged: 0, skipped: 0, ms: { list: 0, stat: 0, read: 0, db: 0 } };
  const { ms, keep } = out;
  const present = new Map<string, QueueDirName[]>();
  const orphans: string[] = [];
  for (const d of groupDirs(layout, s)) {
    const t0 = performance.now();
    const { ids, odd: oddNames } = listIds(d.path);
    ms.list += performance.now() - t0;
    if (oddNames.length) sink.info(`${d.dir}/${s}: ${oddNames.length} names that are not queue ids (e.g. ${JSON.stringify(oddNames[0].slice(0, 40))})`);
    let misplaced: string | null = null;
    let nMisplaced = 0;
    for (const id of ids) {
      // A mess file in the wrong subdirectory is not where qmail looks for it, nor where we
      // read: without this, its id would be read (from its right place) in two groups.
      if (d.dir === 'mess' && splitOf(id, layout.split) !== s) {
        misplaced ??= id;
        nMisplaced++;
        continue;
      }
      const list = present.get(id);
      if (list === undefined) present.set(id, [d.dir]);
      else if (d.dir === 'mess') list.unshift('mess');
      else list.push(d.dir);
    }
    if (misplaced !== null) sink.info(`${d.dir}/${s}: ${nMisplaced} file(s) in the wrong subdirectory (e.g. ${misplaced})`);
  }
  for (const [id, dirs] of flat) if (splitOf(id, layout.split) === s) present.set(id, [...(present.get(id) ?? []), ...dirs]);
  let t0 = performance.now();
  const stored = await storedRows;
  ms.db += performance.now() - t0;

  /** Record what a full read found (rows: the stored rows of this id). */
  const record = (outcome: ReadOutcome, rows: readonly StoredSignature[]): void => {
    if (outcome.status === 'vanished') {
      out.skipped++;
      return;
    }
    if (outcome.status === 'unstable') {
      out.skipped++;
      out.unsettle = true;
      for (const r of rows) keep.add(r.rowId);
      return;
    }
    if (outcome.status === 'unreadable') {
      sink.odd(outcome.error);
      out.unsettle = true;
      for (const r of rows) keep.add(r.rowId);
      return;
    }
    const m = outcome.message;
    const inFlight = m.state.startsWith('in-flight');
    if (m.line1 === '' && inFlight) {
      // qmail-queue has not written line 1 yet: nothing to record; intd/todo will follow.
      out.skipped++;
      return;
    }
    if (m.problems.length && !inFlight) sink.odd(`${m.files[0]}: ${m.problems.join('; ')}`);
    const match = rows.find((r) => r.line1 === m.line1);
    if (match) {
      sink.update(match.rowId, m);
      keep.add(match.rowId);
      out.updated++;
    } else {
      sink.insert(m);
      out.new++;
    }
  };
  const flushIfFull = async () => {
    const t0 = performance.now();
    await sink.flushIfFull();
    ms.db += performance.now() - t0;
  };

  let sinceYield = 0;
  for (const [id, dirs] of present) {
    if (dirs[0] !== 'mess') {
      // Files of a message without mess/: qmail-send is finishing it, or they are leftovers.
      orphans.push(id);
      continue;
    }
    if (id.length > 18 && BigInt(id) > 9223372036854775807n) {
      sink.odd(`mess/${s}/${id}: id too large`);
      continue;
    }
    if (++sinceYield === YIELD_EVERY) {
      // Sync reads hold the event loop: let it send the COPY in flight and take replies.
      sinceYield = 0;
      await yieldToLoop();
    }
    const rows = stored.get(id);
    if (rows === undefined) {
      // Not recorded: nothing to compare, so no stat first; each file is opened once.
      t0 = performance.now();
      record(readListedMessage(layout, id, dirs, { keep: opts.keepStrings }), []);
      ms.read += performance.now() - t0;
      await flushIfFull();
      continue;
    }
    let stats;
    try {
      t0 = performance.now();
      if (rows.length === 1 && rows[0].state === 'preprocessed' && dirs.includes('info')) {
        // qmail never rewrites mess/ or info/ of a preprocessed message in place (only local/,
        // remote/ by markdone, and bounce/): while its mess/ file is the one recorded (same
        // inode, size, mtime), so is its info/ file, whose stat need not be taken again. When
        // the group's directories did not change either, mess/ is that file too.
        const reuse = opts.dirsUnchanged ? MESS_AND_INFO : INFO;
        const partial = statMessage(layout, id, dirs.filter((d) => !reuse.includes(d)));
        if (signatureReusing(partial, rows[0].sig, reuse, dirs) === rows[0].sig) {
          ms.stat += performance.now() - t0;
          out.unchanged++;
          keep.add(rows[0].rowId);
          continue;
        }
      }
      stats = statMessage(layout, id, dirs);
      ms.stat += performance.now() - t0;
    } catch (err) {
      sink.odd(`mess/${s}/${id}: ${(err as Error).message}`);
      out.unsettle = true;
      continue;
    }
    if (!stats.mess) {
      out.skipped++; // delivered while we looked
      continue;
    }
    const { sig, messSig } = messageSignature(stats);
    const same = rows.find((r) => r.sig === sig);
    if (same) {
      out.unchanged++;
      keep.add(same.rowId);
      continue;
    }
    const messSame = rows.find((r) => r.messSig === messSig && r.line1 !== '');
    if (messSame) {
      try {
        t0 = performance.now();
        const envelope = readEnvelope(layout, id, stats);
        ms.read += performance.now() - t0;
        sink.envelope(messSame.rowId, envelope, sig);
        keep.add(messSame.rowId);
        out.updated++;
        if (envelope.problems.length && !envelope.state.startsWith('in-flight')) sink.odd(`message ${id}: ${envelope.problems.join('; ')}`);
        await flushIfFull();
        continue;
      } catch (err) {
        // Changed under us (todo/ removed mid-read): read it in full below.
        if (!(err instanceof QueueChanged) && errCode(err) !== 'ENOENT') {
          sink.odd(`message ${id}: ${(err as Error).message}`);
          out.unsettle = true;
          keep.add(messSame.rowId);
          continue;
        }
      }
    }
    t0 = performance.now();
    record(readMessageWith(layout, id, stats, { keep: opts.keepStrings }), rows);
    ms.read += performance.now() - t0;
    await flushIfFull();
  }
  if (orphans.length) sink.info(`group ${s}: ${orphans.length} message(s) with files but no mess/ (e.g. ${orphans[0]})`);
  return out;
}

// ---------------------------------------------------------------------------------------
// Reader threads (a host's first scan of a large queue, on a server database)

/** What a reader thread sends back for a group (partial: more of the same group follows). */
interface ReaderReply {
  group: number;
  partial: boolean;
  blocks: Buffer[];
  rows: number;
  notes: { odd: boolean; text: string }[];
  result?: Omit<GroupResult, 'keep'>;
}

/** A reader thread sends its COPY text back in pieces of about this size. */
const READER_BATCH_BYTES = 1 << 20;
/**
 * Reader threads for a large first scan, on a machine of two cores or more. The reads wait on
 * the disk more than they compute: a cold queue is three small files a message, each an inode
 * and a block read in turn, and a thread that waits for one reads nothing else. More threads
 * than cores keep more reads in flight: on a 2-core VM, a cold 100,000-message first scan took
 * 13.6 s with 6 threads and 18.4 s with 2 (warm: 4.8 s against 3.7, the threads' own start and
 * JIT). Six is where the gain flattened (8: 12.7 s, 60 MB more).
 */
const READERS = 6;
/** Each reader's young generation (MB): V8's default (16 MB semi-spaces) made six threads ~60 MB heavier. */
const READER_YOUNG_MB = 8;
/**
 * The module the reader threads run: this one. From a bundled executable (dist/bin/NAME.js,
 * scripts/bundle.mjs) it is the copy tsc wrote to dist/lib/jobs/, beside which it was bundled.
 */
const READER_URL = /\/lib\/jobs\/[^/]+$/.test(import.meta.url)
  ? new URL(import.meta.url)
  : new URL('../lib/jobs/scan-queue-groups.js', import.meta.url);

/** How many reader threads are worth starting for `messages` new messages (0: read here). */
export function readerThreads(messages: number): number {
  const cpus = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  if (cpus < 2 || messages < 20_000) return 0;
  return READERS;
}

/**
 * Read `groups` of a host that has no rows yet in `threads` reader threads. Each new message
 * is encoded as COPY text there; `take` gets the text and may wait (for the database), `done`
 * gets each group's result, its notes given to `note` before. A thread is given its next group
 * only when its last one is taken: at most a group's COPY text per thread waits in memory.
 */
export async function readGroupsInThreads(
  layout: QueueLayout,
  groups: readonly number[],
  flat: ReadonlyMap<string, readonly QueueDirName[]>,
  host: string,
  threads: number,
  on: {
    take(blocks: Buffer[], rows: number): Promise<void>;
    note(odd: boolean, text: string): void;
    done(group: number, result: GroupResult): void;
  },
): Promise<void> {
  const queue = [...groups];
  const workers: Worker[] = [];
  try {
    await Promise.all(
      Array.from({ length: Math.min(threads, queue.length) }, async () => {
        const w = new Worker(READER_URL, {
          workerData: { qguardScanReader: true, layout, flat: [...flat], host },
          resourceLimits: { maxYoungGenerationSizeMb: READER_YOUNG_MB },
        });
        workers.push(w);
        const inbox = channel<ReaderReply>(w);
        for (let s = queue.shift(); s !== undefined; s = queue.shift()) {
          w.postMessage(s);
          for (;;) {
            const reply = await inbox.next();
            for (const n of reply.notes) on.note(n.odd, n.text);
            // Buffers arrive as plain Uint8Arrays: view them as Buffers again (no copy).
            if (reply.rows) await on.take(reply.blocks.map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)), reply.rows);
            if (!reply.partial) {
              on.done(reply.group, { ...reply.result!, keep: new Set() });
              break;
            }
          }
        }
      }),
    );
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

/** The messages of a worker, one at a time, none lost while the reader is busy; its failure as an error. */
function channel<T>(w: Worker): { next(): Promise<T> } {
  const queued: T[] = [];
  let failed: Error | null = null;
  let wake: (() => void) | null = null;
  w.on('message', (m: T) => {
    queued.push(m);
    wake?.();
  });
  const fail = (err: Error) => {
    failed ??= err;
    wake?.();
  };
  w.on('error', (err) => fail(new Error(`queue reader thread failed: ${err.message}`, { cause: err })));
  w.on('exit', (code) => fail(new Error(`queue reader thread exited (${code})`)));
  return {
    async next(): Promise<T> {
      for (;;) {
        const m = queued.shift();
        if (m !== undefined) return m;
        if (failed) throw failed;
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = null;
      }
    },
  };
}

/** The reader thread: read the groups it is sent, with nothing stored to compare with. */
function runReader(): void {
  const data = workerData as { layout: QueueLayout; flat: [string, QueueDirName[]][]; host: string };
  const flat = new Map(data.flat);
  const none = new Map<string, StoredSignature[]>();
  const port = parentPort!;
  port.on('message', (group: number) => {
    const rows = new CopyRows(copyHostField(data.host));
    let notes: ReaderReply['notes'] = [];
    const send = (partial: boolean, result?: Omit<GroupResult, 'keep'>) => {
      const n = rows.rows;
      const blocks = rows.take();
      const reply: ReaderReply = { group, partial, blocks, rows: n, notes, result };
      notes = [];
      // The buffers move to the main thread (no copy): each is a block of its own.
      port.postMessage(reply, blocks.map((b) => b.buffer as ArrayBuffer));
    };
    const sink: GroupSink = {
      insert: (m) => rows.add(messageRow(m)),
      update: () => {
        throw new Error('reader thread: no stored rows to update');
      },
      envelope: () => {
        throw new Error('reader thread: no stored rows to update');
      },
      flushIfFull: async () => {
        if (rows.bytes >= READER_BATCH_BYTES) send(true);
      },
      odd: (text) => notes.push({ odd: true, text }),
      info: (text) => notes.push({ odd: false, text }),
    };
    readGroup(data.layout, group, flat, none, sink, { keepStrings: false, dirsUnchanged: false }).then(
      ({ keep: _keep, ...result }) => send(false, result),
      (err: unknown) => {
        throw err;
      },
    );
  });
}

if (!isMainThread && (workerData as { qguardScanReader?: boolean } | null)?.qguardScanReader) runReader();
