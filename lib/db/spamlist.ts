// The database half of import-spamlist, in ONE transaction, so a refused or failed run changes
// nothing and a reader never sees half a list: drop the list's networks equal to or inside a
// live relay/trust network, read the rules the source holds now (one binary value, not a row
// per rule), let lib/spamlist/list-diff.ts decide what changes, let the caller refuse, then
// write only the changes — new networks with COPY straight into qguard.rules (embedded PGlite:
// batched arrays), rewrites and deletions by id in set-wise statements. No per-entry
// statements; an unchanged list writes nothing. Every write goes through qguard.rules, so its
// statement triggers audit each rule (one row per rule) and bump the change counter.

import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Db, Queryable } from './connect.js';
import { dbError } from './connect.js';
import { TemporaryError } from '../errors.js';
import { type Net, formatNet, formatNetShort, mustParseNet } from '../net/address.js';
import { type ListDiff, type StoredRules, diffList } from '../spamlist/list-diff.js';

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
   * (and not beyond it) is left as it is: see `expiryIsCurrent`.
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
 * Is a stored expiry what this run would write? Without --for: no expiry. With --for DUR: an
 * expiry between now + DUR/2 and now + DUR is kept. Rewriting it would cost a row version in
 * every index of qguard.rules and an audit row for each of a million entries on every run
 * (80 s for a million), only to move the date by the time since the last run; kept, a listed
 * entry still stays at least DUR/2 ahead of expiry, each entry is rewritten at most once per
 * DUR/2, and an entry the list stops naming lapses between DUR/2 and DUR after its last
 * listing. A stored expiry beyond now + DUR (--for was shortened) or missing is rewritten.
 * `$N` is the ttl in seconds (float8); `t.half`/`t.full` come from the query's bounds.
 */
const expiryIsCurrent = (n: number) =>
  `CASE WHEN $${n}::double precision IS NULL THEN r.expires_at IS NULL
        ELSE r.expires_at BETWEEN t.half AND t.full END`;

/** Flag bits of list-diff.ts for rule `r` (UNSCOPED 1, LIVE 2, CURRENT 4); $2 reason, $3 ttl. */
const FLAGS_SQL = `(CASE WHEN r.host IS NULL THEN 1 ELSE 0 END
      + CASE WHEN r.expires_at IS NULL OR r.expires_at > now() THEN 2 ELSE 0 END
      + CASE WHEN r.host IS NULL AND r.action = 'deny' AND r.reason IS NOT DISTINCT FROM $2 AND r.who IS NULL
                  AND ${expiryIsCurrent(3)} THEN 4 ELSE 0 END)`;

/** The source's rules with their flags: `r` joined with the expiry bounds `t`. */
const SOURCE_RULES = `qguard.rules r,
      (SELECT now() + make_interval(secs => $3::double precision / 2) AS half,
              now() + make_interval(secs => $3::double precision) AS full) t
  WHERE r.source = $1`;

/**
 * Every rule of the source with the flags list-diff needs. IPv4 as two binary values, one
 * 8-byte number a rule each — (address * 64 + prefix) * 8 + flags, and the id — so a million
 * rules cost two 7 MB values instead of a million rows to parse (the same on PGlite); IPv6 as
 * rows.
 */
async function readSource(tx: Queryable, opts: SpamlistMerge): Promise<StoredRules> {
  const params = [opts.source, opts.reason, opts.ttlSeconds];
  const r4 = await tx.query<{ k: Uint8Array | null; i: Uint8Array | null }>(
    `SELECT string_agg(int8send(((r.network - '0.0.0.0'::inet) * 64 + masklen(r.network)) * 8 + ${FLAGS_SQL}), ''::bytea) AS k,
            string_agg(int8send(r.id), ''::bytea) AS i
       FROM ${SOURCE_RULES} AND family(r.network) = 4`,
    params,
  );
  const asBuffer = (u: Uint8Array | null | undefined) =>
    u ? Buffer.from(u.buffer, u.byteOffset, u.byteLength) : Buffer.alloc(0);
  const k = asBuffer(r4.rows[0]?.k);
  const id = asBuffer(r4.rows[0]?.i);
  const n4 = k.length / 8;
  const v4Keys = new Float64Array(n4);
  const v4Ids = new Float64Array(n4);
  const v4Flags = new Uint8Array(n4);
  for (let j = 0, o = 0; j < n4; j++, o += 8) {
    // Both numbers are positive and below 2^53: two 32-bit halves are exact.
    const kf = k.readUInt32BE(o) * 4294967296 + k.readUInt32BE(o + 4);
    const flags = kf % 8;
    v4Keys[j] = (kf - flags) / 8;
    v4Flags[j] = flags;
    v4Ids[j] = id.readUInt32BE(o) * 4294967296 + id.readUInt32BE(o + 4);
  }
  const r6 = await tx.query<{ id: number; cidr: string; flags: number }>(
    `SELECT r.id, r.network::text AS cidr, ${FLAGS_SQL} AS flags FROM ${SOURCE_RULES} AND family(r.network) = 6`,
    params,
  );
  const v6 = r6.rows.map((x) => ({ net: mustParseNet(x.cidr), id: Number(x.id), flags: Number(x.flags) }));
  return { v4Keys, v4Ids, v4Flags, n4, v6 };
}

/** `{1,2,3}`: an id array as one parameter (a million ids: one string, not a million values). */
function idArray(ids: number[], from: number, to: number): string {
  return `{${ids.slice(from, to).join(',')}}`;
}

/** Delete rules by id. */
async function removeRules(tx: Queryable, ids: number[]): Promise<void> {
  for (let i = 0; i < ids.length; i += WRITE_BATCH) {
    await tx.query('DELETE FROM qguard.rules r USING unnest($1::bigint[]) AS d(id) WHERE r.id = d.id', [
      idArray(ids, i, i + WRITE_BATCH),
    ]);
  }
}

/** Rewrite rules by id as this run's entries; false when some had gone meanwhile. */
async function rewriteRules(tx: Queryable, ids: number[], opts: SpamlistMerge): Promise<boolean> {
  let done = 0;
  for (let i = 0; i < ids.length; i += WRITE_BATCH) {
    const r = await tx.query(
      `UPDATE qguard.rules r
          SET action = 'deny', reason = $2, who = NULL, expires_at = ${expirySql(3)}, updated_at = now()
         FROM unnest($1::bigint[]) AS u(id)
        WHERE r.id = u.id AND r.source = $4`,
      [idArray(ids, i, i + WRITE_BATCH), opts.reason, opts.ttlSeconds, opts.source],
    );
    done += r.rowCount;
  }
  return done === ids.length;
}

const v4Text = (key: number) => {
  const prefix = key % 64;
  const a = (key - prefix) / 64;
  return `${Math.floor(a / 16777216)}.${Math.floor(a / 65536) % 256}.${Math.floor(a / 256) % 256}.${a % 256}/${prefix}`;
};

/**
 * New rules as PostgreSQL's binary COPY format, in chunks of about 64 kB: per row the network
 * (cidr: family, bits, is_cidr, length, address bytes) followed by the same bytes for action,
 * source, reason and expiry. The server reads binary values without parsing text.
 */
function* copyRows(keys: number[], v6: Net[], opts: SpamlistMerge, nowMicros: number): Generator<Buffer> {
  const field = (v: Buffer) => {
    const b = Buffer.alloc(4 + v.length);
    b.writeInt32BE(v.length);
    v.copy(b, 4);
    return b;
  };
  let expiry: Buffer;
  if (opts.ttlSeconds === null) {
    expiry = Buffer.alloc(4);
    expiry.writeInt32BE(-1); // NULL
  } else {
    const e = Buffer.alloc(8);
    e.writeBigInt64BE(BigInt(nowMicros - PG_EPOCH_SECONDS * 1_000_000 + Math.round(opts.ttlSeconds * 1_000_000)));
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
    const prefix = key % 64;
    const a = (key - prefix) / 64;
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
async function insertRules(db: Db, tx: Queryable, keys: number[], v6: Net[], opts: SpamlistMerge): Promise<void> {
  if (db.pgClient) {
    const { from: copyFrom } = await import('pg-copy-streams');
    const now = await tx.query<{ us: number }>('SELECT (extract(epoch FROM now()) * 1000000)::int8 AS us');
    const nowMicros = Number(now.rows[0].us);
    // One COPY per batch; the IPv6 networks ride with the last.
    for (let i = 0; i === 0 || i < keys.length; i += WRITE_BATCH) {
      const last = i + WRITE_BATCH >= keys.length;
      const sink = db.pgClient.query(
        copyFrom('COPY qguard.rules (network, action, source, reason, expires_at) FROM STDIN (FORMAT binary)'),
      );
      await pipeline(Readable.from(copyRows(keys.slice(i, i + WRITE_BATCH), last ? v6 : [], opts, nowMicros)), sink);
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
async function apply(db: Db, tx: Queryable, plan: ListDiff, opts: SpamlistMerge): Promise<boolean> {
  let ok = true;
  if (plan.remove.length > 0) await removeRules(tx, plan.remove);
  if (plan.rewrite.length > 0) ok = await rewriteRules(tx, plan.rewrite, opts);
  if (plan.insert4.length + plan.insert6.length > 0) {
    // Plain inserts, not INSERT ... ON CONFLICT (10% dearer a row): the diff was read under the
    // source's advisory lock, so only a writer outside import-spamlist (`qguard ip deny
    // --source list:NAME`) can have added one of these networks since.
    await tx.exec('SAVEPOINT qguard_spamlist_insert');
    try {
      await insertRules(db, tx, plan.insert4, plan.insert6, opts);
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
  return db.transaction(async (tx) => {
    // Two imports of the same list (two hosts' cron) take turns instead of colliding.
    await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`qguard import-spamlist ${opts.source}`]);
    // Compiling the statements (JIT) costs more than it saves here.
    await tx.exec("SET LOCAL work_mem = '64MB'; SET LOCAL jit = off");

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
    const stored = await readSource(tx, opts);
    opts.onPhase?.('comparing');
    let changes = diffList(list.v4, list.v6, stored, opts.replace);
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
    const planned = changes.insert4.length + changes.insert6.length + changes.rewrite.length + changes.remove.length;
    for (let attempt = 1; !(await apply(db, tx, changes, opts)); attempt++) {
      if (attempt === ATTEMPTS) {
        throw new TemporaryError(`the rules of ${opts.source} kept changing during the import: nothing changed, run it again`);
      }
      // Someone else wrote rules of this source meanwhile: what is left to do is the diff now.
      changes = diffList(list.v4, list.v6, await readSource(tx, opts), opts.replace);
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
