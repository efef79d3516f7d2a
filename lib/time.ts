// Times as qguard shows them: ISO 8601 in JSON and views, a short UTC form on the terminal.
// Pure.

/** ISO 8601 (UTC, milliseconds), or null. */
export function iso(d: Date | null | undefined): string | null {
  return d ? d.toISOString() : null;
}

/** `2026-12-06 03:25:36Z`, or `missing` (default '-') for none. Takes a Date or an ISO string. */
export function shortTime(d: Date | string | null | undefined, missing = '-'): string {
  if (!d) return missing;
  const t = typeof d === 'string' ? new Date(d) : d;
  return t.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}
