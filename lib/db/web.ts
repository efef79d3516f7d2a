// Queries of the review page (sql/008_web.sql): operators, sessions, failed logins, the
// requests the page files for privileged runs, and the readable copies of queued messages.
// Every event of the page that changes something is written to qguard.audit here.

import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Db, Queryable } from './connect.js';

// ---- audit

/** An audit row for a page event (rules and domains are audited by their triggers). */
export async function auditEvent(
  db: Queryable,
  e: { op: 'insert' | 'update' | 'delete' | 'login' | 'logout' | 'login-failed' | 'request'; object: 'operator' | 'session' | 'request'; who: string; objectId?: number | null; network?: string | null; host?: string | null; reason?: string | null },
): Promise<void> {
  await db.query(
    `INSERT INTO qguard.audit (actor, op, object, object_id, network, host, who, reason)
     VALUES (qguard.current_actor(), $1, $2, $3, $4::cidr, $5, $6, $7)`,
    [e.op, e.object, e.objectId ?? null, e.network ?? null, e.host ?? null, e.who, e.reason ?? null],
  );
}

// ---- operators

export interface WebUser {
  name: string;
  passwordHash: string;
  createdAt: Date;
  createdBy: string;
  passwordChangedAt: Date;
}

type UserRow = { name: string; password_hash: string; created_at: Date; created_by: string; password_changed_at: Date };
const toUser = (r: UserRow): WebUser => ({
  name: r.name,
  passwordHash: r.password_hash,
  createdAt: new Date(r.created_at),
  createdBy: r.created_by,
  passwordChangedAt: new Date(r.password_changed_at),
});

export async function getWebUser(db: Queryable, name: string): Promise<WebUser | null> {
  const r = await db.query<UserRow>('SELECT * FROM qguard.web_users WHERE name = $1', [name]);
  return r.rows[0] ? toUser(r.rows[0]) : null;
}

export async function listWebUsers(db: Queryable): Promise<WebUser[]> {
  const r = await db.query<UserRow>('SELECT * FROM qguard.web_users ORDER BY name');
  return r.rows.map(toUser);
}

/** Add an operator; false when the name is taken. */
export async function addWebUser(db: Queryable, name: string, hash: string): Promise<boolean> {
  const r = await db.query('INSERT INTO qguard.web_users (name, password_hash) VALUES ($1, $2) ON CONFLICT DO NOTHING', [name, hash]);
  if ((r.rowCount ?? 0) > 0) await auditEvent(db, { op: 'insert', object: 'operator', who: name });
  return (r.rowCount ?? 0) > 0;
}

/** Set a new password and end the operator's sessions; false when there is no such operator. */
export async function setWebPassword(db: Queryable, name: string, hash: string): Promise<boolean> {
  const r = await db.query('UPDATE qguard.web_users SET password_hash = $2, password_changed_at = now() WHERE name = $1', [name, hash]);
  if ((r.rowCount ?? 0) === 0) return false;
  await db.query('DELETE FROM qguard.web_sessions WHERE user_name = $1', [name]);
  await auditEvent(db, { op: 'update', object: 'operator', who: name, reason: 'password changed' });
  return true;
}

/** Remove an operator (and their sessions); false when there is no such operator. */
export async function removeWebUser(db: Queryable, name: string): Promise<boolean> {
  const r = await db.query('DELETE FROM qguard.web_users WHERE name = $1', [name]);
  if ((r.rowCount ?? 0) > 0) await auditEvent(db, { op: 'delete', object: 'operator', who: name });
  return (r.rowCount ?? 0) > 0;
}

// ---- sessions

export interface WebSession {
  user: string;
  csrf: string;
  createdAt: Date;
  lastSeen: Date;
}

export async function createSession(db: Queryable, tokenHash: string, user: string, csrf: string, remoteIp: string): Promise<void> {
  await db.query('INSERT INTO qguard.web_sessions (token_hash, user_name, csrf, remote_ip) VALUES ($1, $2, $3, $4)', [
    tokenHash,
    user,
    csrf,
    remoteIp,
  ]);
}

/**
 * The live session of a token, touched (last_seen = now); null when unknown or idle longer
 * than `idleSeconds` or older than `maxSeconds` (then it is deleted).
 */
export async function touchSession(db: Queryable, tokenHash: string, idleSeconds: number, maxSeconds: number): Promise<WebSession | null> {
  const r = await db.query<{ user_name: string; csrf: string; created_at: Date; last_seen: Date }>(
    `UPDATE qguard.web_sessions SET last_seen = now()
      WHERE token_hash = $1 AND last_seen > now() - make_interval(secs => $2) AND created_at > now() - make_interval(secs => $3)
      RETURNING user_name, csrf, created_at, last_seen`,
    [tokenHash, idleSeconds, maxSeconds],
  );
  const row = r.rows[0];
  if (!row) {
    await db.query('DELETE FROM qguard.web_sessions WHERE token_hash = $1', [tokenHash]);
    return null;
  }
  return { user: row.user_name, csrf: row.csrf, createdAt: new Date(row.created_at), lastSeen: new Date(row.last_seen) };
}

export async function deleteSession(db: Queryable, tokenHash: string): Promise<void> {
  await db.query('DELETE FROM qguard.web_sessions WHERE token_hash = $1', [tokenHash]);
}

/** Drop sessions idle or older than allowed (run now and then). */
export async function pruneSessions(db: Queryable, idleSeconds: number, maxSeconds: number): Promise<void> {
  await db.query(
    `DELETE FROM qguard.web_sessions WHERE last_seen <= now() - make_interval(secs => $1) OR created_at <= now() - make_interval(secs => $2)`,
    [idleSeconds, maxSeconds],
  );
  await db.query(`DELETE FROM qguard.web_login_failures WHERE at < now() - interval '1 day'`);
}

// ---- failed logins

export async function recordLoginFailure(db: Queryable, user: string, remoteIp: string): Promise<void> {
  await db.query('INSERT INTO qguard.web_login_failures (user_name, remote_ip) VALUES ($1, $2)', [user, remoteIp]);
  await auditEvent(db, { op: 'login-failed', object: 'session', who: user, reason: `from ${remoteIp}` });
}

/** Failed logins within the window, for this user name and for this address. */
export async function loginFailures(db: Queryable, user: string, remoteIp: string, windowSeconds: number): Promise<{ user: number; ip: number }> {
  const r = await db.query<{ u: string; i: string }>(
    `SELECT count(*) FILTER (WHERE user_name = $1) AS u, count(*) FILTER (WHERE remote_ip = $2) AS i
       FROM qguard.web_login_failures WHERE at > now() - make_interval(secs => $3) AND (user_name = $1 OR remote_ip = $2)`,
    [user, remoteIp, windowSeconds],
  );
  return { user: Number(r.rows[0]?.u ?? 0), ip: Number(r.rows[0]?.i ?? 0) };
}

// ---- requests

export type RequestKind = 'purge' | 'restore';
export type RequestState = 'pending' | 'running' | 'done' | 'failed';

export interface WebRequest {
  id: number;
  kind: RequestKind;
  host: string;
  network: string | null;
  quarantineId: number | null;
  requestedBy: string;
  requestedAt: Date;
  state: RequestState;
  startedAt: Date | null;
  finishedAt: Date | null;
  doneCount: number | null;
  error: string | null;
}

type RequestRow = {
  id: string;
  kind: RequestKind;
  host: string;
  network: string | null;
  quarantine_id: string | null;
  requested_by: string;
  requested_at: Date;
  state: RequestState;
  started_at: Date | null;
  finished_at: Date | null;
  done_count: number | null;
  error: string | null;
};

const dateOrNull = (d: Date | null) => (d ? new Date(d) : null);
const toRequest = (r: RequestRow): WebRequest => ({
  id: Number(r.id),
  kind: r.kind,
  host: r.host,
  network: r.network,
  quarantineId: r.quarantine_id === null ? null : Number(r.quarantine_id),
  requestedBy: r.requested_by,
  requestedAt: new Date(r.requested_at),
  state: r.state,
  startedAt: dateOrNull(r.started_at),
  finishedAt: dateOrNull(r.finished_at),
  doneCount: r.done_count,
  error: r.error,
});

/** File a request (audited). */
export async function fileRequest(
  db: Queryable,
  r: { kind: RequestKind; host: string; network?: string | null; quarantineId?: number | null; by: string },
): Promise<WebRequest> {
  const row = await db.query<RequestRow>(
    `INSERT INTO qguard.requests (kind, host, network, quarantine_id, requested_by) VALUES ($1, $2, $3::cidr, $4, $5) RETURNING *`,
    [r.kind, r.host, r.network ?? null, r.quarantineId ?? null, r.by],
  );
  const req = toRequest(row.rows[0]);
  await auditEvent(db, {
    op: 'request',
    object: 'request',
    objectId: req.id,
    who: r.by,
    network: r.network ?? null,
    host: r.host,
    reason: r.kind === 'restore' ? `restore quarantine ${r.quarantineId}` : `purge queued messages`,
  });
  return req;
}

export async function listRequests(db: Queryable, opts: { host?: string; limit?: number } = {}): Promise<WebRequest[]> {
  const r = await db.query<RequestRow>(
    `SELECT * FROM qguard.requests WHERE ($1::text IS NULL OR host = $1) ORDER BY id DESC LIMIT $2`,
    [opts.host ?? null, opts.limit ?? 100],
  );
  return r.rows.map(toRequest);
}

/** Claim this host's pending requests (and those a killed run left running), oldest first. */
export async function claimRequests(db: Queryable, host: string): Promise<WebRequest[]> {
  const r = await db.query<RequestRow>(
    `UPDATE qguard.requests SET state = 'running', started_at = now()
      WHERE host = $1 AND state IN ('pending', 'running') RETURNING *`,
    [host],
  );
  return r.rows.map(toRequest).sort((a, b) => a.id - b.id);
}

export async function finishRequest(db: Queryable, id: number, outcome: { ok: boolean; count: number; error: string | null }): Promise<void> {
  await db.query(`UPDATE qguard.requests SET state = $2, finished_at = now(), done_count = $3, error = $4 WHERE id = $1`, [
    id,
    outcome.ok ? 'done' : 'failed',
    outcome.count,
    outcome.error,
  ]);
}

export async function pendingRequestCounts(db: Queryable): Promise<Record<RequestState, number>> {
  const r = await db.query<{ state: RequestState; n: string }>(
    `SELECT state, count(*) AS n FROM qguard.requests WHERE requested_at > now() - interval '7 days' GROUP BY state`,
  );
  const out: Record<RequestState, number> = { pending: 0, running: 0, done: 0, failed: 0 };
  for (const row of r.rows) out[row.state] = Number(row.n);
  return out;
}

// ---- readable copies

export interface MessageCopy {
  data: Buffer;
  size: number;
  truncated: boolean;
  host: string;
}

type CopyRow = { data: Uint8Array; size: string; truncated: boolean; host: string };
const toCopy = (r: CopyRow): MessageCopy => ({ data: Buffer.from(r.data), size: Number(r.size), truncated: r.truncated, host: r.host });

/** The copy of a recorded message (qguard.messages.id), or null. */
export async function copyOfMessage(db: Queryable, messageId: number): Promise<MessageCopy | null> {
  const r = await db.query<CopyRow>('SELECT data, size, truncated, host FROM qguard.message_copies WHERE message_id = $1', [messageId]);
  return r.rows[0] ? toCopy(r.rows[0]) : null;
}

/** The copy kept with a quarantine entry, or null. */
export async function copyOfQuarantined(db: Queryable, quarantineId: number): Promise<MessageCopy | null> {
  const r = await db.query<CopyRow>('SELECT data, size, truncated, host FROM qguard.message_copies WHERE quarantine_id = $1', [quarantineId]);
  return r.rows[0] ? toCopy(r.rows[0]) : null;
}

/** Live messages of `host` with a source address and no copy yet (newest first, bounded). */
export async function messagesWithoutCopy(
  db: Queryable,
  host: string,
  limit: number,
  /** Only records older than this one (the run's previous batch ended there). */
  before: number,
  /** Only records newer than this one (all up to it were seen: copiesCheckedTo). */
  after: number,
): Promise<{ id: number; queueId: string; split: number; sourceIp: string; line1: string }[]> {
  const r = await db.query<{ id: string; queue_id: string; split: number; source_ip: string; line1: string }>(
    `SELECT m.id, m.queue_id, m.split, host(m.source_ip) AS source_ip, m.line1 FROM qguard.messages m
      WHERE m.host = $1 AND m.gone_at IS NULL AND m.source_ip IS NOT NULL AND m.copy_skipped = false
        AND m.id < $3 AND m.id > $4 AND NOT EXISTS (SELECT 1 FROM qguard.message_copies c WHERE c.message_id = m.id)
      ORDER BY m.id DESC LIMIT $2`,
    [host, limit, before, after],
  );
  return r.rows.map((x) => ({ id: Number(x.id), queueId: x.queue_id, split: x.split, sourceIp: x.source_ip, line1: x.line1 }));
}

export interface NewCopy {
  messageId: number;
  data: Buffer;
  size: number;
  truncated: boolean;
}

/**
 * The copies as COPY's binary format: the bytes go as they are. (As a bytea[] parameter every
 * byte would travel as two hex digits inside an array literal the server parses again: for
 * 50,000 copies, 10 s instead of 1.)
 */
function* copyRowsBinary(host: string, copies: readonly NewCopy[]): Generator<Buffer> {
  const hostBytes = Buffer.from(host, 'utf8');
  yield Buffer.from('PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0', 'latin1');
  for (let i = 0; i < copies.length; ) {
    const parts: Buffer[] = [];
    for (let bytes = 0; i < copies.length && bytes < 1 << 20; i++) {
      const c = copies[i];
      const head = Buffer.allocUnsafe(2 + 12 + 4 + hostBytes.length + 4);
      let o = head.writeInt16BE(5, 0);
      o = head.writeInt32BE(8, o);
      o = head.writeBigInt64BE(BigInt(c.messageId), o);
      o = head.writeInt32BE(hostBytes.length, o);
      o += hostBytes.copy(head, o);
      head.writeInt32BE(c.data.length, o);
      const tail = Buffer.allocUnsafe(12 + 5);
      let t = tail.writeInt32BE(8, 0);
      t = tail.writeBigInt64BE(BigInt(c.size), t);
      t = tail.writeInt32BE(1, t);
      tail[t] = c.truncated ? 1 : 0;
      parts.push(head, c.data, tail);
      bytes += head.length + c.data.length + tail.length;
    }
    yield Buffer.concat(parts);
  }
  yield Buffer.from([0xff, 0xff]); // trailer
}

/**
 * Store copies, and mark the messages that must not be copied (relay/trust senders). On a
 * server through binary COPY (only scan-queue, holding the host's lock, copies live messages:
 * no conflict to skip); embedded, as arrays.
 */
export async function storeCopies(db: Db, host: string, copies: readonly NewCopy[], skipped: readonly number[]): Promise<void> {
  await db.transaction(async (tx) => {
    if (copies.length > 0 && db.pgClient) {
      const { from: copyFrom } = await import('pg-copy-streams');
      const sink = db.pgClient.query(copyFrom('COPY qguard.message_copies (message_id, host, data, size, truncated) FROM STDIN (FORMAT binary)'));
      await pipeline(Readable.from(copyRowsBinary(host, copies)), sink);
    } else if (copies.length > 0) {
      await tx.query(
        `INSERT INTO qguard.message_copies (message_id, host, data, size, truncated)
         SELECT u.id, $1, u.data, u.size, u.truncated FROM unnest($2::bigint[], $3::bytea[], $4::bigint[], $5::boolean[]) AS u(id, data, size, truncated)
         ON CONFLICT (message_id) DO NOTHING`,
        [host, copies.map((c) => c.messageId), copies.map((c) => c.data), copies.map((c) => c.size), copies.map((c) => c.truncated)],
      );
    }
    if (skipped.length > 0) await tx.query('UPDATE qguard.messages SET copy_skipped = true WHERE id = ANY($1::bigint[])', [skipped]);
  });
}

/** Copies turned off (QGUARD_COPY_BYTES=0): drop this host's copies of queued messages. */
export async function dropCopies(db: Db, host: string): Promise<number> {
  return db.transaction(async (tx) => {
    const r = await tx.query('DELETE FROM qguard.message_copies WHERE host = $1 AND quarantine_id IS NULL', [host]);
    await tx.query('UPDATE qguard.queue_scans SET copies_checked_to = 0, copies_walk_from = NULL, copies_walk_top = NULL WHERE host = $1', [host]);
    return r.rowCount ?? 0;
  });
}

/** What the search for messages without a copy has seen (sql/017). */
export interface CopyWalk {
  /** Every message up to this id has its copy or needs none. */
  checkedTo: number;
  /** A walk that ran out of time saw from..top as well; null: none. */
  from: number | null;
  top: number | null;
}

/**
 * The walk so far, and the newest id of a message that may need a copy now (the last entry of
 * the partial index messages_copy_todo: a max over all of the host's messages would walk the
 * primary key back through the other hosts' newer ids).
 */
export async function copyWalk(db: Queryable, host: string): Promise<CopyWalk & { newest: number }> {
  const r = await db.query<{ c: string | null; f: string | null; t: string | null; n: string | null }>(
    `SELECT s.copies_checked_to::text AS c, s.copies_walk_from::text AS f, s.copies_walk_top::text AS t,
            (SELECT id FROM qguard.messages
              WHERE host = $1 AND gone_at IS NULL AND source_ip IS NOT NULL AND copy_skipped = false
              ORDER BY id DESC LIMIT 1)::text AS n
       FROM (SELECT 1) one LEFT JOIN qguard.queue_scans s ON s.host = $1`,
    [host],
  );
  const row = r.rows[0];
  const num = (v: string | null | undefined) => (v === null || v === undefined ? null : Number(v));
  return { checkedTo: num(row?.c) ?? 0, from: num(row?.f), top: num(row?.t), newest: num(row?.n) ?? 0 };
}

export async function saveCopyWalk(db: Queryable, host: string, w: CopyWalk): Promise<void> {
  await db.query('UPDATE qguard.queue_scans SET copies_checked_to = $2, copies_walk_from = $3, copies_walk_top = $4 WHERE host = $1', [
    host,
    w.checkedTo,
    w.from,
    w.top,
  ]);
}

/** A quarantined message keeps its copy: move it from the message row to the entry. */
export async function keepCopyWithQuarantine(db: Queryable, pairs: readonly { messageId: number; quarantineId: number }[]): Promise<void> {
  if (pairs.length === 0) return;
  await db.query(
    `UPDATE qguard.message_copies c SET quarantine_id = u.qid, message_id = NULL
       FROM unnest($1::bigint[], $2::bigint[]) AS u(mid, qid) WHERE c.message_id = u.mid`,
    [pairs.map((p) => p.messageId), pairs.map((p) => p.quarantineId)],
  );
}
