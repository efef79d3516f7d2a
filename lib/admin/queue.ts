// `qguard queue ls|top|show|stats`: the seed's review page as commands. `ls`, `top` and the
// counts of `stats` read what scan-queue recorded (every mail server sharing the database,
// as of their last scan); `show` and the file counts of `stats` read this server's queue
// directly, never writing it. Everything printed from a message passes through
// forTerminal: spam will try to attack the admin's terminal with escape sequences.

import path from 'node:path';
import type { RunContext } from '../context.js';
import { PermanentError, UsageError } from '../errors.js';
import { formatDuration } from '../duration.js';
import { formatNet, formatNetShort, netContains, parseNet } from '../net/address.js';
import { rulesAndVerdicts } from '../ops/verdicts.js';
import { ruleJson } from '../db/rules.js';
import { type MessageRow, listMessages, loadScanState, messageStats, topSources } from '../db/messages.js';
import { MESSAGE_KINDS, type MessageKind } from '../qmail/received.js';
import { messageExcerpt } from '../qmail/message-excerpt.js';
import { listIds, openQueue, readHead, readMessage } from '../io/queue-walk.js';
import { QUEUE_DIRS, type QueuedMessage, absPath } from '../qmail/queued-message.js';
import { forTerminal } from '../text.js';


function iso(d: Date | null): string | null {
  return d ? d.toISOString() : null;
}

function shortTime(d: Date | null): string {
  return d ? d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-';
}

/** A recorded message as JSON (INTERFACE.md: `qguard queue ls --json`). */
export function messageJson(m: MessageRow) {
  return {
    id: m.id,
    sourceIp: m.sourceIp,
    sender: m.sender,
    recipients: m.recipients,
    pending: m.pending,
    kind: m.kind,
    host: m.host,
    state: m.state,
    forwarded: m.forwarded,
    chain: m.chain,
    arrival: iso(m.arrival),
    birth: iso(m.birth),
    size: m.size,
    subject: m.subject,
    helo: m.helo,
    remoteHost: m.remoteHost,
    remoteInfo: m.remoteInfo,
    sourceRecorded: m.sourceRecorded,
    recipientCount: m.rcptCount,
    pendingCount: m.pendingCount,
    bouncePending: m.bouncePending,
    problems: m.problems,
    firstSeen: iso(m.firstSeen),
    goneAt: iso(m.goneAt),
  };
}

export interface QueueLsOptions {
  ip?: string;
  kind?: string;
  all?: boolean;
  allHosts?: boolean;
  limit?: string;
  json?: boolean;
}

function positiveInt(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,9}$/.test(value) || Number(value) < 1) throw new UsageError(`${flag}: not a positive whole number: ${JSON.stringify(value.slice(0, 40))}`);
  return Number(value);
}

/** `qguard queue ls [--ip IP|CIDR] [--kind K] [--all] [--all-hosts] [--json]`. */
export async function queueList(ctx: RunContext, opts: QueueLsOptions): Promise<void> {
  let net: string | undefined;
  if (opts.ip !== undefined) {
    const r = parseNet(opts.ip);
    if (!r.ok) throw new UsageError(`--ip: ${r.error}`);
    net = formatNet(r.net);
  }
  let kind: MessageKind | undefined;
  let forwardedOnly = false;
  if (opts.kind !== undefined) {
    if (opts.kind === 'forward') forwardedOnly = true;
    else if ((MESSAGE_KINDS as readonly string[]).includes(opts.kind)) kind = opts.kind as MessageKind;
    else throw new UsageError(`--kind: must be one of ${[...MESSAGE_KINDS, 'forward'].join(', ')}: ${JSON.stringify(opts.kind.slice(0, 40))}`);
  }
  const limit = positiveInt(opts.limit, '--limit');
  const db = await ctx.db();
  let rows = await listMessages(db, {
    host: opts.allHosts ? null : ctx.config.host,
    net,
    kind,
    includeGone: Boolean(opts.all),
    limit: forwardedOnly ? undefined : limit,
  });
  if (forwardedOnly) rows = rows.filter((m) => m.forwarded).slice(0, limit ?? Infinity);
  if (opts.json) {
    ctx.printJson(rows.map(messageJson));
    return;
  }
  const lines = rows.map((m) => {
    const kindText = `${m.kind}${m.forwarded ? '+fwd' : ''}`;
    const rcpt = `${m.rcptCount} rcpt${m.pendingCount !== m.rcptCount ? ` (${m.pendingCount} pending)` : ''}`;
    const parts = [
      m.id.padStart(9),
      shortTime(m.arrival),
      (m.sourceIp ?? '-').padEnd(15),
      kindText.padEnd(13),
      m.state === 'preprocessed' ? '' : `[${m.state}]`,
      `<${forTerminal(m.sender ?? '?')}> ${rcpt}`,
      m.subject ? `-- ${forTerminal(m.subject)}` : '',
      opts.allHosts ? `@${forTerminal(m.host)}` : '',
      m.goneAt ? `(gone ${shortTime(m.goneAt)})` : '',
    ];
    return parts.filter((p) => p !== '').join(' ');
  });
  if (lines.length) ctx.print(`${lines.join('\n')}\n`);
}

export interface QueueTopOptions {
  limit?: string;
  json?: boolean;
}

/** `qguard queue top [--window DUR] [--json]`: the screen an admin reads before denying. */
export async function queueTop(ctx: RunContext, opts: QueueTopOptions): Promise<void> {
  const limit = positiveInt(opts.limit, '--limit') ?? 50;
  const windowSeconds = ctx.config.windowSeconds;
  const db = await ctx.db();
  const top = await topSources(db, windowSeconds, limit);
  const verdicts = await rulesAndVerdicts(db, top.map((t) => t.ip), ctx.protectedNets());
  const out = top.map((t) => {
    const v = verdicts.get(t.ip);
    const d = v ? v.on(ctx.config.host) : { decision: 'default' as const, rule: null, protected: false };
    const exempt = v ? ctx.config.scanExempt.find((n) => netContains(n, v.net)) : undefined;
    return {
      ip: t.ip,
      count: t.count,
      decision: d.decision,
      sample: t.sample,
      rule: d.rule ? ruleJson(d.rule) : null,
      protected: d.protected,
      scanExempt: exempt ? formatNetShort(exempt) : null,
      overThreshold: t.count >= ctx.config.threshold,
      byKind: t.byKind,
      hosts: t.hosts,
      firstArrival: iso(t.firstArrival),
      lastArrival: iso(t.lastArrival),
    };
  });
  if (opts.json) {
    ctx.printJson(out);
    return;
  }
  if (out.length === 0) return;
  const head = `queued messages per source IP, last ${formatDuration(windowSeconds)}, all hosts (threshold ${ctx.config.threshold})`;
  const lines = out.map((t) => {
    const note = t.protected ? ' protected' : t.scanExempt ? ' exempt' : '';
    return `${String(t.count).padStart(6)}${t.overThreshold ? '*' : ' '} ${t.ip.padEnd(15)} ${(t.decision + note).padEnd(16)} ${forTerminal(t.sample ?? '')}`;
  });
  ctx.print(`${head}\n${lines.join('\n')}\n`);
}

export interface QueueShowOptions {
  json?: boolean;
  lines?: string;
}

/** How much of a message `queue show` reads: the header and the start of the body. */
const SHOW_BYTES = 128 * 1024;

function describeMessage(m: QueuedMessage): string[] {
  const o = m.origin;
  const out: string[] = [];
  out.push(`id: ${m.id}   state: ${m.state}   size: ${m.size}   arrival: ${shortTime(m.arrival)}   birth: ${shortTime(m.birth)}`);
  out.push(`files: ${m.files.join(' ')}`);
  out.push(`line 1: ${forTerminal(m.line1)}`);
  const via = o.chain.length ? ` (via ${o.chain.join(' > ')})` : '';
  out.push(`kind: ${o.kind}${via}`);
  if (o.smtp) {
    out.push(
      `source: ${forTerminal(o.sourceIpRecorded)}${o.sourceIp && o.sourceIp !== o.sourceIpRecorded ? ` (${o.sourceIp})` : ''}   host: ${forTerminal(o.smtp.remoteHost)}` +
        `${o.smtp.helo !== null ? `   helo: ${forTerminal(o.smtp.helo)}` : ''}${o.smtp.remoteInfo !== null ? `   info: ${forTerminal(o.smtp.remoteInfo)}` : ''}`,
    );
  } else out.push('source: none');
  out.push(`sender: <${forTerminal(m.sender ?? '?')}>${m.envelopeComplete ? '' : '   (envelope incomplete)'}`);
  for (const r of m.recipients) out.push(`  to: <${forTerminal(r.address)}> ${r.queue} ${r.done ? 'done' : 'pending'}`);
  for (const b of m.bounceReport ?? []) out.push(`  failed: <${forTerminal(b.address)}> ${forTerminal(b.reason.replace(/\n/g, ' '))}`);
  for (const p of m.problems) out.push(`problem: ${forTerminal(p)}`);
  return out;
}

/** `qguard queue show ID`: envelope, header and the start of the body, neutralised. */
export async function queueShow(ctx: RunContext, id: string, opts: QueueShowOptions): Promise<void> {
  if (!/^[1-9]\d{0,19}$/.test(id ?? '')) throw new UsageError(`not a queue id (the number qmail-qread shows): ${JSON.stringify(String(id).slice(0, 40))}`);
  const bodyLines = positiveInt(opts.lines, '--lines') ?? 40;
  const layout = openQueue(path.resolve(ctx.config.queueDir));
  const r = readMessage(layout, id);
  if (r.status === 'vanished') throw new PermanentError(`no message ${id} in ${layout.dir}`);
  if (r.status !== 'ok') throw new PermanentError(r.status === 'unreadable' ? r.error : `message ${id} keeps changing: try again`);
  const m = r.message;
  let head: Buffer;
  try {
    head = readHead(absPath(layout, 'mess', id), SHOW_BYTES).data;
  } catch (err) {
    throw new PermanentError(`no message ${id} in ${layout.dir}: ${(err as Error).message}`);
  }
  const ex = messageExcerpt(head, m.size, bodyLines);
  if (opts.json) {
    ctx.printJson({
      id: m.id,
      state: m.state,
      kind: m.origin.kind,
      forwarded: m.origin.forwarded,
      chain: m.origin.chain,
      sourceIp: m.origin.sourceIp,
      sourceRecorded: m.origin.sourceIpRecorded,
      helo: m.origin.smtp?.helo ?? null,
      remoteHost: m.origin.smtp?.remoteHost ?? null,
      remoteInfo: m.origin.smtp?.remoteInfo ?? null,
      sender: m.sender,
      recipients: m.recipients,
      bounceReport: m.bounceReport,
      files: m.files,
      size: m.size,
      arrival: iso(m.arrival),
      birth: iso(m.birth),
      line1: m.line1,
      subject: m.origin.subject,
      problems: m.problems,
      header: ex.header,
      body: ex.body,
      truncated: ex.truncated,
    });
    return;
  }
  const out = [
    ...describeMessage(m),
    '',
    ex.terminal.header,
    '',
    ex.terminal.body,
  ];
  if (ex.terminal.note) out.push(ex.terminal.note);
  ctx.print(`${out.join('\n')}\n`);
}

/** `qguard queue stats [--json]`: like qmail-qstat, with kinds and sources. */
export async function queueStats(ctx: RunContext, opts: { json?: boolean }): Promise<void> {
  const host = ctx.config.host;
  let files: Record<string, number> | null = null;
  let layoutInfo: { dir: string; split: number } | null = null;
  try {
    const layout = openQueue(path.resolve(ctx.config.queueDir));
    layoutInfo = { dir: layout.dir, split: layout.split };
    files = {};
    for (const d of QUEUE_DIRS) {
      let n = 0;
      if (layout.splitDirs[d]) for (let s = 0; s < layout.split; s++) n += listIds(path.join(layout.dir, d, String(s))).ids.length;
      else n = listIds(path.join(layout.dir, d)).ids.length;
      files[d] = n;
    }
  } catch (err) {
    ctx.log.warn(`queue not readable here, showing recorded counts only: ${(err as Error).message}`);
  }
  const db = await ctx.db();
  const st = await messageStats(db, host);
  const scan = await loadScanState(db, host);
  const report = {
    host,
    queue: layoutInfo?.dir ?? path.resolve(ctx.config.queueDir),
    split: layoutInfo?.split ?? null,
    messages: files ? files.mess : null,
    unprocessed: files ? files.todo : null,
    files,
    lastScan: scan?.scannedAt ? iso(scan.scannedAt) : null,
    recorded: st.total,
    byKind: st.byKind,
    byState: st.byState,
    sources: st.sources,
    noSource: st.noSource,
  };
  if (opts.json) {
    ctx.printJson(report);
    return;
  }
  const fmt = (rec: Record<string, number>) =>
    Object.entries(rec)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(', ') || 'none';
  const lines: string[] = [];
  if (files) {
    lines.push(`messages in queue: ${files.mess}`);
    lines.push(`messages in queue but not yet preprocessed: ${files.todo}`);
    lines.push(`files: ${QUEUE_DIRS.map((d) => `${d} ${files![d]}`).join(', ')}`);
  }
  lines.push(
    `recorded by scan-queue on ${forTerminal(host)}: ${st.total}${report.lastScan ? ` (last scan ${shortTime(scan!.scannedAt)})` : ' (never scanned)'}`,
  );
  lines.push(`by kind: ${fmt(st.byKind)}`);
  lines.push(`by state: ${fmt(st.byState)}`);
  lines.push(`sources: ${st.sources} IP addresses; ${st.noSource} messages without a source IP`);
  ctx.print(`${lines.join('\n')}\n`);
}
