// Queries on qguard.connections and qguard.log_positions (sql/012): the SMTP connections
// counted from tcpserver's log, per address, mail server and ten-minute slot.

import type { Queryable } from './connect.js';
import { type ConnectionCount, SLOT_MS } from '../qmail/tcpserver-log.js';
import type { LogPosition } from '../io/multilog-read.js';

const BATCH = 5000;

export async function loadLogPosition(db: Queryable, host: string, log: string): Promise<LogPosition | null> {
  const r = await db.query<{ inode: string; offset: string; head: Buffer | Uint8Array }>(
    'SELECT inode, "offset", head FROM qguard.log_positions WHERE host = $1 AND log = $2',
    [host, log],
  );
  const row = r.rows[0];
  if (!row) return null;
  return { inode: Number(row.inode), offset: Number(row.offset), head: Buffer.from(row.head).toString('latin1') };
}

export async function saveLogPosition(db: Queryable, host: string, log: string, p: LogPosition): Promise<void> {
  await db.query(
    `INSERT INTO qguard.log_positions (host, log, inode, "offset", head, read_at) VALUES ($1, $2, $3, $4, $5, now())
     ON CONFLICT (host, log) DO UPDATE SET inode = EXCLUDED.inode, "offset" = EXCLUDED."offset", head = EXCLUDED.head, read_at = EXCLUDED.read_at`,
    [host, log, p.inode, p.offset, Buffer.from(p.head, 'latin1')],
  );
}

/** Add counts (one row per address and slot, as ConnectionCounter gives them) to this host's. */
export async function addConnections(db: Queryable, host: string, counts: readonly ConnectionCount[]): Promise<void> {
  for (let i = 0; i < counts.length; i += BATCH) {
    const b = counts.slice(i, i + BATCH);
    await db.query(
      `INSERT INTO qguard.connections AS c (ip, host, slot, connections, denied, accepted, first_seen, last_seen)
       SELECT ip, $1, to_timestamp(slot / 1000.0), n, d, a, to_timestamp(f / 1000.0), to_timestamp(l / 1000.0)
         FROM unnest($2::inet[], $3::float8[], $4::int[], $5::int[], $6::int[], $7::float8[], $8::float8[]) AS u(ip, slot, n, d, a, f, l)
       ON CONFLICT (ip, host, slot) DO UPDATE
         SET connections = c.connections + EXCLUDED.connections, denied = c.denied + EXCLUDED.denied, accepted = c.accepted + EXCLUDED.accepted,
             first_seen = least(c.first_seen, EXCLUDED.first_seen), last_seen = greatest(c.last_seen, EXCLUDED.last_seen)`,
      [host, b.map((c) => c.ip), b.map((c) => c.slot), b.map((c) => c.connections), b.map((c) => c.denied), b.map((c) => c.accepted), b.map((c) => c.first), b.map((c) => c.last)],
    );
  }
}

/** Drop slots older than `seconds`. */
export async function pruneConnections(db: Queryable, seconds: number): Promise<number> {
  const r = await db.query(`DELETE FROM qguard.connections WHERE slot < now() - make_interval(secs => $1)`, [seconds]);
  return r.rowCount ?? 0;
}

/** Rows of the ten-minute slots that overlap the last $N seconds (a slot begun before them still counts). */
const OVERLAPPING = (n: string) => `slot > now() - make_interval(secs => ${n} + ${SLOT_MS / 1000})`;

/** One address's connections and accepted messages within the window, every mail server. */
export interface ConnectionTotals {
  connections: number;
  denied: number;
  accepted: number;
  firstSeen: Date | null;
  lastSeen: Date | null;
  hosts: number;
}

export async function connectionsOf(db: Queryable, ip: string, windowSeconds: number): Promise<ConnectionTotals> {
  const r = await db.query<{ n: string | null; d: string | null; a: string | null; f: Date | null; l: Date | null; h: string }>(
    `SELECT sum(connections) AS n, sum(denied) AS d, sum(accepted) AS a, min(first_seen) AS f, max(last_seen) AS l, count(DISTINCT host) AS h
       FROM qguard.connections WHERE ip = $1::inet AND ${OVERLAPPING('$2')}`,
    [ip, windowSeconds],
  );
  const row = r.rows[0];
  return {
    connections: Number(row?.n ?? 0),
    denied: Number(row?.d ?? 0),
    accepted: Number(row?.a ?? 0),
    firstSeen: row?.f ? new Date(row.f) : null,
    lastSeen: row?.l ? new Date(row.l) : null,
    hosts: Number(row?.h ?? 0),
  };
}

/** The same for many addresses at once (queue top): only those with a row. */
export async function connectionsOfMany(db: Queryable, ips: readonly string[], windowSeconds: number): Promise<Map<string, ConnectionTotals>> {
  const out = new Map<string, ConnectionTotals>();
  if (ips.length === 0) return out;
  const r = await db.query<{ ip: string; n: string; d: string; a: string; f: Date; l: Date; h: string }>(
    `SELECT host(ip) AS ip, sum(connections) AS n, sum(denied) AS d, sum(accepted) AS a, min(first_seen) AS f, max(last_seen) AS l, count(DISTINCT host) AS h
       FROM qguard.connections WHERE ip = ANY($1::inet[]) AND ${OVERLAPPING('$2')} GROUP BY ip`,
    [ips, windowSeconds],
  );
  for (const row of r.rows) {
    out.set(row.ip, { connections: Number(row.n), denied: Number(row.d), accepted: Number(row.a), firstSeen: new Date(row.f), lastSeen: new Date(row.l), hosts: Number(row.h) });
  }
  return out;
}

/** Addresses with at least `threshold` accepted messages in the window, every mail server added up. */
export async function acceptedOverThreshold(db: Queryable, windowSeconds: number, threshold: number): Promise<{ ip: string; count: number }[]> {
  const r = await db.query<{ ip: string; n: string }>(
    `SELECT host(ip) AS ip, sum(accepted) AS n FROM qguard.connections
      WHERE ${OVERLAPPING('$1')} GROUP BY ip HAVING sum(accepted) >= $2 ORDER BY sum(accepted) DESC, ip`,
    [windowSeconds, threshold],
  );
  return r.rows.map((row) => ({ ip: row.ip, count: Number(row.n) }));
}

/** Addresses that opened at least `limit` connections (refused ones too) in the last `seconds`, every mail server added up. */
export async function connectionsOverLimit(
  db: Queryable,
  seconds: number,
  limit: number,
): Promise<{ ip: string; connections: number; denied: number }[]> {
  const r = await db.query<{ ip: string; n: string; d: string }>(
    `SELECT host(ip) AS ip, sum(connections) AS n, sum(denied) AS d FROM qguard.connections
      WHERE ${OVERLAPPING('$1')} GROUP BY ip HAVING sum(connections) >= $2 ORDER BY sum(connections) DESC, ip`,
    [seconds, limit],
  );
  return r.rows.map((row) => ({ ip: row.ip, connections: Number(row.n), denied: Number(row.d) }));
}
