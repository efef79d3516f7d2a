// The database half of import-spamlist, in ONE transaction, so a refused or failed run changes
// nothing and a reader never sees half a list: drop the list's networks equal to or inside a
// live relay/trust network, read the rules the source holds now (one statement returning
// binary values, not a row per rule; on a server usually read while the list was still being
// parsed), let lib/spamlist/list-diff.ts decide what changes, let the caller refuse, then write
// only the changes — new networks with binary COPY straight into qguard.rules (embedded PGlite:
// batched arrays), rewrites and deletions by id in set-wise statements. No per-entry
// statements; an unchanged list writes nothing. Every write goes through qguard.rules, so its
// statement triggers audit the changes (summary rows listing the networks: sql/011) and bump
// the change counter.
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

/** Rows per write statement: each statement's audit trigger holds its rows in memory (work_mem). */
const WRITE_BATCH = 100_000;
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
 * without --for a rule has no expiry; with --for DUR an expiry between now + DUR/2 and now +
 * DUR is left as it is. Renewing it on every run would cost, for each of a million entries, a
 * row version in every index of qguard.rules and an audit row (40-80 s), only to move the date
 * by the time since the last run. Left alone, a listed entry still stays at least DUR/2 ahead
 * of its expiry, each entry is rewritten at most once per DUR/2, and an entry the list stops
 * naming lapses between DUR/2 and DUR after its last listing. A missing expiry, or one beyond
 * now + DUR (--for was shortened), is rewritten at once.
 */
const SAME_SQL = (reason: string) =>
  `(CASE WHEN r.host IS NULL THEN ${UNSCOPED} ELSE 0 END
    + CASE WHEN r.action = 'deny' AND r.reason IS NOT DISTINCT FROM ${reason} AND r.who IS NULL THEN ${SAME} ELSE 0 END)`;
/** The expiry as 8 bytes (microseconds since 2000-01-01); none as infinity, the largest int8. */
const EXPIRY_SQL = `timestamptz_send(coalesce(r.expires_at, 'infinity'))`;

/**
 * The source's rules in ONE statement (so in one snapshot, with the change counter it saw), as
 * binary values of fixed-size records instead of a row per rule. IPv4 rules without expiry:
 * two values of 8-byte numbers, (address * 64 + prefix) * 4 + flags, and the id (aggregates
 * over the same rows take them in the same order); with an expiry: records of those two and
 * the expiry; IPv6: records of the cidr, flags, id and expiry. A million rules: two 7 MB values.
 * Nothing depends on the time, so a read taken before the transaction stays good while the
 * change counter has not moved.
 */
const readSql = (source: string, reason: string) => {
  const key4 = `int8send(((r.network - '0.0.0.0'::inet) * 64 + masklen(r.network)) * 4 + ${SAME_SQL(reason)})`;
  const v4 = `family(r.network) = 4`;
  return `SELECT string_agg(${key4}, ''::bytea) FILTER (WHERE r.expires_at IS NULL AND ${v4}) AS k,
          string_agg(int8send(r.id), ''::bytea) FILTER (WHERE r.expires_at IS NULL AND ${v4}) AS i,
          string_agg(${key4} || int8send(r.id) || timestamptz_send(r.expires_at), ''::bytea)
            FILTER (WHERE r.expires_at IS NOT NULL AND ${v4}) AS ke,
          string_agg(cidr_send(r.network) || int8send(${SAME_SQL(reason)}) || int8send(r.id) || ${EXPIRY_SQL}, ''::bytea)
            FILTER (WHERE family(r.network) = 6) AS v6,
          int8send((SELECT change_seq FROM qguard.state)) AS seq
     FROM qguard.rules r WHERE r.source = ${source}`;
};

/** A read of the source's rules, and the change counter of its snapshot. */
export interface SourceRead {
  stored: StoredRules;
  seq: number;
}

function decodeRead(kb: Buffer, ib: Buffer, keb: Buffer, v6b: Buffer, seq: number): SourceRead {
  const n0 = kb.length / 8;
  const n4 = n0 + keb.length / 24;
  const v4Keys = new Float64Array(n4);
  const v4Flags = new Uint8Array(n4);
  const v4Expires = new Float64Array(n4).fill(Infinity);
  const k = viewOf(kb);
  for (let j = 0, o = 0; j < n0; j++, o += 8) {
    const kf = k.getUint32(o) * 4294967296 + k.getUint32(o + 4);
    const key = Math.floor(kf / 4);
    v4Keys[j] = key;
    v4Flags[j] = kf - key * 4;
  }
  const ke = viewOf(keb);
  for (let j = n0, o = 0; j < n4; j++, o += 24) {
    const kf = ke.getUint32(o) * 4294967296 + ke.getUint32(o + 4);
    const key = Math.floor(kf / 4);
    v4Keys[j] = key;
    v4Flags[j] = kf - key * 4;
    v4Expires[j] = int8At(ke, o + 16);
  }
  // Ids are needed only for the rules that change: read on demand.
  const id = viewOf(ib);
  const v4Id = (j: number) => (j < n0 ? int8At(id, j * 8) : int8At(ke, (j - n0) * 24 + 8));
  const v6: StoredRules['v6'] = [];
  const v = viewOf(v6b);
  for (let o = 0; o + 44 <= v6b.length; o += 44) {
    // cidr_send: family, bits, is_cidr, 16 (the address length), the address.
    const addr = (v6b.readBigUInt64BE(o + 4) << 64n) | v6b.readBigUInt64BE(o + 12);
    const net: Net = { family: 6, addr, prefix: v6b[o + 1] };
    v6.push({ net, flags: v.getUint32(o + 24), id: int8At(v, o + 28), expires: int8At(v, o + 36) });
  }
  return { stored: { v4Keys, v4Flags, v4Expires, v4Id, n4, v6 }, seq };
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
  const [k, id, ke, v6, seq] = await binaryRow(
    db,
    tx,
    5,
    (lit) => readSql(lit(opts.source), lit(opts.reason)),
    'reading the rules of the source',
  );
  // The ids stay (read on demand): a copy of their own, so the rest of the data can go.
  return decodeRead(k, Buffer.from(id), ke, v6, int8At(viewOf(seq), 0));
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
 * Rewrites and deletions go by id, through the primary key. Not by network: for `network =
 * ANY(...)` the planner once picked the GiST index on network (gone since sql/010) over the
 * unique btree, and probing it 10,000 times took 18-24 s where the primary key takes 0.1 s.
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

/**
 * New rules as PostgreSQL's binary COPY format, in chunks of about 64 kB: per row the network
 * (cidr: family, bits, is_cidr, length, address bytes) followed by the same bytes for action,
 * source, reason and expiry. The server reads binary values without parsing text.
 */
function* copyRows(keys: number[], v6: Net[], opts: SpamlistMerge, expiresAt: number | null): Generator<Buffer> {
  const field = (v: Buffer) => {
    const b = Buffer.alloc(4 + v.length);
    b.writeInt32BE(v.length);
    v.copy(b, 4);
    return b;
  };
  let expiry: Buffer;
  if (expiresAt === null) {
    expiry = Buffer.alloc(4);
    expiry.writeInt32BE(-1); // NULL
  } else {
    const e = Buffer.alloc(8);
    e.writeBigInt64BE(BigInt(expiresAt)); // timestamptz: microseconds since 2000-01-01
    expiry = field(e);
  }
  const tail = Buffer.concat([
    field(Buffer.from('deny')),
    field(Buffer.from(opts.source)),
    field(Buffer.from(opts.reason)),
    expiry,
  ]);
  const size = 1 << 16;
  const rowMax = 2 + 4 + 20 + tail.length;
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
  for (const key of keys) {
    const full = room();
    if (full) yield full;
    const a = Math.floor(key / 64);
    const prefix = key - a * 64;
    buf.writeInt16BE(5, pos);
    buf.writeInt32BE(8, pos + 2);
    buf[pos + 6] = 2; // PGSQL_AF_INET
    buf[pos + 7] = prefix;
    buf[pos + 8] = 1; // is_cidr
    buf[pos + 9] = 4;
    buf.writeUInt32BE(a, pos + 10);
    pos += 14;
    pos += tail.copy(buf, pos);
  }
  for (const net of v6) {
    const full = room();
    if (full) yield full;
    buf.writeInt16BE(5, pos);
    buf.writeInt32BE(20, pos + 2);
    buf[pos + 6] = 3; // PGSQL_AF_INET6
    buf[pos + 7] = net.prefix;
    buf[pos + 8] = 1;
    buf[pos + 9] = 16;
    buf.writeBigUInt64BE(net.addr >> 64n, pos + 10);
    buf.writeBigUInt64BE(net.addr & 0xffffffffffffffffn, pos + 18);
    pos += 26;
    pos += tail.copy(buf, pos);
  }
  buf.writeInt16BE(-1, pos); // trailer
  yield buf.subarray(0, pos + 2);
}

/** Insert new rules: COPY straight into qguard.rules (server), batched unnest (embedded). */
async function insertRules(db: Db, tx: Queryable, keys: number[], v6: Net[], opts: SpamlistMerge, run: DiffOptions): Promise<void> {
  if (db.pgClient) {
    const { from: copyFrom } = await import('pg-copy-streams');
    // now() + ttl, as the SQL statements write it.
    const expiresAt = run.ttl === null ? null : run.now + run.ttl;
    // One COPY per batch; the IPv6 networks ride with the last.
    for (let i = 0; i === 0 || i < keys.length; i += WRITE_BATCH) {
      const last = i + WRITE_BATCH >= keys.length;
      const sink = db.pgClient.query(
        copyFrom('COPY qguard.rules (network, action, source, reason, expires_at) FROM STDIN (FORMAT binary)'),
      );
      await pipeline(Readable.from(copyRows(keys.slice(i, i + WRITE_BATCH), last ? v6 : [], opts, expiresAt)), sink);
    }
    return;
  }
  const texts = [...keys.map(v4Text), ...v6.map(formatNet)];
  for (let i = 0; i < texts.length; i += EMBEDDED_BATCH) {
    await tx.query(
      `INSERT INTO qguard.rules (network, action, source, reason, expires_at)
       SELECT n::cidr, 'deny', $2, $3, ${expirySql(4)} FROM unnest($1::text[]) AS u(n)`,
      [texts.slice(i, i + EMBEDDED_BATCH), opts.source, opts.reason, opts.ttlSeconds],
    );
  }
}

/** Is `err` (possibly wrapped by dbError) a unique violation? */
function isUniqueViolation(err: unknown): boolean {
  for (let e = err as { code?: string; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    if (e.code === '23505') return true;
  }
  return false;
}

/**
 * Write `plan`. Returns false when another writer changed the source between our read and our
 * writes (a rule to rewrite was gone, or a network to insert had appeared: the inserts are then
 * undone to their savepoint); the caller reads again and writes what is left.
 */
async function apply(db: Db, tx: Queryable, plan: ListDiff, opts: SpamlistMerge, run: DiffOptions): Promise<boolean> {
  let ok = true;
  if (plan.remove.length > 0) await removeRules(tx, plan.remove);
  if (plan.rewrite.length > 0) ok = await rewriteRules(tx, plan.rewrite, opts);
  if (plan.insert.v4.length + plan.insert.v6.length > 0) {
    // Plain inserts, not INSERT ... ON CONFLICT (10% dearer a row): the diff was read under the
    // source's advisory lock, so only a writer outside import-spamlist (`qguard ip deny
    // --source list:NAME`) can have added one of these networks since.
    await tx.exec('SAVEPOINT qguard_spamlist_insert');
    try {
      await insertRules(db, tx, plan.insert.v4, plan.insert.v6, opts, run);
      await tx.exec('RELEASE SAVEPOINT qguard_spamlist_insert');
    } catch (err) {
      if (!isUniqueViolation(err)) throw dbError(err, 'storing the new entries failed');
      await tx.exec('ROLLBACK TO SAVEPOINT qguard_spamlist_insert');
      ok = false;
    }
  }
  return ok;
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
    const planned = changes.insert.v4.length + changes.insert.v6.length + changes.rewrite.length + changes.remove.length;
    for (let attempt = 1; !(await apply(db, tx, changes, opts, run)); attempt++) {
      if (attempt === ATTEMPTS) {
        throw new TemporaryError(`the rules of ${opts.source} kept changing during the import: nothing changed, run it again`);
      }
      // Someone else wrote rules of this source meanwhile: what is left to do is the diff now.
      changes = diffList(list.v4, list.v6, (await readSource(db, tx, opts)).stored, run);
    }
    if (planned >= WRITE_BATCH) {
      // A large change leaves the planner's statistics behind (a first import into an empty
      // table: "a few rows"), and the next run's read would pick an index scan over the whole
      // source; autovacuum would catch up within minutes, this at once (a sample: ~0.2 s).
      await tx.exec('ANALYZE qguard.rules');
    }
    return diff;
  });
}
