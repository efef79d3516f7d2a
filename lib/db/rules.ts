// Queries on the rules table. Every read goes through qguard.live_rules, so an expired rule is
// gone from the moment it expires. Writes are audited and counted by triggers (sql/001).

import type { Queryable } from './connect.js';
import { type Net, formatNet, mustParseNet } from '../net/address.js';
import type { Action } from '../policy/decide.js';

/** A rule as the rest of qguard sees it. */
export interface Rule {
  id: number;
  net: Net;
  /** PostgreSQL's text of the network, always with its prefix: `203.0.113.0/24`, `1.2.3.4/32`. */
  cidr: string;
  action: Action;
  source: string;
  reason: string | null;
  who: string | null;
  createdAt: Date;
  expiresAt: Date | null;
  host: string | null;
}

/** The columns every rule query selects, in the order toRule() expects. */
export const RULE_COLUMNS = 'id, network::text AS cidr, action, source, reason, who, created_at, expires_at, host';

interface RuleRow {
  id: number;
  cidr: string;
  action: Action;
  source: string;
  reason: string | null;
  who: string | null;
  created_at: Date;
  expires_at: Date | null;
  host: string | null;
}

export function toRule(r: RuleRow): Rule {
  return {
    id: Number(r.id),
    net: mustParseNet(r.cidr),
    cidr: r.cidr,
    action: r.action,
    source: r.source,
    reason: r.reason,
    who: r.who,
    createdAt: new Date(r.created_at),
    expiresAt: r.expires_at ? new Date(r.expires_at) : null,
    host: r.host,
  };
}

/** The rule as JSON (INTERFACE.md: `qguard ip ls --json`). */
export function ruleJson(r: Rule) {
  return {
    cidr: r.cidr,
    action: r.action,
    source: r.source,
    reason: r.reason,
    who: r.who,
    createdAt: r.createdAt.toISOString(),
    expiresAt: r.expiresAt ? r.expiresAt.toISOString() : null,
    host: r.host,
  };
}

/** SQL condition: the rule applies on `host` (unscoped rules apply everywhere). */
const FOR_HOST = '(host IS NULL OR host = $HOST)';
function forHost(sql: string, param: number): string {
  return sql.replace('$HOST', `$${param}`);
}

/**
 * The live rules that contain `ip` on mail server `host` (the candidates for decide()),
 * ordered by id so ties resolve the same way every time: probes of the unique btree for each
 * network that can contain it (qguard.covering, sql/010_covering_btree.sql); the lists'
 * entries have no index (sql/018): one scan of them, one `>>=` a row (cheaper than comparing
 * with 33 networks: 59 ms instead of 139 at a million entries), without parallel workers
 * (sql/019: 42 ms instead of 61 on 2 CPUs).
 */
export async function rulesContaining(db: Queryable, ip: Net, host: string): Promise<Rule[]> {
  const r = await db.query<RuleRow>(
    `SELECT ${RULE_COLUMNS} FROM qguard.rules_containing($1::inet, $2) ORDER BY id`,
    [formatNet(ip), host],
  );
  return r.rows.map(toRule);
}

/** Live relay/trust rules strictly inside `net` (what a new deny would leave allowed). */
export async function allowsInside(db: Queryable, net: Net): Promise<Rule[]> {
  const r = await db.query<RuleRow>(
    `SELECT ${RULE_COLUMNS} FROM qguard.live_rules
      WHERE network << $1::cidr AND action IN ('relay', 'trust') ORDER BY network LIMIT 1000`,
    [formatNet(net)],
  );
  return r.rows.map(toRule);
}

export interface ListFilter {
  action?: Action;
  source?: string;
  /** Only rules that apply on this host (unscoped included). */
  host?: string;
  /** Only rules for exactly this network. */
  net?: Net;
}

/** Live rules, filtered, in network order. */
export async function listRules(db: Queryable, f: ListFilter = {}): Promise<Rule[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  if (f.action) {
    params.push(f.action);
    where.push(`action = $${params.length}`);
  }
  if (f.source) {
    params.push(f.source);
    where.push(`source = $${params.length}`);
  }
  if (f.host) {
    params.push(f.host);
    where.push(forHost(FOR_HOST, params.length));
  }
  if (f.net) {
    params.push(formatNet(f.net));
    where.push(`network = $${params.length}::cidr`);
  }
  const r = await db.query<RuleRow>(
    `SELECT ${RULE_COLUMNS} FROM qguard.live_rules ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY family(network), network, source, host NULLS FIRST`,
    params,
  );
  return r.rows.map(toRule);
}

export interface RuleInput {
  net: Net;
  action: Action;
  source: string;
  reason: string | null;
  who: string | null;
  /** Seconds from now until it lapses; null = never. */
  ttlSeconds: number | null;
  /** Scope to one mail server; null = all of them. */
  host: string | null;
}

/**
 * Create the rule, or replace the one with the same network, source and scope (the admin's
 * latest word wins: action, reason, who and expiry). Returns the rule and whether it is new.
 */
export async function upsertRule(db: Queryable, input: RuleInput): Promise<{ rule: Rule; created: boolean }> {
  const r = await db.query<RuleRow & { created: boolean }>(
    `INSERT INTO qguard.rules AS r (network, action, source, reason, who, expires_at, host)
     VALUES ($1::cidr, $2, $3, $4, $5,
             CASE WHEN $6::double precision IS NULL THEN NULL ELSE now() + make_interval(secs => $6::double precision) END,
             $7)
     ON CONFLICT ON CONSTRAINT rules_unique DO UPDATE
       SET action = EXCLUDED.action, reason = EXCLUDED.reason, who = EXCLUDED.who,
           expires_at = EXCLUDED.expires_at, updated_at = now()
     RETURNING ${RULE_COLUMNS}, (xmax = 0) AS created`,
    [formatNet(input.net), input.action, input.source, input.reason, input.who, input.ttlSeconds, input.host],
  );
  const row = r.rows[0];
  return { rule: toRule(row), created: Boolean(row.created) };
}

/**
 * Delete the rules for exactly `net` (optionally of one source / one scope), list entries
 * included (audited here: sql/018). Returns them.
 */
export async function deleteRules(
  db: Queryable,
  f: { net: Net; source?: string; host?: string | null },
): Promise<Rule[]> {
  const params: unknown[] = [formatNet(f.net)];
  let where = 'network = $1::cidr';
  if (f.source) {
    params.push(f.source);
    where += ` AND source = $${params.length}`;
  }
  if (f.host !== undefined) {
    if (f.host === null) where += ' AND host IS NULL';
    else {
      params.push(f.host);
      where += ` AND host = $${params.length}`;
    }
  }
  const r = await db.query<RuleRow>(`DELETE FROM qguard.rules WHERE ${where} RETURNING ${RULE_COLUMNS}`, params);
  const out = r.rows.map(toRule);
  // A list's entry: unscoped, so not when one host's rules are asked for.
  if ((f.source === undefined || f.source.startsWith('list:')) && (f.host === undefined || f.host === null)) {
    const match = `FROM qguard.list_entries e JOIN qguard.lists l ON l.id = e.list_id
                    WHERE e.network = $1::cidr ${f.source ? 'AND l.source = $2' : ''}`;
    const args = f.source ? [params[0], f.source] : [params[0]];
    // Looked for first: a DELETE of no entry would still fire the entries' statement trigger,
    // and every sync-rules would then read everything again for nothing (an `ip rm` of a rule).
    const any = await db.query<{ any: boolean }>(`SELECT EXISTS (SELECT 1 ${match}) AS any`, args);
    if (!any.rows[0].any) return out;
    const e = await db.query<RuleRow>(
      `WITH gone AS (
         DELETE FROM qguard.list_entries e USING qguard.lists l
          WHERE l.id = e.list_id AND e.network = $1::cidr ${f.source ? 'AND l.source = $2' : ''}
         RETURNING l.source, l.reason, e.network, coalesce(e.created_at, l.created_at) AS created_at, e.expires_at),
       audited AS (
         INSERT INTO qguard.audit (actor, op, object, network, action, source, reason, expires_at)
           SELECT qguard.current_actor(), 'delete', 'rule', network, 'deny', source, reason, expires_at FROM gone)
       SELECT 0 AS id, network::text AS cidr, 'deny' AS action, source, reason, NULL AS who, created_at, expires_at, NULL AS host
         FROM gone`,
      args,
    );
    out.push(...e.rows.map(toRule));
  }
  return out;
}

/** Housekeeping: delete expired rules (audited as `expire`). Returns how many. */
export async function expireRules(db: Queryable): Promise<number> {
  const r = await db.query<{ n: number }>('SELECT qguard.expire_rules() AS n');
  return Number(r.rows[0].n);
}

/** The change counter: any rule or domain change bumps it (O(1) read). */
export async function changeCounter(db: Queryable): Promise<number> {
  const r = await db.query<{ change_seq: number }>('SELECT change_seq FROM qguard.state');
  return Number(r.rows[0].change_seq);
}

/** The next moment a live rule lapses, or null. */
export async function nextExpiry(db: Queryable): Promise<Date | null> {
  return (await policyClock(db)).next;
}

/**
 * The next moment a live rule lapses (or null) and the change counter, read together: what an
 * unchanged sync-rules run compares with its last, in one round trip.
 */
export async function policyClock(db: Queryable): Promise<{ next: Date | null; seq: number }> {
  const r = await db.query<{ t: Date | null; seq: number }>(
    `SELECT least((SELECT min(expires_at) FROM qguard.rules WHERE expires_at IS NOT NULL),
                  (SELECT min(next_expiry) FROM qguard.lists)) AS t,
            (SELECT change_seq FROM qguard.state) AS seq`,
  );
  return { next: r.rows[0].t ? new Date(r.rows[0].t) : null, seq: Number(r.rows[0].seq) };
}

/** Live rule counts by action. */
export async function countByAction(db: Queryable, host?: string): Promise<Record<Action, number>> {
  const params: unknown[] = [];
  let where = '';
  if (host) {
    params.push(host);
    where = `WHERE ${forHost(FOR_HOST, 1)}`;
  }
  const r = await db.query<{ action: Action; n: number }>(
    `SELECT action, count(*) AS n FROM qguard.live_rules ${where} GROUP BY action`,
    params,
  );
  const out: Record<Action, number> = { relay: 0, trust: 0, deny: 0 };
  for (const row of r.rows) out[row.action] = Number(row.n);
  return out;
}
