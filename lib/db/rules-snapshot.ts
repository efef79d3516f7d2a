// The rules sync-rules publishes, read in one consistent snapshot: the IPv4 rules of this
// host as integer sort keys (no row object per rule), the IPv6 rules, the counts, the deny
// keys the guard compares, and the domains for rcpthosts.
//
// Incremental: sync-rules keeps the rules it read last time (a RulesCopy, in its state
// directory), and when the database can say which rules changed since (qguard.rule_changes,
// sql/015), only those rules are read and the copy is patched: one rule changed on a fleet of
// mail servers sharing a million rules costs each of them a few rows, not the whole set.
// Everything else reads all of them again: no copy, a copy of another database or host, one
// older than the changes kept, a change of more than 10,000 rules, or a copy an hour old (so a
// copy that went wrong for any reason mends itself).
//
// Size: the snapshot, full or patched, in four statements of binary values.

import type { Db, Queryable } from './connect.js';
import { binaryRow, int8At, viewOf } from './binary-row.js';
import { listDomains } from './domains.js';
import type { Net } from '../net/address.js';
import type { Action, PolicyRule } from '../policy/decide.js';
import { SORT_ADDR_MUL, SORT_PREFIX_MUL, SQL_SORT_KEY, STATIC_MAX, actionOrder, decodeSortKey, keysOfPrefix } from '../net/tcprules-keys.js';
import type { RulesSnapshot } from '../qmail/rules-plan.js';

/** This host's rules as read from one database at one change number (kept between runs). */
export interface RulesCopy {
  /** qguard.state.instance of the database. */
  instance: string;
  host: string;
  changeSeq: number;
  /** When it was read in full (ms since 1970, the database's clock); patches keep it. */
  fullAt: number;
  /** IPv4 rules: ids, sort keys and expiry (µs since 1970, Infinity = never), v4Count valid. */
  v4Ids: Float64Array;
  v4Keys: Float64Array;
  v4Expires: Float64Array;
  v4Count: number;
  v6: CopyRule6[];
}

export interface CopyRule6 {
  id: number;
  net: Net;
  action: Action;
  /** µs since 1970; Infinity = never. */
  expires: number;
}

/** A copy older than this is read again in full. */
export const COPY_MAX_AGE_MS = 3600_000;

const ACTIONS: Action[] = ['relay', 'trust', 'deny'];
/** Expiry in µs since 1970 (exact: extract returns numeric); none as the largest int8. */
const EXP_US = `coalesce((extract(epoch FROM expires_at) * 1000000)::int8, 9223372036854775807)`;
const ACTION_CODE = `CASE action WHEN 'relay' THEN 0 WHEN 'trust' THEN 1 ELSE 2 END`;
const FOR_HOST = (host: string) => `(host IS NULL OR host = ${host})`;
/** Per IPv6 rule: id, expiry, action code (int2), cidr_send (family, bits, is_cidr, 16, address). */
const V6_RECORD = `int8send(id) || int8send(${EXP_US}) || int2send(${ACTION_CODE}::int2) || cidr_send(network)`;
const V6_SIZE = 8 + 8 + 2 + 20;

/** The copy's state: change number, what rule_changes covers, the instance, the time (µs). */
interface State {
  seq: number;
  changesAfter: number;
  instance: string;
  nowUs: number;
}

async function readState(tx: Queryable): Promise<State> {
  const r = await tx.query<{ seq: string; after: string; instance: string; now: string }>(
    `SELECT change_seq::text AS seq, changes_after::text AS after, instance::text AS instance,
            (extract(epoch FROM now()) * 1000000)::int8::text AS now FROM qguard.state`,
  );
  const row = r.rows[0];
  return { seq: Number(row.seq), changesAfter: Number(row.after), instance: row.instance, nowUs: Number(row.now) };
}

function decodeV6(b: Buffer): CopyRule6[] {
  const out: CopyRule6[] = [];
  const v = viewOf(b);
  for (let o = 0; o + V6_SIZE <= b.length; o += V6_SIZE) {
    const addr = (b.readBigUInt64BE(o + 22) << 64n) | b.readBigUInt64BE(o + 30);
    out.push({
      id: int8At(v, o),
      expires: int8At(v, o + 8),
      action: ACTIONS[v.getInt16(o + 16)],
      net: { family: 6, addr, prefix: b[o + 19] },
    });
  }
  return out;
}

/**
 * Every live rule of the host: the rules (with their ids, to patch the copy) and the lists'
 * entries (sql/018; always deny, for every host). The entries come as their cidr_send bytes
 * (IPv4 8, IPv6 20; with the expiry after it when they have one), turned into sort keys here:
 * a third less of the server's time than computing the keys in SQL. Their ids stay 0 (never
 * patched: any change of them is a change of unknown rules).
 */
async function readAll(db: Db, tx: Queryable, host: string, st: State): Promise<RulesCopy> {
  // Aggregates over the same rows take them in the same order: no parallel workers.
  if (db.pgClient) await tx.exec('SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL jit = off');
  const [kb, ib, eb, v6b, lkb, leb] = await binaryRow(
    db,
    tx,
    6,
    (lit) =>
      `SELECT r.k, r.i, r.e, r.v6, l.k AS lk, l.e AS le
         FROM (SELECT string_agg(int8send(${SQL_SORT_KEY}), ''::bytea) FILTER (WHERE family(network) = 4) AS k,
                      string_agg(int8send(id), ''::bytea) FILTER (WHERE family(network) = 4) AS i,
                      string_agg(int8send(id) || int8send(${EXP_US}), ''::bytea)
                        FILTER (WHERE family(network) = 4 AND expires_at IS NOT NULL) AS e,
                      string_agg(${V6_RECORD}, ''::bytea) FILTER (WHERE family(network) = 6) AS v6
                 FROM qguard.rules
                WHERE (expires_at IS NULL OR expires_at > now()) AND ${FOR_HOST(lit(host))}) AS r,
              (SELECT string_agg(cidr_send(network), ''::bytea) FILTER (WHERE expires_at IS NULL) AS k,
                      string_agg(cidr_send(network) || int8send(${EXP_US}), ''::bytea) FILTER (WHERE expires_at IS NOT NULL) AS e
                 FROM qguard.list_entries WHERE expires_at IS NULL OR expires_at > now()) AS l`,
    'reading the rules',
  );
  const nr = kb.length >>> 3;
  const cap = nr + (lkb.length >>> 3) + (leb.length >>> 4);
  const v4Keys = new Float64Array(cap);
  const v4Ids = new Float64Array(cap);
  const v4Expires = new Float64Array(cap).fill(Infinity);
  const k = viewOf(kb);
  const id = viewOf(ib);
  for (let i = 0; i < nr; i++) {
    v4Keys[i] = int8At(k, i * 8);
    v4Ids[i] = int8At(id, i * 8);
  }
  if (eb.length > 0) {
    const e = viewOf(eb);
    const expiry = new Map<number, number>();
    for (let o = 0; o + 16 <= eb.length; o += 16) expiry.set(int8At(e, o), int8At(e, o + 8));
    for (let i = 0; i < nr; i++) v4Expires[i] = expiry.get(v4Ids[i]) ?? Infinity;
  }
  const v6 = decodeV6(v6b);
  let n = nr;
  const deny = actionOrder(2);
  const entries = (b: Buffer, timed: boolean) => {
    const v = viewOf(b);
    for (let o = 0; o < b.length; ) {
      const size = 4 + b[o + 3]; // cidr_send: family, bits, is_cidr, length, address
      const expires = timed ? int8At(v, o + size) : Infinity;
      if (b[o + 3] === 4) {
        v4Keys[n] = v.getUint32(o + 4) * SORT_ADDR_MUL + b[o + 1] * SORT_PREFIX_MUL + deny;
        v4Expires[n++] = expires;
      } else {
        const addr = (b.readBigUInt64BE(o + 4) << 64n) | b.readBigUInt64BE(o + 12);
        v6.push({ id: 0, expires, action: 'deny', net: { family: 6, addr, prefix: b[o + 1] } });
      }
      o += size + (timed ? 8 : 0);
    }
  };
  entries(lkb, false);
  entries(leb, true);
  return {
    instance: st.instance,
    host,
    changeSeq: st.seq,
    fullAt: Math.floor(st.nowUs / 1000),
    v4Ids: v4Ids.subarray(0, n),
    v4Keys: v4Keys.subarray(0, n),
    v4Expires: v4Expires.subarray(0, n),
    v4Count: n,
    v6,
  };
}

/** Can `copy` be brought up to `st` from rule_changes? */
function patchable(copy: RulesCopy | null, host: string, st: State): copy is RulesCopy {
  if (!copy || copy.instance !== st.instance || copy.host !== host) return false;
  if (copy.changeSeq > st.seq || copy.changeSeq < st.changesAfter) return false;
  const age = st.nowUs / 1000 - copy.fullAt;
  return age >= 0 && age < COPY_MAX_AGE_MS;
}

/**
 * `copy` brought up to `st`: the rules touched since its change number read again (those of
 * this host, expired or not), the rest kept; null when a change was too large to list.
 */
async function readPatched(db: Db, tx: Queryable, copy: RulesCopy, host: string, st: State): Promise<RulesCopy | null> {
  if (copy.changeSeq === st.seq) return { ...copy };
  const [big, touchedB, v4b, v6b] = await binaryRow(
    db,
    tx,
    4,
    (lit) =>
      `WITH ch AS (SELECT ids FROM qguard.rule_changes WHERE seq > ${copy.changeSeq} AND seq <= ${st.seq}),
            touched AS (SELECT DISTINCT unnest(ids) AS id FROM ch),
            rows AS (SELECT * FROM qguard.rules
                      WHERE id = ANY (ARRAY(SELECT id FROM touched)) AND ${FOR_HOST(lit(host))})
       SELECT int8send((SELECT count(*) FROM ch WHERE ids IS NULL)) AS big,
              (SELECT string_agg(int8send(id), ''::bytea) FROM touched) AS touched,
              (SELECT string_agg(int8send(id) || int8send(${SQL_SORT_KEY}) || int8send(${EXP_US}), ''::bytea)
                 FROM rows WHERE family(network) = 4) AS v4,
              (SELECT string_agg(${V6_RECORD}, ''::bytea) FROM rows WHERE family(network) = 6) AS v6`,
    'reading the changed rules',
  );
  if (int8At(viewOf(big), 0) > 0) return null;
  const touched = new Set<number>();
  const t = viewOf(touchedB);
  for (let o = 0; o + 8 <= touchedB.length; o += 8) touched.add(int8At(t, o));
  const added = v4b.length / 24;
  const cap = copy.v4Count + added;
  const v4Ids = new Float64Array(cap);
  const v4Keys = new Float64Array(cap);
  const v4Expires = new Float64Array(cap);
  let n = 0;
  for (let i = 0; i < copy.v4Count; i++) {
    if (touched.has(copy.v4Ids[i])) continue;
    v4Ids[n] = copy.v4Ids[i];
    v4Keys[n] = copy.v4Keys[i];
    v4Expires[n++] = copy.v4Expires[i];
  }
  const v = viewOf(v4b);
  for (let o = 0; o < v4b.length; o += 24) {
    v4Ids[n] = int8At(v, o);
    v4Keys[n] = int8At(v, o + 8);
    v4Expires[n++] = int8At(v, o + 16);
  }
  const v6 = copy.v6.filter((r) => !touched.has(r.id)).concat(decodeV6(v6b));
  return { ...copy, changeSeq: st.seq, v4Ids, v4Keys, v4Expires, v4Count: n, v6 };
}

/** Drop what has expired by `nowUs` (live_rules: expires_at > now()), in place. */
function dropExpired(c: RulesCopy, nowUs: number): void {
  let n = 0;
  for (let i = 0; i < c.v4Count; i++) {
    if (c.v4Expires[i] <= nowUs) continue;
    c.v4Ids[n] = c.v4Ids[i];
    c.v4Keys[n] = c.v4Keys[i];
    c.v4Expires[n++] = c.v4Expires[i];
  }
  c.v4Count = n;
  c.v6 = c.v6.filter((r) => r.expires > nowUs);
}

export interface SnapshotRead {
  snapshot: RulesSnapshot;
  /** The rules as read, to keep for the next run. */
  copy: RulesCopy;
  /** Whether `copy` was patched rather than read in full. */
  patched: boolean;
}

/**
 * Read this host's rules (and domains, when rcpthosts is managed) in one read-only
 * transaction, patching `copy` (the previous run's) when the database can say what changed.
 */
export async function readSnapshot(db: Db, host: string, wantDomains: boolean, copy: RulesCopy | null = null): Promise<SnapshotRead> {
  return db.transaction(async (tx) => {
    if (db.kind === 'server') await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY');
    const st = await readState(tx);
    let next = patchable(copy, host, st) ? await readPatched(db, tx, copy, host, st) : null;
    const patched = next !== null;
    next ??= await readAll(db, tx, host, st);
    dropExpired(next, st.nowUs);

    const counts: Record<Action, number> = { relay: 0, trust: 0, deny: 0 };
    let denyKeys = 0;
    const byAction = [0, 0, 0];
    for (let i = 0; i < next.v4Count; i++) {
      const k = next.v4Keys[i];
      const code = (k % SORT_PREFIX_MUL) - STATIC_MAX;
      byAction[code]++;
      if (code === 2) denyKeys += keysOfPrefix(Math.floor(k / SORT_PREFIX_MUL) % 64);
    }
    ACTIONS.forEach((a, i) => {
      counts[a] = byAction[i];
    });
    const v6: PolicyRule[] = next.v6.map((r) => ({ net: r.net, action: r.action }));
    for (const r of v6) counts[r.action]++;
    const domains = wantDomains ? (await listDomains(tx, host)).map((d) => d.name) : null;
    // The plan sorts its keys in place: the snapshot gets keys of its own, the copy stays in step with its ids.
    const snapshot: RulesSnapshot = { changeSeq: st.seq, v4: next.v4Keys.slice(0, next.v4Count), v4Count: next.v4Count, v6, counts, denyKeys, domains };
    return { snapshot, copy: next, patched };
  });
}

/** Every live rule of the snapshot as PolicyRule (only for the firewall: one object per rule). */
export function policyRules(s: RulesSnapshot): PolicyRule[] {
  const out: PolicyRule[] = new Array(s.v4Count);
  for (let i = 0; i < s.v4Count; i++) {
    const d = decodeSortKey(s.v4[i]);
    out[i] = { net: { family: 4, addr: BigInt(d.addr), prefix: d.prefix }, action: ACTIONS[d.order - STATIC_MAX] };
  }
  return out.concat(s.v6);
}
