// import-spamlist: a public spam IP list (stdin or files) → the deny rules of one source,
// `list:NAME`. One streaming pass reads the lines (never the whole list as text in memory),
// applies the guards (QGUARD_MIN_PREFIX, protected addresses) and collects the networks
// compactly (a database server meanwhile reads the rules the source holds); then the list is
// aggregated, diffed against those rules and only the changes are applied, in one transaction
// (lib/db/spamlist.ts). Everything that can refuse the run — HTML instead of a
// list, an empty input, too many invalid lines, --replace dropping more than half the source,
// nothing valid to replace with — refuses before anything is written (exit 100).
//
// Size: one job from stdin to the database: read, guard, diff, apply share the list's state and are read best top to bottom.

import fs from 'node:fs';
import type { RunContext } from '../context.js';
import { PermanentError, TemporaryError, UsageError, errorText } from '../errors.js';
import { parseDuration } from '../duration.js';
import { type Net, netFirst, netLast } from '../net/address.js';
import { ruleRefusal, sourceRefusal } from '../policy/guards.js';
import { MAX_LINE, QUICK_SKIP, isMarkupLine, parseLine, quickLineBytes } from '../spamlist/parse-line.js';
import { EntrySet } from '../spamlist/entry-set.js';
import { type SourceRead, type SpamlistDiff, mergeSpamlist, readSourceEarly } from '../db/spamlist.js';
import type { Db } from '../db/connect.js';
import { decodeBytes } from '../text.js';

/** Flags of import-spamlist, as commander hands them over. */
export interface ImportOptions {
  source?: string;
  replace?: boolean;
  force?: boolean;
  for?: string;
  maxInvalid?: string;
  dryRun?: boolean;
  json?: boolean;
}

/** The `--json` summary (INTERFACE.md fields first, then ours). */
export interface ImportSummary {
  read: number;
  valid: number;
  invalid: number;
  duplicate: number;
  aggregated: number;
  added: number;
  removed: number;
  unchanged: number;
  refused: number;
  source: string;
  comments: number;
  skipped: number;
  refreshed: number;
  networks: number;
  replace: boolean;
  dryRun: boolean;
  durationMs: number;
}

/** Problems shown on stderr per kind; the rest are counted. */
const SHOW = 20;
/** A list is refused when any of its first lines is markup (a failed download's HTML page). */
const MARKUP_LINES = 50;

/** Counts of the reading pass. */
interface ReadStats {
  read: number;
  valid: number;
  invalid: number;
  comments: number;
  refused: number;
}

/** Reports problems with their place, the first SHOW of each kind, and a progress line. */
class Reporter {
  private shown = { invalid: 0, refused: 0 };
  private lastProgress = 0;
  private progressOn = false;
  private readonly started = Date.now();
  constructor(
    private ctx: RunContext,
    private tty: boolean,
  ) {}

  problem(kind: 'invalid' | 'refused', where: string, reason: string): void {
    if (this.shown[kind]++ >= SHOW) return;
    this.clearProgress();
    // The reason quotes the line through quoteInput (escaped already); the log line is made safe as a whole.
    this.ctx.log.warn(`${where}: ${kind === 'refused' ? 'refused: ' : ''}${reason}`);
  }

  /** After the pass: how many were not shown. */
  finish(stats: ReadStats): void {
    this.clearProgress();
    if (stats.invalid > SHOW) this.ctx.log.warn(`${stats.invalid - SHOW} more invalid lines not shown`);
    if (stats.refused > SHOW) this.ctx.log.warn(`${stats.refused - SHOW} more refused entries not shown`);
  }

  progress(text: string, force = false): void {
    if (!this.tty) return;
    const now = Date.now();
    if (!force && now - this.lastProgress < 250) return;
    this.lastProgress = now;
    this.progressOn = true;
    process.stderr.write(`\r\x1b[K${this.ctx.command}: ${text}`);
  }

  /** A new phase: on the progress line, and with its start time under --verbose. */
  phase(name: string): void {
    this.progress(name, true);
    if (this.ctx.log.verbose) {
      this.clearProgress();
      this.ctx.log.info(`${name} (${Date.now() - this.started} ms)`);
    }
  }

  clearProgress(): void {
    if (!this.progressOn) return;
    process.stderr.write('\r\x1b[K');
    this.progressOn = false;
  }
}

/** 2^i for i = 0..32: the size of a /(32 - i). */
const POW2 = Float64Array.from({ length: 33 }, (_, i) => 2 ** i);

/** The guards, prepared for a cheap test of a plain IPv4 network on the hot path. */
function guardsFor(ctx: RunContext) {
  const settings = { protectedNets: ctx.protectedNets(), minPrefix: ctx.config.minPrefix };
  // Protected IPv4 space as flat [first, last, first, last, ...]: this runs once per line.
  const v4 = Float64Array.from(
    settings.protectedNets.filter((p) => p.family === 4).flatMap((p) => [Number(netFirst(p)), Number(netLast(p))]),
  );
  const min4 = settings.minPrefix[4];
  return {
    /** True when an IPv4 network (as numbers) passes every guard without a doubt. */
    clearV4(addr: number, prefix: number): boolean {
      if (prefix < min4) return false;
      const last = addr + POW2[32 - prefix] - 1;
      for (let i = 0; i < v4.length; i += 2) if (addr <= v4[i + 1] && v4[i] <= last) return false;
      return true;
    },
    /** Why `net` may not be stored, or null: ruleRefusal(net, 'deny', ...). */
    refusal(net: Net): string | null {
      return ruleRefusal(net, 'deny', settings);
    },
  };
}

function inputError(name: string, err: unknown): Error {
  const code = (err as NodeJS.ErrnoException).code;
  const msg = `unable to read ${name}: ${errorText(err)}`;
  return ['ENOENT', 'EISDIR', 'ENOTDIR', 'EACCES', 'EPERM'].includes(code ?? '')
    ? new PermanentError(msg)
    : new TemporaryError(msg);
}

/** A line with more bytes than this is surely longer than MAX_LINE characters (UTF-8: at most 3 bytes a UTF-16 unit). */
const OVERLONG_BYTES = 3 * (MAX_LINE + 1);

/**
 * Stream one input line by line into `onLine(buf, start, end, number)`: the line is the bytes
 * `buf[start, end)`, without its `\n` — no string is made, so the hot path (a plain IPv4 line)
 * never decodes. A line split across chunks is joined; one that grows past OVERLONG_BYTES
 * without a newline is handed over as it stands (the parser reports it too long) and the rest
 * of it is skipped unread into memory.
 */
async function eachLine(
  stream: NodeJS.ReadableStream,
  onLine: (buf: Buffer, start: number, end: number, n: number) => void,
): Promise<void> {
  let carry: Buffer | null = null; // the start of a line whose newline has not come yet
  let dropping = false; // inside an overlong line: discard up to the next newline
  let n = 0;
  for await (const chunk of stream) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    let pos = 0;
    if (dropping || carry) {
      const nl = buf.indexOf(10);
      if (nl < 0) {
        if (carry) {
          carry = Buffer.concat([carry, buf]);
          if (carry.length > OVERLONG_BYTES) {
            onLine(carry, 0, carry.length, ++n);
            carry = null;
            dropping = true;
          }
        }
        continue;
      }
      if (carry) {
        const line = Buffer.concat([carry, buf.subarray(0, nl)]);
        carry = null;
        onLine(line, 0, line.length, ++n);
      }
      dropping = false;
      pos = nl + 1;
    }
    let nl: number;
    while ((nl = buf.indexOf(10, pos)) >= 0) {
      onLine(buf, pos, nl, ++n);
      pos = nl + 1;
    }
    if (pos < buf.length) {
      if (buf.length - pos > OVERLONG_BYTES) {
        onLine(buf, pos, buf.length, ++n);
        dropping = true;
      } else {
        carry = Buffer.from(buf.subarray(pos)); // a copy: the chunk is not kept alive
      }
    }
  }
  if (carry) onLine(carry, 0, carry.length, ++n);
}

/** `import-spamlist [FILE...] --source NAME ...`. */
export async function importSpamlist(ctx: RunContext, files: string[], opts: ImportOptions): Promise<void> {
  const started = Date.now();
  const name = (opts.source ?? '').trim();
  if (name === '') throw new UsageError('--source NAME is required (entries belong to list:NAME)');
  const source = `list:${name}`;
  const reason = `listed by ${name}`;
  const bad = sourceRefusal(source);
  if (bad) throw new UsageError(`--source: ${bad}`);
  let ttlSeconds: number | null = null;
  if (opts.for !== undefined) {
    const d = parseDuration(opts.for);
    if ('error' in d) throw new UsageError(`--for: ${d.error}`);
    ttlSeconds = d.seconds;
  }
  let maxInvalid = 1;
  if (opts.maxInvalid !== undefined) {
    const t = opts.maxInvalid.trim().replace(/%$/, '');
    maxInvalid = /^\d+(\.\d+)?$/.test(t) ? Number(t) : NaN;
    if (!(maxInvalid >= 0 && maxInvalid <= 100)) {
      throw new UsageError(`--max-invalid: a percentage 0-100 is needed: ${JSON.stringify(opts.maxInvalid.slice(0, 40))}`);
    }
  }
  const inputs = files.length > 0 ? files : ['-'];
  if (inputs.includes('-') && process.stdin.isTTY) {
    throw new UsageError('no input: pipe a list into import-spamlist or name the files');
  }

  // A database server is connected to while the list streams in, and reads the source's
  // rules meanwhile: its half of the work runs beside the parsing (an embedded one is opened
  // after: starting it costs the CPU the parsing needs). A refused input never waits for it.
  let dbEarly: Promise<Db> | null = null;
  let early: Promise<SourceRead | null> | null = null;
  if (ctx.config.databaseUrl || ctx.config.usePgEnv) {
    dbEarly = ctx.db();
    dbEarly.catch(() => {});
    early = dbEarly.then(
      (db) => readSourceEarly(db, { source, reason }),
      () => null,
    );
  }

  // --- The streaming pass: parse, guard, collect.
  const reporter = new Reporter(ctx, Boolean(process.stderr.isTTY));
  const guards = guardsFor(ctx);
  const set = new EntrySet();
  const stats: ReadStats = { read: 0, valid: 0, invalid: 0, comments: 0, refused: 0 };
  reporter.phase('reading the list');
  for (const file of inputs) {
    const label = file === '-' ? 'stdin' : file;
    let stream: NodeJS.ReadableStream;
    if (file === '-') stream = process.stdin;
    else {
      const fd = await fs.promises.open(file, 'r').catch((err: unknown) => {
        throw inputError(file, err);
      });
      stream = fd.createReadStream({ highWaterMark: 256 * 1024 });
    }
    let entryLines = 0;
    try {
      await eachLine(stream, (buf, start, end, n) => {
        stats.read++;
        if ((stats.read & 0xffff) === 0) reporter.progress(`${stats.read} lines read`);
        // The hot path, read from the bytes: a blank or comment line, or a plain IPv4 entry
        // (Spamhaus DROP's trailing comment allowed) that no guard is near.
        const key = quickLineBytes(buf, start, end);
        if (key === QUICK_SKIP) {
          stats.comments++;
          return;
        }
        if (key >= 0) {
          const addr = Math.floor(key / 64);
          if (guards.clearV4(addr, key - addr * 64)) {
            entryLines++;
            stats.valid++;
            set.addV4Key(key);
            return;
          }
        }
        // Not the hot path: bytes that are not UTF-8 are kept, to be shown as \xNN if echoed.
        const line = decodeBytes(buf, start, end);
        if (n <= MARKUP_LINES && isMarkupLine(line)) {
          throw new PermanentError(
            `${label}:${n}: looks like an HTML page, not a list (a failed download?): refused, nothing changed`,
          );
        }
        const r = parseLine(line);
        if (r.kind === 'skip') {
          stats.comments++;
        } else if (r.kind === 'invalid') {
          entryLines++;
          stats.invalid++;
          reporter.problem('invalid', `${label}:${n}`, r.reason);
        } else {
          entryLines++;
          stats.valid++;
          for (const net of r.nets) {
            const refusal = net.family === 4 && guards.clearV4(Number(net.addr), net.prefix) ? null : guards.refusal(net);
            if (refusal === null) set.add(net);
            else {
              stats.refused++;
              reporter.problem('refused', `${label}:${n}`, refusal);
            }
          }
        }
      });
    } catch (err) {
      if (err instanceof PermanentError || err instanceof TemporaryError) throw err;
      throw inputError(label, err);
    } finally {
      if (file !== '-') (stream as fs.ReadStream).destroy();
    }
    if (entryLines === 0) {
      throw new PermanentError(`${label}: no entries (empty, or only comments): refused, nothing changed`);
    }
  }
  reporter.finish(stats);
  reporter.phase(`read ${stats.read} lines`);

  const entries = stats.valid + stats.invalid;
  const invalidPct = (100 * stats.invalid) / entries;
  if (invalidPct > maxInvalid) {
    throw new PermanentError(
      `${stats.invalid} of ${entries} entry lines are invalid (${invalidPct.toFixed(1)}% > --max-invalid ${maxInvalid}%): refused, nothing changed`,
    );
  }
  if (set.size === 0) {
    throw new PermanentError(`no valid entries to import (${stats.refused} refused): refused, nothing changed`);
  }

  // --- Plan (once the relay/trust networks are known): drop what lies inside them,
  // deduplicate and aggregate. Then diff and apply, in one transaction. The sort needs no
  // database: done first, while a server may still be reading the source.
  set.sort();
  const db = await (dbEarly ?? ctx.db());
  let counts = { duplicate: 0, aggregated: 0 };
  const plan = (relayTrust: readonly Net[]) => {
    reporter.phase(`aggregating ${set.size} networks`);
    const dropped = set.dropInside(relayTrust);
    const agg = set.aggregate(ctx.config.minPrefix);
    counts = { duplicate: agg.duplicate, aggregated: agg.aggregated };
    return { dropped, networks: agg.networks, v4: agg.v4, v6: agg.v6 };
  };
  const diff: SpamlistDiff = await mergeSpamlist(db, plan, {
    source,
    reason,
    early,
    ttlSeconds,
    replace: Boolean(opts.replace),
    dryRun: Boolean(opts.dryRun),
    onPhase: (phase) => reporter.phase(phase),
    check(d) {
      if (!opts.replace) return;
      if (d.staged === 0) {
        throw new PermanentError(
          `--replace with no entries left to store (${d.skipped} inside relay/trust networks): refused, nothing changed`,
        );
      }
      if (!opts.force && d.removed * 2 > d.existing) {
        throw new PermanentError(
          `--replace would remove ${d.removed} of the ${d.existing} entries of ${source} (more than half): refused, nothing changed; use --force if the list really shrank`,
        );
      }
    },
  });
  reporter.phase('done');
  reporter.clearProgress();
  if (diff.skipped > 0) {
    ctx.log.warn(
      `${diff.skipped} entr${diff.skipped === 1 ? 'y' : 'ies'} skipped, equal to or inside a relay/trust network (partners win over lists): ${diff.skippedExamples.join('; ')}${diff.skipped > diff.skippedExamples.length ? '; ...' : ''}`,
    );
  }

  const { duplicate, aggregated } = counts;
  const summary: ImportSummary = {
    read: stats.read,
    valid: stats.valid,
    invalid: stats.invalid,
    duplicate,
    aggregated,
    added: diff.added,
    removed: diff.removed,
    unchanged: diff.unchanged,
    refused: stats.refused,
    source,
    comments: stats.comments,
    skipped: diff.skipped,
    refreshed: diff.refreshed,
    networks: diff.staged,
    replace: Boolean(opts.replace),
    dryRun: Boolean(opts.dryRun),
    durationMs: Date.now() - started,
  };
  const line =
    `${source}: ${opts.dryRun ? 'would add' : 'added'} ${diff.added}, ${opts.dryRun ? 'rewrite' : 'rewrote'} ${diff.refreshed}, ` +
    `${opts.dryRun ? 'remove' : 'removed'} ${diff.removed}, unchanged ${diff.unchanged} ` +
    `(${stats.read} lines: ${stats.valid} valid, ${stats.invalid} invalid, ${duplicate} duplicate, ` +
    `${aggregated} aggregated, ${stats.refused} refused, ${diff.skipped} skipped)`;
  if (opts.json) ctx.printJson(summary);
  else if (opts.dryRun) ctx.print(`dry run: ${line}\n`);
  else ctx.log.info(line);
}
