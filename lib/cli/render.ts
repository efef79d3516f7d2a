// The text form of the admin commands' views (lib/admin): what `qguard ...` prints without
// --json. Every field that came from outside (a message, a rule's reason, a user name, a host
// name) goes through forTerminal here; the output sink escapes again whatever slips through.
// Pure: a view in, a string out ('' prints nothing).

import { formatDuration } from '../duration.js';
import { ago } from '../policy/health.js';
import { forTerminal } from '../text.js';
import { shortTime } from '../time.js';
import { QUEUE_DIRS } from '../qmail/queued-message.js';
import type { MessageView, QueueShowView, QueueStatsView, QueueTopView } from '../admin/queue.js';
import type { RuleView, WhyReport } from '../admin/ip.js';
import type { QuarantineShowView, QuarantineView } from '../admin/quarantine.js';
import type { StatusReport } from '../admin/status.js';
import type { DomainView } from '../admin/domain.js';
import type { FirewallStatusView } from '../admin/firewall.js';
import type { DbStatusView } from '../admin/db.js';

const lines = (out: string[]) => (out.length ? `${out.join('\n')}\n` : '');

// ---- queue

export function renderQueueList(rows: MessageView[], opts: { allHosts?: boolean }): string {
  return lines(
    rows.map((m) => {
      const kindText = `${m.kind}${m.forwarded ? '+fwd' : ''}`;
      const rcpt = `${m.recipientCount} rcpt${m.pendingCount !== m.recipientCount ? ` (${m.pendingCount} pending)` : ''}`;
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
    }),
  );
}

export function renderQueueTop(v: QueueTopView): string {
  if (v.sources.length === 0) return '';
  // The accepted and connection columns only once the spool or the log has counted something.
  const seen = v.sources.some((t) => t.accepted > 0 || t.connections > 0);
  const counted = v.count === 'queued' ? '' : `, counting ${v.count === 'both' ? 'queued or accepted' : 'accepted'} messages`;
  const head = `queued messages per source IP, last ${formatDuration(v.windowSeconds)}, all hosts (threshold ${v.threshold}${counted})`;
  const rows = v.sources.map((t) => {
    const note = t.protected ? ' protected' : t.scanExempt ? ' exempt' : '';
    const more = seen ? ` ${String(t.accepted).padStart(8)} ${`${t.connections}/${t.deniedConnections}`.padStart(11)}` : '';
    return `${String(t.count).padStart(6)}${t.overThreshold ? '*' : ' '}${more} ${t.ip.padEnd(15)} ${(t.decision + note).padEnd(16)} ${forTerminal(t.sample ?? '')}`;
  });
  return lines([head, ...(seen ? [" queued accepted conn/denied"] : []), ...rows]);
}

export function renderQueueShow(v: QueueShowView): string {
  const m = v.message;
  const out: string[] = [];
  out.push(`id: ${m.id}   state: ${m.state}   size: ${m.size}   arrival: ${shortTime(m.arrival)}   birth: ${shortTime(m.birth)}`);
  out.push(`files: ${m.files.join(' ')}`);
  out.push(`line 1: ${forTerminal(m.line1)}`);
  const via = m.chain.length ? ` (via ${m.chain.join(' > ')})` : '';
  out.push(`kind: ${m.kind}${via}`);
  if (m.smtp) {
    out.push(
      `source: ${forTerminal(m.sourceRecorded)}${m.sourceIp && m.sourceIp !== m.sourceRecorded ? ` (${m.sourceIp})` : ''}   host: ${forTerminal(m.remoteHost)}` +
        `${m.helo !== null ? `   helo: ${forTerminal(m.helo)}` : ''}${m.remoteInfo !== null ? `   info: ${forTerminal(m.remoteInfo)}` : ''}`,
    );
  } else out.push('source: none');
  out.push(`sender: <${forTerminal(m.sender ?? '?')}>${m.envelopeComplete ? '' : '   (envelope incomplete)'}`);
  for (const r of m.recipients) out.push(`  to: <${forTerminal(r.address)}> ${r.queue} ${r.done ? 'done' : 'pending'}`);
  for (const b of m.bounceReport ?? []) out.push(`  failed: <${forTerminal(b.address)}> ${forTerminal(b.reason.replace(/\n/g, ' '))}`);
  for (const p of m.problems) out.push(`problem: ${forTerminal(p)}`);
  out.push('', v.excerpt.terminal.header, '', v.excerpt.terminal.body);
  if (v.excerpt.terminal.note) out.push(v.excerpt.terminal.note);
  return lines(out);
}

export function renderQueueStats(r: QueueStatsView): string {
  const fmt = (rec: Record<string, number>) =>
    Object.entries(rec)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(', ') || 'none';
  const out: string[] = [];
  const files = r.files;
  if (files) {
    out.push(`messages in queue: ${files.mess}`);
    out.push(`messages in queue but not yet preprocessed: ${files.todo}`);
    out.push(`files: ${QUEUE_DIRS.map((d) => `${d} ${files[d]}`).join(', ')}`);
  }
  out.push(`recorded by scan-queue on ${forTerminal(r.host)}: ${r.recorded}${r.lastScan ? ` (last scan ${shortTime(r.lastScan)})` : ' (never scanned)'}`);
  out.push(`by kind: ${fmt(r.byKind)}`);
  out.push(`by state: ${fmt(r.byState)}`);
  out.push(`sources: ${r.sources} IP addresses; ${r.noSource} messages without a source IP`);
  return lines(out);
}

// ---- ip

/** One rule in a sentence (`ip why`). */
export function describeRule(r: RuleView): string {
  const parts = [`${r.cidr} ${r.action}`, `source ${r.source}`];
  if (r.who) parts.push(`by ${forTerminal(r.who)}`);
  if (r.host) parts.push(`host ${forTerminal(r.host)}`);
  parts.push(r.expiresAt ? `expires ${shortTime(r.expiresAt, 'never')}` : 'no expiry');
  if (r.reason) parts.push(`reason: ${forTerminal(r.reason)}`);
  return parts.join(', ');
}

export function renderRules(rules: RuleView[]): string {
  return lines(
    rules.map(
      (r) =>
        `${r.cidr.padEnd(20)} ${r.action.padEnd(5)} ${r.source.padEnd(16)} ${shortTime(r.expiresAt, 'never').padEnd(20)} ${r.host ? forTerminal(r.host) : '*'}${
          r.who ? ` ${forTerminal(r.who)}` : ''
        }${r.reason ? ` -- ${forTerminal(r.reason)}` : ''}`,
    ),
  );
}

export function renderWhy(report: WhyReport): string {
  const out = [`${report.ip}: ${report.decision} - ${report.meaning}${report.protected ? ' (protected: never denied)' : ''}`];
  if (report.rule) out.push(`  rule: ${describeRule(report.rule)}`);
  for (const r of report.others) {
    const ignored = report.protected && r.action === 'deny' ? ' (ignored: protected)' : '';
    out.push(`  also: ${describeRule(r)}${ignored}`);
  }
  const c = report.connections;
  const servers = (n: number) => `${n} mail server${n === 1 ? '' : 's'}`;
  if (c && c.accepted > 0) out.push(`  accepted messages in ${c.window}: ${c.accepted} on ${servers(c.hosts)} (QMAILQUEUE spool)`);
  if (c && c.connections > 0) {
    out.push(
      `  connections in ${c.window}: ${c.connections} (${c.denied} denied) on ${servers(c.hosts)}, ` +
        `first ${c.firstSeen ? shortTime(c.firstSeen) : '-'}, last ${c.lastSeen ? shortTime(c.lastSeen) : '-'} (tcpserver's log)`,
    );
  }
  return lines(out);
}

// ---- quarantine

export function renderQuarantineList(rows: QuarantineView[], opts: { allHosts?: boolean }): string {
  return lines(
    rows.map((q) =>
      [
        q.id.padStart(6),
        shortTime(q.purgedAt),
        q.queueId.padStart(9),
        (q.sourceIp ?? '-').padEnd(15),
        `<${forTerminal(q.sender)}>`,
        q.state === 'removed' ? '' : `[${q.state}]`,
        `-- ${forTerminal(q.reason)}`,
        opts.allHosts ? `@${forTerminal(q.host)}` : '',
      ]
        .filter((p) => p !== '')
        .join(' '),
    ),
  );
}

export function renderQuarantineShow(v: QuarantineShowView): string {
  const q = v.entry;
  const out = [
    `quarantine ${q.id}   state: ${q.state}   purged: ${shortTime(q.purgedAt)}${q.who ? ` by ${forTerminal(q.who)}` : ''}   host: ${forTerminal(q.host)}`,
    `queue id: ${q.queueId}   was: ${q.queueState}   size: ${q.size}   arrival: ${shortTime(q.arrival)}`,
    `line 1: ${forTerminal(q.line1)}`,
    `kind: ${q.kind}${q.forwarded ? ' (forwarded copy)' : ''}   source: ${q.sourceIp ?? 'none'}`,
    `reason: ${forTerminal(q.reason)} (${q.policy})`,
    `sender: <${forTerminal(q.sender)}>`,
    ...q.pending.map((r) => `  to: <${forTerminal(r)}> pending`),
    ...(q.pendingCount > q.pending.length ? [`  ... ${q.pendingCount} pending recipients in all`] : []),
    ...(q.restoredAt ? [`restored: ${shortTime(q.restoredAt)} by ${forTerminal(q.restoredBy)}`] : []),
  ];
  const ex = v.excerpt;
  if (!ex) out.push(`message: ${forTerminal(v.missing)}`);
  else {
    out.push('', ex.terminal.header, '', ex.terminal.body);
    if (ex.terminal.note) out.push(ex.terminal.note);
  }
  return lines(out);
}

// ---- status, domains, firewall, database

function since(iso: string | null, now: Date): string {
  return iso ? `${ago((now.getTime() - Date.parse(iso)) / 1000)} ago` : 'never';
}

/** `qguard status`: a monitoring plugin's first line, then the details. */
export function renderStatus(r: StatusReport, now: Date): string {
  const headline = r.problems.length ? r.problems.map((p) => p.message).join('; ') : `all jobs on ${r.hosts.join(', ')} are current`;
  const out = [`QGUARD ${r.level} - ${forTerminal(headline)}`];
  if (r.jobs.length) {
    out.push('jobs:');
    for (const j of r.jobs) {
      out.push(
        `  ${forTerminal(j.host)} ${j.job.padEnd(15)} last ok ${since(j.lastOkAt, now)}, last failure ${since(j.lastFailAt, now)}${
          j.lastRunOk ? '' : ' (last run failed)'
        }, ${j.runs} runs`,
      );
    }
  }
  const rules = r.rules;
  if (rules) {
    const part = (action: string) => {
      const src = rules.bySource.filter((s) => s.action === action).map((s) => `${s.source} ${s.count}`);
      return `${action} ${rules.byAction[action]}${src.length ? ` (${src.join(', ')})` : ''}`;
    };
    out.push(`rules: ${['deny', 'relay', 'trust'].map(part).join('; ')}`);
  }
  for (const q of r.queue) {
    out.push(
      `queue: ${forTerminal(q.host)} ${q.messages} messages${q.oldestAgeSeconds !== null ? `, oldest ${ago(q.oldestAgeSeconds)}` : ''}, scanned ${since(q.scannedAt, now)}`,
    );
  }
  return lines(out);
}

export function renderDomains(domains: DomainView[]): string {
  return domains.map((d) => `${d.name}${d.host ? ` (${forTerminal(d.host)} only)` : ''}\n`).join('');
}

export function renderFirewallStatus(v: FirewallStatusView): string {
  const out: string[] = [];
  out.push(`backend:     ${v.backend}${v.description ? ` (${v.description})` : ''}`);
  out.push(`blocks:      tcp ports ${v.ports.join(',')} for denied addresses, ${v.action}`);
  const a = v.lastApply;
  out.push(
    a
      ? `last apply:  ${a.appliedAt} by ${a.backend}: ${a.v4} IPv4 + ${a.v6} IPv6 elements, ports ${a.ports.join(',')} ${a.action}`
      : 'last apply:  never (or removed)',
  );
  const k = v.kernel;
  if (k) {
    const counts = k.v4 === null && k.v6 === null ? '' : `: ${k.v4 ?? 0} IPv4 + ${k.v6 ?? 0} IPv6 elements`;
    if (k.inPlace) out.push(`kernel:      in place${counts}`);
    else if (k.present) out.push(`kernel:      NOT as applied (${k.problem})${counts}`);
    else out.push(`kernel:      missing (${k.problem})`);
    if (v.backend === 'none' && k.present) {
      out.push(`note:        the backend is none but the ${k.backend} objects are still there: run qguard firewall remove`);
    } else if (!k.inPlace && v.backend !== 'none') {
      out.push('note:        the next sync-rules run puts it back');
    }
  } else if (v.kernelError) {
    out.push(`kernel:      unable to look: ${v.kernelError}`);
  }
  return lines(out);
}

export function renderDbStatus(s: DbStatusView): string {
  return `database: ${s.database} ${s.location}\nschema:   ${s.schemaVersion === null ? 'missing' : `version ${s.schemaVersion}`}, this qguard ${s.latest}${
    s.pending.length ? ` (pending: ${s.pending.join(', ')}; run \`qguard db migrate\`)` : ' (up to date)'
  }\n`;
}
