// The plan of an import (lib/spamlist/list-diff.ts): held to a brute-force model on random
// sources and lists — after the writes the source holds exactly the list (plus, without
// --replace, what it held besides), the counts are those of the report, and nothing that is
// already right is written.

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { Net } from '../../lib/net/address.js';
import { type NetSet, SAME, UNSCOPED, type StoredRules, diffList } from '../../lib/spamlist/list-diff.js';

interface Row {
  id: number;
  key: string; // v4:KEY or v6:ADDR/PREFIX
  flags: number;
  expires: number;
}

const NOW = 8e14; // microseconds since 2000-01-01, some day in 2025
const HOUR = 3600e6;
const v4Key = (k: number) => `v4:${k}`;
const v6Key = (n: Net) => `v6:${n.addr}/${n.prefix}`;
const v6Net = (i: number): Net => ({ family: 6, addr: (0x20010db8n << 96n) + BigInt(i) * 256n, prefix: 120 });

function stored(rows: Row[], shuffle: number): StoredRules {
  const v4 = rows.filter((r) => r.key.startsWith('v4:'));
  // The database returns rows in any order: often in network order (the table as written).
  const key = (i: number) => Number(v4[i].key.slice(3));
  const order = v4.map((_, i) => i);
  if (shuffle % 3 === 0) order.sort((a, b) => key(a) - key(b));
  else order.sort((a, b) => ((a * 7919 + shuffle) % 101) - ((b * 7919 + shuffle) % 101));
  return {
    v4Keys: Float64Array.from(order, key),
    v4Flags: Uint8Array.from(order, (i) => v4[i].flags),
    v4Expires: Float64Array.from(order, (i) => v4[i].expires),
    v4Id: (j) => v4[order[j]].id,
    n4: v4.length,
    v6: rows
      .filter((r) => r.key.startsWith('v6:'))
      .map((r) => {
        const [addr, prefix] = r.key.slice(3).split('/');
        const net: Net = { family: 6, addr: BigInt(addr), prefix: Number(prefix) };
        return { net, id: r.id, flags: r.flags, expires: r.expires };
      }),
  };
}

/** The networks of an insert set as row keys. */
const keysOf = (set: NetSet) => [...Array.from(set.v4, v4Key), ...set.v6.map(v6Key)];

/** Expiries around the window of a 10-hour --for: none, past, less than half left, in the window, beyond it. */
const arbExpiry = fc.constantFrom(Infinity, NOW - 1, NOW, NOW + HOUR, NOW + 5 * HOUR - 1, NOW + 5 * HOUR, NOW + 7 * HOUR, NOW + 10 * HOUR, NOW + 10 * HOUR + 1);

/** Random rules of one source: at most one unscoped row a network (the unique constraint), host-scoped ones besides. */
const arbRows = fc
  .array(fc.record({ net: fc.integer({ min: 0, max: 300 }), scoped: fc.boolean(), same: fc.boolean(), expires: arbExpiry }), { maxLength: 120 })
  .map((specs) => {
    const rows: Row[] = [];
    const unscoped = new Set<string>();
    specs.forEach((s, i) => {
      const key = s.net < 280 ? v4Key(s.net * 64 + 32) : v6Key(v6Net(s.net));
      if (!s.scoped) {
        if (unscoped.has(key)) return;
        unscoped.add(key);
      }
      rows.push({ id: 1000 + i, key, flags: (s.scoped ? 0 : UNSCOPED) | (s.same ? SAME : 0), expires: s.expires });
    });
    return rows;
  });
// Lists from a few networks to most of the space, so the cursor both steps and gallops.
const arbWant = fc.uniqueArray(fc.integer({ min: 0, max: 300 }), { maxLength: 250 });

describe('diffList', () => {
  it('equals a brute-force model: the source ends up holding exactly the list, counts as reported', () => {
    fc.assert(
      fc.property(arbRows, arbWant, fc.boolean(), fc.option(fc.constant(10 * HOUR)), fc.nat(), (rows, want, replace, ttl, shuffle) => {
        const want4 = Float64Array.from(want.filter((w) => w < 280).map((w) => w * 64 + 32)).sort();
        const want6 = want.filter((w) => w >= 280).map(v6Net);
        const wanted = new Set([...Array.from(want4, v4Key), ...want6.map(v6Key)]);
        const d = diffList(want4, want6, stored(rows, shuffle), { replace, now: NOW, ttl });

        // The model: live = expires after now; written as this run writes = same action,
        // reason and who, and no expiry (no --for) or one between now + ttl/2 and now + ttl.
        const live = (r: Row) => r.expires > NOW;
        const asWritten = (r: Row) =>
          (r.flags & SAME) !== 0 && (ttl === null ? r.expires === Infinity : r.expires >= NOW + ttl / 2 && r.expires <= NOW + ttl);
        const held = rows.filter((r) => r.flags & UNSCOPED && wanted.has(r.key));
        expect(d.existing).toBe(rows.filter(live).length);
        expect(d.matched).toBe(held.filter(live).length);
        expect(d.unchanged).toBe(held.filter((r) => live(r) && asWritten(r)).length);
        // Rewritten: exactly the held rules not as this run writes them (expired ones included).
        expect([...d.rewrite].sort()).toEqual(held.filter((r) => !(live(r) && asWritten(r))).map((r) => r.id).sort());

        // Apply the writes to the model.
        const removed = new Set(d.remove);
        expect(removed.size).toBe(d.remove.length);
        const rewritten = new Set(d.rewrite);
        const fresh = { flags: UNSCOPED | SAME, expires: ttl === null ? Infinity : NOW + ttl };
        for (const id of [...removed, ...rewritten]) expect(rows.some((r) => r.id === id)).toBe(true);
        const after = rows.filter((r) => !removed.has(r.id)).map((r) => (rewritten.has(r.id) ? { ...r, ...fresh } : r));
        let next = 1;
        for (const k of keysOf(d.insert)) after.push({ id: next++, key: k, ...fresh });

        // Exactly one unscoped rule per listed network, live and as this run writes it.
        const unscopedAfter = after.filter((r) => r.flags & UNSCOPED && wanted.has(r.key));
        expect(unscopedAfter.map((r) => r.key).sort()).toEqual([...wanted].sort());
        for (const r of unscopedAfter) expect(live(r) && asWritten(r)).toBe(true);
        if (replace) {
          // Nothing else of the source is left.
          expect(after.length).toBe(wanted.size);
        } else {
          // Nothing else was touched.
          expect(removed.size).toBe(0);
          const untouched = rows.filter((r) => !(r.flags & UNSCOPED && wanted.has(r.key)));
          for (const r of untouched) expect(after).toContainEqual(r);
        }
        expect(new Set(d.insert.v4).size).toBe(d.insert.v4.length);
      }),
      { numRuns: 3000 },
    );
  });

  it('an unchanged list writes nothing', () => {
    const rows: Row[] = [5, 9, 12].map((n, i) => ({ id: i + 1, key: v4Key(n * 64 + 32), flags: UNSCOPED | SAME, expires: Infinity }));
    const d = diffList(Float64Array.from([5, 9, 12], (n) => n * 64 + 32), [], stored(rows, 3), { replace: true, now: NOW, ttl: null });
    expect(d).toEqual({ existing: 3, matched: 3, unchanged: 3, insert: { v4: [], v6: [] }, rewrite: [], remove: [] });
  });

  it('--for: an expiry at least half of it away is kept; less than half, none, or beyond it is rewritten', () => {
    const at = (expires: number) =>
      diffList(Float64Array.from([5 * 64 + 32]), [], stored([{ id: 7, key: v4Key(5 * 64 + 32), flags: UNSCOPED | SAME, expires }], 0), {
        replace: false,
        now: NOW,
        ttl: 10 * HOUR,
      });
    const kept = { unchanged: 1, rewrite: [] };
    const renewed = { unchanged: 0, rewrite: [7] };
    expect(at(NOW + 10 * HOUR)).toMatchObject(kept);
    expect(at(NOW + 5 * HOUR)).toMatchObject(kept);
    expect(at(NOW + 5 * HOUR - 1)).toMatchObject(renewed);
    expect(at(Infinity)).toMatchObject(renewed);
    expect(at(NOW + 10 * HOUR + 1)).toMatchObject(renewed);
  });

  it('an expired rule the list names again is rewritten (and is not counted as existing)', () => {
    const rows: Row[] = [{ id: 7, key: v4Key(5 * 64 + 32), flags: UNSCOPED | SAME, expires: NOW - 1 }];
    const d = diffList(Float64Array.from([5 * 64 + 32]), [], stored(rows, 0), { replace: true, now: NOW, ttl: null });
    expect(d).toMatchObject({ existing: 0, matched: 0, unchanged: 0, rewrite: [7], insert: { v4: [] }, remove: [] });
  });
});
