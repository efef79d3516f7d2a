// `qguard web`: the review page's HTTP server (Fastify). It holds one connection to the
// PostgreSQL server and builds a RunContext per request, so each page is an admin function's
// view rendered as HTML (lib/web/pages.ts) — the CLI's data, checks and guards, no second
// path. It never opens the qmail queue or the quarantine: messages are read from the copies
// scan-queue keeps, and purges and restores are requests a privileged run carries out.
//
// Defences, each tested: sessions in the database (random token in an HttpOnly,
// SameSite=Strict cookie, Secure under HTTPS; idle and absolute timeouts), a CSRF token per
// session on every POST (and a login token before there is one), an Origin check, failed
// logins limited per operator and per address and audited, request rate limits, a strict
// Content-Security-Policy on every response (the HTML part of a message gets its own, inside a
// sandboxed iframe), bounded bodies and form fields, and error pages that never show a stack.
//
// Size: the routes, the authentication and the error mapping of one server read best
// together; the pages themselves are in pages.ts.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Net } from '../net/address.js';
import { type RunContext, createContext } from '../context.js';
import { PermanentError, QguardError, TemporaryError, UsageError, errorText } from '../errors.js';
import type { Db } from '../db/connect.js';
import {
  auditEvent,
  createSession,
  deleteSession,
  getWebUser,
  loginFailures,
  pruneSessions,
  recordLoginFailure,
  touchSession,
} from '../db/web.js';
import { ipAdd, ipList, ipRemove } from '../admin/ip.js';
import { queueTop } from '../admin/queue.js';
import { quarantineList } from '../admin/quarantine.js';
import { ipPage, messageMail, messagePage, overview, quarantinePage, requestPurge, requestRestore, spamSources } from '../admin/web-views.js';
import { DUMMY_HASH, verifyPassword } from './password.js';
import * as pages from './pages.js';

export interface WebServerInputs {
  config: Config;
  log: Logger;
  /** Opens the database (again, after it was lost). */
  openDb: () => Promise<Db>;
  interfaceNets: () => Net[];
  tls: { cert: Buffer; key: Buffer } | null;
  /** Trust X-Forwarded-* from a reverse proxy on loopback. */
  behindProxy: boolean;
}

/** The app pages' policy: nothing but our own style sheet, our own frames and forms. */
export const APP_CSP =
  "default-src 'none';style-src 'self';script-src 'self';img-src 'self';frame-src 'self';form-action 'self';frame-ancestors 'none';base-uri 'none'";
/** The HTML part of a message, alone in its sandboxed iframe: inline style and data: images only. */
export const PART_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; frame-ancestors 'self'; base-uri 'none'";

const COOKIE = 'qguard_session';
const LOGIN_COOKIE = 'qguard_login';
/** A session ends this long after login whatever its activity. */
const SESSION_MAX_SECONDS = 12 * 3600;
/** Failed logins that lock out, per operator name and per address, within the window. */
const FAIL_WINDOW_SECONDS = 15 * 60;
const FAIL_PER_USER = 5;
const FAIL_PER_IP = 20;
const MAX_FIELDS = 40;
/** Database connections the page keeps open at most (each lent to one request at a time). */
const DB_CONNECTIONS = 4;
/** How long operators share one computed queue table (see sharedView). */
const SHARED_VIEW_MS = 3000;

const NOTICES: Record<string, string> = {
  deny: 'Denied. sync-rules writes it to tcp.smtp (and the firewall) within a minute.',
  allow: 'Allowed to relay. sync-rules applies it within a minute.',
  trust: 'Trusted. sync-rules applies it within a minute.',
  rm: 'Rule removed. sync-rules applies it within a minute.',
  add: 'Rule added. sync-rules applies it within a minute.',
  purge: 'Purge requested: the next purge-queue --requests on that host carries it out.',
  restore: 'Restore requested: the next purge-queue --requests on that host carries it out.',
};

const sha256 = (s: string) => crypto.createHash('sha256').update(s).digest('hex');
const token = () => crypto.randomBytes(32).toString('base64url');

function sameToken(a: unknown, b: string): boolean {
  if (typeof a !== 'string' || a.length !== b.length) return false;
  return crypto.timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

/** The package's static directory (static/ beside package.json, from lib/web or dist/lib/web). */
function staticDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (fs.existsSync(path.join(dir, 'static', 'qguard.css'))) return path.join(dir, 'static');
    dir = path.dirname(dir);
  }
  throw new Error('static/qguard.css not found beside the package');
}

/** One query value: a string or undefined; repeated values are a usage error. */
function one(v: unknown, name: string): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new UsageError(`${name}: given more than once`);
  return v;
}

/** The Origin of a POST names this server (as the browser reached it, or through the proxy). */
function sameOrigin(origin: string, req: FastifyRequest): boolean {
  let o: URL;
  try {
    o = new URL(origin);
  } catch {
    return false;
  }
  return o.host === (req.headers.host ?? '') || o.host === req.host;
}

type Session = { user: string; csrf: string; tokenHash: string };

declare module 'fastify' {
  interface FastifyRequest {
    session: Session | null;
  }
}

/** Map an error to a status and a message an operator may see (never a stack). */
function errorStatus(err: unknown): { status: number; message: string } {
  if (err instanceof UsageError) return { status: 400, message: err.message };
  if (err instanceof PermanentError) return { status: /^no (recorded message|quarantine entry)/.test(err.message) ? 404 : 409, message: err.message };
  if (err instanceof TemporaryError) return { status: 503, message: `the database or a program is unavailable: ${err.message}` };
  if (err instanceof QguardError) return { status: 500, message: err.message };
  const e = err as { statusCode?: number; message?: string; code?: string };
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) return { status: e.statusCode, message: e.message ?? 'bad request' };
  return { status: 500, message: 'internal error (see the server log)' };
}

export async function buildWebApp(inputs: WebServerInputs): Promise<FastifyInstance> {
  const { config, log } = inputs;
  const app = Fastify({
    logger: false,
    bodyLimit: 64 * 1024,
    trustProxy: inputs.behindProxy ? ['127.0.0.1', '::1'] : false,
    ...(inputs.tls ? { https: { cert: inputs.tls.cert, key: inputs.tls.key } } : {}),
    routerOptions: { maxParamLength: 200 },
  } as Parameters<typeof Fastify>[0]) as unknown as FastifyInstance;

  // ---- the database: a few connections, each lent to one request at a time (so one request's
  // queries never run inside another's transaction), a lost one replaced by a new one.
  const idle: Db[] = [];
  const lent = new Set<Db>();
  const broken = new WeakSet<Db>();
  const waiting: { resolve: (d: Db) => void; reject: (e: unknown) => void }[] = [];
  let opened = 0;
  const openOne = async (): Promise<Db> => {
    opened++;
    try {
      const d = await inputs.openDb();
      const lost = () => broken.add(d);
      d.pgClient?.on('end', lost);
      d.pgClient?.on('error', lost);
      return d;
    } catch (err) {
      opened--;
      throw err instanceof TemporaryError ? err : new TemporaryError(errorText(err));
    }
  };
  const acquire = async (): Promise<Db> => {
    let d: Db | undefined;
    while ((d = idle.pop()) && broken.has(d)) {
      opened--;
      void d.close().catch(() => {});
    }
    if (!d) d = opened < DB_CONNECTIONS ? await openOne() : await new Promise<Db>((resolve, reject) => waiting.push({ resolve, reject }));
    lent.add(d);
    return d;
  };
  const release = (d: Db) => {
    if (!lent.delete(d)) return;
    if (broken.has(d)) {
      opened--;
      void d.close().catch(() => {});
      const w = waiting.shift();
      if (w) openOne().then((n) => (lent.add(n), w.resolve(n)), w.reject);
      return;
    }
    const w = waiting.shift();
    if (w) {
      lent.add(d);
      w.resolve(d);
    } else idle.push(d);
  };
  const borrowed = new WeakMap<FastifyRequest, Db>();
  /** The request's connection: borrowed on first use, given back when the response is done. */
  const getDb = async (req: FastifyRequest): Promise<Db> => {
    let d = borrowed.get(req);
    if (!d) {
      d = await acquire();
      borrowed.set(req, d);
    }
    return d;
  };
  const giveBack = async (req: FastifyRequest) => {
    const d = borrowed.get(req);
    if (d) {
      borrowed.delete(req);
      release(d);
    }
  };
  app.addHook('onResponse', giveBack);
  app.addHook('onRequestAbort', giveBack);
  app.addHook('onClose', async () => {
    for (const w of waiting.splice(0)) w.reject(new TemporaryError('the review page is stopping'));
    await Promise.all([...idle.splice(0), ...lent].map((d) => d.close().catch(() => {})));
  });

  // The queue by IP of a 100,000-message queue is a whole pass over it: operators asking for the
  // same table within SHARED_VIEW_MS share one computation (a change made here clears them all;
  // the CLI's and cron's show within that time). The table is about a queue scanned each minute.
  const shared = new Map<string, { at: number; value: Promise<unknown> }>();
  const sharedView = <T>(key: string, make: () => Promise<T>): Promise<T> => {
    const now = Date.now();
    const hit = shared.get(key);
    if (hit && now - hit.at < SHARED_VIEW_MS) return hit.value as Promise<T>;
    const entry = { at: now, value: make() as Promise<unknown> };
    shared.set(key, entry);
    entry.value.catch(() => shared.get(key) === entry && shared.delete(key));
    for (const [k, e] of shared) if (now - e.at >= SHARED_VIEW_MS) shared.delete(k);
    return entry.value as Promise<T>;
  };

  // Changes run one at a time, each with its operator set as the audit's actor.
  let chain: Promise<unknown> = Promise.resolve();
  const serialized = <T>(fn: () => Promise<T>): Promise<T> => {
    const p = chain.then(fn, fn);
    chain = p.catch(() => {});
    return p;
  };

  const contextFor = async (req: FastifyRequest): Promise<RunContext> => {
    const db = await getDb(req);
    const user = req.session?.user ?? 'anonymous';
    return createContext({ command: 'qguard web', config, log, interfaceNets: inputs.interfaceNets, sharedDb: db, user, actor: `web:${user}`, write: () => {} });
  };

  const pageCtx = (req: FastifyRequest, extra: Partial<pages.PageContext> = {}): pages.PageContext => {
    const done = one((req.query as Record<string, unknown>)?.done, 'done');
    return { user: req.session?.user ?? null, csrf: req.session?.csrf ?? null, notice: done ? (NOTICES[done] ?? null) : null, ...extra };
  };

  const sendPage = (reply: FastifyReply, body: string, status = 200) => reply.code(status).type('text/html; charset=utf-8').send(body);

  // ---- plugins
  await app.register((await import('@fastify/helmet')).default, {
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'none'"],
        styleSrc: ["'self'"],
        scriptSrc: ["'self'"],
        imgSrc: ["'self'"],
        frameSrc: ["'self'"],
        formAction: ["'self'"],
        frameAncestors: ["'none'"],
        baseUri: ["'none'"],
      },
    },
    strictTransportSecurity: inputs.tls ? { maxAge: 15552000 } : false,
    // same-origin: no referrer ever leaves the site, and the browser still sends a real Origin with
    // our own forms (with no-referrer it sends "Origin: null").
    referrerPolicy: { policy: 'same-origin' },
    crossOriginEmbedderPolicy: false,
  });
  await app.register((await import('@fastify/cookie')).default);
  await app.register((await import('@fastify/formbody')).default);
  await app.register((await import('@fastify/rate-limit')).default, {
    max: 600,
    timeWindow: '1 minute',
    errorResponseBuilder: (_req, ctx) => ({ statusCode: 429, message: `too many requests: try again in ${Math.ceil(ctx.ttl / 1000)} s` }),
  });
  await app.register((await import('@fastify/static')).default, { root: staticDir(), prefix: '/static/', index: false, list: false, dotfiles: 'deny' });

  app.decorateRequest('session', null);

  const secure = (req: FastifyRequest) => req.protocol === 'https';
  const cookieOpts = (req: FastifyRequest) => ({ path: '/', httpOnly: true, sameSite: 'strict' as const, secure: secure(req) });

  // ---- authentication, CSRF, Origin
  app.addHook('preHandler', async (req, reply) => {
    const url = req.url;
    if (url.startsWith('/static/')) return;
    if (req.method === 'POST') {
      // Too many fields: refused before anything reads them.
      const body = req.body as Record<string, unknown> | undefined;
      if (body && typeof body === 'object' && Object.keys(body).length > MAX_FIELDS) {
        return sendPage(reply, pages.errorPage(413, `too many form fields (at most ${MAX_FIELDS})`, pageCtx(req)), 413);
      }
      const origin = req.headers.origin;
      if (origin !== undefined && !sameOrigin(origin, req)) {
        return sendPage(reply, pages.errorPage(403, 'the form came from another site: refused', pageCtx(req)), 403);
      }
    }
    if (url === '/login' || url.startsWith('/login?') || url === '/favicon.ico') return;
    const raw = req.cookies[COOKIE];
    if (raw) {
      const db = await getDb(req);
      const s = await touchSession(db, sha256(raw), config.webIdleSeconds, SESSION_MAX_SECONDS);
      if (s) req.session = { user: s.user, csrf: s.csrf, tokenHash: sha256(raw) };
    }
    if (!req.session) {
      if (req.method === 'GET' || req.method === 'HEAD') return reply.redirect(`/login?next=${encodeURIComponent(url)}`, 303);
      return sendPage(reply, pages.errorPage(401, 'not logged in (or the session ended): log in again', pageCtx(req)), 401);
    }
    if (req.method === 'POST' && !sameToken((req.body as Record<string, unknown> | undefined)?._csrf, req.session.csrf)) {
      return sendPage(reply, pages.errorPage(403, 'the form was stale or not ours (CSRF token missing or wrong): refused', pageCtx(req)), 403);
    }
  });

  app.setErrorHandler(async (err, req, reply) => {
    const { status, message } = errorStatus(err);
    if (status >= 500 && status !== 503) log.warn(`web: ${req.method} ${req.url}: ${errorText(err)}`);
    return sendPage(reply, pages.errorPage(status, message, pageCtx(req)), status);
  });
  app.setNotFoundHandler(async (req, reply) => sendPage(reply, pages.errorPage(404, 'no such page', pageCtx(req)), 404));

  /** A change: one at a time, audited as the operator. */
  const change = async <T>(req: FastifyRequest, fn: (ctx: RunContext) => Promise<T>): Promise<T> =>
    serialized(async () => {
      const ctx = await contextFor(req);
      const db = await ctx.db();
      await db.query("SELECT set_config('qguard.actor', $1, false)", [ctx.actor]);
      try {
        return await fn(ctx);
      } finally {
        shared.clear();
      }
    });
  const field = (req: FastifyRequest, name: string): string | undefined => {
    const v = (req.body as Record<string, unknown> | undefined)?.[name];
    if (v === undefined || v === '') return undefined;
    if (typeof v !== 'string') throw new UsageError(`${name}: given more than once`);
    return v;
  };

  // ---- login
  app.get('/favicon.ico', async (_req, reply) => reply.code(204).send());
  app.get('/login', async (req, reply) => {
    const next = one((req.query as Record<string, unknown>).next, 'next') ?? '/';
    // Keep a token already given: another tab (or the browser's /favicon.ico, sent here too)
    // must not make the form on screen stale.
    const have = req.cookies[LOGIN_COOKIE];
    const loginToken = have && /^[A-Za-z0-9_-]{43}$/.test(have) ? have : token();
    reply.setCookie(LOGIN_COOKIE, loginToken, { ...cookieOpts(req), maxAge: 600 });
    return sendPage(reply, pages.loginPage({ ...pageCtx(req), user: null, csrf: null, next, loginToken }));
  });

  app.post('/login', { config: { rateLimit: { max: 30, timeWindow: '1 minute' } } }, async (req, reply) => {
    if (!sameToken(field(req, '_login'), req.cookies[LOGIN_COOKIE] ?? '\0')) {
      return sendPage(reply, pages.errorPage(403, 'the login form was stale or not ours: load the login page again', pageCtx(req)), 403);
    }
    const user = (field(req, 'user') ?? '').slice(0, 64);
    const password = field(req, 'password') ?? '';
    const next = field(req, 'next') ?? '/';
    const ip = req.ip;
    const again = (status: number, error: string) => {
      const loginToken = token();
      reply.setCookie(LOGIN_COOKIE, loginToken, { ...cookieOpts(req), maxAge: 600 });
      return sendPage(reply, pages.loginPage({ user: null, csrf: null, error, next, loginToken }), status);
    };
    const db = await getDb(req);
    const fails = await loginFailures(db, user, ip, FAIL_WINDOW_SECONDS);
    if (fails.user >= FAIL_PER_USER || fails.ip >= FAIL_PER_IP) {
      await serialized(async () => {
        await db.query("SELECT set_config('qguard.actor', $1, false)", [`web:${ip}`]);
        await recordLoginFailure(db, user, ip);
      });
      return again(429, `too many failed logins: wait ${FAIL_WINDOW_SECONDS / 60} minutes`);
    }
    const u = user ? await getWebUser(db, user) : null;
    const ok = await verifyPassword(password, u?.passwordHash ?? DUMMY_HASH);
    if (!u || !ok) {
      await serialized(async () => {
        await db.query("SELECT set_config('qguard.actor', $1, false)", [`web:${ip}`]);
        await recordLoginFailure(db, user, ip);
      });
      return again(401, 'login failed: wrong operator name or password');
    }
    const t = token();
    const csrf = token();
    await serialized(async () => {
      await db.query("SELECT set_config('qguard.actor', $1, false)", [`web:${u.name}`]);
      await createSession(db, sha256(t), u.name, csrf, ip);
      await auditEvent(db, { op: 'login', object: 'session', who: u.name, reason: `from ${ip}` });
      await pruneSessions(db, config.webIdleSeconds, SESSION_MAX_SECONDS);
    });
    reply.setCookie(COOKIE, t, cookieOpts(req));
    reply.clearCookie(LOGIN_COOKIE, { path: '/' });
    const safeNext = /^\/(?![/\\])[^\s]*$/.test(next) ? next : '/';
    return reply.redirect(safeNext, 303);
  });

  app.post('/logout', async (req, reply) => {
    const s = req.session!;
    await change(req, async (ctx) => {
      const db = await ctx.db();
      await deleteSession(db, s.tokenHash);
      await auditEvent(db, { op: 'logout', object: 'session', who: s.user });
    });
    reply.clearCookie(COOKIE, { path: '/' });
    return reply.redirect('/login', 303);
  });

  // ---- pages
  app.get('/', async (req, reply) => sendPage(reply, pages.overviewPage(await overview(await contextFor(req)), pageCtx(req))));

  app.get('/queue', async (req, reply) => {
    const q = req.query as Record<string, unknown>;
    const args = { limit: '50', host: one(q.host, 'host'), kind: one(q.kind, 'kind'), decision: one(q.decision, 'decision'), sort: one(q.sort, 'sort'), page: one(q.page, 'page') };
    const { view, hosts } = await sharedView(`queue ${JSON.stringify(args)}`, async () => {
      const ctx = await contextFor(req);
      const view = await queueTop(ctx, args);
      const db = await ctx.db();
      const hosts = (await db.query<{ host: string }>('SELECT host FROM qguard.queue_scans ORDER BY host')).rows.map((r) => r.host);
      return { view, hosts };
    });
    return sendPage(reply, pages.queuePage(view, pageCtx(req), hosts));
  });

  app.get('/ip/:ip', async (req, reply) => {
    const { ip } = req.params as { ip: string };
    return sendPage(reply, pages.ipPageHtml(await ipPage(await contextFor(req), ip), pageCtx(req)));
  });

  for (const [name, action] of [
    ['deny', 'deny'],
    ['allow', 'relay'],
    ['trust', 'trust'],
  ] as const) {
    app.post(`/ip/:ip/${name}`, async (req, reply) => {
      const { ip } = req.params as { ip: string };
      const net = field(req, 'net') ?? ip;
      await change(req, (ctx) => ipAdd(ctx, action, net, { reason: field(req, 'reason'), for: field(req, 'for') }));
      return reply.redirect(`/ip/${encodeURIComponent(ip)}?done=${name}`, 303);
    });
  }
  app.post('/ip/:ip/rm', async (req, reply) => {
    const { ip } = req.params as { ip: string };
    await change(req, (ctx) => ipRemove(ctx, field(req, 'net') ?? ip, {}));
    return reply.redirect(`/ip/${encodeURIComponent(ip)}?done=rm`, 303);
  });
  app.post('/ip/:ip/purge', async (req, reply) => {
    const { ip } = req.params as { ip: string };
    await change(req, (ctx) => requestPurge(ctx, field(req, 'net') ?? ip, field(req, 'host') ?? config.host));
    return reply.redirect(`/ip/${encodeURIComponent(ip)}?done=purge`, 303);
  });

  app.get('/message/:id', async (req, reply) => {
    const { id } = req.params as { id: string };
    return sendPage(reply, pages.messagePageHtml(await messagePage(await contextFor(req), id), pageCtx(req)));
  });
  app.get('/message/:id/raw', async (req, reply) => {
    const { id } = req.params as { id: string };
    const v = await messagePage(await contextFor(req), id);
    if (!v.mail) throw new PermanentError(`no recorded message ${id} with a readable copy`);
    return sendPage(reply, pages.rawPage(`Message ${v.message.id}: raw source`, v.mail.raw, pageCtx(req)));
  });
  const htmlPart = (kind: 'message' | 'quarantine') => async (req: FastifyRequest, reply: FastifyReply) => {
    const { id } = req.params as { id: string };
    const mail = await messageMail(await contextFor(req), kind, id);
    if (!mail?.html) throw new PermanentError(`no recorded message ${id} with an HTML part`);
    reply.header('Content-Security-Policy', PART_CSP);
    reply.header('X-Frame-Options', 'SAMEORIGIN');
    return sendPage(reply, pages.htmlPartDocument(mail.html));
  };
  app.get('/message/:id/html', htmlPart('message'));

  app.get('/rules', async (req, reply) => {
    const q = req.query as Record<string, unknown>;
    const ctx = await contextFor(req);
    const action = one(q.action, 'action') ?? '';
    const source = one(q.source, 'source') ?? '';
    const net = one(q.net, 'net') ?? '';
    let rules = await ipList(ctx, { action: action || undefined, source: source || undefined });
    if (net) {
      const { netArgument } = await import('../admin/args.js');
      const { netContains } = await import('../net/address.js');
      const n = netArgument(net, 'network');
      rules = rules.filter((r) => {
        const rn = netArgument(r.cidr);
        return netContains(rn, n) || netContains(n, rn);
      });
    }
    return sendPage(reply, pages.rulesPage(rules, await spamSources(ctx), pageCtx(req), { action, source, net }));
  });
  app.post('/rules/add', async (req, reply) => {
    const action = field(req, 'action') ?? 'deny';
    if (!['deny', 'relay', 'trust'].includes(action)) throw new UsageError(`action: must be deny, relay or trust`);
    await change(req, (ctx) => ipAdd(ctx, action as 'deny', field(req, 'net') ?? '', { reason: field(req, 'reason'), for: field(req, 'for') }));
    return reply.redirect('/rules?done=add', 303);
  });
  app.post('/rules/rm', async (req, reply) => {
    await change(req, (ctx) => ipRemove(ctx, field(req, 'net') ?? '', { source: field(req, 'source') }));
    return reply.redirect('/rules?done=rm', 303);
  });

  app.get('/quarantine', async (req, reply) =>
    sendPage(reply, pages.quarantineListPage(await quarantineList(await contextFor(req), { allHosts: true, limit: '500' }), pageCtx(req))),
  );
  app.get('/quarantine/:id', async (req, reply) => {
    const { id } = req.params as { id: string };
    return sendPage(reply, pages.quarantinePageHtml(await quarantinePage(await contextFor(req), id), pageCtx(req)));
  });
  app.get('/quarantine/:id/html', htmlPart('quarantine'));
  app.post('/quarantine/:id/restore', async (req, reply) => {
    const { id } = req.params as { id: string };
    await change(req, (ctx) => requestRestore(ctx, id));
    return reply.redirect(`/quarantine/${encodeURIComponent(id)}?done=restore`, 303);
  });

  return app;
}
