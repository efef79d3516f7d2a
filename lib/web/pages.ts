// The review page's HTML: one function per page, from the views of lib/admin (the same data
// the CLI prints). Server-rendered; every page works without JavaScript; the only style is
// the package's own /static/qguard.css. Everything from outside goes through `visible()` or
// the `html` tag's escaping (lib/web/html.ts); a message's HTML part is never put into these
// pages — it is shown in a sandboxed iframe from its own route (see server.ts).

import { formatDuration } from '../duration.js';
import { shortTime } from '../time.js';
import { type Html, html, urlPart, visible } from './html.js';
import type { QueueTopView, MessageView } from '../admin/queue.js';
import type { RuleView } from '../admin/ip.js';
import type { QuarantineView } from '../admin/quarantine.js';
import type { IpPageView, MessagePageView, OverviewView, QuarantinePageView, SpamSourcesView } from '../admin/web-views.js';
import type { MailDisplay } from '../qmail/mail-display.js';

export interface PageContext {
  user: string | null;
  csrf: string | null;
  /** A notice after an action (fixed texts only), or an error message (escaped). */
  notice?: string | null;
  error?: string | null;
}

const when = (iso: string | null | undefined) => shortTime(iso ?? null);

function nav(p: PageContext): Html {
  if (!p.user) return html``;
  return html`<nav>
  <a href="/">Overview</a> <a href="/queue">Queue by IP</a> <a href="/rules">Rules</a> <a href="/quarantine">Quarantine</a>
  <form method="post" action="/logout" class="inline">${csrfField(p)}<button type="submit">Log out ${p.user}</button></form>
</nav>`;
}

export function csrfField(p: PageContext): Html {
  return p.csrf ? html`<input type="hidden" name="_csrf" value="${p.csrf}">` : html``;
}

export function layout(title: string, p: PageContext, body: Html): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>${title} - qguard</title>
<link rel="stylesheet" href="/static/qguard.css">
</head>
<body>
<header><span class="brand">qguard</span> ${nav(p)}</header>
<main>
${p.notice ? html`<p class="notice" role="status">${p.notice}</p>` : ''}
${p.error ? html`<p class="error" role="alert">${visible(p.error)}</p>` : ''}
<h1>${title}</h1>
${body}
</main>
</body>
</html>
`.value;
}

export function loginPage(p: PageContext & { next: string; loginToken: string }): string {
  return layout(
    'Log in',
    p,
    html`<form method="post" action="/login" class="login">
  <input type="hidden" name="_login" value="${p.loginToken}">
  <input type="hidden" name="next" value="${p.next}">
  <label>Operator <input name="user" autocomplete="username" required maxlength="64"></label>
  <label>Password <input name="password" type="password" autocomplete="current-password" required maxlength="1024"></label>
  <button type="submit">Log in</button>
</form>`,
  );
}

export function errorPage(status: number, message: string, p: PageContext): string {
  const title = status === 503 ? 'Database unavailable' : status === 403 ? 'Refused' : status === 404 ? 'Not found' : status >= 500 ? 'Internal error' : 'Not done';
  return layout(title, { ...p, error: null }, html`<p class="error" role="alert">${visible(message)}</p><p>Nothing was changed.</p>`);
}

// ---- overview

export function overviewPage(v: OverviewView, p: PageContext): string {
  const s = v.status;
  return layout(
    'Overview',
    p,
    html`<p class="level level-${s.level}">${s.level}: ${
      s.problems.length ? s.problems.map((x) => x.message).join('; ') : `all jobs on ${s.hosts.join(', ')} are current`
    }</p>
<h2>Queues</h2>
<table><thead><tr><th>host</th><th>queued (recorded)</th><th>oldest</th><th>last scan</th></tr></thead><tbody>
${s.queue.map((q) => html`<tr><td>${visible(q.host)}</td><td class="num">${q.messages}</td><td>${q.oldestAgeSeconds !== null ? formatDuration(q.oldestAgeSeconds) : '-'}</td><td>${when(q.scannedAt)}</td></tr>`)}
</tbody></table>
<h2>Jobs</h2>
<table><thead><tr><th>host</th><th>job</th><th>last run</th><th>verdict</th><th>last error</th></tr></thead><tbody>
${s.jobs.map(
  (j) =>
    html`<tr><td>${visible(j.host)}</td><td>${j.job}</td><td>${when(j.lastRunAt)}</td><td>${j.lastRunOk ? 'ok' : html`<span class="bad">failed</span>`}</td><td>${visible(j.lastError ?? '')}</td></tr>`,
)}
</tbody></table>
<h2>Rules</h2>
${
  s.rules
    ? html`<p>deny ${s.rules.byAction.deny ?? 0}, relay ${s.rules.byAction.relay ?? 0}, trust ${s.rules.byAction.trust ?? 0}; auto-denied by scan-queue in the last 24 hours: ${v.autoDenied24h}</p>
<table><thead><tr><th>action</th><th>source</th><th>rules</th></tr></thead><tbody>
${s.rules.bySource.map((r) => html`<tr><td>${r.action}</td><td>${visible(r.source)}</td><td class="num">${r.count}</td></tr>`)}
</tbody></table>`
    : html`<p>unavailable</p>`
}
<h2>Requests</h2>
<p>last 7 days: ${v.requests.pending} pending, ${v.requests.running} running, ${v.requests.done} done, ${v.requests.failed} failed</p>
${requestsTable(v.recentRequests)}`,
  );
}

function requestsTable(rows: OverviewView['recentRequests']): Html {
  if (rows.length === 0) return html`<p>none</p>`;
  return html`<table class="requests"><thead><tr><th>#</th><th>what</th><th>host</th><th>by</th><th>asked</th><th>state</th><th>done</th><th>error</th></tr></thead><tbody>
${rows.map(
  (r) =>
    html`<tr><td>${r.id}</td><td>${r.kind === 'purge' ? html`purge <a href="/ip/${urlPart(r.network ?? '')}">${r.network}</a>` : html`restore <a href="/quarantine/${r.quarantineId}">${r.quarantineId}</a>`}</td><td>${visible(r.host)}</td><td>${visible(r.requestedBy)}</td><td>${when(r.requestedAt)}</td><td class="state-${r.state}">${r.state}</td><td class="num">${r.doneCount ?? ''}</td><td>${visible(r.error ?? '')}</td></tr>`,
)}
</tbody></table>`;
}

// ---- queue by IP

export function queuePage(v: QueueTopView, p: PageContext, hosts: string[]): string {
  const f = v.filters;
  const link = (over: Record<string, string | number | null>) => {
    const q = { host: f.host, kind: f.kind, decision: f.decision, sort: f.sort, page: v.page, ...over };
    const parts = Object.entries(q)
      .filter(([, val]) => val !== null && val !== '' && val !== undefined)
      .map(([k, val]) => `${k}=${urlPart(String(val))}`);
    return `/queue${parts.length ? `?${parts.join('&')}` : ''}`;
  };
  const sortLink = (key: string, label: string) =>
    f.sort === key ? html`<th aria-sort="descending">${label}</th>` : html`<th><a href="${link({ sort: key, page: 1 })}">${label}</a></th>`;
  const opt = (val: string, cur: string | null, label = val) => html`<option value="${val}"${cur === val ? html` selected` : ''}>${label}</option>`;
  return layout(
    'Queue by IP',
    p,
    html`<p>Queued messages per source address in the last ${formatDuration(v.windowSeconds)}, all hosts; threshold ${v.threshold}.</p>
<form method="get" action="/queue" class="filters">
  <label>host <select name="host">${opt('', f.host, 'all')}${hosts.map((h) => opt(h, f.host))}</select></label>
  <label>kind <select name="kind">${opt('', f.kind, 'all')}${['network', 'local', 'bounce', 'double-bounce', 'unknown', 'forward'].map((k) => opt(k, f.kind))}</select></label>
  <label>decision <select name="decision">${opt('', f.decision, 'all')}${['default', 'deny', 'relay', 'trust'].map((k) => opt(k, f.decision))}</select></label>
  <input type="hidden" name="sort" value="${f.sort}">
  <button type="submit">Show</button>
</form>
<table class="queue"><thead><tr>${sortLink('ip', 'IP')}${sortLink('count', 'messages')}<th>hosts</th>${sortLink('first', 'first')}${sortLink('last', 'last')}<th>decision</th><th>why</th><th>sample subject</th></tr></thead><tbody>
${v.sources.map(
  (s) =>
    html`<tr class="${s.overThreshold ? 'over' : ''}"><td><a href="/ip/${urlPart(s.ip)}">${s.ip}</a></td><td class="num">${s.count}</td><td>${visible(s.hosts.join(' '))}</td><td>${when(s.firstArrival)}</td><td>${when(s.lastArrival)}</td><td class="decision-${s.decision}">${s.decision}${s.protected ? ' (protected)' : s.scanExempt ? ` (exempt ${s.scanExempt})` : ''}</td><td>${
      s.rule ? html`${s.rule.cidr} ${s.rule.source}${s.rule.reason ? html`: ${visible(s.rule.reason)}` : ''}` : ''
    }</td><td class="subject">${visible(s.sample ?? '')}</td></tr>`,
)}
</tbody></table>
<p class="pages">${v.page > 1 ? html`<a href="${link({ page: v.page - 1 })}" rel="prev">previous</a> ` : ''}page ${v.page}${v.more ? html` <a href="${link({ page: v.page + 1 })}" rel="next">next</a>` : ''}</p>`,
  );
}

// ---- one IP

function messagesTable(rows: MessageView[], showHost = true): Html {
  if (rows.length === 0) return html`<p>none queued</p>`;
  return html`<table class="messages"><thead><tr><th>queue id</th>${showHost ? html`<th>host</th>` : ''}<th>arrival</th><th>kind</th><th>sender</th><th>rcpt</th><th>subject</th></tr></thead><tbody>
${rows.map(
  (m) =>
    html`<tr><td>${m.hasCopy ? html`<a href="/message/${m.recordId}">${m.id}</a>` : m.id}</td>${showHost ? html`<td>${visible(m.host)}</td>` : ''}<td>${when(m.arrival)}</td><td>${m.kind}${m.forwarded ? '+fwd' : ''}</td><td>${visible(m.sender ?? '?')}</td><td class="num">${m.recipientCount}</td><td class="subject">${visible(m.subject ?? '')}</td></tr>`,
)}
</tbody></table>`;
}

function ruleLine(r: RuleView): Html {
  return html`${r.cidr} <b>${r.action}</b>, source ${visible(r.source)}${r.who ? html`, by ${visible(r.who)}` : ''}${r.host ? html`, host ${visible(r.host)}` : ''}, ${
    r.expiresAt ? `expires ${when(r.expiresAt)}` : 'no expiry'
  }${r.reason ? html`, reason: ${visible(r.reason)}` : ''}`;
}

export function ipPageHtml(v: IpPageView, p: PageContext): string {
  const w = v.why;
  const ip = urlPart(w.ip);
  const action = (path: string, label: string, extra: Html = html``) =>
    html`<form method="post" action="/ip/${ip}/${path}" class="action">${csrfField(p)}${extra}<button type="submit">${label}</button></form>`;
  const reasonFields = html`<label>reason <input name="reason" maxlength="1000"></label> <label>for <input name="for" placeholder="30d" size="6" maxlength="20"></label> <label>network <input name="net" value="${w.ip}" size="20" maxlength="50"></label> `;
  return layout(
    `IP ${w.ip}`,
    p,
    html`<p class="decision-${w.decision}"><b>${w.decision}</b>: ${w.meaning}${w.protected ? ' (protected: never denied)' : ''}</p>
<dl>
  <dt>rule</dt><dd>${w.rule ? ruleLine(w.rule) : 'none (the default)'}</dd>
  ${w.others.map((r) => html`<dt>also</dt><dd>${ruleLine(r)}${w.protected && r.action === 'deny' ? ' (ignored: protected)' : ''}</dd>`)}
  <dt>tcp.smtp</dt><dd>${v.tcprules ? html`key <code>${v.tcprules.key ?? '(default)'}</code>: ${visible(v.tcprules.lines.join('; '))}` : 'the compiled rules are not readable here'}</dd>
  ${w.connections ? html`<dt>seen in ${w.connections.window}</dt><dd>${w.connections.accepted} accepted messages, ${w.connections.connections} connections (${w.connections.denied} refused) on ${w.connections.hosts} mail server(s), last ${when(w.connections.lastSeen)}</dd>` : ''}
  <dt>firewall</dt><dd>${v.firewall.backend === 'none' ? 'not managed (QGUARD_FIREWALL=none)' : html`${v.firewall.backend}: ${v.firewall.blocked ? 'blocked' : 'not blocked'} (last apply ${when(v.firewall.lastApply)})`}</dd>
</dl>
<h2>Actions</h2>
<div class="actions">
${action('deny', 'Deny', reasonFields)}
${action('allow', 'Allow (relay)', reasonFields)}
${action('trust', 'Trust', reasonFields)}
${w.rule ? action('rm', `Remove rule ${w.rule.cidr}`, html`<input type="hidden" name="net" value="${w.rule.cidr}">`) : ''}
${action(
  'purge',
  'Purge its queued messages',
  html`<label>network <input name="net" value="${w.ip}" size="20" maxlength="50"></label> <label>host <select name="host">${v.hosts.map((h) => html`<option value="${h}">${h}</option>`)}</select></label> `,
)}
</div>
<p class="hint">Deny, allow, trust and remove take effect within a minute (sync-rules). A purge is carried out by the next <code>purge-queue --requests</code> on that host, with qmail-send stopped and every message quarantined first; relay, trust and protected mail is never purged.</p>
${v.requests.length ? html`<h2>Requests</h2>${requestsTable(v.requests)}` : ''}
<h2>Queued messages (${v.messages.length})</h2>
${messagesTable(v.messages)}`,
  );
}

// ---- one message

function mailBody(m: MailDisplay | null, htmlSrc: string, rawHref: string | null): Html {
  if (!m) return html`<p>No readable copy of this message (its sender may relay or is trusted, copies are off, or it was not yet copied).</p>`;
  return html`${m.notes.map((n) => html`<p class="note">${visible(n)}</p>`)}
<dl class="headers">
  <dt>From</dt><dd>${visible(m.from)}</dd>
  <dt>To</dt><dd>${visible(m.to)}</dd>
  <dt>Subject</dt><dd class="subject">${visible(m.subject)}</dd>
  <dt>Date</dt><dd>${visible(m.date)}</dd>
</dl>
<h2>Header</h2>
<pre class="header">${visible(m.rawHeader, { multiline: true })}</pre>
<h2>Text</h2>
${m.text !== null ? html`<pre class="text">${visible(m.text, { multiline: true })}</pre>` : html`<p>no text part</p>`}
${m.html !== null ? html`<h2>HTML part (cleaned; no scripts, links or remote content)</h2><iframe class="html-part" sandbox="" referrerpolicy="no-referrer" src="${htmlSrc}" title="HTML part"></iframe>` : ''}
<h2>Attachments</h2>
${
  m.attachments.length
    ? html`<table><thead><tr><th>name</th><th>type</th><th>size</th></tr></thead><tbody>${m.attachments.map(
        (a) => html`<tr><td>${visible(a.filename ?? '(no name)')}</td><td>${visible(a.contentType)}</td><td class="num">${a.size}</td></tr>`,
      )}</tbody></table><p class="hint">Attachments are listed, never opened.</p>`
    : html`<p>none</p>`
}
${rawHref ? html`<p><a href="${rawHref}">Raw source (as text)</a></p>` : ''}`;
}

export function messagePageHtml(v: MessagePageView, p: PageContext): string {
  const m = v.message;
  return layout(
    `Message ${m.id}`,
    p,
    html`<dl>
  <dt>host</dt><dd>${visible(m.host)}</dd>
  <dt>source</dt><dd>${m.sourceIp ? html`<a href="/ip/${urlPart(m.sourceIp)}">${m.sourceIp}</a>` : 'none'} ${visible(m.remoteHost ?? '')} ${m.helo ? html`(HELO ${visible(m.helo)})` : ''}</dd>
  <dt>kind</dt><dd>${m.kind}${m.forwarded ? ' (forwarded)' : ''}, ${m.state}${m.goneAt ? `, gone ${when(m.goneAt)}` : ''}</dd>
  <dt>arrival</dt><dd>${when(m.arrival)}</dd>
  <dt>sender</dt><dd>${visible(m.sender ?? '?')}</dd>
  <dt>recipients</dt><dd>${m.recipientCount} (${m.pendingCount} pending): ${visible(m.pending.slice(0, 50).join(', '))}${m.pending.length > 50 ? ' ...' : ''}</dd>
  <dt>size</dt><dd>${m.size} bytes</dd>
</dl>
${mailBody(v.mail, `/message/${m.recordId}/html`, v.mail ? `/message/${m.recordId}/raw` : null)}`,
  );
}

export function rawPage(title: string, raw: string, p: PageContext): string {
  return layout(title, p, html`<pre class="raw">${visible(raw, { multiline: true })}</pre>`);
}

/** The HTML part alone, for the sandboxed iframe (served with its own CSP). */
export function htmlPartDocument(sanitized: string): string {
  return `<!doctype html><html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer"></head><body>${sanitized}</body></html>`;
}

// ---- rules

export function rulesPage(rules: RuleView[], sources: SpamSourcesView, p: PageContext, q: { action: string; source: string; net: string }): string {
  return layout(
    'Rules',
    p,
    html`<form method="get" action="/rules" class="filters">
  <label>action <select name="action">${['', 'deny', 'relay', 'trust'].map((a) => html`<option value="${a}"${q.action === a ? html` selected` : ''}>${a || 'all'}</option>`)}</select></label>
  <label>source <input name="source" value="${q.source}" maxlength="100"></label>
  <label>containing <input name="net" value="${q.net}" maxlength="50" placeholder="203.0.113.0/24"></label>
  <button type="submit">Search</button>
</form>
<h2>Add a rule</h2>
<form method="post" action="/rules/add" class="action">${csrfField(p)}
  <label>network <input name="net" required maxlength="50"></label>
  <label>action <select name="action"><option value="deny">deny</option><option value="relay">allow (relay)</option><option value="trust">trust</option></select></label>
  <label>reason <input name="reason" maxlength="1000"></label>
  <label>for <input name="for" placeholder="30d" size="6" maxlength="20"></label>
  <button type="submit">Add</button>
</form>
<h2>${rules.length} rules${rules.length >= 1000 ? ' (first 1000)' : ''}</h2>
<table class="rules"><thead><tr><th>network</th><th>action</th><th>source</th><th>expires</th><th>host</th><th>who</th><th>reason</th><th></th></tr></thead><tbody>
${rules.slice(0, 1000).map(
  (r) =>
    html`<tr><td><a href="/ip/${urlPart(r.cidr.replace(/\/(32|128)$/, ''))}">${r.cidr}</a></td><td class="decision-${r.action}">${r.action}</td><td>${visible(r.source)}</td><td>${r.expiresAt ? when(r.expiresAt) : 'never'}</td><td>${r.host ? visible(r.host) : '*'}</td><td>${visible(r.who ?? '')}</td><td>${visible(r.reason ?? '')}</td><td><form method="post" action="/rules/rm" class="inline">${csrfField(p)}<input type="hidden" name="net" value="${r.cidr}"><input type="hidden" name="source" value="${r.source}"><button type="submit">remove</button></form></td></tr>`,
)}
</tbody></table>
<h2>Spam-list sources</h2>
<table><thead><tr><th>source</th><th>action</th><th>rules</th></tr></thead><tbody>
${sources.sources.map((s) => html`<tr><td>${visible(s.source)}</td><td>${s.action}</td><td class="num">${s.count}</td></tr>`)}
</tbody></table>
<p>Last imports: ${sources.imports.length ? sources.imports.map((i) => html`${visible(i.host)} ${when(i.lastOkAt)}${i.lastRunOk ? '' : html` (last run failed: ${visible(i.lastError ?? '')})`}; `) : 'none'}</p>`,
  );
}

// ---- quarantine

export function quarantineListPage(rows: QuarantineView[], p: PageContext): string {
  return layout(
    'Quarantine',
    p,
    html`<table class="quarantine"><thead><tr><th>#</th><th>purged</th><th>host</th><th>source</th><th>sender</th><th>subject</th><th>reason</th><th>state</th></tr></thead><tbody>
${rows.map(
  (q) =>
    html`<tr><td><a href="/quarantine/${q.id}">${q.id}</a></td><td>${when(q.purgedAt)}</td><td>${visible(q.host)}</td><td>${q.sourceIp ?? '-'}</td><td>${visible(q.sender)}</td><td class="subject">${visible(q.subject ?? '')}</td><td>${visible(q.reason)}</td><td>${q.state}</td></tr>`,
)}
</tbody></table>`,
  );
}

export function quarantinePageHtml(v: QuarantinePageView, p: PageContext): string {
  const q = v.entry;
  return layout(
    `Quarantine ${q.id}`,
    p,
    html`<dl>
  <dt>state</dt><dd>${q.state}${q.restoredAt ? html` (restored ${when(q.restoredAt)} by ${visible(q.restoredBy ?? '')})` : ''}</dd>
  <dt>purged</dt><dd>${when(q.purgedAt)} by ${visible(q.who ?? '')}: ${visible(q.reason)} (${q.policy})</dd>
  <dt>host</dt><dd>${visible(q.host)} (queue id ${q.queueId})</dd>
  <dt>source</dt><dd>${q.sourceIp ? html`<a href="/ip/${urlPart(q.sourceIp)}">${q.sourceIp}</a>` : 'none'}</dd>
  <dt>sender</dt><dd>${visible(q.sender)}</dd>
  <dt>recipients</dt><dd>${q.pendingCount} pending: ${visible(q.pending.slice(0, 50).join(', '))}</dd>
</dl>
${
  q.state === 'removed'
    ? html`<form method="post" action="/quarantine/${q.id}/restore" class="action">${csrfField(p)}<button type="submit">Restore (queue it again)</button></form>
<p class="hint">Carried out by the next <code>purge-queue --requests</code> on ${visible(q.host)}.</p>`
    : ''
}
${mailBody(v.mail, `/quarantine/${q.id}/html`, null)}`,
  );
}
