// Arguments of the admin commands, checked the same way whether they come from the command
// line or from the review page's forms: a bad one is a UsageError naming the flag (or field)
// and what is wrong, before anything is read or written. Pure.

import { UsageError } from '../errors.js';
import { parseDuration } from '../duration.js';
import { type Net, formatNet, parseNet } from '../net/address.js';
import { MESSAGE_KINDS, type MessageKind } from '../qmail/received.js';

/** A value as it may be quoted in an error: short and JSON-quoted. */
const quoted = (value: string) => JSON.stringify(value.slice(0, 40));

/** A positive whole number (`--limit`, `--lines`), or undefined when not given. */
export function positiveInt(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,9}$/.test(value) || Number(value) < 1) throw new UsageError(`${flag}: not a positive whole number: ${quoted(value)}`);
  return Number(value);
}

/** An address or CIDR argument (`qguard ip deny ADDR`). */
export function netArgument(text: string | undefined, what = 'address'): Net {
  if (text === undefined || text.trim() === '') throw new UsageError(`empty ${what}`);
  const r = parseNet(text);
  if (!r.ok) throw new UsageError(r.error);
  return r.net;
}

/** An optional `--ip ADDR|CIDR` filter, as the canonical CIDR text the database compares. */
export function netFilter(value: string | undefined, flag = '--ip'): string | undefined {
  if (value === undefined) return undefined;
  const r = parseNet(value);
  if (!r.ok) throw new UsageError(`${flag}: ${r.error}`);
  return formatNet(r.net);
}

/** Free text (a reason, a user name): no NUL, at most `max` characters, blank means none. */
export function freeText(value: string | undefined, flag: string, max: number): string | null {
  if (value === undefined) return null;
  if (value.includes('\0')) throw new UsageError(`${flag}: NUL byte not allowed`);
  if (value.length > max) throw new UsageError(`${flag}: longer than ${max} characters`);
  const t = value.trim();
  return t === '' ? null : t;
}

/** A duration (`--for 30d`) in seconds, or null when not given. */
export function durationArgument(value: string | undefined, flag: string): number | null {
  if (value === undefined) return null;
  const d = parseDuration(value);
  if ('error' in d) throw new UsageError(`${flag}: ${d.error}`);
  return d.seconds;
}

/** `--kind`: a message kind, or `forward` (forwarded copies of any kind). */
export function kindFilter(value: string | undefined): { kind?: MessageKind; forwardedOnly: boolean } {
  if (value === undefined) return { forwardedOnly: false };
  if (value === 'forward') return { forwardedOnly: true };
  if ((MESSAGE_KINDS as readonly string[]).includes(value)) return { kind: value as MessageKind, forwardedOnly: false };
  throw new UsageError(`--kind: must be one of ${[...MESSAGE_KINDS, 'forward'].join(', ')}: ${quoted(value)}`);
}
