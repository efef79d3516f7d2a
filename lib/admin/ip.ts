// `qguard ip deny|allow|trust|rm|ls|why`: the admin's hands on the rules. Arguments are
// checked before the database is touched (bad input: exit 2; a guard refusing: exit 100),
// so nothing is written unless all of it is right.

import type { RunContext } from '../context.js';
import { PermanentError, UsageError } from '../errors.js';
import { formatNet, formatNetShort, isHost, parseIp } from '../net/address.js';
import { type Action, comparePrecedence, decide } from '../policy/decide.js';
import { ruleRefusal, sourceRefusal } from '../policy/guards.js';
import {
  type Rule,
  allowsInside,
  deleteRules,
  listRules,
  ruleJson,
  rulesContaining,
  upsertRule,
} from '../db/rules.js';
import { durationArgument, freeText, netArgument } from './args.js';
import { connectionsOf } from '../db/connections.js';
import { formatDuration } from '../duration.js';

/** A rule as `ip ls --json` prints it and the page shows it. */
export type RuleView = ReturnType<typeof ruleJson>;

export interface IpAddOptions {
  for?: string;
  reason?: string;
  source?: string;
  user?: string;
}

/** Scope given with --host on the command line (not QGUARD_HOST from env/file): one mail server. */
function hostScope(ctx: RunContext): string | null {
  return ctx.fromCli('host') ? ctx.config.host : null;
}

/** `qguard ip deny|allow|trust ADDR`. */
export async function ipAdd(ctx: RunContext, action: Action, addr: string, opts: IpAddOptions): Promise<RuleView> {
  const net = netArgument(addr);
  const ttlSeconds = durationArgument(opts.for, '--for');
  const source = opts.source ?? 'manual';
  const bad = sourceRefusal(source);
  if (bad) throw new UsageError(`--source: ${bad}`);
  const reason = freeText(opts.reason, '--reason', 1000);
  const user = freeText(opts.user, '--user', 200);
  const refusal = ruleRefusal(net, action, { protectedNets: ctx.protectedNets(), minPrefix: ctx.config.minPrefix });
  if (refusal) throw new PermanentError(refusal);
  if (source === 'login') {
    if (action !== 'relay') throw new UsageError('--source login is for `qguard ip allow` only');
    if (!isHost(net)) throw new UsageError(`--source login takes a single address, not ${formatNet(net)}`);
    if (!user) throw new UsageError('--source login needs --user NAME');
    if (ttlSeconds === null) throw new UsageError('--source login needs --for DURATION');
  }
  const scope = hostScope(ctx);
  const db = await ctx.db();
  let rule: Rule;
  if (source === 'login' && scope === null) {
    // The intranet's door, so both paths share one set of rules (single address, TTL cap, extend).
    await db.query('SELECT qguard.allow_login($1::inet, $2, make_interval(secs => $3))', [
      formatNetShort(net),
      user,
      ttlSeconds,
    ]);
    rule = (await listRules(db, { net, source: 'login' }))[0];
  } else {
    const inside = action === 'deny' ? await allowsInside(db, net) : [];
    ({ rule } = await upsertRule(db, {
      net,
      action,
      source,
      reason,
      who: user ?? ctx.user,
      ttlSeconds,
      host: scope,
    }));
    if (inside.length > 0) {
      const shown = inside.slice(0, 5).map((r) => `${formatNetShort(r.net)} ${r.action}`).join(', ');
      ctx.log.warn(
        `${formatNet(net)} contains ${inside.length} relay/trust rule(s) that stay allowed: ${shown}${inside.length > 5 ? ', ...' : ''}`,
      );
    }
  }
  ctx.log.info(`${rule.cidr} ${rule.action} (source ${rule.source}${rule.expiresAt ? `, until ${rule.expiresAt.toISOString()}` : ''})`);
  return ruleJson(rule);
}

/** `qguard ip rm ADDR [--source NAME]`: remove the rules for exactly that network. */
export async function ipRemove(ctx: RunContext, addr: string, opts: { source?: string }): Promise<RuleView[]> {
  const net = netArgument(addr);
  if (opts.source !== undefined) {
    const bad = sourceRefusal(opts.source);
    if (bad) throw new UsageError(`--source: ${bad}`);
  }
  const scope = hostScope(ctx);
  const db = await ctx.db();
  const removed = await deleteRules(db, { net, source: opts.source, host: scope ?? undefined });
  if (removed.length === 0) {
    const covering = (await rulesContaining(db, net, ctx.config.host)).filter(
      (r) => r.net.prefix < net.prefix,
    );
    const hint = covering.length
      ? `; it is inside ${covering.map((r) => `${r.cidr} ${r.action} (${r.source})`).join(', ')}: see \`qguard ip why\``
      : '';
    throw new PermanentError(`no rule for ${formatNet(net)}${opts.source ? ` of source ${opts.source}` : ''}${hint}`);
  }
  for (const r of removed) ctx.log.info(`removed ${r.cidr} ${r.action} (source ${r.source})`);
  return removed.map(ruleJson);
}

/** `qguard ip ls [--action A] [--source S] [--json]`. */
export async function ipList(ctx: RunContext, opts: { action?: string; source?: string }): Promise<RuleView[]> {
  let action: Action | undefined;
  if (opts.action !== undefined) {
    if (!['relay', 'trust', 'deny', 'allow'].includes(opts.action)) {
      throw new UsageError(`--action: must be relay (allow), trust or deny: ${JSON.stringify(opts.action.slice(0, 40))}`);
    }
    action = opts.action === 'allow' ? 'relay' : (opts.action as Action);
  }
  if (opts.source !== undefined) {
    const bad = sourceRefusal(opts.source);
    if (bad) throw new UsageError(`--source: ${bad}`);
  }
  const db = await ctx.db();
  const rules = await listRules(db, {
    action,
    source: opts.source,
    host: ctx.fromCli('host') ? ctx.config.host : undefined,
  });
  return rules.map(ruleJson);
}

/** What `qguard ip why` reports. */
export interface WhyReport {
  ip: string;
  host: string;
  decision: Action | 'default';
  protected: boolean;
  rule: RuleView | null;
  others: RuleView[];
  meaning: string;
  /**
   * Within the window, every mail server: SMTP connections counted from tcpserver's log
   * (QGUARD_SMTPD_LOG) and messages accepted (QGUARD_ACCEPTED_SPOOL); null when none were counted.
   */
  connections: { window: string; connections: number; denied: number; accepted: number; firstSeen: string | null; lastSeen: string | null; hosts: number } | null;
}

const MEANING: Record<Action | 'default', string> = {
  relay: 'accepted, may relay (RELAYCLIENT set)',
  trust: 'accepted, never auto-denied, no relay',
  deny: 'refused (tcp.smtp deny and the firewall set)',
  default: 'accepted, may send only to rcpthosts',
};

/** The decision for one address with the winning rule and every other rule that contains it. */
export async function ipWhy(ctx: RunContext, ipText: string): Promise<WhyReport> {
  if (ipText === undefined || ipText.trim() === '') throw new UsageError('empty address');
  const parsed = parseIp(ipText);
  if (!parsed.ok) throw new UsageError(parsed.error);
  const ip = parsed.net;
  const db = await ctx.db();
  const candidates = await rulesContaining(db, ip, ctx.config.host);
  const result = decide(ip, candidates, ctx.protectedNets());
  const others = candidates.filter((r) => r !== result.rule).sort(comparePrecedence);
  const report: WhyReport = {
    ip: formatNetShort(ip),
    host: ctx.config.host,
    decision: result.decision,
    protected: result.protected,
    rule: result.rule ? ruleJson(result.rule) : null,
    others: others.map(ruleJson),
    meaning: MEANING[result.decision],
    connections: null,
  };
  const seen = await connectionsOf(db, formatNetShort(ip), ctx.config.windowSeconds);
  if (seen.connections > 0 || seen.accepted > 0) {
    report.connections = {
      window: formatDuration(ctx.config.windowSeconds),
      connections: seen.connections,
      denied: seen.denied,
      accepted: seen.accepted,
      firstSeen: seen.firstSeen?.toISOString() ?? null,
      lastSeen: seen.lastSeen?.toISOString() ?? null,
      hosts: seen.hosts,
    };
  }
  return report;
}
