// `qguard domain add|rm|ls NAME`: the hosts sync-rules writes to control/rcpthosts.

import type { RunContext } from '../context.js';
import { PermanentError, UsageError } from '../errors.js';
import { parseDomain } from '../net/domain.js';
import { addDomain, listDomains, removeDomain } from '../db/domains.js';

function domainArgument(text: string | undefined): string {
  const r = parseDomain(text ?? '');
  if (!r.ok) throw new UsageError(r.error);
  return r.name;
}

/** `qguard domain add NAME...` */
export async function domainAdd(ctx: RunContext, names: string[]): Promise<void> {
  if (names.length === 0) throw new UsageError('domain add: name a domain');
  const valid = names.map(domainArgument);
  const scope = ctx.fromCli('host') ? ctx.config.host : null;
  const db = await ctx.db();
  await db.transaction(async (tx) => {
    for (const name of valid) {
      const added = await addDomain(tx, name, scope, ctx.user);
      ctx.log.info(added ? `added ${name}` : `${name} was already listed`);
    }
  });
}

/** `qguard domain rm NAME...` */
export async function domainRemove(ctx: RunContext, names: string[]): Promise<void> {
  if (names.length === 0) throw new UsageError('domain rm: name a domain');
  const valid = names.map(domainArgument);
  const db = await ctx.db();
  await db.transaction(async (tx) => {
    for (const name of valid) {
      const n = await removeDomain(tx, name, ctx.fromCli('host') ? ctx.config.host : undefined);
      if (n === 0) throw new PermanentError(`domain ${name} is not listed`);
      ctx.log.info(`removed ${name}`);
    }
  });
}

/** `qguard domain ls`: the domains, as `--json` prints them. */
export async function domainList(ctx: RunContext) {
  const db = await ctx.db();
  const domains = await listDomains(db, ctx.fromCli('host') ? ctx.config.host : undefined);
  return domains.map((d) => ({ name: d.name, host: d.host, who: d.who, createdAt: d.createdAt.toISOString() }));
}

export type DomainView = Awaited<ReturnType<typeof domainList>>[number];
