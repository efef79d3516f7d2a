// Which queued messages purge-queue removes, and why — the "judgement" of the daily purge.
// Pure: message records (what scan-queue recorded, or a fresh read) and the decision for each
// source IP (made by decide() in the caller) in; the chosen messages with a reason, and the
// ones a guard kept, out. Nothing here reads the queue or the database.
//
// Policies (each selectable; the default is the first two):
//   denied       mail whose source IP's decision is now `deny` (scan, list or manual rule);
//                forwarded copies count as their original's source.
//   backscatter  bounces and double bounces of mail whose source IP is denied (our bounces
//                to forged senders).
//   stale        with --older-than: null-sender messages (envelope sender <> or #@[]: bounces,
//                double bounces) that have sat in the queue at least that long.
// Admin selections: --ip CIDR, --sender PATTERN (all given filters must match), --id ID...
//
// Never, unless selected by --id: mail from relay or trust addresses or protected ones,
// locally injected mail, mail with no known source. Never at all: a message qmail-queue is
// still writing (in flight), whatever selected it.

import type { Decision } from './decide.js';
import { type Net, formatNetShort, netContains, parseIp } from '../net/address.js';
import type { MessageKind } from '../qmail/received.js';
import { formatDuration } from '../duration.js';

export type PurgePolicy = 'denied' | 'backscatter' | 'stale';
export const PURGE_POLICIES: readonly PurgePolicy[] = ['denied', 'backscatter', 'stale'];
export const DEFAULT_POLICIES: readonly PurgePolicy[] = ['denied', 'backscatter'];

/** What selected a message: a policy, an admin filter, or an explicit id. */
export type PurgeBasis = PurgePolicy | 'admin' | 'id';

/** The least the selection needs to know about a queued message. */
export interface PurgeRecord {
  id: string;
  state: 'preprocessed' | 'todo' | 'in-flight-intd' | 'in-flight-mess-only';
  kind: MessageKind;
  forwarded: boolean;
  /** Normalised source IP (`::ffff:a.b.c.d` → `a.b.c.d`), null when none is known. */
  sourceIp: string | null;
  /** Envelope sender; null before the envelope exists. */
  sender: string | null;
  arrival: Date;
}

/** The decision for one source IP, as decide() gave it. */
export interface SourceVerdict {
  decision: Decision;
  protected: boolean;
  /** The winning rule, for the reason text. */
  rule: { cidr: string; source: string } | null;
}

export interface AdminSelection {
  /** Source IP inside this network. */
  net?: Net;
  /** Envelope sender matching this pattern (see senderMatcher). */
  sender?: string;
  /** Exactly these queue ids (guards other than in-flight do not apply). */
  ids?: readonly string[];
}

export interface PurgeCriteria {
  policies: readonly PurgePolicy[];
  /** Age for `stale` (seconds); the policy needs it. */
  olderThanSeconds?: number | null;
  admin?: AdminSelection | null;
  now: Date;
}

/** Why a matching message was kept anyway. */
export type KeepReason = 'in-flight' | 'local' | 'no-source' | 'relay' | 'trust' | 'protected';

export interface Chosen<R extends PurgeRecord> {
  record: R;
  basis: PurgeBasis;
  reason: string;
}

export interface Guarded<R extends PurgeRecord> {
  record: R;
  /** What would have selected it. */
  basis: PurgeBasis;
  why: KeepReason;
}

export interface PurgeSelection<R extends PurgeRecord> {
  /** Oldest arrival first (what a capped run removes first). */
  selected: Chosen<R>[];
  /** Matched by a policy or selection, kept by a guard. */
  guarded: Guarded<R>[];
}

/**
 * A matcher for `--sender PATTERN`: `*` any run of characters, `?` one character, everything
 * else literal, compared without case over the whole address. `<>` or an empty pattern is the
 * null sender of bounces.
 */
export function senderMatcher(pattern: string): (sender: string | null) => boolean {
  if (pattern === '' || pattern === '<>') return (s) => s === '';
  const body = pattern.replace(/^<(.*)>$/, '$1');
  const re = new RegExp(
    `^${[...body].map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))).join('')}$`,
    'is',
  );
  return (s) => s !== null && re.test(s);
}

const BOUNCE_KINDS: ReadonlySet<MessageKind> = new Set(['bounce', 'double-bounce']);

/** A null envelope sender: what qmail gives bounces (`<>`) and double bounces (`#@[]`). */
function nullSender(sender: string | null): boolean {
  return sender === '' || sender === '#@[]';
}

function ruleText(v: SourceVerdict): string {
  return v.rule ? `denied by ${v.rule.source} rule ${v.rule.cidr}` : 'denied';
}

/**
 * The guard that keeps a message whatever policy matched it, or null. `verdict` is the
 * decision for the record's source IP (absent when it has none).
 */
export function guardOf(r: PurgeRecord, verdict: SourceVerdict | undefined): KeepReason | null {
  if (r.state === 'in-flight-intd' || r.state === 'in-flight-mess-only') return 'in-flight';
  if (r.kind === 'local') return 'local';
  if (r.kind === 'unknown' || r.sourceIp === null || !verdict) return 'no-source';
  if (verdict.protected) return 'protected';
  if (verdict.decision === 'relay') return 'relay';
  if (verdict.decision === 'trust') return 'trust';
  return null;
}

/** Choose what to remove. `verdictOf` gives the decision for a (normalised) source IP. */
export function selectPurge<R extends PurgeRecord>(
  records: readonly R[],
  verdictOf: (ip: string) => SourceVerdict | undefined,
  criteria: PurgeCriteria,
): PurgeSelection<R> {
  const policies = new Set(criteria.policies);
  if (policies.has('stale') && !(criteria.olderThanSeconds && criteria.olderThanSeconds > 0)) {
    throw new Error('the stale policy needs olderThanSeconds');
  }
  const admin = criteria.admin ?? null;
  const ids = admin?.ids ? new Set(admin.ids) : null;
  const senderOk = admin?.sender !== undefined ? senderMatcher(admin.sender) : null;
  const adminFilters = admin !== null && (admin.net !== undefined || admin.sender !== undefined || ids !== null);
  const nowMs = criteria.now.getTime();
  const selected: Chosen<R>[] = [];
  const guarded: Guarded<R>[] = [];

  for (const r of records) {
    const verdict = r.sourceIp !== null ? verdictOf(r.sourceIp) : undefined;
    let basis: PurgeBasis | null = null;
    let reason = '';

    if (adminFilters && matchesAdmin(r, admin!, ids, senderOk)) {
      basis = ids !== null ? 'id' : 'admin';
      reason = ids !== null ? 'selected by --id' : `selected by ${adminText(admin!)}`;
    } else if (verdict?.decision === 'deny') {
      if (policies.has('backscatter') && BOUNCE_KINDS.has(r.kind)) {
        basis = 'backscatter';
        reason = `${r.kind} of mail from ${r.sourceIp}, ${ruleText(verdict)}`;
      } else if (policies.has('denied') && r.kind === 'network') {
        basis = 'denied';
        reason = `${r.forwarded ? 'forwarded copy of mail ' : ''}from ${r.sourceIp}, ${ruleText(verdict)}`;
      }
    }
    if (basis === null && policies.has('stale') && nullSender(r.sender)) {
      const age = (nowMs - r.arrival.getTime()) / 1000;
      if (age >= criteria.olderThanSeconds!) {
        basis = 'stale';
        reason = `${r.sender === '#@[]' ? 'double bounce' : 'null-sender message'} queued ${formatDuration(age)}`;
      }
    }
    if (basis === null) continue;
    // Guards also catch what the deny branch let through (a stale bounce from a relay client).
    const why = guardOf(r, verdict);
    if (why === 'in-flight' || (why !== null && basis !== 'id')) {
      guarded.push({ record: r, basis, why });
      continue;
    }
    selected.push({ record: r, basis, reason });
  }
  selected.sort((a, b) => a.record.arrival.getTime() - b.record.arrival.getTime() || compareIds(a.record.id, b.record.id));
  return { selected, guarded };
}

function matchesAdmin(
  r: PurgeRecord,
  admin: AdminSelection,
  ids: Set<string> | null,
  senderOk: ((s: string | null) => boolean) | null,
): boolean {
  if (ids !== null && !ids.has(r.id)) return false;
  if (senderOk !== null && !senderOk(r.sender)) return false;
  if (admin.net !== undefined) {
    if (r.sourceIp === null) return false;
    const ip = parseIp(r.sourceIp);
    if (!ip.ok || !netContains(admin.net, ip.net)) return false;
  }
  return true;
}

function adminText(a: AdminSelection): string {
  const parts: string[] = [];
  if (a.net) parts.push(`--ip ${formatNetShort(a.net)}`);
  if (a.sender !== undefined) parts.push(`--sender ${JSON.stringify(a.sender)}`);
  return parts.join(' ');
}

/** Queue ids are decimal inode numbers: compare as numbers. */
function compareIds(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}
