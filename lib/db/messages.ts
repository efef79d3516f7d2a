// Queries on qguard.messages and qguard.queue_scans (sql/002): what scan-queue recorded
// about each queued message on each mail server, the per-IP counts behind the auto-deny, and
// the review queries of `qguard queue`. The batched writes of new and changed messages are in
// lib/db/message-writer.ts.

import type { Queryable } from './connect.js';
import { RULE_COLUMNS, type Rule, toRule } from './rules.js';
import type { MessageState } from '../qmail/queued-message.js';
import type { MessageKind } from '../qmail/received.js';

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
  s: Omit<ScanState, 'scannedAt'> & { durationMs: number; messages: number; changed: boolean },
): Promise<void> {
  await db.query(
    `INSERT INTO qguard.queue_scans AS q (host, queue_dir, split, dirs, rotation, scanned_at, duration_ms, messages, recorded)
     VALUES ($1, $2, $3, $4::jsonb, $5, now(), $6, $7, 1)
     ON CONFLICT (host) DO UPDATE
       SET queue_dir = EXCLUDED.queue_dir, split = EXCLUDED.split, dirs = EXCLUDED.dirs, rotation = EXCLUDED.rotation,
           scanned_at = EXCLUDED.scanned_at, duration_ms = EXCLUDED.duration_ms, messages = EXCLUDED.messages,
           recorded = q.recorded + CASE WHEN $8::boolean THEN 1 ELSE 0 END`,
    [s.host, s.queueDir, s.split, JSON.stringify(s.dirs), s.rotation, Math.round(s.durationMs), s.messages, s.changed],
  );
}

/**
 * What the count depends on besides the configuration: every host's `recorded` number
 * (sql/016); and what the decisions on its addresses depend on: the change counter. Read before counting: a host that commits meanwhile makes the
 * next run's signature differ, never the other way round.
 */
export async function countSignature(db: Queryable): Promise<{ changeSeq: string; entriesSeq: string; recorded: string }> {
  const r = await db.query<{ seq: string; eseq: string; rec: string }>(
    `SELECT change_seq::text AS seq, entries_seq::text AS eseq,
            coalesce((SELECT string_agg(host || '=' || recorded, ',' ORDER BY host) FROM qguard.queue_scans), '') AS rec
       FROM qguard.state`,
  );
  return { changeSeq: r.rows[0].seq, entriesSeq: r.rows[0].eseq, recorded: r.rows[0].rec };
}

/** This host's last count (sql/016), as stored by saveLastCount. */
export async function lastCount<T>(db: Queryable, host: string): Promise<T | null> {
  const r = await db.query<{ c: T | string | null }>('SELECT last_count AS c FROM qguard.queue_scans WHERE host = $1', [host]);
  const c = r.rows[0]?.c ?? null;
  return typeof c === 'string' ? (JSON.parse(c) as T) : c;
}

export async function saveLastCount(db: Queryable, host: string, value: unknown): Promise<void> {
  await db.query('UPDATE qguard.queue_scans SET last_count = $2::jsonb WHERE host = $1', [host, JSON.stringify(value)]);
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
 * addresses, so the decision can be made for each with decide(). The networks that can contain
 * them are joined as rows: probes of rules_unique for the rules, a hash join with the lists'
 * entries (which have no btree, sql/018: one scan of them per batch).
 *
 * `entries: 'underAllow'` is for a caller that only asks "relay or trust?": an entry (always a
 * deny) can only turn a relay/trust decision into deny, so the entries are read only for the
 * addresses a relay/trust rule contains (mostly none: no scan of the entries at all).
 * `entries: 'none'`: the rules of qguard.rules only (the caller has the entries: verdicts.ts).
 */
export async function rulesForIps(
  db: Queryable,
  ips: readonly string[],
  opts: { entries?: 'all' | 'underAllow' | 'none' } = {},
): Promise<Map<string, Rule[]>> {
  const read = async (list: readonly string[], from: 'qguard.live_rules' | 'qguard.rules') => {
    const out = new Map<string, Rule[]>();
    for (const ip of list) out.set(ip, []);
    const live = from === 'qguard.rules' ? 'WHERE r.expires_at IS NULL OR r.expires_at > now()' : '';
    for (let i = 0; i < list.length; i += BATCH) {
      const r = await db.query<Parameters<typeof toRule>[0] & { ip: string }>(
        `SELECT c.ip, ${RULE_COLUMNS.split(', ')
          .map((c) => `r.${c}`)
          .join(', ')}
           FROM unnest($1::text[]) AS c(ip)
          CROSS JOIN LATERAL unnest(qguard.covering(c.ip::inet)) AS k(network)
           JOIN ${from} r ON r.network = k.network ${live}
          ORDER BY r.id`,
        [list.slice(i, i + BATCH)],
      );
      for (const row of r.rows) out.get(row.ip)?.push(toRule(row));
    }
    return out;
  };
  if (opts.entries === 'none') return read(ips, 'qguard.rules');
  if (opts.entries !== 'underAllow') return read(ips, 'qguard.live_rules');
  const rules = await read(ips, 'qguard.rules');
  const allowed = ips.filter((ip) => rules.get(ip)!.some((r) => r.action !== 'deny'));
  if (allowed.length > 0) for (const [ip, all] of await read(allowed, 'qguard.live_rules')) rules.set(ip, all);
  return rules;
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
/** How `topSources` may narrow and order the sources (the review page's table). */
export interface TopOptions {
  /** Only messages queued on this host. */
  host?: string;
  kind?: MessageKind;
  /** Skip this many sources (pages). */
  offset?: number;
  sort?: 'count' | 'last' | 'first' | 'ip';
}

const TOP_ORDER = { count: 'total DESC, source_ip', last: 'last_at DESC, source_ip', first: 'first_at, source_ip', ip: 'source_ip' };

/*
 * Two steps, so that a 100,000-message queue costs one pass: count per (IP, kind) and fold that
 * per IP, order and cut the page; only then, for the page's few IPs, their hosts and latest
 * subject, each from the messages_count index (one IP's messages, newest first).
 */
export async function topSources(db: Queryable, windowSeconds: number, limit: number, opts: TopOptions = {}): Promise<TopRow[]> {
  const filters = `${COUNTED} AND ($3::text IS NULL OR host = $3) AND ($4::text IS NULL OR kind = $4)`;
  const order = TOP_ORDER[opts.sort ?? 'count'];
  const r = await db.query<{
    ip: string;
    n: number;
    hosts: string[];
    kinds: Record<string, number> | string;
    first: Date;
    last: Date;
    sample: string | null;
  }>(
    `WITH g AS (
       SELECT source_ip, kind, count(*)::int AS n, min(arrival) AS first_at, max(arrival) AS last_at
         FROM qguard.messages WHERE ${filters} GROUP BY source_ip, kind
     ), t AS (
       SELECT source_ip, sum(n)::int AS total, jsonb_object_agg(kind, n) AS kinds, min(first_at) AS first_at, max(last_at) AS last_at
         FROM g GROUP BY source_ip ORDER BY ${order} LIMIT $2 OFFSET $5
     )
     SELECT host(t.source_ip) AS ip, t.total AS n, h.hosts, t.kinds, t.first_at AS first, t.last_at AS last, s.sample
       FROM t
       CROSS JOIN LATERAL (SELECT array_agg(DISTINCT m.host ORDER BY m.host) AS hosts FROM qguard.messages m
                            WHERE m.source_ip = t.source_ip AND ${filters}) h
       LEFT JOIN LATERAL (SELECT m.subject AS sample FROM qguard.messages m
                           WHERE m.source_ip = t.source_ip AND ${filters} AND m.subject IS NOT NULL AND m.subject <> ''
                           ORDER BY m.arrival DESC LIMIT 1) s ON true
      ORDER BY ${order}`,
    [windowSeconds, limit, opts.host ?? null, opts.kind ?? null, opts.offset ?? 0],
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
  /** qguard.messages.id: the review page's handle on the record. */
  recordId: number;
  /** scan-queue kept a readable copy (lib/ops/message-copies.ts). */
  hasCopy: boolean;
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
  offset?: number;
  /** Only the message with this record id (qguard.messages.id). */
  recordId?: number;
  /** Newest first (default: oldest first, like qmail-qread). */
  newestFirst?: boolean;
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
  if (f.recordId !== undefined) {
    params.push(f.recordId);
    where.push(`id = $${params.length}`);
  }
  let limit = '';
  if (f.limit) {
    params.push(f.limit);
    limit = `LIMIT $${params.length}`;
  }
  if (f.offset) {
    params.push(f.offset);
    limit += ` OFFSET $${params.length}`;
  }
  const r = await db.query<Record<string, unknown>>(
    `SELECT id::text AS rid, host, queue_id::text AS qid, line1, state, kind, forwarded, chain, birth, arrival, host(source_ip) AS ip,
            source_recorded, helo, remote_host, remote_info, sender, recipients, pending, rcpt_count, pending_count,
            bounce_pending, size, subject, problems, first_seen, gone_at,
            EXISTS (SELECT 1 FROM qguard.message_copies c WHERE c.message_id = m.id) AS has_copy
       FROM qguard.messages m ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY ${f.newestFirst ? 'arrival DESC, queue_id DESC' : 'arrival, queue_id'} ${limit}`,
    params,
  );
  return r.rows.map((row) => ({
    recordId: Number(row.rid),
    hasCopy: Boolean(row.has_copy),
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
