// The database half of import-spamlist, in ONE transaction, so a refused or failed run changes
// nothing and a reader never sees half a list: drop the list's networks equal to or inside a
// live relay/trust network, read what the source holds now — the list's entries (a lean table
// of their own, sql/018) and any rules written by hand under its name — in one statement
// returning binary values, not a row per rule (on a server usually read while the list was
// still being parsed), let lib/spamlist/list-diff.ts decide what changes, let the caller
// refuse, then write only the changes: new entries with one binary COPY (embedded PGlite:
// batched arrays), rewrites and deletions by network in set-wise statements, and the audit's
// summary rows (the networks packed). No per-entry statements; an unchanged list writes nothing.
//
// Size: one set-based merge of a list into the rules, with its staging, audit and guards, in the database's terms.

import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Db, Queryable } from './connect.js';
import { dbError } from './connect.js';
import { binaryRow, int8At, viewOf } from './binary-row.js';
import { TemporaryError } from '../errors.js';
import { type Net, formatNet, formatNetShort, mustParseNet } from '../net/address.js';
import { type DiffOptions, type ListDiff, SAME, type StoredRules, UNSCOPED, diffList } from '../spamlist/list-diff.js';

/** The list to store, made once the relay/trust networks are known (lib/spamlist/entry-set.ts). */
export interface StagedList {
  /** Entries dropped for lying inside a relay/trust network, with that network. */
  dropped: { net: Net; inside: Net }[];
  /** Networks to store. */
  networks: number;
  /** The IPv4 networks as numbers (address * 64 + prefix), ascending, distinct. */
  v4: Float64Array;
  /** The IPv6 networks, distinct. */
  v6: Net[];
}

/** What the import would change (or changed): computed before any write. */
export interface SpamlistDiff {
  /** Networks of the list after dropping those inside relay/trust networks. */
  staged: number;
  /** Networks dropped: equal to or inside a live relay/trust network. */
  skipped: number;
  /** A few of them, as `NET inside NET (action, source)`, for the report. */
  skippedExamples: string[];
  /** Live rules of the source before the run. */
  existing: number;
  /** Networks already stored exactly so (no write). */
  unchanged: number;
  /** Networks stored, but with another expiry, reason or action (rewritten). */
  refreshed: number;
  /** Networks not stored yet. */
  added: number;
  /** Rules of the source not in the list (deleted with `replace`, else 0). */
  removed: number;
}

export interface SpamlistMerge {
  /** `list:NAME`. */
  source: string;
  /** Stored as each rule's reason. */
  reason: string;
  /**
   * Expiry from now, seconds; null = never. A stored expiry still at least half of it away
   * (and not beyond it) is left as it is: see SAME_SQL.
   */
  ttlSeconds: number | null;
  /** After the run the source holds exactly this list. */
  replace: boolean;
  /** Compute and report only. */
  dryRun: boolean;
  /** Called with the diff before anything is written; throw (or reject) to refuse: nothing changes. */
  check(diff: SpamlistDiff): void | Promise<void>;
  /** Told which phase starts (for a progress line). */
  onPhase?(phase: string): void;
  /** A read of the source started before the list was read (readSourceEarly), if any. */
  early?: Promise<SourceRead | null> | null;
}

/** Rows per write statement of qguard.rules: each statement's audit trigger holds its rows in memory (work_mem). */
const WRITE_BATCH = 100_000;
/** Networks per statement of list entries by network (an array parameter each). */
const ENTRY_BATCH = 100_000;
/** Networks per INSERT on the embedded database (no COPY there). */
const EMBEDDED_BATCH = 5000;
/** Seconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01. */
const PG_EPOCH_SECONDS = 946_684_800;
/** Attempts when another writer changes the source between our read and our writes. */
const ATTEMPTS = 3;

/** The expiry this run writes: `now() + ttl`, or NULL. `$N` is the ttl in seconds (float8). */
const expirySql = (n: number) =>
  `CASE WHEN $${n}::double precision IS NULL THEN NULL ELSE now() + make_interval(secs => $${n}::double precision) END`;

/**
 * Why an expiry is not rewritten on every run (the `unchanged` test is in list-diff.ts):
 * without --for an entry has no expiry; with --for DUR an expiry between now + DUR/2 and now +
 * DUR is left as it is. Renewing it on every run would write each of a million entries (and
 * audit it) on every run, only to move the date by the time since the last run. Left alone, a
 * listed entry still stays at least DUR/2 ahead of its expiry, each entry is rewritten at most
 * once per DUR/2, and an entry the list stops naming lapses between DUR/2 and DUR after its
 * last listing. A missing expiry, or one beyond now + DUR (--for was shortened), is rewritten.
 */
const SAME_SQL = (reason: string) =>
  `(CASE WHEN r.host IS NULL THEN ${UNSCOPED} ELSE 0 END
    + CASE WHEN r.action = 'deny' AND r.reason IS NOT DISTINCT FROM ${reason} AND r.who IS NULL THEN ${SAME} ELSE 0 END)`;
/** The expiry as 8 bytes (microseconds since 2000-01-01); none as infinity, the largest int8. */
const EXPIRY_SQL = (t: string) => `timestamptz_send(coalesce(${t}.expires_at, 'infinity'))`;
/** An IPv4 network as a number: address * 64 + prefix. */
const KEY_SQL = (t: string) => `((${t}.network - '0.0.0.0'::inet) * 64 + masklen(${t}.network))`;

/**
 * What the source holds, in ONE statement (so in one snapshot, with the change counter it saw),
 * as binary values of fixed-size records instead of a row per rule:
 * - the list's entries (qguard.list_entries, sql/018): IPv4 without expiry as 8-byte keys, with
 *   an expiry as key and expiry, IPv6 as cidr and expiry; and the list's id and whether its
 *   reason is this run's;
 * - the rules written by hand under the list's name (qguard.rules, `qguard ip deny --source
 *   list:NAME`): IPv4 without expiry as two values of 8-byte numbers, key * 4 + flags and the
 *   id (aggregates over the same rows take them in the same order); with an expiry: records of
 *   those two and the expiry; IPv6: records of the cidr, flags, id and expiry.
 * A million entries: one 7 MB value. Nothing depends on the time, so a read taken before the
 * transaction stays good while the change counter has not moved.
 */
const readSql = (source: string, reason: string) => {
  const key4 = `int8send(${KEY_SQL('r')} * 4 + ${SAME_SQL(reason)})`;
  const v4 = (t: string) => `family(${t}.network) = 4`;
  return `SELECT e.ek, e.eke, e.ev6, r.k, r.i, r.ke, r.v6,
          int8send(coalesce(l.id, 0)) || int8send(CASE WHEN l.reason IS NOT DISTINCT FROM ${reason} THEN 1 ELSE 0 END) AS list,
          int8send((SELECT change_seq FROM qguard.state)) AS seq
     FROM (SELECT string_agg(int8send(${KEY_SQL('e')}), ''::bytea) FILTER (WHERE e.expires_at IS NULL AND ${v4('e')}) AS ek,
                  string_agg(int8send(${KEY_SQL('e')}) || timestamptz_send(e.expires_at), ''::bytea)
                    FILTER (WHERE e.expires_at IS NOT NULL AND ${v4('e')}) AS eke,
                  string_agg(cidr_send(e.network) || ${EXPIRY_SQL('e')}, ''::bytea) FILTER (WHERE family(e.network) = 6) AS ev6
             FROM qguard.list_entries e
            WHERE e.list_id = (SELECT id FROM qguard.lists WHERE source = ${source})) AS e,
          (SELECT string_agg(${key4}, ''::bytea) FILTER (WHERE r.expires_at IS NULL AND ${v4('r')}) AS k,
                  string_agg(int8send(r.id), ''::bytea) FILTER (WHERE r.expires_at IS NULL AND ${v4('r')}) AS i,
                  string_agg(${key4} || int8send(r.id) || timestamptz_send(r.expires_at), ''::bytea)
                    FILTER (WHERE r.expires_at IS NOT NULL AND ${v4('r')}) AS ke,
                  string_agg(cidr_send(r.network) || int8send(${SAME_SQL(reason)}) || int8send(r.id) || ${EXPIRY_SQL('r')}, ''::bytea)
                    FILTER (WHERE family(r.network) = 6) AS v6
             FROM qguard.rules r WHERE r.source = ${source}) AS r
     LEFT JOIN qguard.lists l ON l.source = ${source}`;
};

/** The list's own entries as read (the first `n4` IPv4 rules of `stored`, and `v6`). */
export interface ListEntries {
  /** qguard.lists.id; 0: the list has no row yet. */
  id: number;
  /** Its reason is this run's. */
  reasonSame: boolean;
  /** Its IPv4 entries are stored rules 0 .. n4-1. */
  n4: number;
  /** Its IPv6 entries, in the order of the stored IPv6 rules they lead. */
  v6: Net[];
  /** The earliest expiry of its entries (µs since 2000-01-01), Infinity: none. */
  minExpiry: number;
}

/** A read of the source's rules, and the change counter of its snapshot. */
export interface SourceRead {
  stored: StoredRules;
  list: ListEntries;
  seq: number;
}

/**
 * Stored rules are referred to by id in the diff: a rule of qguard.rules by its id (positive),
 * a list entry by its place (negative: -1 - place; places count the IPv4 entries first).
 */
const entryRef = (place: number) => -1 - place;

/** cidr_send of an IPv6 network at `o`: family, bits, is_cidr, 16, the address. */
function cidr6At(b: Buffer, o: number): Net {
  const addr = (b.readBigUInt64BE(o + 4) << 64n) | b.readBigUInt64BE(o + 12);
  return { family: 6, addr, prefix: b[o + 1] };
}

function decodeRead(f: Buffer[], seq: number): SourceRead {
  const [ekb, ekeb, ev6b, kb, ib, keb, v6b, listb] = f;
  const lv = viewOf(listb);
  const list: ListEntries = { id: int8At(lv, 0), reasonSame: int8At(lv, 8) === 1, n4: 0, v6: [], minExpiry: Infinity };
  const entryFlags = UNSCOPED | (list.reasonSame ? SAME : 0);
  const e0 = ekb.length / 8;
  const ne = e0 + ekeb.length / 16;
  const n0 = kb.length / 8;
  const n4 = ne + n0 + keb.length / 24;
  list.n4 = ne;
  const v4Keys = new Float64Array(n4);
  const v4Flags = new Uint8Array(n4);
  const v4Expires = new Float64Array(n4).fill(Infinity);
  const ek = viewOf(ekb);
  for (let j = 0, o = 0; j < e0; j++, o += 8) v4Keys[j] = int8At(ek, o);
  const eke = viewOf(ekeb);
  for (let j = e0, o = 0; j < ne; j++, o += 16) {
    v4Keys[j] = int8At(eke, o);
    v4Expires[j] = int8At(eke, o + 8);
    if (v4Expires[j] < list.minExpiry) list.minExpiry = v4Expires[j];
  }
  v4Flags.fill(entryFlags, 0, ne);
  const split = (kf: number, j: number) => {
    const key = Math.floor(kf / 4);
    v4Keys[j] = key;
    v4Flags[j] = kf - key * 4;
  };
  const k = viewOf(kb);
  for (let j = ne, o = 0; j < ne + n0; j++, o += 8) split(k.getUint32(o) * 4294967296 + k.getUint32(o + 4), j);
  const ke = viewOf(keb);
  for (let j = ne + n0, o = 0; j < n4; j++, o += 24) {
    split(ke.getUint32(o) * 4294967296 + ke.getUint32(o + 4), j);
    v4Expires[j] = int8At(ke, o + 16);
  }
  // Ids are needed only for the rules that change: read on demand.
  const id = viewOf(ib);
  const v4Id = (j: number) =>
    j < ne ? entryRef(j) : j < ne + n0 ? int8At(id, (j - ne) * 8) : int8At(ke, (j - ne - n0) * 24 + 8);
  const v6: StoredRules['v6'] = [];
  const ev6 = viewOf(ev6b);
  for (let o = 0; o + 28 <= ev6b.length; o += 28) {
    const net = cidr6At(ev6b, o);
    const expires = int8At(ev6, o + 20);
    if (expires < list.minExpiry) list.minExpiry = expires;
    v6.push({ net, flags: entryFlags, id: entryRef(ne + list.v6.length), expires });
    list.v6.push(net);
  }
  const v = viewOf(v6b);
  for (let o = 0; o + 44 <= v6b.length; o += 44) {
    v6.push({ net: cidr6At(v6b, o), flags: v.getUint32(o + 24), id: int8At(v, o + 28), expires: int8At(v, o + 36) });
  }
  return { stored: { v4Keys, v4Flags, v4Expires, v4Id, n4, v6 }, list, seq };
}

/**
 * Read the source's rules (inside a transaction), as binary values (lib/db/binary-row.ts: on a
 * server through COPY, not as 45 MB of hex for a million rules).
 */
async function readSource(db: Db, tx: Queryable, opts: Pick<SpamlistMerge, 'source' | 'reason'>): Promise<SourceRead> {
  if (db.pgClient) {
    // One process scans, in table order — after our own sorted writes, network order, so the
    // diff rarely sorts. Parallel workers gain nothing here (the aggregate is the work).
    await tx.exec('SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL jit = off');
  }
  const f = await binaryRow(db, tx, 9, (lit) => readSql(lit(opts.source), lit(opts.reason)), 'reading the rules of the source');
  // The ids stay (read on demand): copies of their own, so the rest of the data can go.
  return decodeRead([...f.slice(0, 4), Buffer.from(f[4]), Buffer.from(f[5]), ...f.slice(6, 8)], int8At(viewOf(f[8]), 0));
}

/**
 * Start reading the source's rules on a server connection before the list has been read, so
 * the server's half of the work runs while this process parses. mergeSpamlist uses it when the
 * change counter has not moved since (nothing was written anywhere); otherwise it reads again.
 * Never rejects: on any trouble the transaction reads for itself.
 */
export function readSourceEarly(db: Db, opts: Pick<SpamlistMerge, 'source' | 'reason'>): Promise<SourceRead | null> {
  return db.transaction((tx) => readSource(db, tx, opts)).catch(() => null);
}

/** `{1,2,3}`: ids as one array parameter (a million ids: one string, not a million values). */
function idArray(ids: number[], from: number, to: number): string {
  return `{${ids.slice(from, to).join(',')}}`;
}

/*
 * Rewrites and deletions of rules go by id, through the primary key. Not by network: for
 * `network = ANY(...)` the planner once picked the GiST index on network (gone since sql/010)
 * over the unique btree, and probing it 10,000 times took 18-24 s where the primary key takes 0.1 s.
 */

/** Delete rules by id. */
async function removeRules(tx: Queryable, ids: number[]): Promise<void> {
  for (let i = 0; i < ids.length; i += WRITE_BATCH) {
    // `= ANY(array)`: probes of the primary key for a few, a hashed filter for many; a join
    // with unnest would read the whole index in order (3x slower for 10,000 of a million).
    await tx.query('DELETE FROM qguard.rules WHERE id = ANY($1::bigint[])', [idArray(ids, i, i + WRITE_BATCH)]);
  }
}

/** Rewrite rules by id as this run's entries; false when some had gone meanwhile. */
async function rewriteRules(tx: Queryable, ids: number[], opts: SpamlistMerge): Promise<boolean> {
  let done = 0;
  for (let i = 0; i < ids.length; i += WRITE_BATCH) {
    const r = await tx.query(
      `UPDATE qguard.rules
          SET action = 'deny', reason = $2, who = NULL, expires_at = ${expirySql(3)}, updated_at = now()
        WHERE id = ANY($1::bigint[]) AND source = $4`,
      [idArray(ids, i, i + WRITE_BATCH), opts.reason, opts.ttlSeconds, opts.source],
    );
    done += r.rowCount;
  }
  return done === ids.length;
}

const v4Text = (key: number) => {
  const a = Math.floor(key / 64);
  const prefix = key - a * 64;
  return `${Math.floor(a / 16777216)}.${Math.floor(a / 65536) % 256}.${Math.floor(a / 256) % 256}.${a % 256}/${prefix}`;
};


/** IPv4 keys packed for qguard.audit.entries: 5 bytes each, the address (big-endian) and the prefix. */
function packKeys(keys: ArrayLike<number>, into = Buffer.allocUnsafe(keys.length * 5), from = 0, to = keys.length): Buffer {
  for (let i = from, o = from * 5; i < to; i++, o += 5) {
    const a = Math.floor(keys[i] / 64);
    into[o] = a >>> 24;
    into[o + 1] = (a >>> 16) & 255;
    into[o + 2] = (a >>> 8) & 255;
    into[o + 3] = a & 255;
    into[o + 4] = keys[i] - a * 64;
  }
  return into;
}

/** What an audit row of list entries stores of them (sql/018): IPv4 packed, IPv6 as text. */
interface AuditedEntries {
  entries: Buffer | null;
  networks: string[] | null;
}

/**
 * Fill `out` with the AuditedEntries of these networks a slice at a time (a step: 16,384 IPv4
 * keys or 256 IPv6 networks). An import takes the steps between the chunks of its COPY of the
 * same entries, while the server is busy with those: 30-40 ms of a million-entry import that no
 * one waits for.
 */
function* auditSteps(keys: ArrayLike<number>, v6: readonly Net[], out: AuditedEntries): Generator<void> {
  if (keys.length) {
    const entries = Buffer.allocUnsafe(keys.length * 5);
    for (let i = 0; i < keys.length; i += 16384) {
      packKeys(keys, entries, i, Math.min(keys.length, i + 16384));
      yield;
    }
    out.entries = entries;
  }
  if (v6.length) {
    const networks: string[] = [];
    for (let i = 0; i < v6.length; i += 256) {
      for (const net of v6.slice(i, i + 256)) networks.push(formatNet(net));
      yield;
    }
    out.networks = networks;
  }
}

/** The AuditedEntries of these networks, all at once. */
function audited(keys: ArrayLike<number>, v6: readonly Net[]): AuditedEntries {
  const out: AuditedEntries = { entries: null, networks: null };
  for (const _ of auditSteps(keys, v6, out));
  return out;
}

/** The chunks, with a step of `steps` after each one is taken. */
function* between(chunks: Iterable<Buffer>, steps: Iterator<void>): Generator<Buffer> {
  for (const chunk of chunks) {
    yield chunk;
    steps.next();
  }
}

/**
 * Rows of PostgreSQL's binary COPY format, in chunks of about 256 kB: per row the list's id
 * (int4), the network (cidr: family, bits, is_cidr, length, address bytes), the expiry and,
 * unless `addedAt` is null, the time added — or, with `listId` null, the network alone. Times
 * are microseconds since 2000-01-01. The server reads binary values without parsing text.
 */
function* copyRows(
  listId: number | null,
  keys: ArrayLike<number>,
  v6: readonly Net[],
  expiresAt: number | null,
  addedAt: number | null = null,
): Generator<Buffer> {
  const time = (t: number | null) => {
    const b = Buffer.alloc(t === null ? 4 : 12);
    if (t === null) b.writeInt32BE(-1); // NULL
    else {
      b.writeInt32BE(8);
      b.writeBigInt64BE(BigInt(t), 4);
    }
    return b;
  };
  const fields = listId === null ? 1 : addedAt === null ? 3 : 4;
  const expiry = listId === null ? Buffer.alloc(0) : Buffer.concat([time(expiresAt), ...(addedAt === null ? [] : [time(addedAt)])]);
  const size = 1 << 18;
  const rowMax = 2 + 8 + 24 + expiry.length;
  let buf = Buffer.allocUnsafe(size);
  // Signature, flags, header extension length.
  let pos = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1').copy(buf, 0);
  pos = buf.writeInt32BE(0, pos);
  pos = buf.writeInt32BE(0, pos);
  const room = () => {
    if (pos <= size - rowMax) return null;
    const out = buf.subarray(0, pos);
    buf = Buffer.allocUnsafe(size);
    pos = 0;
    return out;
  };
  const head = () => {
    if (listId === null) {
      buf.writeInt16BE(1, pos);
      pos += 2;
      return;
    }
    buf.writeInt16BE(fields, pos);
    buf.writeInt32BE(4, pos + 2);
    buf.writeInt32BE(listId, pos + 6);
    pos += 10;
  };
  // An IPv4 row is the same bytes but for the prefix and the address: a template, then those.
  const start = pos;
  head();
  pos = buf.writeInt32BE(8, pos);
  const at = pos - start; // cidr_send: family, bits (the prefix), is_cidr, length, address
  buf[pos] = 2; // PGSQL_AF_INET
  buf[pos + 2] = 1;
  buf[pos + 3] = 4;
  pos += 8;
  pos += expiry.copy(buf, pos);
  const row = Buffer.from(buf.subarray(start, pos));
  pos = start;
  const rowLen = row.length;
  for (let i = 0; i < keys.length; ) {
    const full = room();
    if (full) yield full;
    // As many rows as the chunk takes, laid down at once from the template (one native fill
    // instead of a copy a row: 70 ms a million), then each one's prefix and address.
    const n = Math.min(keys.length - i, Math.floor((size - rowMax - pos) / rowLen) + 1);
    buf.fill(row, pos, pos + n * rowLen);
    for (const end = i + n; i < end; i++) {
      const key = keys[i];
      const a = Math.floor(key / 64);
      const o = pos + at;
      buf[o + 1] = key - a * 64;
      buf[o + 4] = a >>> 24;
      buf[o + 5] = (a >>> 16) & 255;
      buf[o + 6] = (a >>> 8) & 255;
      buf[o + 7] = a & 255;
      pos += rowLen;
    }
  }
  for (const net of v6) {
    const full = room();
    if (full) yield full;
    head();
    buf.writeInt32BE(20, pos);
    buf[pos + 4] = 3; // PGSQL_AF_INET6
    buf[pos + 5] = net.prefix;
    buf[pos + 6] = 1;
    buf[pos + 7] = 16;
    buf.writeBigUInt64BE(net.addr >> 64n, pos + 8);
    buf.writeBigUInt64BE(net.addr & 0xffffffffffffffffn, pos + 16);
    pos += 24;
    pos += expiry.copy(buf, pos);
  }
  buf.writeInt16BE(-1, pos); // trailer
  yield buf.subarray(0, pos + 2);
}

/**
 * Insert new entries: one COPY (server), batched unnest (embedded). Those of the import that
 * made the list (`first`) get no time of their own: the list's is theirs (sql/018).
 */
async function insertEntries(
  db: Db,
  tx: Queryable,
  listId: number,
  first: boolean,
  keys: ArrayLike<number>,
  v6: Net[],
  opts: SpamlistMerge,
  run: DiffOptions,
): Promise<AuditedEntries> {
  const out: AuditedEntries = { entries: null, networks: null };
  const steps = auditSteps(keys, v6, out);
  if (db.pgClient) {
    const { from: copyFrom } = await import('pg-copy-streams');
    // now() + ttl, as the SQL statements write it.
    const expiresAt = run.ttl === null ? null : run.now + run.ttl;
    const columns = first ? 'list_id, network, expires_at' : 'list_id, network, expires_at, created_at';
    const sink = db.pgClient.query(copyFrom(`COPY qguard.list_entries (${columns}) FROM STDIN (FORMAT binary)`));
    try {
      await pipeline(Readable.from(between(copyRows(listId, keys, v6, expiresAt, first ? null : run.now), steps)), sink);
    } catch (err) {
      throw dbError(err, 'storing the new entries failed');
    }
  } else {
    for (let i = 0; i < keys.length + v6.length; i += EMBEDDED_BATCH) {
      await tx.query(
        `INSERT INTO qguard.list_entries (list_id, network, expires_at, created_at)
         SELECT $2, n::cidr, ${expirySql(3)}, CASE WHEN $4 THEN NULL ELSE now() END FROM unnest($1::text[]) AS u(n)`,
        [netSlice(keys, v6, i, i + EMBEDDED_BATCH), listId, opts.ttlSeconds, first],
      );
    }
  }
  for (const _ of steps); // the steps the chunks left (all of them, on the embedded database)
  return out;
}

/** Networks (IPv4 keys, then IPv6) `from` .. `to` as the texts of an array parameter. */
function netSlice(keys: ArrayLike<number>, v6: readonly Net[], from: number, to: number): string[] {
  const out: string[] = [];
  for (let n = from; n < to && n < keys.length + v6.length; n++) out.push(n < keys.length ? v4Text(keys[n]) : formatNet(v6[n - keys.length]));
  return out;
}

/**
 * Delete or rewrite (with this run's expiry) the list's entries of these networks; false when
 * some had gone. A few go as array parameters (a hashed filter over one scan of the entries
 * per 100,000); more go by one binary COPY into a temporary table and one join — a rewrite of
 * a whole list (`--for` given to a list that had none) is one statement, not ten scans.
 */
async function changeEntries(db: Db, tx: Queryable, listId: number, keys: number[], v6: Net[], opts: SpamlistMerge, rewrite: boolean): Promise<boolean> {
  const total = keys.length + v6.length;
  // The statement, with the ttl as parameter `ttl` in a rewrite.
  const change = (where: string, ttl: number) =>
    rewrite
      ? `UPDATE qguard.list_entries e SET expires_at = ${expirySql(ttl)} ${where}`
      : `DELETE FROM qguard.list_entries e ${where.replace(/^FROM/, 'USING')}`;
  if (db.pgClient && total > ENTRY_BATCH) {
    const { from: copyFrom } = await import('pg-copy-streams');
    await tx.exec('DROP TABLE IF EXISTS pg_temp.qguard_networks; CREATE TEMPORARY TABLE qguard_networks (network cidr) ON COMMIT DROP');
    const sink = db.pgClient.query(copyFrom('COPY pg_temp.qguard_networks FROM STDIN (FORMAT binary)'));
    await pipeline(Readable.from(copyRows(null, keys, v6, null)), sink);
    const r = await tx.query(
      change('FROM pg_temp.qguard_networks n WHERE e.list_id = $1 AND e.network = n.network', 2),
      rewrite ? [listId, opts.ttlSeconds] : [listId],
    );
    return r.rowCount === total;
  }
  let done = 0;
  for (let i = 0; i < total; i += ENTRY_BATCH) {
    const r = await tx.query(
      change('WHERE e.list_id = $2 AND e.network = ANY($1::cidr[])', 3),
      rewrite ? [netSlice(keys, v6, i, i + ENTRY_BATCH), listId, opts.ttlSeconds] : [netSlice(keys, v6, i, i + ENTRY_BATCH), listId],
    );
    done += r.rowCount;
  }
  return done === total;
}

/** The audit row of one kind of change of the list's entries (sql/018: IPv4 packed, IPv6 listed). */
async function auditEntries(tx: Queryable, op: 'insert' | 'update' | 'delete', what: AuditedEntries, opts: SpamlistMerge): Promise<void> {
  if (what.entries === null && what.networks === null) return;
  await tx.query(
    `INSERT INTO qguard.audit (actor, op, object, action, source, reason, expires_at, entries, networks)
     VALUES (qguard.current_actor(), $1, 'rule', 'deny', $2, $3, CASE WHEN $1 = 'delete' THEN NULL ELSE ${expirySql(4)} END,
             $5::bytea, $6::cidr[])`,
    [op, opts.source, opts.reason, opts.ttlSeconds, what.entries, what.networks],
  );
}

/** The writes of a plan, rules of qguard.rules and the list's entries apart. */
interface Writes {
  rules: { remove: number[]; rewrite: number[] };
  entries: { remove: { v4: number[]; v6: Net[] }; rewrite: { v4: number[]; v6: Net[] } };
}

/**
 * Split the plan's ids into rules and entries. An entry to rewrite whose expiry is already
 * this run's (only the list's reason differed: that is one row of qguard.lists) is not written.
 */
function splitPlan(plan: ListDiff, read: SourceRead, run: DiffOptions): Writes {
  const w: Writes = { rules: { remove: [], rewrite: [] }, entries: { remove: { v4: [], v6: [] }, rewrite: { v4: [], v6: [] } } };
  const { stored, list } = read;
  const lo = run.ttl === null ? Infinity : run.now + Math.floor(run.ttl / 2);
  const hi = run.ttl === null ? Infinity : run.now + run.ttl;
  const place = (id: number, to: { v4: number[]; v6: Net[] }, skipSame: boolean) => {
    const p = -1 - id;
    const expires = p < list.n4 ? stored.v4Expires[p] : stored.v6.find((r) => r.id === id)!.expires;
    if (skipSame && expires > run.now && expires >= lo && expires <= hi) return;
    if (p < list.n4) to.v4.push(stored.v4Keys[p]);
    else to.v6.push(list.v6[p - list.n4]);
  };
  for (const id of plan.remove) {
    if (id > 0) w.rules.remove.push(id);
    else place(id, w.entries.remove, false);
  }
  for (const id of plan.rewrite) {
    if (id > 0) w.rules.rewrite.push(id);
    else place(id, w.entries.rewrite, true);
  }
  return w;
}

/**
 * Write `plan`. Returns false when another writer changed the source between our read and our
 * writes (a rule or entry to rewrite or delete was gone: `qguard ip rm`, expire_rules); the
 * caller reads again and writes what is left.
 */
async function apply(db: Db, tx: Queryable, plan: ListDiff, read: SourceRead, opts: SpamlistMerge, run: DiffOptions): Promise<boolean> {
  const w = splitPlan(plan, read, run);
  const inserts = plan.insert.v4.length + plan.insert.v6.length;
  const entryWrites = inserts + w.entries.remove.v4.length + w.entries.remove.v6.length + w.entries.rewrite.v4.length + w.entries.rewrite.v6.length;
  let listId = read.list.id;
  if (listId === 0 && entryWrites > 0) {
    const r = await tx.query<{ id: number }>('INSERT INTO qguard.lists (source, reason) VALUES ($1, $2) RETURNING id', [opts.source, opts.reason]);
    listId = Number(r.rows[0].id);
  } else if (listId !== 0 && !read.list.reasonSame) {
    // The reason of every entry at once: one row, audited as an update of the list's rules.
    await tx.query(
      `WITH was AS (SELECT reason FROM qguard.lists WHERE id = $1 FOR UPDATE),
            now AS (UPDATE qguard.lists SET reason = $2, updated_at = now() WHERE id = $1 RETURNING source)
       INSERT INTO qguard.audit (actor, op, object, action, source, reason, old)
       SELECT qguard.current_actor(), 'update', 'rule', 'deny', now.source, $2, jsonb_build_object('reason', was.reason) FROM was, now`,
      [listId, opts.reason],
    );
  }
  if (w.rules.remove.length > 0) await removeRules(tx, w.rules.remove);
  if (w.rules.rewrite.length > 0 && !(await rewriteRules(tx, w.rules.rewrite, opts))) return false;
  const { remove, rewrite } = w.entries;
  if (remove.v4.length + remove.v6.length > 0) {
    if (!(await changeEntries(db, tx, listId, remove.v4, remove.v6, opts, false))) return false;
    await auditEntries(tx, 'delete', audited(remove.v4, remove.v6), opts);
  }
  if (rewrite.v4.length + rewrite.v6.length > 0) {
    if (!(await changeEntries(db, tx, listId, rewrite.v4, rewrite.v6, opts, true))) return false;
    await auditEntries(tx, 'update', audited(rewrite.v4, rewrite.v6), opts);
  }
  if (inserts > 0) {
    // Only import-spamlist writes a list's entries, under the list's advisory lock: the
    // networks to insert are not stored (the diff was read under the lock).
    opts.onPhase?.('writing the new entries');
    const inserted = await insertEntries(db, tx, listId, read.list.id === 0, plan.insert.v4, plan.insert.v6, opts, run);
    opts.onPhase?.('auditing the new entries');
    await auditEntries(tx, 'insert', inserted, opts);
    opts.onPhase?.('committing');
  }
  if (entryWrites > 0) {
    // Where expire_rules looks: no earlier than the earliest expiry stored or written (an entry
    // deleted just now may make it early; expire_rules then finds nothing and looks again).
    const written = run.ttl !== null && inserts + rewrite.v4.length + rewrite.v6.length > 0 ? run.now + run.ttl : Infinity;
    const next = Math.min(read.list.minExpiry, written);
    await tx.query(
      `UPDATE qguard.lists SET next_expiry = CASE WHEN $2::float8 IS NULL THEN NULL
              ELSE timestamptz '2000-01-01 00:00:00+00' + make_interval(secs => $2::float8 / 1000000) - interval '1 millisecond' END
        WHERE id = $1`,
      [listId, next === Infinity ? null : next],
    );
  }
  return true;
}

/**
 * Fetch the relay/trust networks and let `plan` make the list without what lies inside them;
 * diff the list against the rules of `opts.source`, call `opts.check`, and unless `dryRun`
 * make the source hold it: insert the new, rewrite the changed, and with `replace` delete the
 * rest of the source.
 */
export async function mergeSpamlist(
  db: Db,
  plan: (relayTrust: readonly Net[]) => StagedList,
  opts: SpamlistMerge,
): Promise<SpamlistDiff> {
  // The early read has its own (read-only) transaction on this connection: let it finish.
  const early = opts.early ? await opts.early : null;
  return db.transaction(async (tx) => {
    // Two imports of the same list (two hosts' cron) take turns instead of colliding.
    await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`qguard import-spamlist ${opts.source}`]);
    // Compiling the statements (JIT) costs more than it saves here. The audit takes each
    // statement's changes as summary rows with their networks (sql/011_audit_summary.sql).
    await tx.exec("SET LOCAL work_mem = '64MB'; SET LOCAL jit = off; SET LOCAL qguard.audit = 'summary'");

    // Entries equal to or inside a relay/trust network would be more specific than it and so
    // override it; partners and logged-in users win over public lists. An entry that merely
    // contains one stays: the decision rule keeps the relay/trust part allowed. The relay/trust
    // rules are few: one query fetches them all, the sorted entries show what lies inside each.
    opts.onPhase?.('dropping entries inside relay/trust networks');
    const allows = await tx.query<{ cidr: string; action: string; source: string }>(
      `SELECT network::text AS cidr, action, source FROM qguard.live_rules
        WHERE action IN ('relay', 'trust') ORDER BY network`,
    );
    const outer = new Map<Net, { action: string; source: string }>();
    for (const a of allows.rows) outer.set(mustParseNet(a.cidr), a);
    const list = plan([...outer.keys()]);
    const dropped = list.dropped;

    opts.onPhase?.('reading the rules of the source');
    // The early read still holds if nothing has been written since its snapshot (the counter
    // moves with every change of a rule, in the writer's transaction).
    const state = await tx.query<{ seq: number; now: number }>(
      `SELECT change_seq AS seq, (extract(epoch FROM now()) * 1000000)::int8 - ${PG_EPOCH_SECONDS}000000 AS now
         FROM qguard.state`,
    );
    const run: DiffOptions = {
      replace: opts.replace,
      now: Number(state.rows[0].now),
      ttl: opts.ttlSeconds === null ? null : Math.round(opts.ttlSeconds * 1_000_000),
    };
    const read = early && early.seq === Number(state.rows[0].seq) ? early : await readSource(db, tx, opts);
    opts.onPhase?.('comparing');
    let changes = diffList(list.v4, list.v6, read.stored, run);
    const diff: SpamlistDiff = {
      staged: list.networks,
      skipped: dropped.length,
      skippedExamples: dropped.slice(0, 5).map(({ net, inside }) => {
        const o = outer.get(inside)!;
        return `${formatNetShort(net)} inside ${formatNetShort(inside)} (${o.action}, ${o.source})`;
      }),
      existing: changes.existing,
      unchanged: changes.unchanged,
      refreshed: changes.matched - changes.unchanged,
      added: list.networks - changes.matched,
      removed: opts.replace ? changes.existing - changes.matched : 0,
    };
    await opts.check(diff);
    if (opts.dryRun) return diff;

    opts.onPhase?.('writing');
    let current = read;
    for (let attempt = 1; ; attempt++) {
      await tx.exec('SAVEPOINT qguard_spamlist_write');
      if (await apply(db, tx, changes, current, opts, run)) break;
      await tx.exec('ROLLBACK TO SAVEPOINT qguard_spamlist_write');
      if (attempt === ATTEMPTS) {
        throw new TemporaryError(`the rules of ${opts.source} kept changing during the import: nothing changed, run it again`);
      }
      // Someone else changed rules of this source meanwhile: what is left to do is the diff now.
      current = await readSource(db, tx, opts);
      changes = diffList(list.v4, list.v6, current.stored, run);
    }
    return diff;
  });
}
