import { describe, expect, it } from 'vitest';
import { formatDuration, parseDuration } from '../../lib/duration.js';

describe('durations', () => {
  it('parses the documented forms and sums', () => {
    expect(parseDuration('90s')).toEqual({ seconds: 90 });
    expect(parseDuration('15m')).toEqual({ seconds: 900 });
    expect(parseDuration('12h')).toEqual({ seconds: 43200 });
    expect(parseDuration('3d')).toEqual({ seconds: 259200 });
    expect(parseDuration('2w')).toEqual({ seconds: 1209600 });
    expect(parseDuration('1d12h')).toEqual({ seconds: 129600 });
  });
  it('refuses everything else', () => {
    for (const bad of ['', ' ', '3', 'd', '3 d', '3days', '-1d', '0s', '1.5h', '1d 2h', '999999999w', 'x'.repeat(50)]) {
      expect(parseDuration(bad), bad).toHaveProperty('error');
    }
  });
  it('formats back', () => {
    expect(formatDuration(259200)).toBe('3d');
    expect(formatDuration(5400)).toBe('1h30m');
    expect(formatDuration(1209600)).toBe('2w');
  });
});
