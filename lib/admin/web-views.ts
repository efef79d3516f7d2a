// The review page's own views, built from the same admin functions as the CLI (status, queue
// top/ls, ip why, quarantine ls) plus what only the page shows: the overview's extras, an
// IP's tcprules key and firewall state, a message read from its readable copy, and the
// requests the page files for privileged runs (purge an IP's queued messages, restore).

import type { RunContext } from '../context.js';
import { PermanentError, UsageError } from '../errors.js';
import { formatNet } from '../net/address.js';
import { listMessages } from '../db/messages.js';
import { getRows } from '../db/quarantine.js';
import { jobStates, ruleCounts } from '../db/jobs.js';
import { copyOfMessage, copyOfQuarantined, fileRequest, listRequests, pendingRequestCounts } from '../db/web.js';
import { readAppliedFirewall } from '../io/firewall/applied.js';
import { cdbAnswer } from '../io/ucspi-tcp.js';
import { type MailDisplay, displayMail } from '../qmail/mail-display.js';
import { iso } from '../time.js';
import { status } from './status.js';
import { ipWhy } from './ip.js';
import { messageJson, queueList } from './queue.js';
import { quarantineJson } from './quarantine.js';
import { netArgument } from './args.js';

/** The overview: `qguard status` for every host, with the page's extras. */
export async function overview(ctx: RunContext) {
  const report = await status(ctx, { all: true });
  const db = await ctx.db();
  const auto = await db.query<{ n: string }>(
    `SELECT count(*) AS n FROM qguard.live_rules WHERE source = 'scan' AND created_at > now() - interval '24 hours'`,
  );
  return {
    status: report,
    autoDenied24h: Number(auto.rows[0]?.n ?? 0),
    requests: await pendingRequestCounts(db),
    recentRequests: (await listRequests(db, { limit: 20 })).map(requestJson),
  };
}

export type OverviewView = Awaited<ReturnType<typeof overview>>;

export function requestJson(r: Awaited<ReturnType<typeof listRequests>>[number]) {
  return {
    id: r.id,
    kind: r.kind,
    host: r.host,
    network: r.network,
    quarantineId: r.quarantineId,
    requestedBy: r.requestedBy,
    requestedAt: iso(r.requestedAt)!,
    state: r.state,
    finishedAt: iso(r.finishedAt),
    doneCount: r.doneCount,
    error: r.error,
  };
}

/** One address: `ip why`, the tcprules key it meets, the firewall, its queued messages. */
export async function ipPage(ctx: RunContext, ipText: string) {
  const why = await ipWhy(ctx, ipText);
  // tcprulescheck runs while the database lists the messages.
  const answer = cdbAnswer(ctx.config.tcprulescheck, ctx.config.rulesCdb, why.ip);
  const messages = await queueList(ctx, { ip: why.ip, allHosts: true, limit: '5000' }).catch(async (err) => {
    await answer.catch(() => {});
    throw err;
  });
  const tcprules = await answer;
  const applied = readAppliedFirewallSafe(ctx);
  const db = await ctx.db();
  const requests = (await listRequests(db, { limit: 200 })).filter((r) => r.network !== null && netHas(r.network, why.ip)).map(requestJson);
  return {
    why,
    messages,
    tcprules,
    firewall: {
      backend: ctx.config.firewall,
      lastApply: applied?.appliedAt ?? null,
      blocked: ctx.config.firewall !== 'none' && why.decision === 'deny',
    },
    requests,
    hosts: [...new Set([ctx.config.host, ...messages.map((m) => m.host)])].sort(),
  };
}

export type IpPageView = Awaited<ReturnType<typeof ipPage>>;

function readAppliedFirewallSafe(ctx: RunContext) {
  try {
    return readAppliedFirewall(ctx.config);
  } catch {
    return null;
  }
}

function netHas(cidr: string, ip: string): boolean {
  const n = netArgument(cidr);
  const a = netArgument(ip);
  if (n.family !== a.family) return false;
  const bits = n.family === 4 ? 32 : 128;
  const shift = BigInt(bits - n.prefix);
  return a.addr >> shift === n.addr >> shift;
}

function recordIdArgument(text: string): number {
  if (!/^[1-9]\d{0,15}$/.test(text)) throw new UsageError(`not a message record id: ${JSON.stringify(text.slice(0, 40))}`);
  return Number(text);
}

/** A recorded message and, when scan-queue kept one, its copy made safe to show. */
export async function messagePage(ctx: RunContext, idText: string) {
  const recordId = recordIdArgument(idText);
  const db = await ctx.db();
  const [row] = await listMessages(db, { host: null, recordId, includeGone: true });
  if (!row) throw new PermanentError(`no recorded message ${recordId}`);
  const copy = await copyOfMessage(db, recordId);
  const mail: MailDisplay | null = copy ? await displayMail(copy.data, { truncated: copy.truncated, size: copy.size }) : null;
  return { message: messageJson(row), mail, copyBytes: copy?.data.length ?? 0 };
}

export type MessagePageView = Awaited<ReturnType<typeof messagePage>>;

/** A quarantine entry and its copy, when the page has one. */
export async function quarantinePage(ctx: RunContext, idText: string) {
  const id = recordIdArgument(idText);
  const db = await ctx.db();
  const [row] = await getRows(db, [id]);
  if (!row) throw new PermanentError(`no quarantine entry ${id}`);
  const copy = await copyOfQuarantined(db, id);
  const mail = copy ? await displayMail(copy.data, { truncated: copy.truncated, size: copy.size }) : null;
  return { entry: quarantineJson(row), mail };
}

export type QuarantinePageView = Awaited<ReturnType<typeof quarantinePage>>;

/** The raw copy of a message (for the HTML part's own route). */
export async function messageMail(ctx: RunContext, kind: 'message' | 'quarantine', idText: string): Promise<MailDisplay | null> {
  const id = recordIdArgument(idText);
  const db = await ctx.db();
  const copy = kind === 'message' ? await copyOfMessage(db, id) : await copyOfQuarantined(db, id);
  return copy ? displayMail(copy.data, { truncated: copy.truncated, size: copy.size }) : null;
}

/**
 * Ask the privileged run on `host` to purge the queued messages of an address or network
 * (`purge-queue --requests`, with the guards of `purge-queue --ip`).
 */
export async function requestPurge(ctx: RunContext, netText: string, host: string) {
  const net = netArgument(netText);
  if (!/^[^\s\0]{1,255}$/.test(host)) throw new UsageError('host: not a host name');
  const db = await ctx.db();
  return requestJson(await fileRequest(db, { kind: 'purge', host, network: formatNet(net), by: ctx.user }));
}

/** Ask the privileged run on the entry's host to restore a quarantined message. */
export async function requestRestore(ctx: RunContext, idText: string) {
  const id = recordIdArgument(idText);
  const db = await ctx.db();
  const [row] = await getRows(db, [id]);
  if (!row) throw new PermanentError(`no quarantine entry ${id}`);
  if (row.state === 'restored') throw new PermanentError(`quarantine ${id} was restored already`);
  return requestJson(await fileRequest(db, { kind: 'restore', host: row.host, quarantineId: id, by: ctx.user }));
}

/** The spam-list sources: their rules and each host's last import. */
export async function spamSources(ctx: RunContext) {
  const db = await ctx.db();
  const counts = (await ruleCounts(db)).filter((r) => r.source.startsWith('list:'));
  const imports = (await jobStates(db)).filter((j) => j.job === 'import-spamlist');
  return {
    sources: counts.map((c) => ({ source: c.source, action: c.action, count: c.count })),
    imports: imports.map((j) => ({ host: j.host, lastOkAt: iso(j.lastOkAt), lastRunOk: j.lastRunOk, lastError: j.lastError })),
  };
}

export type SpamSourcesView = Awaited<ReturnType<typeof spamSources>>;
