// control/rcpthosts (and control/morercpthosts) from the domains table. qmail-smtpd accepts mail
// only for the hosts listed there unless the client may relay; qmail's documentation keeps
// rcpthosts short (50 lines) and puts the rest in morercpthosts, compiled by qmail-newmrh into
// morercpthosts.cdb. Only validated domain names go in: nothing else from the database.
// An empty list renders as null: an empty or missing rcpthosts makes qmail-smtpd accept mail for
// every domain (an open relay), so the caller must keep the old file instead. Pure.

import { parseDomain } from '../net/domain.js';

/** How many names qmail's documentation keeps in rcpthosts itself. */
export const RCPTHOSTS_MAX = 50;

export interface RcpthostsFiles {
  /** control/rcpthosts, or null when there is no domain at all (never write an empty one). */
  rcpthosts: string | null;
  /** control/morercpthosts: the names beyond the first 50 ("" when there are none). */
  morercpthosts: string;
  /** Names that are not domain names (skipped). */
  skipped: string[];
  /** Distinct names written. */
  count: number;
}

/**
 * Render the files. `splitMore`: put the names beyond RCPTHOSTS_MAX into morercpthosts (only when
 * qmail-newmrh is there to compile them; otherwise everything stays in rcpthosts, which works).
 */
export function renderRcpthosts(names: readonly string[], opts: { splitMore: boolean }): RcpthostsFiles {
  const skipped: string[] = [];
  const set = new Set<string>();
  for (const n of names) {
    const d = parseDomain(n);
    if (d.ok) set.add(d.name);
    else skipped.push(n);
  }
  const sorted = [...set].sort();
  if (sorted.length === 0) return { rcpthosts: null, morercpthosts: '', skipped, count: 0 };
  const head = opts.splitMore ? sorted.slice(0, RCPTHOSTS_MAX) : sorted;
  const rest = opts.splitMore ? sorted.slice(RCPTHOSTS_MAX) : [];
  const text = (list: string[]) => (list.length ? `${list.join('\n')}\n` : '');
  return { rcpthosts: text(head), morercpthosts: text(rest), skipped, count: sorted.length };
}
