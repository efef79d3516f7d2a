// The database half of import-spamlist: drop the list's networks equal to or inside a live
// relay/trust network, load the rest into a temporary staging table (server: COPY through
// pg-copy-streams; embedded PGlite: batched arrays with unnest), diff against the source's rules,
// let the caller refuse, then merge set-wise — all in ONE transaction, so a refused or failed
// run changes nothing and a reader never sees half a list. No per-entry statements.

import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Db, Queryable } from './connect.js';
import { dbError } from './connect.js';
import { type Net, formatNetShort, mustParseNet } from '../net/address.js';

/** The list to store, made once the relay/trust networks are known (lib/spamlist/entry-set.ts). */
export interface StagedList {
  /** Entries dropped for lying inside a relay/trust network, with that network. */
  dropped: { net: Net; inside: Net }[];
  /** Networks to store. */
  networks: number;
  /** The networks as CIDR text, streamed once. */
  texts(): Iterable<string>;
  /** The same as COPY text: one network a line, in chunks. */
  chunks(): Iterable<Buffer>;
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
  /** Expiry from now, seconds; null = never. */
  ttlSeconds: number | null;
  /** After the run the source holds exactly this list. */
  replace: boolean;
  /** Compute and report only. */
  dryRun: boolean;
  /** Called with the diff before anything is written; throw to refuse (nothing changes). */
  check(diff: SpamlistDiff): void;
  /** Told which phase starts (for a progress line). */
  onPhase?(phase: string): void;
}

const STAGE = 'pg_temp.qguard_spamlist_stage';

/** Rows per unnest batch (embedded database). */
const BATCH = 5000;

async function loadServer(db: Db, chunks: Iterable<Buffer>): Promise<void> {
  const { from: copyFrom } = await import('pg-copy-streams');
  const client = db.pgClient!;
  try {
    const sink = client.query(copyFrom(`COPY ${STAGE} (network) FROM STDIN`));
    await pipeline(Readable.from(chunks), sink);
  } catch (err) {
    throw dbError(err, 'loading the list into the staging table failed');
  }
}

async function loadEmbedded(tx: Queryable, networks: Iterable<string>): Promise<void> {
  let batch: string[] = [];
  const flush = async () => {
    await tx.query(`INSERT INTO ${STAGE} (network) SELECT unnest($1::text[])::cidr`, [batch]);
    batch = [];
  };
  for (const n of networks) {
    batch.push(n);
    if (batch.length === BATCH) await flush();
  }
  if (batch.length > 0) await flush();
}

/** Apart from the expiry, is a stored rule `r` already what this import would write? */
const SAME = `r.action = 'deny' AND r.reason IS NOT DISTINCT FROM $2 AND r.who IS NULL`;

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
    // Sorts, joins and hashes over a million rows: give them memory; compiling the
    // statements (JIT) costs more than it saves here.
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

    await tx.exec(`CREATE TEMP TABLE qguard_spamlist_stage (network cidr NOT NULL) ON COMMIT DROP`);
    opts.onPhase?.('loading the staging table');
    if (db.pgClient) await loadServer(db, list.chunks());
    else await loadEmbedded(tx, list.texts());
    await tx.exec(`ANALYZE ${STAGE}`);

    const ttl = opts.ttlSeconds;
    opts.onPhase?.('comparing');
    // One pass over both sides: the source's live rules (all of them, for `existing`) against
    // the list; only an unscoped rule counts as a match. A merge join reads the rules in index
    // order and beats hashing a million list rows, which the planner would pick.
    await tx.exec('SET LOCAL enable_hashjoin = off');
    const diffRow = await tx.query<{ existing: number; matched: number; unchanged: number }>(
      `SELECT count(r.network)::int AS existing,
              count(*) FILTER (WHERE s.network IS NOT NULL AND r.network IS NOT NULL AND r.host IS NULL)::int AS matched,
              count(*) FILTER (WHERE s.network IS NOT NULL AND r.network IS NOT NULL AND r.host IS NULL
                                 AND ${SAME} AND r.expires_at IS NULL AND $3::double precision IS NULL)::int AS unchanged
         FROM ${STAGE} s
         FULL JOIN (SELECT network, host, action, reason, who, expires_at
                      FROM qguard.live_rules WHERE source = $1) r ON r.network = s.network`,
      [opts.source, opts.reason, ttl],
    );
    await tx.exec('SET LOCAL enable_hashjoin = on');
    const d = diffRow.rows[0];
    const diff: SpamlistDiff = {
      staged: list.networks,
      skipped: dropped.length,
      skippedExamples: dropped.slice(0, 5).map(({ net, inside }) => {
        const o = outer.get(inside)!;
        return `${formatNetShort(net)} inside ${formatNetShort(inside)} (${o.action}, ${o.source})`;
      }),
      existing: d.existing,
      unchanged: d.unchanged,
      refreshed: d.matched - d.unchanged,
      added: list.networks - d.matched,
      removed: opts.replace ? d.existing - d.matched : 0,
    };
    opts.check(diff);
    if (opts.dryRun) return diff;

    opts.onPhase?.('merging');
    if (opts.replace && diff.removed + (await expiredOf(tx, opts.source)) > 0) {
      // Everything of the source that the list no longer names (expired leftovers included).
      // Written as an anti-join, which the planner never turns into a per-row subquery.
      await tx.query(
        `DELETE FROM qguard.rules r
          USING (SELECT o.id FROM qguard.rules o
                   LEFT JOIN ${STAGE} s ON s.network = o.network AND o.host IS NULL
                  WHERE o.source = $1 AND s.network IS NULL) gone
          WHERE r.id = gone.id`,
        [opts.source],
      );
    }
    if (diff.added + diff.refreshed > 0) {
      // New networks, and stored ones that differ (expiry, reason, action) or have expired:
      // one INSERT; ON CONFLICT rewrites an existing row of the source in place.
      await tx.query(
        `INSERT INTO qguard.rules AS r (network, action, source, reason, who, expires_at, host)
         SELECT s.network, 'deny', $1, $2, NULL,
                CASE WHEN $3::double precision IS NULL THEN NULL ELSE now() + make_interval(secs => $3::double precision) END,
                NULL
           FROM ${STAGE} s
          WHERE NOT EXISTS (SELECT 1 FROM qguard.live_rules r
                             WHERE r.network = s.network AND r.source = $1 AND r.host IS NULL
                               AND ${SAME} AND r.expires_at IS NULL AND $3::double precision IS NULL)
         ON CONFLICT ON CONSTRAINT rules_unique DO UPDATE
           SET action = 'deny', reason = EXCLUDED.reason, who = NULL,
               expires_at = EXCLUDED.expires_at, updated_at = now()`,
        [opts.source, opts.reason, ttl],
      );
    }
    return diff;
  });
}

/** Rules of the source that have expired but are not deleted yet. */
async function expiredOf(tx: Queryable, source: string): Promise<number> {
  const r = await tx.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM qguard.rules WHERE source = $1 AND expires_at <= now()',
    [source],
  );
  return r.rows[0].n;
}
