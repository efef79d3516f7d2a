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
//
// Size: one job: check, plan, diff, guard and apply are its phases, each a function; the formats and I/O they use live in their own modules.

import fs from 'node:fs';
import path from 'node:path';
import type { RunContext } from '../context.js';
import { PermanentError, type QguardError, TemporaryError } from '../errors.js';
import { expireRules, policyClock } from '../db/rules.js';
import { policyRules, readSnapshot } from '../db/rules-snapshot.js';
import { type Net, formatNet, formatNetShort } from '../net/address.js';
import type { Action } from '../policy/decide.js';
import { HEADER_FIRST_LINE, type Outcomes, outcomeInstructions, parseRulesText } from '../qmail/tcprules-file.js';
import { type RulesPlan, type RulesSnapshot, type StaticRules, checkSamples, planRules } from '../qmail/rules-plan.js';
import { installFile, removeStaleTemps, tempName, writeFileAtomic, writeTempFile } from '../io/atomic-write.js';
import { readIfExists } from '../io/read-optional.js';
import { runProgram } from '../io/run-program.js';
import { checkCdbAnswers, compileCdb, programStamp, tcprulesTakesIpv6 } from '../io/ucspi-tcp.js';
import { unifiedDiff } from '../io/diff.js';
import { readCopy, rulesCopyPath, writeCopy } from '../io/rules-copy.js';
import { FORMAT_VERSION, type Stamp, type SyncState, readState, sameStamp, sha1, stampOf, statePath, writeState } from '../io/sync-state.js';
import type { FirewallResult } from '../firewall/backends.js';

// The firewall module is loaded only when used: an unchanged run with QGUARD_FIREWALL=none
// (the default) does not need it, and every-minute start-up stays lean.
const firewall = () => import('../ops/firewall.js');

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

/** The deny-key guard: refuse when more than this share of deny keys would go... */
const GUARD_SHARE = 0.5;
/** ...and more than this many. */
const GUARD_MIN = 100;

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

interface StaticFile extends StaticRules {
  stamp: Stamp | null;
}

function readStaticFile(file: string): StaticFile {
  const stamp = stampOf(file);
  let text: string | null;
  try {
    text = stamp ? readIfExists(file, 'utf8') : null;
  } catch (err) {
    throw new PermanentError(`unable to read the static rules ${file}: ${(err as Error).message}`);
  }
  if (text === null) return { stamp: null, text: '', hash: sha1(''), rules: [] };
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
      // auto: another tcprules (ucspi-tcp-ipv6 installed or removed) is another plan
      ipv6: c.tcprulesIpv6 === 'auto' ? programStamp(c.tcprules) : c.tcprulesIpv6,
    }),
  );
}

// ---------------------------------------------------------------------------------------
// Apply.

/**
 * Compile the text with the real tcprules into a temp cdb, check it, then install text and cdb.
 * The text goes to its temp file first and tcprules reads that file (not a pipe through us).
 * `meanwhile` is work of this process that runs while tcprules compiles (it would only wait).
 */
async function publishRules(ctx: RunContext, t: Targets, p: RulesPlan, writeText: boolean, meanwhile: () => void): Promise<void> {
  const textTmp = tempName(t.rules, 'text');
  const newCdb = tempName(t.cdb, 'new');
  const tmp = tempName(t.cdb, 'tmp');
  try {
    writeTempFile(textTmp, p.text);
    // tcprules writes `tmp` (open_trunc: a fresh name, so no stale mode), fsyncs, renames to newCdb.
    const compiled = compileCdb(ctx.config.tcprules, textTmp, newCdb, tmp);
    try {
      meanwhile();
    } finally {
      await compiled; // either way: nothing of this run is left running
    }
    const samples = checkSamples(p);
    const answers = await checkCdbAnswers(ctx.config.tcprulescheck, newCdb, samples.map((s) => s.ip));
    samples.forEach((s, k) => {
      const got = answers[k].join('; ');
      const want = s.expect.join('; ');
      if (got !== want) {
        throw new TemporaryError(
          `the new ${newCdb} answers ${JSON.stringify(got)} for ${s.ip} instead of ${JSON.stringify(want)}: not installed, the old one stays`,
        );
      }
    });
    // tcpserver runs unprivileged: an unreadable cdb drops every connection. The cdb goes first:
    // whatever the text shows, tcpserver already does.
    installFile(newCdb, t.cdb, { mode: 0o644, ensureBits: 0o444 });
    if (writeText) installFile(textTmp, t.rules, { mode: 0o644 });
  } finally {
    for (const f of [textTmp, newCdb, tmp]) fs.rmSync(f, { force: true });
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

// ---------------------------------------------------------------------------------------
// One run: check → plan → diff → guard → apply.

export interface RunResult {
  summary: SyncSummary;
  nextExpiry: Date | null;
}

const sameTime = (a: Date | null, b: string | null) => (a ? a.toISOString() : null) === b;

/** What the cheap check found: enough to say "nothing changed" without reading a rule. */
interface Check {
  sfile: string;
  state: SyncState | null;
  outcomes: Outcomes;
  prot: readonly Net[];
  cfgHash: string;
  loadStatic: () => StaticFile;
  expired: number;
  next: Date | null;
  seq: number;
  /** Stamps of the target files now, by role. */
  stamps: Record<string, Stamp | null>;
  unchanged: boolean;
}

async function check(ctx: RunContext, t: Targets, dryRun: boolean): Promise<Check> {
  const c = ctx.config;
  // Settings first: a bad config or static file stops the run before anything is touched.
  const outcomes = outcomesOf(ctx);
  const sfile = statePath(c);
  const state = readState(sfile);
  const staticStamp = stampOf(c.rulesStatic);
  let stat: StaticFile | null = null;
  const loadStatic = (): StaticFile => (stat ??= readStaticFile(c.rulesStatic));
  const staticHash = state && sameStamp(state.staticStamp, staticStamp) ? state.staticHash : loadStatic().hash;
  const prot = ctx.protectedNets();
  const cfgHash = configHash(ctx, staticHash, outcomes, prot);

  const db = await ctx.db();
  let expired = 0;
  let { next, seq } = await policyClock(db);
  const now = Date.now();
  if (next && next.getTime() <= now && !dryRun) {
    expired = await expireRules(db);
    if (expired > 0) ctx.log.info(`${expired} expired rule(s) deleted`);
    ({ next, seq } = await policyClock(db));
  }

  const stamps = Object.fromEntries(targetList(t).map(([role, file]) => [role, stampOf(file)]));
  const filesAsLeft = state !== null && state.complete && targetList(t).every(([role]) => sameStamp(state.stamps[role], stamps[role]));
  const expiredPending = next !== null && next.getTime() <= now; // only with --dry-run
  const unchanged =
    filesAsLeft && state.changeSeq === seq && sameTime(next, state.nextExpiry) && state.configHash === cfgHash && !expiredPending;
  return { sfile, state, outcomes, prot, cfgHash, loadStatic, expired, next, seq, stamps, unchanged };
}

type RcptWrite = { role: 'rcpthosts' | 'morercpthosts'; file: string; text: string };

/** Which files the plan changes, against what is on disk. */
interface Changes {
  /** sha1 of the rules text on disk (null: none). */
  onDisk: string | null;
  writeText: boolean;
  buildCdb: boolean;
  rcptWrites: RcptWrite[];
}

function diffFiles(ctx: RunContext, t: Targets, p: RulesPlan, k: Check, dryRun: boolean): Changes {
  const { state, stamps } = k;
  const log = ctx.log;
  const wasComplete = state?.complete ?? false;
  let onDisk: string | null;
  if (state && sameStamp(state.stamps.rules, stamps.rules) && state.hashes.rules) onDisk = state.hashes.rules;
  else {
    const b = readIfExists(t.rules);
    onDisk = b ? sha1(b) : null;
  }
  const writeText = onDisk !== p.hash;
  const cdbOk = wasComplete && state !== null && sameStamp(state.stamps.cdb, stamps.cdb) && stamps.cdb !== null && !writeText;
  const rcptWrites: RcptWrite[] = [];
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
  if (wasComplete && state && !dryRun) {
    for (const [role, file] of targetList(t)) {
      if (sameStamp(state.stamps[role], stamps[role])) continue;
      if (role === 'rules' && onDisk === state.hashes.rules) continue; // touched, same bytes
      if ((role === 'rcpthosts' || role === 'morercpthosts') && !rcptWrites.some((w) => w.role === role)) continue;
      log.warn(
        `${file} was ${stamps[role] ? 'changed' : 'removed'} since the last run (by hand?): regenerated` +
          (role === 'rules' ? ` (hand-written rules belong in ${ctx.config.rulesStatic})` : ''),
      );
    }
  }
  return { onDisk, writeText, buildCdb: !cdbOk, rcptWrites };
}

/**
 * The deny-key guard: the refusal, or null. A rule set that drops more than half of the deny
 * keys the last run published (and more than 100) is refused unless --force.
 */
function guard(state: SyncState | null, p: RulesPlan, force: boolean): string | null {
  const published = state?.denyKeys ?? null;
  if (published === null || force) return null;
  const dropped = published - p.denyKeys;
  if (dropped > GUARD_MIN && dropped > published * GUARD_SHARE) {
    return `the new rules would drop ${dropped} of the ${published} deny keys the last run published (more than half): refused, nothing written. If that is intended (a list was removed), run sync-rules --force`;
  }
  return null;
}

/** The firewall part of a run: its result, or the temporary failure that must not stop the files. */
async function syncFirewall(
  ctx: RunContext,
  snap: RulesSnapshot | null,
  prot: readonly Net[],
  dryRun: boolean,
): Promise<{ result: FirewallResult | null; error: QguardError | null }> {
  const { applyFirewall } = await firewall();
  if (ctx.config.firewall === 'none' || !snap) {
    return { result: await applyFirewall(ctx, { rules: [], protectedNets: prot }, { dryRun }), error: null };
  }
  try {
    return { result: await applyFirewall(ctx, { rules: policyRules(snap), protectedNets: prot }, { dryRun }), error: null };
  } catch (err) {
    if (!(err instanceof TemporaryError)) throw err;
    return { result: null, error: err };
  }
}

const EMPTY_STATE: SyncState = {
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

/** Write what changed: the cdb and text, rcpthosts, the firewall; the state file last. */
async function apply(
  ctx: RunContext,
  t: Targets,
  k: Check,
  snap: RulesSnapshot,
  sf: StaticFile,
  p: RulesPlan,
  ch: Changes,
  splitMore: boolean,
  phase: (what: string) => void,
  /** Keep the rules copy for the next run's patch (done while tcprules compiles, when it does). */
  saveCopy: () => void,
): Promise<{ wrote: string[]; fw: { result: FirewallResult | null; error: QguardError | null } }> {
  const c = ctx.config;
  const log = ctx.log;
  const { state } = k;
  const wrote: string[] = [];
  if (ch.writeText || ch.buildCdb || ch.rcptWrites.length > 0) {
    writeState(k.sfile, { ...(state ?? EMPTY_STATE), complete: false });
    for (const [, file] of targetList(t)) removeStaleTemps(file);
    if (!state) {
      keepForeignFile(ctx, t.rules, `move its hand-written rules to ${c.rulesStatic}`);
      for (const w of ch.rcptWrites) keepForeignFile(ctx, w.file, 'add its domains with qguard domain add');
    }
  }
  if (ch.buildCdb) {
    await publishRules(ctx, t, p, ch.writeText, saveCopy);
    phase('compiled, checked and installed the cdb');
    if (ch.writeText) wrote.push(t.rules);
    wrote.push(t.cdb);
    log.info(`wrote ${t.rules} and ${t.cdb}: ${p.keys} keys (${p.denyKeys} deny) for ${snap.counts.relay} relay, ${snap.counts.trust} trust, ${snap.counts.deny} deny rules`);
    warnUnwritten6(ctx, p);
  }
  saveCopy();
  for (const w of ch.rcptWrites) {
    writeFileAtomic(w.file, w.text, { mode: 0o644, ensureBits: 0o444 });
    wrote.push(w.file);
    log.info(`wrote ${w.file}`);
  }
  if (ch.rcptWrites.some((w) => w.role === 'morercpthosts') && splitMore) {
    await runProgram(c.qmailNewmrh, [], { umask: 0o022, timeoutMs: 120_000 });
    log.info(`ran ${c.qmailNewmrh}`);
  }
  const fw = await syncFirewall(ctx, snap, k.prot, false);
  const fwResult = fw.error ? (state?.firewall ?? null) : fw.result;

  const hashes: Record<string, string> = { rules: p.hash };
  if (p.rcpt?.rcpthosts != null) {
    hashes.rcpthosts = sha1(p.rcpt.rcpthosts);
    hashes.morercpthosts = sha1(p.rcpt.morercpthosts);
  }
  // The counter seen before the snapshot may be older than the snapshot's: keep the snapshot's.
  writeState(k.sfile, {
    version: FORMAT_VERSION,
    complete: true,
    changeSeq: snap.changeSeq,
    nextExpiry: k.next ? k.next.toISOString() : null,
    configHash: k.cfgHash,
    staticStamp: sf.stamp,
    staticHash: sf.hash,
    hashes,
    stamps: Object.fromEntries(targetList(t).map(([role, file]) => [role, stampOf(file)])),
    rules: snap.counts,
    keys: p.keys,
    denyKeys: p.denyKeys,
    rcpthosts: p.rcpt ? p.rcpt.count : null,
    firewallOk: fw.error === null,
    firewall: fwResult,
  });
  return { wrote, fw: { result: fwResult, error: fw.error } };
}

/**
 * IPv6 networks tcp.smtp gives the default line instead of their outcome (lib/net/tcprules-keys6.ts):
 * said once, when the file that leaves them out is written (the firewall set has them all).
 */
function warnUnwritten6(ctx: RunContext, p: RulesPlan): void {
  const u = p.v6?.unwritten ?? [];
  if (u.length === 0) return;
  const outcome = (cls: number) => p.classText[cls];
  const shown = u.slice(0, 5).map((x) => `${formatNetShort(x.net)} (${outcome(x.cls)}): ${x.why}`);
  ctx.log.warn(
    `${u.length} IPv6 network(s) left to the default line of ${ctx.config.rulesFile}, which cannot express them exactly ` +
      `(the firewall set still has the denied ones): ${shown.join('; ')}${u.length > 5 ? '; …' : ''}`,
  );
}

/** Take the job lock (and connect meanwhile, to a server). */
async function lockAndConnect(ctx: RunContext): Promise<void> {
  const c = ctx.config;
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

export async function syncOnce(ctx: RunContext, opts: SyncOptions & { lockHeld?: boolean }): Promise<RunResult> {
  const started = process.hrtime.bigint();
  const elapsed = () => Math.round(Number(process.hrtime.bigint() - started) / 1e6);
  const log = ctx.log;
  const dryRun = Boolean(opts.dryRun);
  const c = ctx.config;
  const t = targets(ctx);
  if (!dryRun && !opts.lockHeld) await lockAndConnect(ctx);

  // ---- check
  const k = await check(ctx, t, dryRun);
  const { state, next, expired } = k;
  if (k.unchanged && state) {
    const fwOk = c.firewall === 'none' || (state.firewallOk && (await (await firewall()).firewallInPlace(ctx)));
    if (fwOk) {
      log.info(`unchanged since change ${k.seq}: nothing to do`);
      const result: RunResult = {
        summary: {
          changed: false,
          rules: state.rules,
          keys: state.keys,
          denyKeys: state.denyKeys,
          rcpthosts: state.rcpthosts,
          firewall: state.firewall ? { ...state.firewall, changed: false } : null,
          expired,
          changeSeq: k.seq,
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
  const sf = k.loadStatic();
  let mark = elapsed();
  const phase = (what: string) => {
    const now = elapsed();
    log.info(`${what} in ${now - mark} ms`);
    mark = now;
  };
  const copyFile = rulesCopyPath(c);
  const read = await readSnapshot(await ctx.db(), c.host, c.manageRcpthosts, readCopy(copyFile));
  const snap = read.snapshot;
  phase(`read ${snap.v4Count} IPv4 and ${snap.v6.length} IPv6 rules (change ${snap.changeSeq}${read.patched ? ', the changed ones only' : ''})`);
  // The copy is the database's rules, whatever is published: kept for the next run's patch, by
  // apply (while tcprules compiles) or before a refusal. A run that fails before has none: the
  // next run reads the rules in full.
  let copyKept = dryRun;
  const saveCopy = () => {
    if (copyKept) return;
    copyKept = true;
    writeCopy(copyFile, read.copy);
  };
  const splitMore = isExecutable(c.qmailNewmrh);
  // (asked only when there is something to write: a run without IPv6 rules starts one tcprules, as before)
  const ipv6 = snap.v6.length > 0 && (c.tcprulesIpv6 === 'on' || (c.tcprulesIpv6 === 'auto' && (await tcprulesTakesIpv6(c.tcprules))));
  const p = planRules(snap, sf, k.outcomes, k.prot, { staticFile: c.rulesStatic, splitMore, ipv6 });
  phase(`planned ${p.keys} keys, ${p.text.length} bytes`);

  // ---- diff, guard
  const ch = diffFiles(ctx, t, p, k, dryRun);
  const refusal = guard(state, p, Boolean(opts.force));
  const summary = (wrote: string[], changed: boolean, fw: FirewallResult | null): SyncSummary => ({
    changed,
    rules: snap.counts,
    keys: p.keys,
    denyKeys: p.denyKeys,
    rcpthosts: p.rcpt ? p.rcpt.count : null,
    firewall: fw,
    expired,
    changeSeq: snap.changeSeq,
    wrote,
    dryRun,
    durationMs: elapsed(),
  });

  if (dryRun) {
    if (!opts.json) {
      let out = ch.writeText ? await unifiedDiff(t.rules, t.rules, p.text) : '';
      for (const w of ch.rcptWrites) out += await unifiedDiff(w.file, w.file, w.text);
      if (out) ctx.print(out);
    }
    if (refusal) throw new PermanentError(refusal.replace('refused, nothing written', 'a real run would refuse'));
    const fw = await syncFirewall(ctx, snap, k.prot, true);
    const fwResult = fw.error ? (state?.firewall ?? null) : fw.result;
    const changed = ch.writeText || ch.buildCdb || ch.rcptWrites.length > 0 || Boolean(fwResult?.changed);
    return { summary: summary([], changed, fwResult), nextExpiry: next };
  }
  if (refusal) {
    saveCopy();
    throw new PermanentError(refusal);
  }

  // ---- apply
  const { wrote, fw } = await apply(ctx, t, k, snap, sf, p, ch, splitMore, phase, saveCopy);
  const result = { summary: summary(wrote, wrote.length > 0 || Boolean(fw.result?.changed), fw.result), nextExpiry: next };
  ctx.jobSummary(result.summary); // kept with the job record (qguard status), failure included
  if (fw.error) throw fw.error;
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
  if (opts.watch) return (await import('./sync-rules-watch.js')).watch(ctx, opts);
  const r = await syncOnce(ctx, opts);
  if (opts.json) ctx.printJson(r.summary);
}
