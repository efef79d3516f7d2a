// The rules sync-rules publishes, read in one consistent snapshot: the IPv4 rules of this
// host as one binary value of integer sort keys (no row object per rule: measured faster than
// COPY, whose per-row messages cost more in node than the query), the IPv6 rules as rows, the
// counts, the deny keys the guard compares, and the domains for rcpthosts.

import type { Db, Queryable } from './connect.js';
import { changeCounter } from './rules.js';
import { listDomains } from './domains.js';
import { mustParseNet } from '../net/address.js';
import type { Action, PolicyRule } from '../policy/decide.js';
import { SORT_PREFIX_MUL, SQL_SORT_KEY, STATIC_MAX, decodeSortKey, keysOfPrefix } from '../net/tcprules-keys.js';
import type { RulesSnapshot } from '../qmail/rules-plan.js';

/** Rule sort keys in a growable Float64Array (no object per rule). */
class KeyReader {
  keys = new Float64Array(0);
  n = 0;
  /** Big-endian 8-byte integers (int8send), each below 2^53. */
  feedBinary(bytes: Uint8Array): void {
    const n = bytes.length >>> 3;
    const view = new DataView(bytes.buffer, bytes.byteOffset, n * 8);
    const keys = new Float64Array(n);
    for (let i = 0; i < n; i++) keys[i] = view.getUint32(i * 8) * 4294967296 + view.getUint32(i * 8 + 4);
    this.keys = keys;
    this.n = n;
  }
}

/**
 * The IPv4 rules of this host as one binary value of 8-byte sort keys (lib/net/tcprules-keys.ts
 * computes the same formula): a million rules cost one 8 MB value, not a million rows, COPY
 * messages or decimal texts to parse.
 */
async function readV4(tx: Queryable, host: string, reader: KeyReader): Promise<void> {
  const r = await tx.query<{ b: Uint8Array | null }>(
    `SELECT string_agg(int8send(${SQL_SORT_KEY}), ''::bytea) AS b FROM qguard.live_rules
      WHERE family(network) = 4 AND (host IS NULL OR host = $1)`,
    [host],
  );
  const b = r.rows[0]?.b;
  if (b) reader.feedBinary(b);
}

/** Read this host's rules (and domains, when rcpthosts is managed) in one read-only transaction. */
export async function readSnapshot(db: Db, host: string, wantDomains: boolean): Promise<RulesSnapshot> {
  return db.transaction(async (tx) => {
    if (db.kind === 'server') await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY');
    const changeSeq = await changeCounter(tx);
    const reader = new KeyReader();
    await readV4(tx, host, reader);
    const counts: Record<Action, number> = { relay: 0, trust: 0, deny: 0 };
    const names: Action[] = ['relay', 'trust', 'deny'];
    let denyKeys = 0;
    const byAction = [0, 0, 0];
    for (let i = 0; i < reader.n; i++) {
      const k = reader.keys[i];
      const code = (k % SORT_PREFIX_MUL) - STATIC_MAX;
      byAction[code]++;
      if (code === 2) denyKeys += keysOfPrefix(Math.floor(k / SORT_PREFIX_MUL) % 64);
    }
    names.forEach((a, i) => {
      counts[a] = byAction[i];
    });
    const v6rows = await tx.query<{ cidr: string; action: Action }>(
      `SELECT network::text AS cidr, action FROM qguard.live_rules
        WHERE family(network) = 6 AND (host IS NULL OR host = $1)`,
      [host],
    );
    const v6 = v6rows.rows.map((r) => ({ net: mustParseNet(r.cidr), action: r.action }));
    for (const r of v6) counts[r.action]++;
    const domains = wantDomains ? (await listDomains(tx, host)).map((d) => d.name) : null;
    return { changeSeq, v4: reader.keys, v4Count: reader.n, v6, counts, denyKeys, domains };
  });
}

/** Every live rule of the snapshot as PolicyRule (only for the firewall: one object per rule). */
export function policyRules(s: RulesSnapshot): PolicyRule[] {
  const names: Action[] = ['relay', 'trust', 'deny'];
  const out: PolicyRule[] = new Array(s.v4Count);
  for (let i = 0; i < s.v4Count; i++) {
    const d = decodeSortKey(s.v4[i]);
    out[i] = { net: { family: 4, addr: BigInt(d.addr), prefix: d.prefix }, action: names[d.order - STATIC_MAX] };
  }
  return out.concat(s.v6);
}
