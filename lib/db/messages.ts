// Queries on qguard.messages and qguard.queue_scans (sql/002): what scan-queue recorded
// about each queued message on each mail server, the per-IP counts behind the auto-deny, and
// the review queries of `qguard queue`. Writes are batched, never one INSERT per message:
// new messages stream in through COPY on a server database (encoded here, see CopyRows), and
// go as unnest() arrays (one statement per few thousand messages) on the embedded one, as do
// the updates.

import type pg from 'pg';
import { type Queryable, dbError } from './connect.js';
import { RULE_COLUMNS, type Rule, toRule } from './rules.js';
import { type EnvelopeState, type MessageState, type QueuedMessage, kindOf } from '../qmail/queued-message.js';
import type { MessageKind } from '../qmail/received.js';

/** Recipients kept per message (the counts stay exact): enough to review, bounded in size. */
export const RECIPIENTS_KEPT = 1000;
/** Rows per batched statement. */
export const BATCH = 2000;

/** The per-host state of the last scan. */
export interface ScanState {
  host: string;
  queueDir: string;
  split: number;
  /** Directory key (`mess/3`, `todo`) → signature at the last scan ('' = look again). */
  dirs: Record<string, string>;
  rotation: number;
  scannedAt: Date | null;
}

/** Load this host's scan state, or null before its first scan. */
export async function loadScanState(db: Queryable, host: string): Promise<ScanState | null> {
  const r = await db.query<{ queue_dir: string; split: number; dirs: Record<string, string>; rotation: number; scanned_at: Date }>(
    'SELECT queue_dir, split, dirs, rotation, scanned_at FROM qguard.queue_scans WHERE host = $1',
    [host],
  );
  const row = r.rows[0];
  if (!row) return null;
  return {
    host,
    queueDir: row.queue_dir,
    split: Number(row.split),
    dirs: typeof row.dirs === 'string' ? (JSON.parse(row.dirs) as Record<string, string>) : (row.dirs ?? {}),
    rotation: Number(row.rotation),
    scannedAt: row.scanned_at ? new Date(row.scanned_at) : null,
  };
}

/** Store this host's scan state. */
export async function saveScanState(
  db: Queryable,
  s: Omit<ScanState, 'scannedAt'> & { durationMs: number; messages: number },
): Promise<void> {
  await db.query(
    `INSERT INTO qguard.queue_scans AS q (host, queue_dir, split, dirs, rotation, scanned_at, duration_ms, messages)
     VALUES ($1, $2, $3, $4::jsonb, $5, now(), $6, $7)
     ON CONFLICT (host) DO UPDATE
       SET queue_dir = EXCLUDED.queue_dir, split = EXCLUDED.split, dirs = EXCLUDED.dirs, rotation = EXCLUDED.rotation,
           scanned_at = EXCLUDED.scanned_at, duration_ms = EXCLUDED.duration_ms, messages = EXCLUDED.messages`,
    [s.host, s.queueDir, s.split, JSON.stringify(s.dirs), s.rotation, Math.round(s.durationMs), s.messages],
  );
}

/** What scan-queue compares a message on disk with. */
export interface StoredSignature {
  rowId: number;
  queueId: string;
  line1: string;
  sig: string;
  messSig: string;
  state: MessageState;
}

/** The live rows of one split group of a host, by queue id (a reused id may have several). */
export async function liveGroup(db: Queryable, host: string, split: number): Promise<Map<string, StoredSignature[]>> {
  // One JSON value instead of thousands of rows: the driver's per-row work is most of the
  // cost of an unchanged scan's one group, JSON.parse a fraction of it.
  const r = await db.query<{ rows: [number, string, string, string, string, MessageState][] | string }>(
    `SELECT coalesce(json_agg(json_build_array(id, queue_id::text, line1, sig, mess_sig, state)), '[]') AS rows
       FROM qguard.messages WHERE host = $1 AND split = $2 AND gone_at IS NULL`,
    [host, split],
  );
  const raw = r.rows[0]?.rows ?? [];
  const rows = typeof raw === 'string' ? (JSON.parse(raw) as Exclude<typeof raw, string>) : raw;
  const out = new Map<string, StoredSignature[]>();
  for (const [id, qid, line1, sig, messSig, state] of rows) {
    const s: StoredSignature = { rowId: Number(id), queueId: qid, line1, sig, messSig, state };
    const list = out.get(s.queueId);
    if (list) list.push(s);
    else out.set(s.queueId, [s]);
  }
  return out;
}

/** Groups holding messages that are not simply preprocessed (they live partly in todo/intd/bounce). */
export async function groupsWithFlatFiles(db: Queryable, host: string): Promise<number[]> {
  const r = await db.query<{ split: number }>(
    `SELECT DISTINCT split FROM qguard.messages
      WHERE host = $1 AND gone_at IS NULL AND (state <> 'preprocessed' OR bounce_pending)`,
    [host],
  );
  return r.rows.map((row) => Number(row.split));
}

/** After conf-split changed (or the queue moved): recompute every live row's group. */
export async function resplit(db: Queryable, host: string, split: number): Promise<void> {
  await db.query('UPDATE qguard.messages SET split = (queue_id % $2)::int WHERE host = $1 AND gone_at IS NULL', [host, split]);
}

/** PostgreSQL array literal for text[] (so ragged lists travel inside one unnest column). */
export function pgTextArray(items: readonly string[]): string {
  if (items.length === 0) return '{}';
  let out = '{';
  for (let i = 0; i < items.length; i++) {
    const s = items[i];
    const quoted = s.indexOf('"') < 0 && s.indexOf('\\') < 0 ? s : s.replace(/[\\"]/g, (c) => `\\${c}`);
    out += i === 0 ? `"${quoted}"` : `,"${quoted}"`;
  }
  return `${out}}`;
}

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

type Cell = string | number | boolean | null;

/**
 * A message reduced to the values it is recorded with (FULL_COLUMNS order): about a quarter
 * of the memory of the QueuedMessage, which a batch need not keep while it waits.
 */
export type RecordRow = readonly Cell[];

/** One message as the values of the batch columns, in FULL_COLUMNS order. */
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

/** Column arrays (for unnest) of a batch of rows. */
function fullColumns(rows: readonly RecordRow[]): Cell[][] {
  const cols: Cell[][] = Array.from({ length: 25 }, () => []);
  for (const row of rows) {
    for (let i = 0; i < row.length; i++) cols[i].push(row[i]);
  }
  return cols;
}

const FULL_COLUMNS = `queue_id, line1, split, state, kind, forwarded, chain, birth, arrival, source_ip, recorded, helo,
    remote_host, remote_info, sender, recipients, pending, rcpt_count, pending_count, bounce_pending, size, subject,
    problems, sig, mess_sig`;
const FULL_TYPES = `$2::bigint[], $3::text[], $4::int[], $5::text[], $6::text[], $7::boolean[], $8::text[],
    $9::double precision[], $10::double precision[], $11::inet[], $12::text[], $13::text[], $14::text[], $15::text[],
    $16::text[], $17::text[], $18::text[], $19::int[], $20::int[], $21::boolean[], $22::bigint[], $23::text[],
    $24::text[], $25::text[], $26::text[]`;

/** The batch as rows: for an INSERT ($1 is the host), or for an UPDATE ($1 holds the row ids). */
function fullUnnest(withRowIds: boolean): string {
  return withRowIds
    ? `unnest($1::bigint[], ${FULL_TYPES}) AS u(rid, ${FULL_COLUMNS})`
    : `unnest(${FULL_TYPES}) AS u(${FULL_COLUMNS})`;
}

function fullParams(head: unknown, rows: readonly RecordRow[]): unknown[] {
  return [head, ...fullColumns(rows).map(pgArrayLiteral)];
}

/** One array element of a PostgreSQL array literal. */
function element(v: Cell): string {
  if (v === null) return 'NULL';
  if (typeof v === 'number') return String(v);
  if (typeof v === 'boolean') return v ? 't' : 'f';
  return v.indexOf('"') < 0 && v.indexOf('\\') < 0 ? `"${v}"` : `"${v.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

/**
 * A column as one array literal, built here: node-pg's per-element serialisation of
 * 25 columns × thousands of rows costs more than the rest of the scan.
 */
export function pgArrayLiteral(values: readonly Cell[]): string {
  let out = '{';
  for (let i = 0; i < values.length; i++) out += (i ? ',' : '') + element(values[i]);
  return `${out}}`;
}

const SET_FULL = `split = u.split, state = u.state, kind = u.kind, forwarded = u.forwarded, chain = u.chain::text[],
       birth = to_timestamp(u.birth), arrival = to_timestamp(u.arrival), source_ip = u.source_ip,
       source_recorded = u.recorded, helo = u.helo, remote_host = u.remote_host, remote_info = u.remote_info,
       sender = u.sender, recipients = u.recipients::text[], pending = u.pending::text[], rcpt_count = u.rcpt_count,
       pending_count = u.pending_count, bounce_pending = u.bounce_pending, size = u.size, subject = u.subject,
       problems = u.problems::text[], sig = u.sig, mess_sig = u.mess_sig, read_at = now(), gone_at = NULL`;

/** A message recorded as gone that is found again (same identity): take the new read. */
const SET_REVIVE = `split = EXCLUDED.split, state = EXCLUDED.state, kind = EXCLUDED.kind, forwarded = EXCLUDED.forwarded,
       chain = EXCLUDED.chain, birth = EXCLUDED.birth, arrival = EXCLUDED.arrival, source_ip = EXCLUDED.source_ip,
       source_recorded = EXCLUDED.source_recorded, helo = EXCLUDED.helo, remote_host = EXCLUDED.remote_host,
       remote_info = EXCLUDED.remote_info, sender = EXCLUDED.sender, recipients = EXCLUDED.recipients,
       pending = EXCLUDED.pending, rcpt_count = EXCLUDED.rcpt_count, pending_count = EXCLUDED.pending_count,
       bounce_pending = EXCLUDED.bounce_pending, size = EXCLUDED.size, subject = EXCLUDED.subject,
       problems = EXCLUDED.problems, sig = EXCLUDED.sig, mess_sig = EXCLUDED.mess_sig, read_at = now(), gone_at = NULL`;

/** The INSERT of a batch, from its rows (unnest arrays, or the COPY staging table). */
function insertFrom(source: string, host: string): string {
  return `INSERT INTO qguard.messages AS m (host, queue_id, line1, split, state, kind, forwarded, chain, birth, arrival,
              source_ip, source_recorded, helo, remote_host, remote_info, sender, recipients, pending, rcpt_count,
              pending_count, bounce_pending, size, subject, problems, sig, mess_sig)
       SELECT ${host}, u.queue_id, u.line1, u.split, u.state, u.kind, u.forwarded, u.chain::text[], to_timestamp(u.birth),
              to_timestamp(u.arrival), u.source_ip, u.recorded, u.helo, u.remote_host, u.remote_info, u.sender,
              u.recipients::text[], u.pending::text[], u.rcpt_count, u.pending_count, u.bounce_pending, u.size, u.subject,
              u.problems::text[], u.sig, u.mess_sig
         FROM ${source}
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

/** The columns of a COPY of new rows: the host, then a RecordRow's values in order. */
const COPY_COLUMNS = `host, queue_id, line1, split, state, kind, forwarded, chain, birth, arrival, source_ip, source_recorded,
    helo, remote_host, remote_info, sender, recipients, pending, rcpt_count, pending_count, bounce_pending, size, subject,
    problems, sig, mess_sig`;
/** RecordRow positions of the two times (epoch seconds there, timestamps in a COPY). */
const BIRTH = 7;
const ARRIVAL = 8;

/** A value as a field of COPY's text format: backslash, tab, newline and CR escaped. */
function copyField(s: string): string {
  return /[\\\t\n\r]/.test(s) ? s.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r')) : s;
}

const pad2 = (n: number) => (n < 10 ? `0${n}` : String(n));
const pad3 = (n: number) => (n < 10 ? `00${n}` : n < 100 ? `0${n}` : String(n));

const DAY_MS = 86_400_000;
/** `YYYY-MM-DD` by day number since the epoch: a queue's messages share a few days. */
const dayTexts = new Map<number, string>();

/** Epoch seconds (as the unnest path hands them to to_timestamp) as timestamptz input text. */
function copyTime(seconds: number): string {
  const ms = Math.round(seconds * 1000);
  const day = Math.floor(ms / DAY_MS);
  let date = dayTexts.get(day);
  if (date === undefined) {
    const d = new Date(day * DAY_MS);
    const y = d.getUTCFullYear();
    if (Number.isNaN(y)) throw new RangeError(`time out of range: ${seconds}`);
    const md = `${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}`;
    // No real queue file is dated before year 1 or after 9999: PostgreSQL's notations then.
    if (y < 1) return `${String(1 - y).padStart(4, '0')}-${md} ${clock(ms - day * DAY_MS)}+00 BC`;
    date = `${String(y).padStart(4, '0')}-${md}`;
    if (dayTexts.size >= 1000) dayTexts.clear();
    dayTexts.set(day, date);
  }
  return `${date} ${clock(ms - day * DAY_MS)}+00`;
}

/** `HH:MM:SS.mmm` of a millisecond of the day. */
function clock(msOfDay: number): string {
  const s = Math.floor(msOfDay / 1000);
  return `${pad2(Math.floor(s / 3600))}:${pad2(Math.floor(s / 60) % 60)}:${pad2(s % 60)}.${pad3(msOfDay - s * 1000)}`;
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
    else if (i === BIRTH || i === ARRIVAL) line += `\t${copyTime(v)}`;
    else line += `\t${v}`;
  }
  return line;
}

/** How many times `c` occurs in `s`. */
function count(s: string, c: string): number {
  let n = 0;
  for (let i = s.indexOf(c); i >= 0; i = s.indexOf(c, i + 1)) n++;
  return n;
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
      `CREATE TEMP TABLE IF NOT EXISTS qguard_scan_stage (host text, queue_id bigint, line1 text, split int, state text,
         kind text, forwarded boolean, chain text[], birth timestamptz, arrival timestamptz, source_ip inet,
         source_recorded text, helo text, remote_host text, remote_info text, sender text, recipients text[],
         pending text[], rcpt_count int, pending_count int, bounce_pending boolean, size bigint, subject text,
         problems text[], sig text, mess_sig text) ON COMMIT DROP;
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

/** Mark rows gone: their message is no longer in the queue. */
export async function markGone(db: Queryable, rowIds: readonly number[]): Promise<number> {
  let n = 0;
  for (let i = 0; i < rowIds.length; i += BATCH * 5) {
    const r = await db.query('UPDATE qguard.messages SET gone_at = now() WHERE id = ANY($1::bigint[]) AND gone_at IS NULL', [
      rowIds.slice(i, i + BATCH * 5),
    ]);
    n += r.rowCount;
  }
  return n;
}

/** Housekeeping: forget messages that left the queue more than `seconds` ago (any host). */
export async function pruneGone(db: Queryable, seconds: number): Promise<number> {
  const r = await db.query(
    'DELETE FROM qguard.messages WHERE gone_at IS NOT NULL AND gone_at < now() - make_interval(secs => $1::double precision)',
    [seconds],
  );
  return r.rowCount;
}

/** How many messages this host's queue holds, as recorded. */
export async function countLive(db: Queryable, host: string): Promise<number> {
  const r = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM qguard.messages WHERE host = $1 AND gone_at IS NULL', [host]);
  return Number(r.rows[0].n);
}

/** Messages that count: in a queue (any host), past qmail-queue's commit, arrived within the window. */
const COUNTED = `gone_at IS NULL AND source_ip IS NOT NULL AND state IN ('preprocessed', 'todo')
                 AND arrival > now() - make_interval(secs => $1::double precision)`;

/** An IP and its count of queued messages within the window (every host). */
export interface IpCount {
  ip: string;
  count: number;
}

/** IPs with at least `threshold` queued messages that arrived within the window, largest first. */
export async function overThreshold(db: Queryable, windowSeconds: number, threshold: number): Promise<IpCount[]> {
  const r = await db.query<{ ip: string; n: number }>(
    `SELECT host(source_ip) AS ip, count(*)::int AS n FROM qguard.messages
      WHERE ${COUNTED}
      GROUP BY source_ip HAVING count(*) >= $2
      ORDER BY count(*) DESC, source_ip`,
    [windowSeconds, threshold],
  );
  return r.rows.map((row) => ({ ip: row.ip, count: Number(row.n) }));
}

/**
 * Every live rule (of any host scope) that contains each address: one query for a batch of
 * addresses, so the decision can be made for each with decide().
 */
export async function rulesForIps(db: Queryable, ips: readonly string[]): Promise<Map<string, Rule[]>> {
  const out = new Map<string, Rule[]>();
  for (const ip of ips) out.set(ip, []);
  for (let i = 0; i < ips.length; i += BATCH) {
    const r = await db.query<Parameters<typeof toRule>[0] & { ip: string }>(
      `SELECT c.ip, ${RULE_COLUMNS.split(', ')
        .map((c) => `r.${c}`)
        .join(', ')}
         FROM unnest($1::text[]) AS c(ip)
         JOIN qguard.live_rules r ON r.network >>= c.ip::inet
        ORDER BY r.id`,
      [ips.slice(i, i + BATCH)],
    );
    for (const row of r.rows) out.get(row.ip)?.push(toRule(row));
  }
  return out;
}

/** One line of `qguard queue top`. */
export interface TopRow {
  ip: string;
  count: number;
  hosts: string[];
  byKind: Record<string, number>;
  firstArrival: Date;
  lastArrival: Date;
  sample: string | null;
}

/** Source IPs by queued-message count within the window, over every host. */
export async function topSources(db: Queryable, windowSeconds: number, limit: number): Promise<TopRow[]> {
  const r = await db.query<{
    ip: string;
    n: number;
    hosts: string[];
    kinds: Record<string, number> | string;
    first: Date;
    last: Date;
    sample: string | null;
  }>(
    `WITH c AS (
       SELECT * FROM qguard.messages WHERE ${COUNTED}
     )
     SELECT host(source_ip) AS ip, count(*)::int AS n, array_agg(DISTINCT host ORDER BY host) AS hosts,
            (SELECT jsonb_object_agg(kind, k) FROM (SELECT kind, count(*)::int AS k FROM c c2
                                                     WHERE c2.source_ip = c.source_ip GROUP BY kind) x) AS kinds,
            min(arrival) AS first, max(arrival) AS last,
            (array_agg(subject ORDER BY arrival DESC) FILTER (WHERE subject IS NOT NULL AND subject <> ''))[1] AS sample
       FROM c
      GROUP BY source_ip
      ORDER BY count(*) DESC, source_ip
      LIMIT $2`,
    [windowSeconds, limit],
  );
  return r.rows.map((row) => ({
    ip: row.ip,
    count: Number(row.n),
    hosts: row.hosts,
    byKind: typeof row.kinds === 'string' ? (JSON.parse(row.kinds) as Record<string, number>) : (row.kinds ?? {}),
    firstArrival: new Date(row.first),
    lastArrival: new Date(row.last),
    sample: row.sample,
  }));
}

/** A recorded message, as `qguard queue ls` shows it. */
export interface MessageRow {
  host: string;
  id: string;
  line1: string;
  state: MessageState;
  kind: MessageKind;
  forwarded: boolean;
  chain: string[];
  birth: Date | null;
  arrival: Date;
  sourceIp: string | null;
  sourceRecorded: string | null;
  helo: string | null;
  remoteHost: string | null;
  remoteInfo: string | null;
  sender: string | null;
  recipients: string[];
  pending: string[];
  rcptCount: number;
  pendingCount: number;
  bouncePending: boolean;
  size: number;
  subject: string | null;
  problems: string[];
  firstSeen: Date;
  goneAt: Date | null;
}

export interface MessageFilter {
  /** Only this host's messages (null: every host). */
  host: string | null;
  /** Only messages from this (normalised) IP or inside this network. */
  net?: string;
  kind?: MessageKind;
  /** Include messages no longer in the queue. */
  includeGone?: boolean;
  limit?: number;
}

/** Recorded messages, oldest arrival first. */
export async function listMessages(db: Queryable, f: MessageFilter): Promise<MessageRow[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  if (f.host !== null) {
    params.push(f.host);
    where.push(`host = $${params.length}`);
  }
  if (!f.includeGone) where.push('gone_at IS NULL');
  if (f.net) {
    params.push(f.net);
    where.push(`source_ip <<= $${params.length}::cidr`);
  }
  if (f.kind) {
    params.push(f.kind);
    where.push(`kind = $${params.length}`);
  }
  let limit = '';
  if (f.limit) {
    params.push(f.limit);
    limit = `LIMIT $${params.length}`;
  }
  const r = await db.query<Record<string, unknown>>(
    `SELECT host, queue_id::text AS qid, line1, state, kind, forwarded, chain, birth, arrival, host(source_ip) AS ip,
            source_recorded, helo, remote_host, remote_info, sender, recipients, pending, rcpt_count, pending_count,
            bounce_pending, size, subject, problems, first_seen, gone_at
       FROM qguard.messages ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY arrival, queue_id ${limit}`,
    params,
  );
  return r.rows.map((row) => ({
    host: row.host as string,
    id: row.qid as string,
    line1: row.line1 as string,
    state: row.state as MessageState,
    kind: row.kind as MessageKind,
    forwarded: Boolean(row.forwarded),
    chain: (row.chain as string[]) ?? [],
    birth: row.birth ? new Date(row.birth as string) : null,
    arrival: new Date(row.arrival as string),
    sourceIp: (row.ip as string | null) ?? null,
    sourceRecorded: (row.source_recorded as string | null) ?? null,
    helo: (row.helo as string | null) ?? null,
    remoteHost: (row.remote_host as string | null) ?? null,
    remoteInfo: (row.remote_info as string | null) ?? null,
    sender: (row.sender as string | null) ?? null,
    recipients: (row.recipients as string[]) ?? [],
    pending: (row.pending as string[]) ?? [],
    rcptCount: Number(row.rcpt_count),
    pendingCount: Number(row.pending_count),
    bouncePending: Boolean(row.bounce_pending),
    size: Number(row.size),
    subject: (row.subject as string | null) ?? null,
    problems: (row.problems as string[]) ?? [],
    firstSeen: new Date(row.first_seen as string),
    goneAt: row.gone_at ? new Date(row.gone_at as string) : null,
  }));
}

/** Counts of this host's recorded messages by kind and by state, and their sources. */
export async function messageStats(
  db: Queryable,
  host: string,
): Promise<{ byKind: Record<string, number>; byState: Record<string, number>; sources: number; noSource: number; total: number }> {
  const r = await db.query<{ kind: string; state: string; n: number }>(
    `SELECT kind, state, count(*)::int AS n FROM qguard.messages WHERE host = $1 AND gone_at IS NULL GROUP BY kind, state`,
    [host],
  );
  const byKind: Record<string, number> = {};
  const byState: Record<string, number> = {};
  let total = 0;
  for (const row of r.rows) {
    byKind[row.kind] = (byKind[row.kind] ?? 0) + Number(row.n);
    byState[row.state] = (byState[row.state] ?? 0) + Number(row.n);
    total += Number(row.n);
  }
  const s = await db.query<{ sources: number; nosource: number }>(
    `SELECT count(DISTINCT source_ip)::int AS sources, count(*) FILTER (WHERE source_ip IS NULL)::int AS nosource
       FROM qguard.messages WHERE host = $1 AND gone_at IS NULL`,
    [host],
  );
  return { byKind, byState, sources: Number(s.rows[0].sources), noSource: Number(s.rows[0].nosource), total };
}
