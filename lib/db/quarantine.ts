// Queries on qguard.quarantine (sql/006): the record of every message purge-queue took out of
// a queue, which is also the purge's journal for crash repair (state 'removing' → 'removed'),
// and the restore bookkeeping. Also the one read purge-queue makes of scan-queue's
// qguard.messages: the candidates of a purge. Batched with unnest() arrays.

import type { Queryable } from './connect.js';
import type { MessageState } from '../qmail/queued-message.js';
import type { MessageKind } from '../qmail/received.js';

/** Recipients kept per row (the counts stay exact; the envelope file has them all). */
const RECIPIENTS_KEPT = 1000;
const BATCH = 2000;

/** A live message as scan-queue recorded it: what purge-queue selects from. */
export interface CandidateRow {
  /** qguard.messages row id (to mark it gone once removed). */
  rowId: number;
  id: string;
  line1: string;
  state: MessageState;
  kind: MessageKind;
  forwarded: boolean;
  sourceIp: string | null;
  sender: string | null;
  arrival: Date;
  subject: string | null;
}

/** This host's messages still in its queue, as scan-queue last saw them. */
export async function purgeCandidates(db: Queryable, host: string): Promise<CandidateRow[]> {
  const r = await db.query<{
    id: number;
    qid: string;
    line1: string;
    state: MessageState;
    kind: MessageKind;
    forwarded: boolean;
    ip: string | null;
    sender: string | null;
    arrival: Date;
    subject: string | null;
  }>(
    `SELECT id, queue_id::text AS qid, line1, state, kind, forwarded, host(source_ip) AS ip, sender, arrival, subject
       FROM qguard.messages WHERE host = $1 AND gone_at IS NULL`,
    [host],
  );
  return r.rows.map((row) => ({
    rowId: Number(row.id),
    id: row.qid,
    line1: row.line1,
    state: row.state,
    kind: row.kind,
    forwarded: Boolean(row.forwarded),
    sourceIp: row.ip ?? null,
    sender: row.sender ?? null,
    arrival: new Date(row.arrival),
    subject: row.subject ?? null,
  }));
}

/** Mark messages of `host` gone from its queue by identity (id and line 1): repaired removals. */
export async function markMessagesGone(db: Queryable, host: string, msgs: readonly { queueId: string; line1: string }[]): Promise<void> {
  for (let i = 0; i < msgs.length; i += BATCH) {
    const b = msgs.slice(i, i + BATCH);
    await db.query(
      `UPDATE qguard.messages m SET gone_at = now()
         FROM unnest($2::bigint[], $3::text[]) AS u(queue_id, line1)
        WHERE m.host = $1 AND m.queue_id = u.queue_id AND m.line1 = u.line1 AND m.gone_at IS NULL`,
      [host, b.map((x) => x.queueId), b.map((x) => x.line1)],
    );
  }
}

/** Take `n` quarantine ids (the directories are named before the rows exist). */
export async function allocateIds(db: Queryable, n: number): Promise<number[]> {
  if (n <= 0) return [];
  const r = await db.query<{ id: number }>("SELECT nextval('qguard.quarantine_ids') AS id FROM generate_series(1, $1)", [n]);
  return r.rows.map((row) => Number(row.id));
}

export type QuarantineState = 'removing' | 'removed' | 'restoring' | 'restored';

/** One quarantined message, as stored. */
export interface QuarantineRow {
  id: number;
  host: string;
  queueId: string;
  line1: string;
  birth: Date | null;
  arrival: Date | null;
  queueState: MessageState;
  kind: MessageKind;
  forwarded: boolean;
  sourceIp: string | null;
  sender: string;
  recipients: string[];
  pending: string[];
  rcptCount: number;
  pendingCount: number;
  subject: string | null;
  size: number;
  policy: string;
  reason: string;
  who: string | null;
  path: string;
  state: QuarantineState;
  purgedAt: Date;
  removedAt: Date | null;
  restoredAt: Date | null;
  restoredBy: string | null;
}

/** A new row (state 'removing'). */
export type NewQuarantineRow = Omit<QuarantineRow, 'state' | 'purgedAt' | 'removedAt' | 'restoredAt' | 'restoredBy'>;

/** Text that PostgreSQL stores: no NUL bytes, bounded. */
function pgText(s: string | null, max: number): string | null {
  if (s === null) return null;
  const t = s.includes('\0') ? s.replace(/\0/g, '') : s;
  return t.length > max ? t.slice(0, max) : t;
}

/** PostgreSQL array literal for text[] (ragged lists inside one unnest column). */
function pgTextArray(items: readonly string[]): string {
  return `{${items
    .slice(0, RECIPIENTS_KEPT)
    .map((s) => `"${pgText(s, 1000)!.replace(/[\\"]/g, (c) => `\\${c}`)}"`)
    .join(',')}}`;
}

/**
 * Record a batch of entries whose files are durable, in state 'removing': from the commit of
 * this statement on, purge-queue may take their messages out of the queue.
 */
export async function insertRemoving(db: Queryable, rows: readonly NewQuarantineRow[]): Promise<void> {
  for (let i = 0; i < rows.length; i += BATCH) {
    const b = rows.slice(i, i + BATCH);
    const epoch = (d: Date | null) => (d ? d.getTime() / 1000 : null);
    await db.query(
      `INSERT INTO qguard.quarantine (id, host, queue_id, line1, birth, arrival, queue_state, kind, forwarded, source_ip,
              sender, recipients, pending, rcpt_count, pending_count, subject, size, policy, reason, who, path, state)
       SELECT u.id, u.host, u.queue_id, u.line1, to_timestamp(u.birth), to_timestamp(u.arrival), u.queue_state, u.kind,
              u.forwarded, u.source_ip, u.sender, u.recipients::text[], u.pending::text[], u.rcpt_count, u.pending_count,
              u.subject, u.size, u.policy, u.reason, u.who, u.path, 'removing'
         FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::double precision[], $6::double precision[],
                     $7::text[], $8::text[], $9::boolean[], $10::inet[], $11::text[], $12::text[], $13::text[], $14::int[],
                     $15::int[], $16::text[], $17::bigint[], $18::text[], $19::text[], $20::text[], $21::text[])
              AS u(id, host, queue_id, line1, birth, arrival, queue_state, kind, forwarded, source_ip, sender, recipients,
                   pending, rcpt_count, pending_count, subject, size, policy, reason, who, path)`,
      [
        b.map((r) => r.id),
        b.map((r) => r.host),
        b.map((r) => r.queueId),
        b.map((r) => pgText(r.line1, 1000)),
        b.map((r) => epoch(r.birth)),
        b.map((r) => epoch(r.arrival)),
        b.map((r) => r.queueState),
        b.map((r) => r.kind),
        b.map((r) => r.forwarded),
        b.map((r) => r.sourceIp),
        b.map((r) => pgText(r.sender, 10_000)),
        b.map((r) => pgTextArray(r.recipients)),
        b.map((r) => pgTextArray(r.pending)),
        b.map((r) => r.rcptCount),
        b.map((r) => r.pendingCount),
        b.map((r) => pgText(r.subject, 1000)),
        b.map((r) => r.size),
        b.map((r) => r.policy),
        b.map((r) => pgText(r.reason, 2000)),
        b.map((r) => pgText(r.who, 200)),
        b.map((r) => r.path),
      ],
    );
  }
}

/** The batch is out of the queue (and that is durable). */
export async function markRemoved(db: Queryable, ids: readonly number[]): Promise<void> {
  for (let i = 0; i < ids.length; i += BATCH * 5) {
    await db.query("UPDATE qguard.quarantine SET state = 'removed', removed_at = now() WHERE id = ANY($1::bigint[]) AND state = 'removing'", [
      ids.slice(i, i + BATCH * 5),
    ]);
  }
}

/** Forget rows (their entry is gone, or was never needed). */
export async function deleteRows(db: Queryable, ids: readonly number[]): Promise<number> {
  let n = 0;
  for (let i = 0; i < ids.length; i += BATCH * 5) {
    const r = await db.query('DELETE FROM qguard.quarantine WHERE id = ANY($1::bigint[])', [ids.slice(i, i + BATCH * 5)]);
    n += r.rowCount;
  }
  return n;
}

const COLUMNS = `id, host, queue_id::text AS qid, line1, birth, arrival, queue_state, kind, forwarded, host(source_ip) AS ip, sender,
  recipients, pending, rcpt_count, pending_count, subject, size, policy, reason, who, path, state, purged_at, removed_at,
  restored_at, restored_by`;

function toRow(row: Record<string, unknown>): QuarantineRow {
  const d = (v: unknown) => (v ? new Date(v as string) : null);
  return {
    id: Number(row.id),
    host: row.host as string,
    queueId: row.qid as string,
    line1: row.line1 as string,
    birth: d(row.birth),
    arrival: d(row.arrival),
    queueState: row.queue_state as MessageState,
    kind: row.kind as MessageKind,
    forwarded: Boolean(row.forwarded),
    sourceIp: (row.ip as string | null) ?? null,
    sender: row.sender as string,
    recipients: (row.recipients as string[]) ?? [],
    pending: (row.pending as string[]) ?? [],
    rcptCount: Number(row.rcpt_count),
    pendingCount: Number(row.pending_count),
    subject: (row.subject as string | null) ?? null,
    size: Number(row.size),
    policy: row.policy as string,
    reason: row.reason as string,
    who: (row.who as string | null) ?? null,
    path: row.path as string,
    state: row.state as QuarantineState,
    purgedAt: new Date(row.purged_at as string),
    removedAt: d(row.removed_at),
    restoredAt: d(row.restored_at),
    restoredBy: (row.restored_by as string | null) ?? null,
  };
}

/** This host's rows in one of `states` (crash repair reads 'removing'), by id. */
export async function rowsInState(db: Queryable, host: string, states: readonly QuarantineState[]): Promise<QuarantineRow[]> {
  const r = await db.query<Record<string, unknown>>(
    `SELECT ${COLUMNS} FROM qguard.quarantine WHERE host = $1 AND state = ANY($2::text[]) ORDER BY id`,
    [host, states],
  );
  return r.rows.map(toRow);
}

export interface QuarantineFilter {
  /** One host (null: every host). */
  host: string | null;
  /** Source IP inside this network (CIDR text). */
  net?: string;
  limit?: number;
}

/** Quarantined messages, newest first. */
export async function listQuarantine(db: Queryable, f: QuarantineFilter): Promise<QuarantineRow[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  if (f.host !== null) {
    params.push(f.host);
    where.push(`host = $${params.length}`);
  }
  if (f.net) {
    params.push(f.net);
    where.push(`source_ip <<= $${params.length}::cidr`);
  }
  let limit = '';
  if (f.limit) {
    params.push(f.limit);
    limit = `LIMIT $${params.length}`;
  }
  const r = await db.query<Record<string, unknown>>(
    `SELECT ${COLUMNS} FROM qguard.quarantine ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY purged_at DESC, id DESC ${limit}`,
    params,
  );
  return r.rows.map(toRow);
}

/** Rows by id (any host). */
export async function getRows(db: Queryable, ids: readonly number[]): Promise<QuarantineRow[]> {
  const r = await db.query<Record<string, unknown>>(`SELECT ${COLUMNS} FROM qguard.quarantine WHERE id = ANY($1::bigint[]) ORDER BY id`, [ids]);
  return r.rows.map(toRow);
}

/** Which of these ids have a row (any host: a shared quarantine directory is possible). */
export async function existingIds(db: Queryable, ids: readonly number[]): Promise<Set<number>> {
  const out = new Set<number>();
  for (let i = 0; i < ids.length; i += BATCH * 5) {
    const r = await db.query<{ id: number }>('SELECT id FROM qguard.quarantine WHERE id = ANY($1::bigint[])', [ids.slice(i, i + BATCH * 5)]);
    for (const row of r.rows) out.add(Number(row.id));
  }
  return out;
}

/**
 * Move a row from one restore state to another; false when it was not in `from` (another
 * admin got there first).
 */
export async function setRestoreState(
  db: Queryable,
  id: number,
  from: readonly QuarantineState[],
  to: QuarantineState,
  who: string | null,
): Promise<boolean> {
  const r = await db.query(
    `UPDATE qguard.quarantine
        SET state = $3,
            restored_at = CASE WHEN $3 = 'restored' THEN now() ELSE restored_at END,
            restored_by = CASE WHEN $3 = 'removed' THEN restored_by ELSE $4 END
      WHERE id = $1 AND state = ANY($2::text[])`,
    [id, from, to, who],
  );
  return r.rowCount === 1;
}

/** This host's rows purged longer than `seconds` ago (not mid-removal), oldest first. */
export async function expiredRows(db: Queryable, host: string, seconds: number): Promise<{ id: number; path: string }[]> {
  const r = await db.query<{ id: number; path: string }>(
    `SELECT id, path FROM qguard.quarantine
      WHERE host = $1 AND state IN ('removed', 'restored')
        AND purged_at < now() - make_interval(secs => $2::double precision)
      ORDER BY purged_at, id`,
    [host, seconds],
  );
  return r.rows.map((row) => ({ id: Number(row.id), path: row.path }));
}
