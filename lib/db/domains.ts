// Queries on the domains table (the hosts of control/rcpthosts). Writes are audited and bump
// the change counter by trigger (sql/001).

import type { Queryable } from './connect.js';

export interface Domain {
  name: string;
  host: string | null;
  who: string | null;
  createdAt: Date;
}

interface DomainRow {
  name: string;
  host: string | null;
  who: string | null;
  created_at: Date;
}

const toDomain = (r: DomainRow): Domain => ({ name: r.name, host: r.host, who: r.who, createdAt: new Date(r.created_at) });

/** Add a domain; false when it was already there. */
export async function addDomain(db: Queryable, name: string, host: string | null, who: string | null): Promise<boolean> {
  const r = await db.query(
    `INSERT INTO qguard.domains (name, host, who) VALUES ($1, $2, $3)
     ON CONFLICT ON CONSTRAINT domains_unique DO NOTHING`,
    [name, host, who],
  );
  return r.rowCount > 0;
}

/** Remove a domain (from one scope, or every scope when host is undefined). Returns how many. */
export async function removeDomain(db: Queryable, name: string, host?: string | null): Promise<number> {
  if (host === undefined) {
    return (await db.query('DELETE FROM qguard.domains WHERE name = $1', [name])).rowCount;
  }
  return (await db.query('DELETE FROM qguard.domains WHERE name = $1 AND host IS NOT DISTINCT FROM $2', [name, host]))
    .rowCount;
}

/** The domains, optionally only those for one mail server (unscoped included), sorted. */
export async function listDomains(db: Queryable, host?: string): Promise<Domain[]> {
  const r = host
    ? await db.query<DomainRow>(
        'SELECT name, host, who, created_at FROM qguard.domains WHERE host IS NULL OR host = $1 ORDER BY name, host NULLS FIRST',
        [host],
      )
    : await db.query<DomainRow>('SELECT name, host, who, created_at FROM qguard.domains ORDER BY name, host NULLS FIRST');
  return r.rows.map(toDomain);
}
