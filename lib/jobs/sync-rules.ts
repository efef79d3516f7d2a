// sync-rules: the database becomes /etc/tcp.smtp, /etc/tcp.smtp.cdb, control/rcpthosts and the
// firewall set — exactly, safely, and only when something changed.
//
//   check  (every run, cheap): the change counter, the next expiry, a hash of the config and
//          the static file, and the stat of every file we wrote, against a small state file in
//          $QGUARD_STATE_DIR. All equal: nothing else happens (no rules read, no tcprules).
//   plan   read the rules in one snapshot (the IPv4 rules as one aggregated binary value of
//          integers: no row object per rule; measured faster than COPY, whose per-row messages
//          cost more in node than the query), compute the keys (lib/net/tcprules-keys.ts),
//          render the text, the rcpthosts files and the firewall input.
//   guard  refuse to publish a rule set that drops more than half of the deny keys (and more
//          than 100) unless --force: an emptied table must not open the server to every spammer.
//   apply  tcprules into a temp cdb, ask tcprulescheck about a few addresses of every outcome,
//          then rename the text and the cdb into place; rcpthosts; the firewall (its failure
//          does not stop the files: exit 111 after them). The state file is written last.
// A database failure anywhere before apply leaves every file untouched (exit 111).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import type pg from 'pg';
import type { RunContext } from '../context.js';
import { PermanentError, type QguardError, TemporaryError, UsageError } from '../errors.js';
import type { Db, Queryable } from '../db/connect.js';
import { changeCounter, expireRules, nextExpiry } from '../db/rules.js';
import { listDomains } from '../db/domains.js';
import { type Net, formatNet, mustParseNet, netFirst, netLast } from '../net/address.js';
import type { Action, PolicyRule } from '../policy/decide.js';
import {
  type KeyPlan,
  SORT_PREFIX_MUL,
  SQL_SORT_KEY,
  STATIC_MAX,
  decodeSortKey,
  keysOfPrefix,
  planKeys,
  v4Text,
} from '../net/tcprules-keys.js';
import {
  HEADER_FIRST_LINE,
  type Outcomes,
  type RuleLine,
  outcomeInstructions,
  parseInstruction,
  parseRulesText,
  refusesClient,
  renderRulesBuffer,
  staticKeys,
} from '../qmail/tcprules-file.js';
import { renderRcpthosts } from '../qmail/rcpthosts.js';
import { installFile, removeStaleTemps, tempName, writeFileAtomic, writeTempFile } from '../io/atomic-write.js';
import { runProgram } from '../io/run-program.js';
import type { FirewallResult } from './firewall.js';

// The firewall module is loaded only when used: an unchanged run with QGUARD_FIREWALL=none
// (the default) does not need it, and every-minute start-up stays lean.
const firewall = () => import('./firewall.js');

/** Flags of the sync-rules command. */
export interface SyncOptions {
  dryRun?: boolean;
  force?: boolean;
  json?: boolean;
  watch?: boolean;
}

/** The `--json` summary. */
export interface SyncSummary {
  /** True when a file or the firewall set was (or, with --dry-run, would be) rewritten. */
  changed: boolean;
  /** Live rules that apply on this host (IPv4 and IPv6). */
  rules: Record<Action, number>;
  /** Generated tcprules keys (cdb entries, after overlaps are resolved). */
  keys: number;
  /** Keys the deny rules expand to on their own (a /32 is 1, a /12 is 16): what the guard counts. */
  denyKeys: number;
  /** Domains in rcpthosts (+ morercpthosts), or null when rcpthosts is not managed. */
  rcpthosts: number | null;
  firewall: FirewallResult | null;
  /** Rules deleted because their time was up. */
  expired: number;
  changeSeq: number;
  /** What was written. */
  wrote: string[];
  dryRun: boolean;
  durationMs: number;
}

/** Bump when the generated text changes for the same input, so upgrades rebuild. */
const FORMAT_VERSION = 1;
/** The deny-key guard: refuse when more than this share of deny keys would go... */
const GUARD_SHARE = 0.5;
/** ...and more than this many. */
const GUARD_MIN = 100;

// ---------------------------------------------------------------------------------------
// Local state: what the last run published, to know "nothing changed" without reading rules.

/** Identity of a file on disk: a hand edit changes at least one of these. */
interface Stamp {
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
  mode: number;
}

interface SyncState {
  version: number;
  /** False while a run is applying: the next run rebuilds without hand-edit warnings. */
  complete: boolean;
  changeSeq: number;
  nextExpiry: string | null;
  configHash: string;
  staticStamp: Stamp | null;
  staticHash: string;
  /** sha1 of the files we wrote (text files), by role. */
  hashes: Record<string, string>;
  stamps: Record<string, Stamp | null>;
  rules: Record<Action, number>;
  keys: number;
  denyKeys: number;
  rcpthosts: number | null;
  firewallOk: boolean;
  firewall: FirewallResult | null;
}

function stampOf(file: string): Stamp | null {
  try {
    const st = fs.statSync(file);
    return { size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino, mode: st.mode & 0o7777 };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new TemporaryError(`unable to stat ${file}: ${(err as Error).message}`);
  }
}

function sameStamp(a: Stamp | null | undefined, b: Stamp | null): boolean {
  if (!a || !b) return !a && !b;
  return a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs && a.ino === b.ino && a.mode === b.mode;
}

const sha1 = (data: string | Buffer) => crypto.createHash('sha1').update(data).digest('hex');

/** The state file of this target (several configs may share a state directory). */
export function statePath(ctx: RunContext): string {
  const c = ctx.config;
  const id = sha1(`${c.rulesFile}\0${c.rulesCdb}\0${c.controlDir}`).slice(0, 12);
  return path.join(c.stateDir, `sync-rules-${id}.state`);
}

function readState(file: string): SyncState | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new TemporaryError(`unable to read ${file}: ${(err as Error).message}`);
  }
  try {
    const s = JSON.parse(text) as SyncState;
    return s.version === FORMAT_VERSION ? s : null;
  } catch {
    return null; // a broken state file only costs one full run
  }
}

function writeState(file: string, state: SyncState): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  removeStaleTemps(file);
  writeFileAtomic(file, `${JSON.stringify(state)}\n`, { mode: 0o644 });
}

// ---------------------------------------------------------------------------------------
// The files we manage.

interface Targets {
  rules: string;
  cdb: string;
  rcpthosts: string | null;
  morercpthosts: string | null;
}

function targets(ctx: RunContext): Targets {
  const c = ctx.config;
  return {
    rules: c.rulesFile,
    cdb: c.rulesCdb,
    rcpthosts: c.manageRcpthosts ? path.join(c.controlDir, 'rcpthosts') : null,
    morercpthosts: c.manageRcpthosts ? path.join(c.controlDir, 'morercpthosts') : null,
  };
}

function targetList(t: Targets): [string, string][] {
  const out: [string, string][] = [
    ['rules', t.rules],
    ['cdb', t.cdb],
  ];
  if (t.rcpthosts) out.push(['rcpthosts', t.rcpthosts]);
  if (t.morercpthosts) out.push(['morercpthosts', t.morercpthosts]);
  return out;
}

// ---------------------------------------------------------------------------------------
// Settings: the static file and the outcome texts, validated before anything else.

interface StaticFile {
  stamp: Stamp | null;
  text: string;
  hash: string;
  rules: RuleLine[];
}

function readStaticFile(file: string): StaticFile {
  const stamp = stampOf(file);
  if (!stamp) return { stamp: null, text: '', hash: sha1(''), rules: [] };
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new PermanentError(`unable to read the static rules ${file}: ${(err as Error).message}`);
  }
  const parsed = parseRulesText(text);
  if (parsed.problems.length > 0) {
    const first = parsed.problems[0];
    const more = parsed.problems.length > 1 ? ` (and ${parsed.problems.length - 1} more problems)` : '';
    throw new PermanentError(`${file}: line ${first.line}: ${first.reason}${more}; nothing written`);
  }
  return { stamp, text, hash: sha1(text), rules: parsed.rules };
}

function outcomesOf(ctx: RunContext): Outcomes {
  const r = outcomeInstructions(ctx.config);
  if ('error' in r) throw new PermanentError(r.error);
  return r.outcomes;
}

function configHash(ctx: RunContext, staticHash: string, outcomes: Outcomes, prot: readonly Net[]): string {
  const c = ctx.config;
  return sha1(
    JSON.stringify({
      v: FORMAT_VERSION,
      outcomes,
      staticHash,
      staticFile: c.rulesStatic,
      host: c.host,
      rcpt: c.manageRcpthosts,
      newmrh: c.qmailNewmrh,
      firewall: [c.firewall, c.firewallPorts, c.firewallAction],
      protect: prot.map(formatNet).sort(),
    }),
  );
}

// ---------------------------------------------------------------------------------------
// Reading the rules: one snapshot, integers only for IPv4.

/** Rule sort keys in a growable Float64Array (no object per rule). */
class KeyReader {
  keys = new Float64Array(0);
  n = 0;
  /** Big-endian 8-byte integers (int8send), each below 2^53. */
  feedBinary(bytes: Uint8Array): void {
    const n = bytes.length >>> 3;
    const view = new DataView(bytes.buffer, bytes.byteOffset, n * 8);
    const keys = new Float64Array(n);
    for (let i = 0; i < n; i++) keys[i] = view.getUint32(i * 8) * 4294967296 + view.getUint32(i * 8 + 4);
    this.keys = keys;
    this.n = n;
  }
}

interface Snapshot {
  changeSeq: number;
  v4: Float64Array;
  v4Count: number;
  v6: PolicyRule[];
  counts: Record<Action, number>;
  denyKeys: number;
  domains: string[] | null;
}

/**
 * The IPv4 rules of this host as one binary value of 8-byte sort keys (lib/net/tcprules-keys.ts
 * computes the same formula): a million rules cost one 8 MB value, not a million rows, COPY
 * messages or decimal texts to parse.
 */
async function readV4(tx: Queryable, host: string, reader: KeyReader): Promise<void> {
  const r = await tx.query<{ b: Uint8Array | null }>(
    `SELECT string_agg(int8send(${SQL_SORT_KEY}), ''::bytea) AS b FROM qguard.live_rules
      WHERE family(network) = 4 AND (host IS NULL OR host = $1)`,
    [host],
  );
  const b = r.rows[0]?.b;
  if (b) reader.feedBinary(b);
}

async function readSnapshot(db: Db, host: string, wantDomains: boolean): Promise<Snapshot> {
  return db.transaction(async (tx) => {
    if (db.kind === 'server') await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY');
    const changeSeq = await changeCounter(tx);
    const reader = new KeyReader();
    await readV4(tx, host, reader);
    const counts: Record<Action, number> = { relay: 0, trust: 0, deny: 0 };
    const names: Action[] = ['relay', 'trust', 'deny'];
    let denyKeys = 0;
    const byAction = [0, 0, 0];
    for (let i = 0; i < reader.n; i++) {
      const k = reader.keys[i];
      const code = (k % SORT_PREFIX_MUL) - STATIC_MAX;
      byAction[code]++;
      if (code === 2) denyKeys += keysOfPrefix(Math.floor(k / SORT_PREFIX_MUL) % 64);
    }
    names.forEach((a, i) => {
      counts[a] = byAction[i];
    });
    const v6rows = await tx.query<{ cidr: string; action: Action }>(
      `SELECT network::text AS cidr, action FROM qguard.live_rules
        WHERE family(network) = 6 AND (host IS NULL OR host = $1)`,
      [host],
    );
    const v6 = v6rows.rows.map((r) => ({ net: mustParseNet(r.cidr), action: r.action }));
    for (const r of v6) counts[r.action]++;
    const domains = wantDomains ? (await listDomains(tx, host)).map((d) => d.name) : null;
    return { changeSeq, v4: reader.keys, v4Count: reader.n, v6, counts, denyKeys, domains };
  });
}

/** Every live rule of the snapshot as PolicyRule (only for the firewall: one object per rule). */
function policyRules(s: Snapshot): PolicyRule[] {
  const names: Action[] = ['relay', 'trust', 'deny'];
  const out: PolicyRule[] = new Array(s.v4Count);
  for (let i = 0; i < s.v4Count; i++) {
    const d = decodeSortKey(s.v4[i]);
    out[i] = { net: { family: 4, addr: BigInt(d.addr), prefix: d.prefix }, action: names[d.order - STATIC_MAX] };
  }
  return out.concat(s.v6);
}

// ---------------------------------------------------------------------------------------
// Plan.

interface Plan {
  text: Buffer;
  hash: string;
  keys: number;
  denyKeys: number;
  classText: string[];
  plan: KeyPlan;
  rcpt: ReturnType<typeof renderRcpthosts> | null;
}

function makePlan(ctx: RunContext, snap: Snapshot, stat: StaticFile, outcomes: Outcomes, prot: readonly Net[], splitMore: boolean): Plan {
  const classText: string[] = [];
  const classIds = new Map<string, number>();
  const classOf = (t: string): number => {
    let c = classIds.get(t);
    if (c === undefined) {
      c = classText.length;
      classText.push(t);
      classIds.set(t, c);
    }
    return c;
  };
  const staticDefault = stat.rules.find((r) => r.kind === 'default') ?? null;
  const defaultClass = classOf(staticDefault ? staticDefault.instructionText : outcomes.default);
  const actionClass = [classOf(outcomes.relay), classOf(outcomes.trust), classOf(outcomes.deny)] as const;
  const statics = staticKeys(stat.rules, classOf);
  if (statics.length > STATIC_MAX) {
    throw new PermanentError(`${ctx.config.rulesStatic}: more than ${STATIC_MAX} address keys; put IP rules in the database (qguard ip)`);
  }
  const denyLike = new Set<number>([actionClass[2]]);
  classText.forEach((t, c) => {
    const i = parseInstruction(t);
    if ('instruction' in i && refusesClient(i.instruction)) denyLike.add(c);
  });
  const protectedRanges = prot
    .filter((n) => n.family === 4)
    .map((n) => ({ first: Number(netFirst(n)), last: Number(netLast(n)) }));
  const plan = planKeys({ rules: snap.v4, ruleCount: snap.v4Count, actionClass, defaultClass, denyLike, statics, protectedRanges });
  if (plan.conflicts.length > 0) {
    const c = plan.conflicts[0];
    const line = stat.rules.find((r) => r.kind === 'ip' && r.blocks.some((b) => b.gran === 32 && b.first === c.first));
    throw new PermanentError(
      `${ctx.config.rulesStatic}: line ${line?.line ?? '?'}: refuses ${v4Text(c.first)}, a protected address, and tcpserver reads that key before any generated one: remove the line`,
    );
  }
  let keys = 0;
  for (const n of plan.keysByClass.values()) keys += n;
  const denyKeys = snap.denyKeys;
  const text = renderRulesBuffer({
    staticFile: ctx.config.rulesStatic,
    staticText: stat.text,
    lines: plan.lines,
    classText,
    staticDefaultLine: staticDefault?.line ?? null,
    defaultInstruction: outcomes.default,
    counts: { keys, ...snap.counts },
  });
  const rcpt = snap.domains ? renderRcpthosts(snap.domains, { splitMore }) : null;
  return { text, hash: sha1(text), keys, denyKeys, classText, plan, rcpt };
}

// ---------------------------------------------------------------------------------------
// Apply.

/** A few addresses of every outcome, and what tcprulescheck must say about each. */
function checkSamples(p: Plan): { ip: string; expect: string[] }[] {
  const seg = p.plan.segments;
  const picks = new Map<number, number[]>();
  const add = (i: number) => {
    const list = picks.get(seg.cls[i]) ?? [];
    if (list.length < 3) list.push(seg.start[i], seg.end[i]);
    picks.set(seg.cls[i], list);
  };
  for (let i = 0; i < seg.length; i++) {
    const have = picks.get(seg.cls[i]);
    if (!have || have.length < 2) add(i);
  }
  for (const i of [0.25, 0.5, 0.75].map((f) => Math.floor((seg.length - 1) * f))) add(i);
  const out: { ip: string; expect: string[] }[] = [];
  for (const [cls, addrs] of picks) {
    const parsed = parseInstruction(p.classText[cls]);
    if (!('instruction' in parsed)) continue;
    const i = parsed.instruction;
    const expect =
      i.verdict === 'deny' ? ['deny connection'] : [...i.vars.map((v) => `set environment variable ${v.name}=${v.value}`), 'allow connection'];
    for (const a of new Set(addrs)) out.push({ ip: v4Text(a), expect });
  }
  return out;
}

/** Ask the real tcprulescheck about the samples (one shell loop, not one process each). */
async function checkCdb(ctx: RunContext, cdb: string, samples: { ip: string; expect: string[] }[]): Promise<void> {
  if (samples.length === 0) return;
  const script = 'p="$1"; f="$2"; shift 2; for ip in "$@"; do TCPREMOTEIP="$ip" "$p" "$f" || exit 1; echo "==="; done';
  const r = await runProgram('/bin/sh', ['-c', script, 'sh', ctx.config.tcprulescheck, cdb, ...samples.map((s) => s.ip)], {
    timeoutMs: 60_000,
    env: { TCPREMOTEHOST: undefined, TCPREMOTEINFO: undefined },
  });
  const answers = r.stdout.split('===\n');
  samples.forEach((s, k) => {
    const got = (answers[k] ?? '').split('\n').filter((l) => l !== '' && !l.startsWith('rule ') && l !== 'default:');
    if (got.join('\n') !== s.expect.join('\n')) {
      throw new TemporaryError(
        `the new ${cdb} answers ${JSON.stringify(got.join('; '))} for ${s.ip} instead of ${JSON.stringify(s.expect.join('; '))}: not installed, the old one stays`,
      );
    }
  });
}

/**
 * Compile the text with the real tcprules into a temp cdb, check it, then install text and cdb.
 * The text goes to its temp file first and tcprules reads that file (not a pipe through us).
 */
async function publishRules(ctx: RunContext, t: Targets, p: Plan, writeText: boolean): Promise<void> {
  const textTmp = tempName(t.rules, 'text');
  const newCdb = tempName(t.cdb, 'new');
  const tmp = tempName(t.cdb, 'tmp');
  try {
    writeTempFile(textTmp, p.text);
    // tcprules writes `tmp` (open_trunc: a fresh name, so no stale mode), fsyncs, renames to newCdb.
    await runProgram('/bin/sh', ['-c', 'umask 022 && exec "$1" "$2" "$3" < "$4"', 'sh', ctx.config.tcprules, newCdb, tmp, textTmp], {
      timeoutMs: 600_000,
    });
    await checkCdb(ctx, newCdb, checkSamples(p));
    // tcpserver runs unprivileged: an unreadable cdb drops every connection. The cdb goes first:
    // whatever the text shows, tcpserver already does.
    installFile(newCdb, t.cdb, { mode: 0o644, ensureBits: 0o444 });
    if (writeText) installFile(textTmp, t.rules, { mode: 0o644 });
  } finally {
    for (const f of [textTmp, newCdb, tmp]) fs.rmSync(f, { force: true });
  }
}

function readIfExists(file: string): Buffer | null {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new TemporaryError(`unable to read ${file}: ${(err as Error).message}`);
  }
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Unified diff of two texts through diff(1), for --dry-run. */
async function unifiedDiff(label: string, oldFile: string, newText: string | Buffer): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-diff-'));
  try {
    const nf = path.join(dir, 'new');
    fs.writeFileSync(nf, newText);
    const of = fs.existsSync(oldFile) ? oldFile : '/dev/null';
    const r = await runProgram('diff', ['-u', '--label', `${label} (now)`, '--label', `${label} (new)`, of, nf], {
      okExitCodes: [0, 1],
    });
    return r.stdout;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------
// One run.

interface RunResult {
  summary: SyncSummary;
  nextExpiry: Date | null;
}

const sameTime = (a: Date | null, b: string | null) => (a ? a.toISOString() : null) === b;

async function syncOnce(ctx: RunContext, opts: SyncOptions & { lockHeld?: boolean }): Promise<RunResult> {
  const started = process.hrtime.bigint();
  const elapsed = () => Math.round(Number(process.hrtime.bigint() - started) / 1e6);
  const log = ctx.log;
  const dryRun = Boolean(opts.dryRun);
  const c = ctx.config;
  const t = targets(ctx);

  if (!dryRun && !opts.lockHeld) {
    if (c.databaseUrl || c.usePgEnv) {
      // Connect while flock(1) runs. Not with the embedded database: opening it waits for its
      // own lock, and a run that finds the job lock busy must give up at once.
      const [lock, conn] = await Promise.allSettled([ctx.jobLock('sync-rules'), ctx.db()]);
      if (lock.status === 'rejected') throw lock.reason;
      if (conn.status === 'rejected') throw conn.reason;
    } else {
      await ctx.jobLock('sync-rules');
    }
  }

  // Settings first: a bad config or static file stops the run before anything is touched.
  const outcomes = outcomesOf(ctx);
  const sfile = statePath(ctx);
  const state = readState(sfile);
  const staticStamp = stampOf(c.rulesStatic);
  let stat: StaticFile | null = null;
  const loadStatic = (): StaticFile => (stat ??= readStaticFile(c.rulesStatic));
  const staticHash = state && sameStamp(state.staticStamp, staticStamp) ? state.staticHash : loadStatic().hash;
  const prot = ctx.protectedNets();
  const cfgHash = configHash(ctx, staticHash, outcomes, prot);

  const db = await ctx.db();
  let expired = 0;
  let next = await nextExpiry(db);
  const now = Date.now();
  if (next && next.getTime() <= now && !dryRun) {
    expired = await expireRules(db);
    if (expired > 0) log.info(`${expired} expired rule(s) deleted`);
    next = await nextExpiry(db);
  }
  const seq = await changeCounter(db);

  const stamps = Object.fromEntries(targetList(t).map(([role, file]) => [role, stampOf(file)]));
  const filesAsLeft = state !== null && state.complete && targetList(t).every(([role]) => sameStamp(state.stamps[role], stamps[role]));
  const expiredPending = next !== null && next.getTime() <= now; // only with --dry-run
  const unchanged =
    filesAsLeft && state.changeSeq === seq && sameTime(next, state.nextExpiry) && state.configHash === cfgHash && !expiredPending;

  if (unchanged) {
    const fwOk = c.firewall === 'none' || (state.firewallOk && (await (await firewall()).firewallInPlace(ctx)));
    if (fwOk) {
      log.info(`unchanged since change ${seq}: nothing to do`);
      const result: RunResult = {
        summary: {
          changed: false,
          rules: state.rules,
          keys: state.keys,
          denyKeys: state.denyKeys,
          rcpthosts: state.rcpthosts,
          firewall: state.firewall ? { ...state.firewall, changed: false } : null,
          expired,
          changeSeq: seq,
          wrote: [],
          dryRun,
          durationMs: elapsed(),
        },
        nextExpiry: next,
      };
      ctx.jobSummary(result.summary);
      return result;
    }
    log.info('files unchanged, but the firewall set is not in place: reloading the rules for it');
  }

  // ---- plan
  const sf = loadStatic();
  let mark = elapsed();
  const phase = (what: string) => {
    const now = elapsed();
    log.info(`${what} in ${now - mark} ms`);
    mark = now;
  };
  const snap = await readSnapshot(db, c.host, c.manageRcpthosts);
  phase(`read ${snap.v4Count} IPv4 and ${snap.v6.length} IPv6 rules (change ${snap.changeSeq})`);
  const splitMore = isExecutable(c.qmailNewmrh);
  const p = makePlan(ctx, snap, sf, outcomes, prot, splitMore);
  phase(`planned ${p.keys} keys, ${p.text.length} bytes`);

  // ---- diff against what is on disk
  const wasComplete = state?.complete ?? false;
  const rulesHashOnDisk = (): string | null => {
    if (state && sameStamp(state.stamps.rules, stamps.rules) && state.hashes.rules) return state.hashes.rules;
    const b = readIfExists(t.rules);
    return b ? sha1(b) : null;
  };
  const onDisk = rulesHashOnDisk();
  const writeText = onDisk !== p.hash;
  const cdbOk = wasComplete && state !== null && sameStamp(state.stamps.cdb, stamps.cdb) && stamps.cdb !== null && !writeText;
  const buildCdb = !cdbOk;
  const rcptWrites: { role: 'rcpthosts' | 'morercpthosts'; file: string; text: string }[] = [];
  if (p.rcpt && t.rcpthosts && t.morercpthosts) {
    if (p.rcpt.rcpthosts === null) {
      // Never an empty rcpthosts (qmail-smtpd would then accept mail for every domain).
      if (!dryRun) log.warn(`no domains for this host in the database: ${t.rcpthosts} left as it is (qguard domain add NAME)`);
    } else {
      const cur = readIfExists(t.rcpthosts);
      if (!cur || cur.toString('utf8') !== p.rcpt.rcpthosts) rcptWrites.push({ role: 'rcpthosts', file: t.rcpthosts, text: p.rcpt.rcpthosts });
      const curMore = readIfExists(t.morercpthosts);
      // morercpthosts only when it has names, or to empty one we (or someone) left.
      if ((p.rcpt.morercpthosts !== '' || curMore !== null) && (curMore?.toString('utf8') ?? null) !== p.rcpt.morercpthosts) {
        rcptWrites.push({ role: 'morercpthosts', file: t.morercpthosts, text: p.rcpt.morercpthosts });
      }
    }
    for (const s of p.rcpt.skipped) log.warn(`domain ${JSON.stringify(s)} is not a domain name: left out of rcpthosts`);
  }

  // Hand edits: a file we wrote is not as we left it.
  if (wasComplete && state) {
    for (const [role, file] of targetList(t)) {
      if (sameStamp(state.stamps[role], stamps[role])) continue;
      if (role === 'rules' && onDisk === state.hashes.rules) continue; // touched, same bytes
      if ((role === 'rcpthosts' || role === 'morercpthosts') && !rcptWrites.some((w) => w.role === role)) continue;
      if (!dryRun) {
        log.warn(
          `${file} was ${stamps[role] ? 'changed' : 'removed'} since the last run (by hand?): regenerated` +
            (role === 'rules' ? ` (hand-written rules belong in ${c.rulesStatic})` : ''),
        );
      }
    }
  }

  // ---- guard
  const published = state?.denyKeys ?? null;
  const dropped = published !== null ? published - p.denyKeys : 0;
  const guardRefuses = dropped > GUARD_MIN && dropped > published! * GUARD_SHARE && !opts.force;
  const guardMessage = `the new rules would drop ${dropped} of the ${published} deny keys the last run published (more than half): refused, nothing written. If that is intended (a list was removed), run sync-rules --force`;

  let fwResult: FirewallResult | null = state?.firewall ?? null;
  let fwError: QguardError | null = null;
  const runFirewall = async (dry: boolean) => {
    const { applyFirewall } = await firewall();
    if (c.firewall === 'none') {
      fwResult = await applyFirewall(ctx, { rules: [], protectedNets: prot }, { dryRun: dry });
      return;
    }
    try {
      fwResult = await applyFirewall(ctx, { rules: policyRules(snap), protectedNets: prot }, { dryRun: dry });
    } catch (err) {
      if (!(err instanceof TemporaryError)) throw err;
      fwError = err;
    }
  };

  const summary = (wrote: string[], changed: boolean): SyncSummary => ({
    changed,
    rules: snap.counts,
    keys: p.keys,
    denyKeys: p.denyKeys,
    rcpthosts: p.rcpt ? p.rcpt.count : null,
    firewall: fwResult,
    expired,
    changeSeq: snap.changeSeq,
    wrote,
    dryRun,
    durationMs: elapsed(),
  });

  if (dryRun) {
    if (!opts.json) {
      let out = writeText ? await unifiedDiff(t.rules, t.rules, p.text) : '';
      for (const w of rcptWrites) out += await unifiedDiff(w.file, w.file, w.text);
      if (out) ctx.print(out);
    }
    if (guardRefuses) throw new PermanentError(guardMessage.replace('refused, nothing written', 'a real run would refuse'));
    await runFirewall(true);
    const fw = fwResult as FirewallResult | null;
    return { summary: summary([], writeText || buildCdb || rcptWrites.length > 0 || Boolean(fw?.changed)), nextExpiry: next };
  }
  if (guardRefuses) throw new PermanentError(guardMessage);

  // ---- apply
  const wrote: string[] = [];
  const base: SyncState = state ?? {
    version: FORMAT_VERSION,
    complete: false,
    changeSeq: -1,
    nextExpiry: null,
    configHash: '',
    staticStamp: null,
    staticHash: '',
    hashes: {},
    stamps: {},
    rules: { relay: 0, trust: 0, deny: 0 },
    keys: 0,
    denyKeys: 0,
    rcpthosts: null,
    firewallOk: false,
    firewall: null,
  };
  const filesToWrite = writeText || buildCdb || rcptWrites.length > 0;
  if (filesToWrite) {
    writeState(sfile, { ...base, complete: false });
    for (const [, file] of targetList(t)) removeStaleTemps(file);
    if (!state) {
      keepForeignFile(ctx, t.rules, `move its hand-written rules to ${c.rulesStatic}`);
      for (const w of rcptWrites) keepForeignFile(ctx, w.file, 'add its domains with qguard domain add');
    }
  }
  if (buildCdb) {
    await publishRules(ctx, t, p, writeText);
    phase('compiled, checked and installed the cdb');
    if (writeText) wrote.push(t.rules);
    wrote.push(t.cdb);
    log.info(`wrote ${t.rules} and ${t.cdb}: ${p.keys} keys (${p.denyKeys} deny) for ${snap.counts.relay} relay, ${snap.counts.trust} trust, ${snap.counts.deny} deny rules`);
  }
  for (const w of rcptWrites) {
    writeFileAtomic(w.file, w.text, { mode: 0o644, ensureBits: 0o444 });
    wrote.push(w.file);
    log.info(`wrote ${w.file}`);
  }
  if (rcptWrites.some((w) => w.role === 'morercpthosts') && splitMore) {
    await runProgram(c.qmailNewmrh, [], { umask: 0o022, timeoutMs: 120_000 });
    log.info(`ran ${c.qmailNewmrh}`);
  }
  await runFirewall(false);

  const finalStamps = Object.fromEntries(targetList(t).map(([role, file]) => [role, stampOf(file)]));
  const hashes: Record<string, string> = { rules: p.hash };
  if (p.rcpt?.rcpthosts != null) {
    hashes.rcpthosts = sha1(p.rcpt.rcpthosts);
    hashes.morercpthosts = sha1(p.rcpt.morercpthosts);
  }
  // The counter seen before the snapshot may be older than the snapshot's: keep the snapshot's.
  writeState(sfile, {
    version: FORMAT_VERSION,
    complete: true,
    changeSeq: snap.changeSeq,
    nextExpiry: next ? next.toISOString() : null,
    configHash: cfgHash,
    staticStamp: sf.stamp,
    staticHash: sf.hash,
    hashes,
    stamps: finalStamps,
    rules: snap.counts,
    keys: p.keys,
    denyKeys: p.denyKeys,
    rcpthosts: p.rcpt ? p.rcpt.count : null,
    firewallOk: fwError === null,
    firewall: fwResult,
  });
  const fw = fwResult as FirewallResult | null;
  const result = { summary: summary(wrote, wrote.length > 0 || Boolean(fw?.changed)), nextExpiry: next };
  ctx.jobSummary(result.summary); // kept with the job record (qguard status), failure included
  if (fwError) throw fwError;
  return result;
}

/**
 * First run over files that qguard did not write (an existing tcp.smtp, rcpthosts): keep a copy
 * `FILE.before-qguard`, so nothing the admin wrote by hand is lost.
 */
function keepForeignFile(ctx: RunContext, file: string, hint: string): void {
  const cur = readIfExists(file);
  if (!cur || cur.length === 0 || cur.toString('utf8', 0, 200).startsWith(HEADER_FIRST_LINE)) return;
  const copy = `${file}.before-qguard`;
  if (fs.existsSync(copy)) return;
  fs.copyFileSync(file, copy);
  ctx.log.warn(`${file} was not written by qguard: kept a copy in ${copy}; ${hint}`);
}

// ---------------------------------------------------------------------------------------
// Entry points.

/** `sync-rules [--dry-run] [--json] [--force] [--watch]`. */
export async function syncRules(ctx: RunContext, opts: SyncOptions): Promise<void> {
  if (opts.watch) return watch(ctx, opts);
  const r = await syncOnce(ctx, opts);
  if (opts.json) ctx.printJson(r.summary);
}

/**
 * `--watch`: LISTEN for the change counter's notifications and apply within about a second;
 * also wake for the next expiry, and once a minute to notice hand edits and a lost firewall.
 * Holds the job lock while it runs, so cron's runs exit quietly meanwhile. Server only.
 */
async function watch(ctx: RunContext, opts: SyncOptions): Promise<void> {
  if (opts.json) throw new UsageError('--json cannot be combined with --watch');
  if (opts.dryRun) throw new UsageError('--dry-run cannot be combined with --watch');
  const db = await ctx.db();
  const client = db.pgClient;
  if (!client) {
    throw new PermanentError(
      '--watch needs a PostgreSQL server (LISTEN/NOTIFY); with the embedded database run sync-rules from cron every minute',
    );
  }
  await ctx.jobLock('sync-rules');
  let pending = false;
  let stopping = false;
  let lost: TemporaryError | null = null;
  let wake: (() => void) | null = null;
  const poke = () => {
    pending = true;
    wake?.();
  };
  const onNotify = (m: pg.Notification) => {
    if (m.channel === 'qguard_changed') poke();
  };
  const onEnd = () => {
    lost ??= new TemporaryError(`lost the connection to the database ${db.location}`);
    poke();
  };
  const onSignal = () => {
    stopping = true;
    poke();
  };
  client.on('notification', onNotify);
  client.on('end', onEnd);
  client.on('error', onEnd);
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    await db.query('LISTEN qguard_changed');
    ctx.log.info('watching for changes (LISTEN qguard_changed)');
    while (!stopping) {
      pending = false;
      let next: Date | null = null;
      let retryMs = 0;
      try {
        const r = await syncOnce(ctx, { ...opts, lockHeld: true });
        next = r.nextExpiry;
        if (r.summary.changed) ctx.log.info(`applied change ${r.summary.changeSeq} in ${r.summary.durationMs} ms`);
        // Each pass is a run of its own in the job records: `qguard status` sees --watch working.
        await ctx.jobCheckpoint(0, null);
      } catch (err) {
        if (lost) throw lost;
        if (err instanceof PermanentError) {
          // Refused (a guard, a broken static file): retrying the same input will not help.
          ctx.log.warn(`${err.message} (waiting for the next change)`);
          await ctx.jobCheckpoint(err.exitCode, err.message);
        } else if (err instanceof TemporaryError) {
          ctx.log.warn(`${err.message} (retrying in 10 s)`);
          await ctx.jobCheckpoint(err.exitCode, err.message);
          retryMs = 10_000;
        } else {
          throw err;
        }
      }
      if (lost) throw lost;
      if (stopping) break;
      let ms = 60_000;
      if (next) ms = Math.min(ms, Math.max(0, next.getTime() - Date.now()) + 50);
      if (retryMs) ms = Math.min(ms, retryMs);
      if (!pending) {
        let timer: NodeJS.Timeout | undefined;
        await new Promise<void>((resolve) => {
          wake = resolve;
          timer = setTimeout(resolve, ms);
        });
        wake = null;
        clearTimeout(timer);
      }
      if (lost) throw lost;
      // A burst of changes (an import) usually arrives together: let it finish first.
      if (pending && !stopping) await new Promise((r) => setTimeout(r, 150));
    }
  } finally {
    client.off('notification', onNotify);
    client.off('end', onEnd);
    client.off('error', onEnd);
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
}
