// The plan of an import (lib/spamlist/list-diff.ts): held to a brute-force model on random
// sources and lists — after the writes the source holds exactly the list (plus, without
// --replace, what it held besides), the counts are those of the report, and nothing that is
// already right is written.

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { Net } from '../../lib/net/address.js';
import { CURRENT, LIVE, UNSCOPED, type StoredRules, diffList } from '../../lib/spamlist/list-diff.js';

interface Row {
  id: number;
  key: string; // v4:KEY or v6:ADDR/PREFIX
  flags: number;
}

const v4Key = (k: number) => `v4:${k}`;
const v6Key = (n: Net) => `v6:${n.addr}/${n.prefix}`;
const v6Net = (i: number): Net => ({ family: 6, addr: (0x20010db8n << 96n) + BigInt(i) * 256n, prefix: 120 });

function stored(rows: Row[], shuffle: number): StoredRules {
  const v4 = rows.filter((r) => r.key.startsWith('v4:'));
  // The database returns rows in any order.
  const order = v4.map((_, i) => i).sort((a, b) => ((a * 7919 + shuffle) % 101) - ((b * 7919 + shuffle) % 101));
  return {
    v4Keys: Float64Array.from(order, (i) => Number(v4[i].key.slice(3))),
    v4Ids: Float64Array.from(order, (i) => v4[i].id),
    v4Flags: Uint8Array.from(order, (i) => v4[i].flags),
    n4: v4.length,
    v6: rows
      .filter((r) => r.key.startsWith('v6:'))
      .map((r) => {
        const [addr, prefix] = r.key.slice(3).split('/');
        return { net: { family: 6 as const, addr: BigInt(addr), prefix: Number(prefix) }, id: r.id, flags: r.flags };
      }),
  };
}

/** Random rules of one source: at most one unscoped row a network (the unique constraint), host-scoped ones besides. */
const arbRows = fc
  .array(
    fc.record({
      net: fc.integer({ min: 0, max: 40 }),
      scoped: fc.boolean(),
      live: fc.boolean(),
      current: fc.boolean(),
    }),
    { maxLength: 60 },
  )
  .map((specs) => {
    const rows: Row[] = [];
    const unscoped = new Set<string>();
    specs.forEach((s, i) => {
      const key = s.net < 30 ? v4Key(s.net * 64 + 32) : v6Key(v6Net(s.net));
      if (!s.scoped) {
        if (unscoped.has(key)) return;
        unscoped.add(key);
      }
      // CURRENT (stored as this run writes it, expiry included) implies live and unscoped.
      const flags = (s.scoped ? 0 : UNSCOPED) | (s.live ? LIVE : 0) | (!s.scoped && s.live && s.current ? CURRENT : 0);
      rows.push({ id: 1000 + i, key, flags });
    });
    return rows;
  });
const arbWant = fc.uniqueArray(fc.integer({ min: 0, max: 40 }), { maxLength: 40 });

describe('diffList', () => {
  it('equals a brute-force model: the source ends up holding exactly the list, counts as reported', () => {
    fc.assert(
      fc.property(arbRows, arbWant, fc.boolean(), fc.nat(), (rows, want, replace, shuffle) => {
        const want4 = Float64Array.from(want.filter((w) => w < 30).map((w) => w * 64 + 32)).sort();
        const want6 = want.filter((w) => w >= 30).map(v6Net);
        const wanted = new Set([...Array.from(want4, v4Key), ...want6.map(v6Key)]);
        const d = diffList(want4, want6, stored(rows, shuffle), replace);

        // The counts, as the model says.
        const live = rows.filter((r) => r.flags & LIVE);
        const heldLive = live.filter((r) => r.flags & UNSCOPED && wanted.has(r.key));
        expect(d.existing).toBe(live.length);
        expect(d.matched).toBe(heldLive.length);
        expect(d.unchanged).toBe(heldLive.filter((r) => r.flags & CURRENT).length);

        // Apply the writes to the model.
        const ids = new Set(rows.map((r) => r.id));
        for (const id of d.remove) expect(ids.delete(id)).toBe(true);
        const byId = new Map(rows.map((r) => [r.id, { ...r }]));
        for (const id of d.rewrite) {
          expect(ids.has(id)).toBe(true);
          byId.get(id)!.flags = UNSCOPED | LIVE | CURRENT;
        }
        let next = 1;
        const after = [...ids].map((id) => byId.get(id)!);
        for (const k of d.insert4) after.push({ id: next++, key: v4Key(k), flags: UNSCOPED | LIVE | CURRENT });
        for (const n of d.insert6) after.push({ id: next++, key: v6Key(n), flags: UNSCOPED | LIVE | CURRENT });

        // Exactly one unscoped, current rule per listed network.
        const unscopedAfter = after.filter((r) => r.flags & UNSCOPED && wanted.has(r.key));
        expect(unscopedAfter.map((r) => r.key).sort()).toEqual([...wanted].sort());
        for (const r of unscopedAfter) expect(r.flags).toBe(UNSCOPED | LIVE | CURRENT);
        if (replace) {
          // Nothing else of the source is left.
          expect(after.length).toBe(wanted.size);
        } else {
          // Nothing else was touched.
          expect(d.remove).toEqual([]);
          for (const r of rows) if (!(r.flags & UNSCOPED && wanted.has(r.key))) expect(byId.get(r.id)).toEqual(r);
        }

        // Minimal: a rule already right is never written; nothing is inserted twice.
        for (const id of d.rewrite) expect(rows.find((r) => r.id === id)!.flags & CURRENT).toBe(0);
        expect(new Set(d.insert4).size).toBe(d.insert4.length);
      }),
      { numRuns: 3000 },
    );
  });

  it('an unchanged list writes nothing', () => {
    const rows: Row[] = [5, 9, 12].map((n, i) => ({ id: i + 1, key: v4Key(n * 64 + 32), flags: UNSCOPED | LIVE | CURRENT }));
    const d = diffList(Float64Array.from([5, 9, 12], (n) => n * 64 + 32), [], stored(rows, 3), true);
    expect(d).toEqual({ existing: 3, matched: 3, unchanged: 3, insert4: [], insert6: [], rewrite: [], remove: [] });
  });

  it('an expired rule the list names again is rewritten (and is not counted as existing)', () => {
    const rows: Row[] = [{ id: 7, key: v4Key(5 * 64 + 32), flags: UNSCOPED }];
    const d = diffList(Float64Array.from([5 * 64 + 32]), [], stored(rows, 0), true);
    expect(d).toMatchObject({ existing: 0, matched: 0, unchanged: 0, rewrite: [7], insert4: [], remove: [] });
  });
});
