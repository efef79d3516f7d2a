import { describe, expect, it } from 'vitest';
import { ago, assess } from '../../lib/policy/health.js';

const now = new Date('2026-11-28T12:00:00Z');
const at = (secondsAgo: number) => new Date(now.getTime() - secondsAgo * 1000);

describe('status verdict', () => {
  it('OK when sync-rules succeeded within 5 minutes and nothing failed', () => {
    const v = assess([{ host: 'mx1', job: 'sync-rules', lastRunOk: true, lastOkAt: at(60), lastError: null }], ['mx1'], now);
    expect(v).toEqual({ level: 'OK', problems: [] });
  });

  it('CRITICAL when sync-rules never ran, never succeeded, or not for 5 minutes', () => {
    expect(assess([], ['mx1'], now).level).toBe('CRITICAL');
    expect(assess([{ host: 'mx1', job: 'sync-rules', lastRunOk: false, lastOkAt: null, lastError: 'x' }], ['mx1'], now).problems[0].message).toBe(
      'sync-rules has never succeeded on mx1 (last error: x)',
    );
    const stale = assess([{ host: 'mx1', job: 'sync-rules', lastRunOk: true, lastOkAt: at(301), lastError: null }], ['mx1'], now);
    expect(stale.level).toBe('CRITICAL');
    expect(stale.problems[0].message).toBe('sync-rules has not succeeded on mx1 for 5m');
  });

  it('WARNING for a failed last run, or a stale scan/purge/import once they have run', () => {
    const ok = { host: 'mx1', job: 'sync-rules', lastRunOk: true, lastOkAt: at(10), lastError: null };
    expect(assess([ok, { host: 'mx1', job: 'scan-queue', lastRunOk: false, lastOkAt: at(70), lastError: 'db' }], ['mx1'], now).level).toBe('WARNING');
    expect(assess([ok, { host: 'mx1', job: 'scan-queue', lastRunOk: true, lastOkAt: at(601), lastError: null }], ['mx1'], now).level).toBe('WARNING');
    expect(assess([ok, { host: 'mx1', job: 'purge-queue', lastRunOk: true, lastOkAt: at(25 * 3600), lastError: null }], ['mx1'], now).level).toBe('OK');
    expect(assess([ok, { host: 'mx1', job: 'purge-queue', lastRunOk: true, lastOkAt: at(27 * 3600), lastError: null }], ['mx1'], now).level).toBe('WARNING');
    // another host's trouble is not this host's, unless asked for
    expect(assess([ok], ['mx1'], now).level).toBe('OK');
    expect(assess([ok], ['mx1', 'mx2'], now).level).toBe('CRITICAL');
  });

  it('says how long ago like a person', () => {
    expect(ago(42)).toBe('42s');
    expect(ago(720)).toBe('12m');
    expect(ago(3 * 3600 + 300)).toBe('3h5m');
    expect(ago(2 * 86400)).toBe('2d');
  });
});

describe('job summaries kept in the records', () => {
  it('cut long lists, keep the rest', async () => {
    const { summaryForRecord } = await import('../../lib/db/jobs.js');
    const many = Array.from({ length: 1034 }, (_, i) => ({ ip: `10.0.${i >> 8}.${i & 255}` }));
    const out = summaryForRecord({ scanned: 5, denied: ['1.2.3.4'], notDenied: many }) as { notDenied: unknown[]; denied: string[]; scanned: number };
    expect(out.scanned).toBe(5);
    expect(out.denied).toEqual(['1.2.3.4']);
    expect(out.notDenied).toHaveLength(21);
    expect(out.notDenied[20]).toBe('... 1014 more');
  });
});
