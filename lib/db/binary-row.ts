// One row of bytea values, read as they are. node-postgres reads every result value as text,
// so a bytea arrives as hex: twice its size on the wire and a parse of every byte. On a server
// the row comes through `COPY (query) TO STDOUT (FORMAT binary)`, which hands the values over
// raw; on the embedded database (no COPY to a client) as a query, whose bytea values PGlite
// already returns as bytes. Used for the large reads that are one aggregate of fixed-size
// records (a source's rules for import-spamlist, a host's rules for sync-rules).

import type { Db, Queryable } from './connect.js';
import { dbError } from './connect.js';
import { TemporaryError } from '../errors.js';

/**
 * Run `sqlOf(literal)` in `tx` (a transaction of `db`) and return the fields of its one row,
 * each a Buffer, NULL as an empty one. `sqlOf` writes its parameters with `literal`, which
 * quotes a string as an SQL literal (COPY takes no parameters). Every column must be bytea.
 */
export async function binaryRow(
  db: Db,
  tx: Queryable,
  fields: number,
  sqlOf: (literal: (value: string) => string) => string,
  what: string,
): Promise<Buffer[]> {
  const client = db.pgClient;
  if (!client) {
    const r = await tx.query<Record<string, Uint8Array | null>>(sqlOf(quote));
    const row = r.rows[0] ?? {};
    const values = Object.values(row);
    if (values.length !== fields) throw new TemporaryError(`${what}: expected ${fields} values, got ${values.length}`);
    return values.map((u) => (u ? Buffer.from(u.buffer, u.byteOffset, u.byteLength) : Buffer.alloc(0)));
  }
  const { to: copyTo } = await import('pg-copy-streams');
  const parts: Buffer[] = [];
  try {
    const sql = sqlOf((v) => client.escapeLiteral(v));
    for await (const chunk of client.query(copyTo(`COPY (${sql}) TO STDOUT (FORMAT binary)`))) parts.push(chunk as Buffer);
  } catch (err) {
    throw dbError(err, `${what} failed`);
  }
  // Signature (11 bytes), flags, header extension; one row of `fields` fields; the trailer.
  const b = Buffer.concat(parts);
  let pos = 19 + b.readInt32BE(15);
  if (b.length < pos + 2 || b.readInt16BE(pos) !== fields) throw new TemporaryError(`${what}: unexpected COPY data`);
  pos += 2;
  const out: Buffer[] = [];
  for (let f = 0; f < fields; f++) {
    const len = b.readInt32BE(pos);
    pos += 4;
    if (len < 0) {
      out.push(Buffer.alloc(0)); // NULL: no such rows
      continue;
    }
    out.push(b.subarray(pos, pos + len));
    pos += len;
  }
  return out;
}

/** An SQL string literal (standard_conforming_strings on, as on every supported server). */
function quote(v: string): string {
  if (v.includes('\0')) throw new TemporaryError('a NUL byte in an SQL literal');
  return `'${v.replaceAll("'", "''")}'`;
}

/** The int8 at `o` as a number (exact below 2^53); the largest int8 (infinity) as Infinity. */
export function int8At(v: DataView, o: number): number {
  const hi = v.getInt32(o);
  return hi === 0x7fffffff ? Infinity : hi * 4294967296 + v.getUint32(o + 4);
}

/** A DataView over a Buffer's bytes. */
export const viewOf = (b: Buffer) => new DataView(b.buffer, b.byteOffset, b.byteLength);
