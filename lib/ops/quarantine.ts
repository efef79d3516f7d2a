// Quarantine housekeeping shared by purge-queue (each run) and `qguard quarantine prune`:
// the rows in the database and the entry directories on disk change together.

import type { Queryable } from '../db/connect.js';
import { deleteRows, expiredRows } from '../db/quarantine.js';
import { removeEntry } from '../io/quarantine.js';

/**
 * Drop this host's quarantine entries purged longer than `seconds` ago: rows first (a
 * directory without a row is removed by the next run), then their directories.
 */
export async function pruneQuarantine(db: Queryable, host: string, seconds: number): Promise<number> {
  const old = await expiredRows(db, host, seconds);
  if (old.length === 0) return 0;
  await deleteRows(
    db,
    old.map((o) => o.id),
  );
  for (const o of old) removeEntry(o.path);
  return old.length;
}
