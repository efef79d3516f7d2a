// Durations as admins write them in flags and config: `90s`, `15m`, `12h`, `3d`, `2w`, or a
// sum such as `1d12h`. Pure: no clock, no I/O.

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** Upper bound for any duration: 100 years, far beyond any sane ban or retention. */
const MAX_SECONDS = 100 * 365 * 86400;

/**
 * Parse a duration into whole seconds. Returns an error string instead of throwing so callers
 * can name the flag or config key in their message.
 */
export function parseDuration(text: string): { seconds: number } | { error: string } {
  const s = text.trim();
  if (s === '') return { error: 'empty duration' };
  if (s.length > 40) return { error: 'duration too long' };
  const re = /(\d+)([smhdw])/gy;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * UNIT_SECONDS[m[2]];
    pos = re.lastIndex;
  }
  if (pos !== s.length || pos === 0) {
    return { error: `not a duration (write it like 90s, 15m, 12h, 3d or 2w): ${JSON.stringify(s)}` };
  }
  if (total <= 0) return { error: 'duration must be more than zero' };
  if (total > MAX_SECONDS) return { error: 'duration longer than 100 years' };
  return { seconds: total };
}

/** Shortest exact spelling of a number of seconds: 259200 → "3d", 5400 → "1h30m". */
export function formatDuration(seconds: number): string {
  if (seconds <= 0) return '0s';
  let rest = Math.round(seconds);
  let out = '';
  for (const [unit, size] of [['w', 604800], ['d', 86400], ['h', 3600], ['m', 60], ['s', 1]] as const) {
    if (rest >= size) {
      out += `${Math.floor(rest / size)}${unit}`;
      rest %= size;
    }
  }
  return out;
}
