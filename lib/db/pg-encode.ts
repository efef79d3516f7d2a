// Encoders for PostgreSQL's input formats, built here because node-pg's own per-value
// serialisation costs more than the work around it at queue scale: array literals (a whole
// column of a batch as one unnest parameter) and the fields of COPY's text format. Pure.

/** A batch value. */
export type Cell = string | number | boolean | null;

/** PostgreSQL array literal for text[] (so ragged lists travel inside one unnest column). */
export function pgTextArray(items: readonly string[]): string {
  if (items.length === 0) return '{}';
  let out = '{';
  for (let i = 0; i < items.length; i++) {
    const s = items[i];
    const quoted = s.indexOf('"') < 0 && s.indexOf('\\') < 0 ? s : s.replace(/[\\"]/g, (c) => `\\${c}`);
    out += i === 0 ? `"${quoted}"` : `,"${quoted}"`;
  }
  return `${out}}`;
}

/** One array element of a PostgreSQL array literal. */
function element(v: Cell): string {
  if (v === null) return 'NULL';
  if (typeof v === 'number') return String(v);
  if (typeof v === 'boolean') return v ? 't' : 'f';
  return v.indexOf('"') < 0 && v.indexOf('\\') < 0 ? `"${v}"` : `"${v.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

/**
 * A column as one array literal, built here: node-pg's per-element serialisation of
 * 25 columns × thousands of rows costs more than the rest of the scan.
 */
export function pgArrayLiteral(values: readonly Cell[]): string {
  let out = '{';
  for (let i = 0; i < values.length; i++) out += (i ? ',' : '') + element(values[i]);
  return `${out}}`;
}

/** A value as a field of COPY's text format: backslash, tab, newline and CR escaped. */
export function copyField(s: string): string {
  return /[\\\t\n\r]/.test(s) ? s.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r')) : s;
}

const pad2 = (n: number) => (n < 10 ? `0${n}` : String(n));
const pad3 = (n: number) => (n < 10 ? `00${n}` : n < 100 ? `0${n}` : String(n));

const DAY_MS = 86_400_000;
/** `YYYY-MM-DD` by day number since the epoch: a queue's messages share a few days. */
const dayTexts = new Map<number, string>();

/** Epoch seconds (as the unnest path hands them to to_timestamp) as timestamptz input text. */
export function copyTime(seconds: number): string {
  const ms = Math.round(seconds * 1000);
  const day = Math.floor(ms / DAY_MS);
  let date = dayTexts.get(day);
  if (date === undefined) {
    const d = new Date(day * DAY_MS);
    const y = d.getUTCFullYear();
    if (Number.isNaN(y)) throw new RangeError(`time out of range: ${seconds}`);
    const md = `${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}`;
    // No real queue file is dated before year 1 or after 9999: PostgreSQL's notations then.
    if (y < 1) return `${String(1 - y).padStart(4, '0')}-${md} ${clock(ms - day * DAY_MS)}+00 BC`;
    date = `${String(y).padStart(4, '0')}-${md}`;
    if (dayTexts.size >= 1000) dayTexts.clear();
    dayTexts.set(day, date);
  }
  return `${date} ${clock(ms - day * DAY_MS)}+00`;
}

/** `HH:MM:SS.mmm` of a millisecond of the day. */
function clock(msOfDay: number): string {
  const s = Math.floor(msOfDay / 1000);
  return `${pad2(Math.floor(s / 3600))}:${pad2(Math.floor(s / 60) % 60)}:${pad2(s % 60)}.${pad3(msOfDay - s * 1000)}`;
}

/** How many times `c` occurs in `s`. */
export function count(s: string, c: string): number {
  let n = 0;
  for (let i = s.indexOf(c); i >= 0; i = s.indexOf(c, i + 1)) n++;
  return n;
}

