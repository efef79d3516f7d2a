// `qguard web user add|ls|rm|passwd`: the review page's operators. Passwords are checked
// (lib/web/password.ts) and stored as scrypt hashes in the database, never in a file; each
// change is audited, and a new password ends the operator's sessions.

import type { RunContext } from '../context.js';
import { PermanentError, UsageError } from '../errors.js';
import { addWebUser, listWebUsers, removeWebUser, setWebPassword } from '../db/web.js';
import { hashPassword, passwordProblem } from '../web/password.js';
import { iso } from '../time.js';

/** An operator name: letters, digits, `_ . @ -`, at most 64, not starting with punctuation. */
export function operatorName(name: string | undefined): string {
  if (name === undefined || name === '') throw new UsageError('name an operator');
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$/.test(name)) {
    throw new UsageError(`not an operator name (letters, digits, _ . @ -; at most 64): ${JSON.stringify(name.slice(0, 40))}`);
  }
  return name;
}

function checkedPassword(password: string): string {
  const p = passwordProblem(password);
  if (p) throw new UsageError(p);
  return password;
}

export async function webUserAdd(ctx: RunContext, name: string, password: string): Promise<void> {
  const n = operatorName(name);
  const hash = await hashPassword(checkedPassword(password));
  const db = await ctx.db();
  if (!(await addWebUser(db, n, hash))) throw new PermanentError(`operator ${n} exists already (qguard web user passwd ${n} sets a new password)`);
  ctx.log.info(`added operator ${n}`);
}

export async function webUserPasswd(ctx: RunContext, name: string, password: string): Promise<void> {
  const n = operatorName(name);
  const hash = await hashPassword(checkedPassword(password));
  const db = await ctx.db();
  if (!(await setWebPassword(db, n, hash))) throw new PermanentError(`no operator ${n}`);
  ctx.log.info(`new password for ${n}; their sessions ended`);
}

export async function webUserRemove(ctx: RunContext, name: string): Promise<void> {
  const n = operatorName(name);
  const db = await ctx.db();
  if (!(await removeWebUser(db, n))) throw new PermanentError(`no operator ${n}`);
  ctx.log.info(`removed operator ${n}`);
}

export async function webUserList(ctx: RunContext) {
  const db = await ctx.db();
  return (await listWebUsers(db)).map((u) => ({
    name: u.name,
    createdAt: iso(u.createdAt)!,
    createdBy: u.createdBy,
    passwordChangedAt: iso(u.passwordChangedAt)!,
  }));
}

export type WebUserView = Awaited<ReturnType<typeof webUserList>>[number];
