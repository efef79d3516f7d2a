// The batched writes of scan-queue into qguard.messages, never one INSERT per message: new
// messages stream in through COPY on a server database (encoded as COPY text the moment they
// are read, see CopyRows), and go as unnest() arrays (one statement per few thousand
// messages) on the embedded one, as do the updates. MessageWriter pipelines the batches
// while the queue is read. The recorded columns are spelled once (COLUMNS).
//
// Size: the recorded columns, their two encodings (unnest arrays and COPY text) and the pipelined writer must change together.

import type pg from 'pg';
import { type Queryable, dbError } from './connect.js';
import { BATCH, markGone } from './messages.js';
import { type Cell, copyField, copyTime, count, pgArrayLiteral, pgTextArray } from './pg-encode.js';
import { type EnvelopeState, type QueuedMessage, kindOf } from '../qmail/queued-message.js';

/** Recipients kept per message (the counts stay exact): enough to review, bounded in size. */
export const RECIPIENTS_KEPT = 1000;

/** Text that PostgreSQL will store: no NUL bytes, bounded. */
function pgText(s: string | null | undefined, max: number): string | null {
  if (s === null || s === undefined) return null;
  const t = s.includes('\0') ? s.replace(/\0/g, '') : s;
  return t.length > max ? t.slice(0, max) : t;
}

const epoch = (d: Date | null) => (d ? d.getTime() / 1000 : null);

function envelopeColumns(e: EnvelopeState) {
  // The first RECIPIENTS_KEPT of all and of the pending ones, and how many there are.
  const all: string[] = [];
  const pending: string[] = [];
  let pendingCount = 0;
  for (const r of e.recipients) {
    if (all.length < RECIPIENTS_KEPT) all.push(pgText(r.address, 1000)!);
    if (r.done) continue;
    if (pendingCount++ < RECIPIENTS_KEPT) pending.push(pgText(r.address, 1000)!);
  }
  return {
    state: e.state,
    sender: pgText(e.sender, 10_000),
    recipients: pgTextArray(all),
    pending: pgTextArray(pending),
    rcptCount: e.recipients.length,
    pendingCount,
    bouncePending: e.bounceReport !== null,
    arrival: epoch(e.arrival),
  };
}

/**
 * A message reduced to the values it is recorded with (COLUMNS order): about a quarter
 * of the memory of the QueuedMessage, which a batch need not keep while it waits.
 */
export type RecordRow = readonly Cell[];

/** One message as the values of the batch columns, in COLUMNS order. */
export function messageRow(m: QueuedMessage): RecordRow {
  const e = envelopeColumns(m);
  const o = m.origin;
  return [
    m.id,
    pgText(m.line1, 1000)!,
    m.split,
    e.state,
    kindOf(m),
    o.forwarded,
    pgTextArray(o.chain),
    epoch(m.birth),
    e.arrival,
    o.sourceIp,
    pgText(o.sourceIpRecorded, 200),
    pgText(o.smtp?.helo, 1000),
    pgText(o.smtp?.remoteHost, 1000),
    pgText(o.smtp?.remoteInfo, 1000),
    e.sender,
    e.recipients,
    e.pending,
    e.rcptCount,
    e.pendingCount,
    e.bouncePending,
    m.size,
    pgText(o.subject, 1000),
    pgTextArray(m.problems.slice(0, 20).map((p) => pgText(p, 500)!)),
    m.sig,
    m.messSig,
  ];
}

/**
 * The recorded columns, in RecordRow order, spelled once: the table's column, its name in a
 * batch (unnest), the element type it travels as, and `cast`: how a batch value becomes the
 * column's value (arrays travel as array-literal text, times as epoch seconds).
 */
const COLUMNS: readonly { col: string; as: string; type: string; cast?: 'array' | 'time' }[] = [
  { col: 'queue_id', as: 'queue_id', type: 'bigint' },
  { col: 'line1', as: 'line1', type: 'text' },
  { col: 'split', as: 'split', type: 'int' },
  { col: 'state', as: 'state', type: 'text' },
  { col: 'kind', as: 'kind', type: 'text' },
  { col: 'forwarded', as: 'forwarded', type: 'boolean' },
  { col: 'chain', as: 'chain', type: 'text', cast: 'array' },
  { col: 'birth', as: 'birth', type: 'double precision', cast: 'time' },
  { col: 'arrival', as: 'arrival', type: 'double precision', cast: 'time' },
  { col: 'source_ip', as: 'source_ip', type: 'inet' },
  { col: 'source_recorded', as: 'recorded', type: 'text' },
  { col: 'helo', as: 'helo', type: 'text' },
  { col: 'remote_host', as: 'remote_host', type: 'text' },
  { col: 'remote_info', as: 'remote_info', type: 'text' },
  { col: 'sender', as: 'sender', type: 'text' },
  { col: 'recipients', as: 'recipients', type: 'text', cast: 'array' },
  { col: 'pending', as: 'pending', type: 'text', cast: 'array' },
  { col: 'rcpt_count', as: 'rcpt_count', type: 'int' },
  { col: 'pending_count', as: 'pending_count', type: 'int' },
  { col: 'bounce_pending', as: 'bounce_pending', type: 'boolean' },
  { col: 'size', as: 'size', type: 'bigint' },
  { col: 'subject', as: 'subject', type: 'text' },
  { col: 'problems', as: 'problems', type: 'text', cast: 'array' },
  { col: 'sig', as: 'sig', type: 'text' },
  { col: 'mess_sig', as: 'mess_sig', type: 'text' },
];

/** A batch column as the table column's value. */
const valueOf = (c: (typeof COLUMNS)[number]) =>
  c.cast === 'array' ? `u.${c.as}::text[]` : c.cast === 'time' ? `to_timestamp(u.${c.as})` : `u.${c.as}`;
/** The column's type in a COPY (arrays and times as themselves). */
const copyType = (c: (typeof COLUMNS)[number]) => (c.cast === 'array' ? 'text[]' : c.cast === 'time' ? 'timestamptz' : c.type);

const BATCH_NAMES = COLUMNS.map((c) => c.as).join(', ');
const BATCH_TYPES = COLUMNS.map((c, i) => `$${i + 2}::${c.type}[]`).join(', ');
const TABLE_COLUMNS = COLUMNS.map((c) => c.col).join(', ');
/** Set every recorded column from the batch row `u` (a fresh read). */
const SET_FULL = `${COLUMNS.filter((c) => c.col !== 'queue_id' && c.col !== 'line1')
  .map((c) => `${c.col} = ${valueOf(c)}`)
  .join(', ')}, read_at = now(), gone_at = NULL`;
/** A message recorded as gone that is found again (same identity): take the new read. */
const SET_REVIVE = `${COLUMNS.filter((c) => c.col !== 'queue_id' && c.col !== 'line1')
  .map((c) => `${c.col} = EXCLUDED.${c.col}`)
  .join(', ')}, read_at = now(), gone_at = NULL`;
/** The columns of a COPY of new rows: the host, then a RecordRow's values in order. */
const COPY_COLUMNS = `host, ${TABLE_COLUMNS}`;
const STAGE_COLUMNS = `host text, ${COLUMNS.map((c) => `${c.col} ${copyType(c)}`).join(', ')}`;
/** RecordRow positions of the times (epoch seconds there, timestamps in a COPY). */
const TIMES = new Set(COLUMNS.flatMap((c, i) => (c.cast === 'time' ? [i] : [])));

/** Column arrays (for unnest) of a batch of rows. */
function fullColumns(rows: readonly RecordRow[]): Cell[][] {
  const cols: Cell[][] = Array.from({ length: COLUMNS.length }, () => []);
  for (const row of rows) {
    for (let i = 0; i < row.length; i++) cols[i].push(row[i]);
  }
  return cols;
}

/** The batch as rows: for an INSERT ($1 is the host), or for an UPDATE ($1 holds the row ids). */
function fullUnnest(withRowIds: boolean): string {
  return withRowIds ? `unnest($1::bigint[], ${BATCH_TYPES}) AS u(rid, ${BATCH_NAMES})` : `unnest(${BATCH_TYPES}) AS u(${BATCH_NAMES})`;
}

function fullParams(head: unknown, rows: readonly RecordRow[]): unknown[] {
  return [head, ...fullColumns(rows).map(pgArrayLiteral)];
}

/** The INSERT of a batch, from its rows (unnest arrays). */
function insertFrom(source: string, host: string): string {
  return `INSERT INTO qguard.messages AS m (host, ${TABLE_COLUMNS})
       SELECT ${host}, ${COLUMNS.map(valueOf).join(', ')} FROM ${source}
       ON CONFLICT ON CONSTRAINT messages_key DO UPDATE SET ${SET_REVIVE}`;
}

/**
 * Record newly found messages of `host`: one INSERT per batch (unnest of array parameters).
 * A row with the same identity (host, id, line 1) that was marked gone comes back to life.
 */
export async function insertMessages(db: Queryable, host: string, msgs: readonly (QueuedMessage | RecordRow)[]): Promise<void> {
  const rows = msgs.map((m) => ('origin' in m ? messageRow(m) : m));
  for (let i = 0; i < rows.length; i += BATCH) {
    await db.query(insertFrom(fullUnnest(false), '$1'), fullParams(host, rows.slice(i, i + BATCH)));
  }
}

/**
 * One new row for `host` as a line of COPY's text format, without its newline (the host field
 * already escaped: copyHostField).
 */
function copyFields(hostField: string, row: RecordRow): string {
  // Values seldom hold a backslash, tab or line end: write them as they are, then look once at
  // the whole line (one tab per field, no line end, no backslash but those of the \N nulls);
  // otherwise escape field by field.
  let nulls = 0;
  for (let i = 0; i < row.length; i++) if (row[i] === null) nulls++;
  const plain = lineOf(hostField, row, false);
  if (plain.indexOf('\n') < 0 && plain.indexOf('\r') < 0 && count(plain, '\\') === nulls && count(plain, '\t') === row.length) return plain;
  return lineOf(hostField, row, true);
}

function lineOf(hostField: string, row: RecordRow, escape: boolean): string {
  let line = hostField;
  for (let i = 0; i < row.length; i++) {
    const v = row[i];
    if (v === null) line += '\t\\N';
    else if (typeof v === 'string') line += `\t${escape ? copyField(v) : v}`;
    else if (typeof v === 'boolean') line += v ? '\tt' : '\tf';
    else if (TIMES.has(i)) line += `\t${copyTime(v)}`;
    else line += `\t${v}`;
  }
  return line;
}

/** The host as the first field of a COPY line (see CopyRows). */
export function copyHostField(host: string): string {
  return copyField(host);
}

/** COPY text is gathered in blocks of this size. */
const COPY_BLOCK = 1 << 20;

/**
 * New rows encoded as COPY text (copyFields) into a few large buffers: what a batch of new
 * messages costs in memory is its bytes, nothing of the messages themselves.
 */
export class CopyRows {
  private blocks: Buffer[] = [];
  private block: Buffer | null = null;
  private used = 0;
  /** Bytes and rows gathered since the last take(). */
  bytes = 0;
  rows = 0;

  constructor(private readonly hostField: string) {}

  add(row: RecordRow): void {
    const line = copyFields(this.hostField, row);
    // At most 3 bytes of UTF-8 per UTF-16 unit, and the newline.
    if (this.block === null || this.block.length - this.used < line.length * 3 + 1) {
      this.endBlock();
      this.block = Buffer.allocUnsafe(Math.max(COPY_BLOCK, line.length * 3 + 1));
    }
    const n = this.block.write(line, this.used, 'utf8');
    this.block[this.used + n] = 10;
    this.used += n + 1;
    this.bytes += n + 1;
    this.rows++;
  }

  /** Rows encoded elsewhere (a reader thread), appended as they are. */
  addEncoded(blocks: readonly Buffer[], rows: number): void {
    this.endBlock();
    for (const b of blocks) {
      this.blocks.push(b);
      this.bytes += b.length;
    }
    this.rows += rows;
  }

  /** Everything gathered, and start again. */
  take(): Buffer[] {
    this.endBlock();
    const out = this.blocks;
    this.blocks = [];
    this.bytes = 0;
    this.rows = 0;
    return out;
  }

  private endBlock(): void {
    if (this.block !== null && this.used > 0) this.blocks.push(this.block.subarray(0, this.used));
    this.block = null;
    this.used = 0;
  }
}

const STAGE = 'pg_temp.qguard_scan_stage';

/**
 * Record new messages sent as COPY text (CopyRows), on a server database. `fresh`: this host
 * has no rows at all, so none can share an identity with a new one and the rows go straight
 * into the table; otherwise through a staging table and INSERT ... ON CONFLICT, so that a
 * message recorded as gone that is found again comes back to life (as insertMessages does).
 */
export async function copyMessages(client: pg.Client, tx: Queryable, data: readonly Buffer[], fresh: boolean): Promise<void> {
  const { from: copyFrom } = await import('pg-copy-streams');
  if (!fresh) {
    await tx.exec(
      `CREATE TEMP TABLE IF NOT EXISTS qguard_scan_stage (${STAGE_COLUMNS}) ON COMMIT DROP;
       TRUNCATE ${STAGE}`,
    );
  }
  try {
    const sink = client.query(copyFrom(`COPY ${fresh ? 'qguard.messages' : STAGE} (${COPY_COLUMNS}) FROM STDIN`));
    await new Promise<void>((resolve, reject) => {
      sink.on('error', reject);
      sink.on('finish', resolve);
      for (const b of data) sink.write(b);
      sink.end();
    });
  } catch (err) {
    throw dbError(err, 'recording new messages failed');
  }
  if (!fresh) {
    await tx.query(
      `INSERT INTO qguard.messages AS m (${COPY_COLUMNS}) SELECT ${COPY_COLUMNS} FROM ${STAGE}
       ON CONFLICT ON CONSTRAINT messages_key DO UPDATE SET ${SET_REVIVE}`,
    );
  }
}

/** Does this host have any row (live or gone)? Without one, new rows cannot collide. */
export async function hostHasRows(db: Queryable, host: string): Promise<boolean> {
  const r = await db.query<{ any: boolean }>('SELECT EXISTS (SELECT 1 FROM qguard.messages WHERE host = $1) AS any', [host]);
  return Boolean(r.rows[0]?.any);
}

/**
 * A row whose strings do not pin the text they were cut from (V8 keeps a substring's parent
 * alive): for rows held in a batch while more messages are read.
 */
export function ownRow(row: RecordRow): RecordRow {
  return row.map((v) => (typeof v === 'string' && v.length > 0 ? (` ${v}`).slice(1) : v));
}

/** Rewrite rows (by row id) with a fresh full read of their message. */
export async function updateMessages(
  db: Queryable,
  rows: readonly { rowId: number; message: QueuedMessage | RecordRow }[],
): Promise<void> {
  for (let i = 0; i < rows.length; i += BATCH) {
    const batch = rows.slice(i, i + BATCH);
    await db.query(
      `UPDATE qguard.messages m SET ${SET_FULL} FROM ${fullUnnest(true)} WHERE m.id = u.rid`,
      fullParams(
        pgArrayLiteral(batch.map((r) => r.rowId)),
        batch.map((r) => ('origin' in r.message ? messageRow(r.message) : r.message)),
      ),
    );
  }
}

/** Rewrite only the envelope half (mess/ unchanged: its origin stands). */
export async function updateEnvelopes(
  db: Queryable,
  rows: readonly { rowId: number; envelope: EnvelopeState; sig: string }[],
): Promise<void> {
  for (let i = 0; i < rows.length; i += BATCH) {
    const batch = rows.slice(i, i + BATCH);
    const cols = batch.map((r) => ({ id: r.rowId, sig: r.sig, ...envelopeColumns(r.envelope) }));
    await db.query(
      `UPDATE qguard.messages m
          SET state = u.state, sender = u.sender, recipients = u.recipients::text[], pending = u.pending::text[],
              rcpt_count = u.rcpt_count, pending_count = u.pending_count, bounce_pending = u.bounce_pending,
              arrival = to_timestamp(u.arrival), sig = u.sig, read_at = now(), gone_at = NULL
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[], $8::boolean[],
                     $9::double precision[], $10::text[])
              AS u(rid, state, sender, recipients, pending, rcpt_count, pending_count, bounce_pending, arrival, sig)
        WHERE m.id = u.rid`,
      [
        cols.map((c) => c.id),
        cols.map((c) => c.state),
        cols.map((c) => c.sender),
        cols.map((c) => c.recipients),
        cols.map((c) => c.pending),
        cols.map((c) => c.rcptCount),
        cols.map((c) => c.pendingCount),
        cols.map((c) => c.bouncePending),
        cols.map((c) => c.arrival),
        cols.map((c) => c.sig),
      ],
    );
  }
}

/** A batch of new messages is sent when its COPY text reaches this size. */
const COPY_BATCH_BYTES = 4 << 20;
/** Batches that may wait for the database (memory: about IN_FLIGHT x 4 MiB of COPY text). */
const IN_FLIGHT = 4;

/**
 * Batched writes of the scan, pipelined: batches go to the database while the next ones are
 * read from the queue (PostgreSQL works on its CPU while we parse on ours). They are written
 * one after the other, in order; up to IN_FLIGHT of them may wait for their turn, so a
 * database that falls behind for a while (it shares the machine) does not stall the reading.
 * A failure surfaces at a later flush or at the end. New messages are encoded as COPY text
 * the moment they are read on a server database (nothing of them is held but bytes), and
 * kept as rows for unnest() on the embedded one.
 */
export class MessageWriter {
  private inserts: RecordRow[] = [];
  private updates: { rowId: number; message: RecordRow }[] = [];
  private envelopes: { rowId: number; envelope: EnvelopeState; sig: string }[] = [];
  private gone: number[] = [];
  private readonly copyRows: CopyRows | null;
  /** The batches sent and not yet written, oldest first; each runs after the one before. */
  private inFlight: Promise<void>[] = [];

  constructor(
    private readonly tx: Queryable,
    private readonly host: string,
    /** COPY on a server database; `fresh`: the host has no rows yet (see copyMessages). */
    private readonly copy: { client: pg.Client; fresh: boolean } | null,
  ) {
    this.copyRows = copy ? new CopyRows(copyHostField(host)) : null;
  }

  /** Whether each message is encoded the moment it is given (then its strings need not be copies). */
  get encodesAtOnce(): boolean {
    return this.copyRows !== null;
  }

  insert(m: QueuedMessage): void {
    const row = messageRow(m);
    if (this.copyRows) this.copyRows.add(row);
    else this.inserts.push(row);
  }

  /** New messages already encoded as COPY text (by a reader thread). */
  insertEncoded(blocks: Buffer[], rows: number): void {
    this.copyRows!.addEncoded(blocks, rows);
  }

  update(rowId: number, m: QueuedMessage): void {
    this.updates.push({ rowId, message: ownRow(messageRow(m)) });
  }

  envelope(rowId: number, envelope: EnvelopeState, sig: string): void {
    this.envelopes.push({ rowId, envelope, sig });
  }

  markGone(rowId: number): void {
    this.gone.push(rowId);
  }

  private get size(): number {
    return this.inserts.length + this.updates.length + this.envelopes.length + this.gone.length + (this.copyRows?.rows ?? 0);
  }

  /** Bound memory: send a full batch now (a group larger than a batch). */
  async flushIfFull(): Promise<void> {
    if (this.size >= BATCH || (this.copyRows?.bytes ?? 0) >= COPY_BATCH_BYTES) await this.flush();
  }

  /** Send what is buffered (after the batch in flight, if any, has finished). */
  async flush(): Promise<void> {
    if (this.size === 0) return;
    const batch = {
      inserts: this.inserts,
      updates: this.updates,
      envelopes: this.envelopes,
      gone: this.gone,
      copied: this.copyRows ? this.copyRows.take() : [],
    };
    this.inserts = [];
    this.updates = [];
    this.envelopes = [];
    this.gone = [];
    // Bound memory: wait for the oldest batch when IN_FLIGHT are already waiting.
    while (this.inFlight.length >= IN_FLIGHT) await this.inFlight.shift();
    const before = this.inFlight.at(-1) ?? Promise.resolve();
    const p = before.then(() => this.write(batch));
    // Handled here; the error is thrown again by settle() (or the next flush).
    p.catch(() => {});
    this.inFlight.push(p);
  }

  /** Wait until every batch sent is written; throw the first error. */
  async settle(): Promise<void> {
    while (this.inFlight.length) await this.inFlight.shift();
  }

  private async write(b: { inserts: RecordRow[]; updates: MessageWriter['updates']; envelopes: MessageWriter['envelopes']; gone: number[]; copied: Buffer[] }) {
    if (b.copied.length) await copyMessages(this.copy!.client, this.tx, b.copied, this.copy!.fresh);
    if (b.inserts.length) await insertMessages(this.tx, this.host, b.inserts);
    if (b.updates.length) await updateMessages(this.tx, b.updates);
    if (b.envelopes.length) await updateEnvelopes(this.tx, b.envelopes);
    if (b.gone.length) await markGone(this.tx, b.gone);
  }
}
