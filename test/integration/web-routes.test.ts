// The review page's routes through fastify.inject, against a real PostgreSQL and a queue the
// real scan-queue recorded: authentication, CSRF, every action and its audit, every bad input
// (each changes nothing), the headers on every route, the hostile messages shown as inert
// text, the HTML part sanitized under its own CSP, copies kept only for non-relay/trust
// senders, purge and restore requests carried out by the real `purge-queue --requests`.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildWebApp, APP_CSP, PART_CSP } from '../../lib/web/server.js';
import { TemporaryError } from '../../lib/errors.js';
import { OPERATOR, PASSWORD, PARTNER, RELAY_USER, SPAMMER, type WebWorld, createWebWorld } from '../helpers/web-fixture.js';
import { serverAvailable } from '../helpers/db.js';
import { runCli } from '../helpers/cli.js';

const SERVER = await serverAvailable();
if (!SERVER) process.stderr.write('skipping the review page tests: qguard web needs a PostgreSQL server\n');

let w: WebWorld;
let app: FastifyInstance;

type Res = Awaited<ReturnType<FastifyInstance['inject']>>;

/** Cookies of a response as a Cookie header value. */
function cookiesOf(res: Res, jar: Record<string, string> = {}): Record<string, string> {
  for (const c of res.cookies) {
    if (c.value === '' || c.maxAge === 0 || (c.expires && new Date(c.expires).getTime() < Date.now())) delete jar[c.name];
    else jar[c.name] = c.value;
  }
  return jar;
}
const cookieHeader = (jar: Record<string, string>) => Object.entries(jar).map(([k, v]) => `${k}=${v}`).join('; ');
const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

async function login(user = OPERATOR, password = PASSWORD): Promise<{ res: Res; jar: Record<string, string> }> {
  const page = await app.inject({ method: 'GET', url: '/login' });
  const jar = cookiesOf(page);
  const token = /name="_login" value="([^"]+)"/.exec(page.body)![1];
  const res = await app.inject({ method: 'POST', url: '/login', headers: { ...FORM, cookie: cookieHeader(jar) }, payload: form({ _login: token, user, password, next: '/queue' }) });
  return { res, jar: cookiesOf(res, jar) };
}

async function session(): Promise<{ jar: Record<string, string>; csrf: string; get(url: string): Promise<Res>; post(url: string, fields: Record<string, string>, withCsrf?: boolean): Promise<Res> }> {
  const { res, jar } = await login();
  expect(res.statusCode).toBe(303);
  const home = await app.inject({ method: 'GET', url: '/', headers: { cookie: cookieHeader(jar) } });
  const csrf = /name="_csrf" value="([^"]+)"/.exec(home.body)![1];
  return {
    jar,
    csrf,
    get: (url) => app.inject({ method: 'GET', url, headers: { cookie: cookieHeader(jar) } }),
    post: (url, fields, withCsrf = true) =>
      app.inject({ method: 'POST', url, headers: { ...FORM, cookie: cookieHeader(jar) }, payload: form(withCsrf ? { _csrf: csrf, ...fields } : fields) }),
  };
}

async function sql<T = Record<string, unknown>>(text: string, params: unknown[] = []): Promise<T[]> {
  const c = await w.db.open();
  try {
    return (await c.query(text, params)).rows as T[];
  } finally {
    await c.close();
  }
}

const rulesFor = (ip: string) => sql<{ action: string; who: string }>(`SELECT action, who FROM qguard.rules WHERE network = $1::cidr`, [ip]);

/** Nothing the message wrote may become markup of the page. */
function expectInert(body: string): void {
  expect(body).not.toMatch(/<script>alert/);
  expect(body).not.toMatch(/<img src=x onerror/);
  expect(body).not.toMatch(/\u202e/);
  expect(body).not.toMatch(/https:\/\/evil\.example\/(pixel|style|import|bg|inline)/);
}

beforeAll(async () => {
  if (!SERVER) return;
  w = await createWebWorld();
  app = await buildWebApp(w.appInputs());
  await app.ready();
}, 120_000);
afterAll(async () => {
  await app?.close();
  await w?.cleanup();
});

describe.skipIf(!SERVER)('qguard web: authentication and sessions', () => {
  it('sends a visitor without a session to the login page, and refuses their POSTs (401), changing nothing', async () => {
    const r = await app.inject({ method: 'GET', url: '/queue?sort=count' });
    expect(r.statusCode).toBe(303);
    expect(r.headers.location).toBe('/login?next=%2Fqueue%3Fsort%3Dcount');
    const p = await app.inject({ method: 'POST', url: `/ip/${SPAMMER}/deny`, headers: FORM, payload: form({ reason: 'x' }) });
    expect(p.statusCode).toBe(401);
    expect(await rulesFor(SPAMMER)).toEqual([]);
  });

  it('a session cookie is HttpOnly and SameSite=Strict; a wrong password is refused and audited', async () => {
    const bad = await login(OPERATOR, 'wrong password!');
    expect(bad.res.statusCode).toBe(401);
    expect(bad.res.body).toContain('login failed');
    expect(bad.jar.qguard_session).toBeUndefined();
    const audit = await sql<{ op: string; who: string }>(`SELECT op, who FROM qguard.audit WHERE op = 'login-failed'`);
    expect(audit).toContainEqual({ op: 'login-failed', who: OPERATOR });
    const good = await login();
    expect(good.res.statusCode).toBe(303);
    expect(good.res.headers.location).toBe('/queue');
    const c = good.res.cookies.find((x) => x.name === 'qguard_session')!;
    expect(c).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/' });
    expect(await sql(`SELECT op FROM qguard.audit WHERE op = 'login' AND who = $1`, [OPERATOR])).toHaveLength(1);
  });

  it('a login without the login form token is refused (403)', async () => {
    const r = await app.inject({ method: 'POST', url: '/login', headers: FORM, payload: form({ user: OPERATOR, password: PASSWORD }) });
    expect(r.statusCode).toBe(403);
  });

  it('after 5 failed logins for a name, even the right password is refused for a while (429)', async () => {
    const c = await w.db.open();
    try {
      await c.query(`INSERT INTO qguard.web_users (name, password_hash) SELECT 'bob', password_hash FROM qguard.web_users WHERE name = $1`, [OPERATOR]);
    } finally {
      await c.close();
    }
    for (let i = 0; i < 5; i++) expect((await login('bob', `guess number ${i}`)).res.statusCode).toBe(401);
    const locked = await login('bob', PASSWORD);
    expect(locked.res.statusCode).toBe(429);
    expect(locked.res.body).toContain('too many failed logins');
    // Another operator from the same address is not locked out by bob's failures alone.
    expect((await login()).res.statusCode).toBe(303);
  });

  it('logout ends the session: the cookie no longer opens a page', async () => {
    const s = await session();
    expect((await s.get('/')).statusCode).toBe(200);
    const out = await s.post('/logout', {});
    expect(out.statusCode).toBe(303);
    const again = await app.inject({ method: 'GET', url: '/', headers: { cookie: `qguard_session=${s.jar.qguard_session}` } });
    expect(again.statusCode).toBe(303);
    expect(again.headers.location).toMatch(/^\/login/);
  });

  it('an idle session ends (QGUARD_WEB_IDLE)', async () => {
    const s = await session();
    await sql(`UPDATE qguard.web_sessions SET last_seen = now() - interval '31 minutes'`);
    expect((await s.get('/')).statusCode).toBe(303);
  });
});

describe.skipIf(!SERVER)('qguard web: headers on every route', () => {
  it('the strict CSP, nosniff, no referrer to other sites and no framing on every page; the HTML part has its own CSP', async () => {
    const s = await session();
    const msg = (await sql<{ id: string }>(`SELECT id FROM qguard.messages WHERE queue_id = $1`, [w.ids.hostile]))[0].id;
    const urls = ['/login', '/', '/queue', `/ip/${SPAMMER}`, `/message/${msg}`, `/message/${msg}/raw`, '/rules', '/quarantine', '/nope', '/static/qguard.css'];
    for (const url of urls) {
      const r = url === '/login' ? await app.inject({ method: 'GET', url }) : await s.get(url);
      expect({ url, csp: r.headers['content-security-policy'] }).toEqual({ url, csp: APP_CSP });
      expect(r.headers['x-content-type-options']).toBe('nosniff');
      expect(r.headers['referrer-policy']).toBe('same-origin');
      expect(r.headers['x-frame-options']).toBe('SAMEORIGIN');
    }
    const part = await s.get(`/message/${msg}/html`);
    expect(part.statusCode).toBe(200);
    expect(part.headers['content-security-policy']).toBe(PART_CSP);
  });
});

describe.skipIf(!SERVER)('qguard web: pages show hostile messages as text', () => {
  it('queue by IP: the spammer first with its count, decision and an escaped sample subject', async () => {
    const s = await session();
    const r = await s.get('/queue');
    expect(r.statusCode).toBe(200);
    expect(r.body).toContain(`href="/ip/${SPAMMER}"`);
    expectInert(r.body);
    const sorted = await s.get('/queue?sort=ip&kind=network&decision=trust');
    expect(sorted.body).toContain(PARTNER);
    expect(sorted.body).not.toContain(`href="/ip/${SPAMMER}"`);
    expect((await s.get('/queue?sort=evil')).statusCode).toBe(400);
    expect((await s.get('/queue?page=0')).statusCode).toBe(400);
  });

  it('message page: headers and text escaped, the RTL override visible, attachments listed, the HTML part in a sandboxed iframe', async () => {
    const s = await session();
    const msg = (await sql<{ id: string }>(`SELECT id FROM qguard.messages WHERE queue_id = $1`, [w.ids.hostile]))[0].id;
    const r = await s.get(`/message/${msg}`);
    expect(r.statusCode).toBe(200);
    expectInert(r.body);
    expect(r.body).toContain('&lt;script&gt;alert(&#39;subject&#39;)&lt;/script&gt;');
    expect(r.body).toContain('<span class="esc">\\u202e</span>gnp.exe');
    expect(r.body).toContain('&lt;img src=x onerror=alert(1)&gt;.exe');
    expect(r.body).toContain(`<iframe class="html-part" sandbox="" referrerpolicy="no-referrer" src="/message/${msg}/html"`);
    const part = await s.get(`/message/${msg}/html`);
    // Our own frame around it: a charset and a referrer policy, nothing else.
    const inner = part.body.slice(part.body.indexOf('<body>'));
    expect(part.body.slice(0, part.body.indexOf('<body>'))).toBe('<!doctype html><html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer"></head>');
    for (const bad of ['<script', 'onerror', 'onload', 'javascript:', 'src="https', 'href=', '<meta', '<base', '<link', '<style', '<form', '<iframe', '<svg', '<object', '@import', 'url(']) {
      expect({ bad, found: inner.toLowerCase().includes(bad.toLowerCase()) }).toEqual({ bad, found: false });
    }
    expect(part.body).toContain('Dear customer');
    // A remote image is named, not loaded.
    expect(part.body).toContain('[image https://evil.example/pixel.gif?u=dave not loaded]');
    expect(part.body).toContain('title="link to https://evil.example/phish"');
  });

  it('broken MIME and unknown charsets still give a page; a 5 MB message is cut to the copy size', async () => {
    const s = await session();
    const [broken] = await sql<{ id: string }>(`SELECT id FROM qguard.messages WHERE queue_id = $1`, [w.ids.broken]);
    expect((await s.get(`/message/${broken.id}`)).statusCode).toBe(200);
    const [big] = await sql<{ id: string }>(`SELECT id FROM qguard.messages WHERE queue_id = $1`, [w.ids.big]);
    const [copy] = await sql<{ n: number; truncated: boolean }>(`SELECT length(data) AS n, truncated FROM qguard.message_copies WHERE message_id = $1`, [big.id]);
    expect(copy).toEqual({ n: 64 * 1024, truncated: true });
    const page = await s.get(`/message/${big.id}`);
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain(`the copy holds the first ${64 * 1024} of`);
  });

  it('no copy of mail from relay or trusted senders; their message pages say so', async () => {
    const rows = await sql<{ qid: string; copy: boolean }>(
      `SELECT queue_id::text AS qid, EXISTS (SELECT 1 FROM qguard.message_copies c WHERE c.message_id = m.id) AS copy FROM qguard.messages m`,
    );
    const copied = new Map(rows.map((r) => [r.qid, r.copy]));
    expect(copied.get(w.ids.relay)).toBe(false);
    expect(copied.get(w.ids.partner)).toBe(false);
    expect(copied.get(w.ids.hostile)).toBe(true);
    const s = await session();
    const [relay] = await sql<{ id: string }>(`SELECT id FROM qguard.messages WHERE queue_id = $1`, [w.ids.relay]);
    const r = await s.get(`/message/${relay.id}`);
    expect(r.body).toContain('No readable copy');
    expect(r.body).not.toContain('secret');
  });

  it('an unknown message or IP is a 404 or 400 page, never a stack trace', async () => {
    const s = await session();
    expect((await s.get('/message/999999')).statusCode).toBe(404);
    const bad = await s.get('/ip/not-an-ip');
    expect(bad.statusCode).toBe(400);
    expect(bad.body).not.toMatch(/at .*\.(ts|js):\d+/);
  });
});

describe.skipIf(!SERVER)('qguard web: actions, with the CLI guards', () => {
  it('POST without or with a wrong CSRF token: 403, nothing written', async () => {
    const s = await session();
    expect((await s.post(`/ip/${SPAMMER}/deny`, { reason: 'x' }, false)).statusCode).toBe(403);
    expect((await s.post(`/ip/${SPAMMER}/deny`, { _csrf: 'A'.repeat(s.csrf.length), reason: 'x' }, false)).statusCode).toBe(403);
    expect(await rulesFor(SPAMMER)).toEqual([]);
  });

  it('a POST from another origin is refused (403)', async () => {
    const s = await session();
    const r = await app.inject({
      method: 'POST',
      url: `/ip/${SPAMMER}/deny`,
      headers: { ...FORM, cookie: cookieHeader(s.jar), origin: 'https://evil.example' },
      payload: form({ _csrf: s.csrf }),
    });
    expect(r.statusCode).toBe(403);
    expect(await rulesFor(SPAMMER)).toEqual([]);
  });

  it('bad input gets the CLI message and writes nothing: a malformed CIDR, a protected network, a too-broad prefix', async () => {
    const s = await session();
    const bad = await s.post(`/ip/${SPAMMER}/deny`, { net: '203.0.113.300/24' });
    expect(bad.statusCode).toBe(400);
    expect(bad.body).toContain('203.0.113.300');
    const prot = await s.post('/rules/add', { net: '127.0.0.0/8', action: 'deny' });
    expect(prot.statusCode).toBe(409);
    expect(prot.body).toMatch(/protect/);
    const broad = await s.post('/rules/add', { net: '10.0.0.0/4', action: 'deny' });
    expect([400, 409]).toContain(broad.statusCode);
    expect(await sql(`SELECT 1 FROM qguard.rules WHERE action = 'deny'`)).toEqual([]);
  });

  it('oversized bodies and too many fields are refused', async () => {
    const s = await session();
    const fields: Record<string, string> = {};
    for (let i = 0; i < 60; i++) fields[`f${i}`] = 'x';
    expect((await s.post(`/ip/${SPAMMER}/deny`, fields)).statusCode).toBe(413);
    expect((await s.post(`/ip/${SPAMMER}/deny`, { reason: 'x'.repeat(70_000) })).statusCode).toBe(413);
    expect(await rulesFor(SPAMMER)).toEqual([]);
  });

  it('deny from the IP page: the rule is in the database as the operator, audited as web:alice', async () => {
    const s = await session();
    const r = await s.post(`/ip/${SPAMMER}/deny`, { reason: 'spam run', for: '30d' });
    expect(r.statusCode).toBe(303);
    expect(r.headers.location).toBe(`/ip/${SPAMMER}?done=deny`);
    expect(await rulesFor(`${SPAMMER}/32`)).toEqual([{ action: 'deny', who: OPERATOR }]);
    const audit = await sql<{ actor: string; op: string }>(`SELECT actor, op FROM qguard.audit WHERE object = 'rule' AND network = $1::cidr`, [`${SPAMMER}/32`]);
    expect(audit).toEqual([{ actor: `web:${OPERATOR}`, op: 'insert' }]);
    const page = await s.get(`/ip/${SPAMMER}?done=deny`);
    expect(page.body).toContain('Denied.');
    expect(page.body).toContain('<b>deny</b>');
  });

  it('a purge request is carried out by purge-queue --requests: the messages quarantined, the request done, relay mail untouched', async () => {
    const s = await session();
    const r = await s.post(`/ip/${SPAMMER}/purge`, { net: SPAMMER, host: w.host });
    expect(r.statusCode).toBe(303);
    expect(await sql(`SELECT kind, state, requested_by FROM qguard.requests`)).toEqual([{ kind: 'purge', state: 'pending', requested_by: OPERATOR }]);
    // Also one for the relay user's address: the guards keep its mail.
    expect((await s.post(`/ip/${RELAY_USER}/purge`, { net: RELAY_USER, host: w.host })).statusCode).toBe(303);
    const run = await runCli('purge-queue', ['--requests'], { env: w.env });
    expect(run).toMatchObject({ code: 0, stdout: '' });
    const reqs = await sql<{ network: string; state: string; done_count: number }>(`SELECT network::text, state, done_count FROM qguard.requests ORDER BY id`);
    expect(reqs).toEqual([
      { network: `${SPAMMER}/32`, state: 'done', done_count: 8 },
      { network: `${RELAY_USER}/32`, state: 'done', done_count: 0 },
    ]);
    const q = await sql<{ n: string }>(`SELECT count(*) AS n FROM qguard.quarantine WHERE source_ip = $1`, [SPAMMER]);
    expect(Number(q[0].n)).toBe(8);
    // The copies went with the quarantine entries: the quarantine page shows the message.
    const [entry] = await sql<{ id: string }>(`SELECT id FROM qguard.quarantine WHERE queue_id = $1`, [w.ids.hostile]);
    const page = await s.get(`/quarantine/${entry.id}`);
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain(`src="/quarantine/${entry.id}/html"`);
    expectInert(page.body);
    // A second run has nothing to do and says nothing.
    expect(await runCli('purge-queue', ['--requests'], { env: w.env })).toMatchObject({ code: 0, stdout: '', stderr: '' });
  });

  it('restore from the quarantine page: requested, then queued again by purge-queue --requests', async () => {
    const s = await session();
    const [entry] = await sql<{ id: string }>(`SELECT id FROM qguard.quarantine WHERE queue_id = $1`, [w.ids.hostile]);
    const r = await s.post(`/quarantine/${entry.id}/restore`, {});
    expect(r.statusCode).toBe(303);
    const run = await runCli('purge-queue', ['--requests'], { env: w.env });
    expect(run.code).toBe(0);
    expect(await sql(`SELECT state FROM qguard.quarantine WHERE id = $1`, [entry.id])).toEqual([{ state: 'restored' }]);
    expect(await sql(`SELECT state, done_count FROM qguard.requests WHERE kind = 'restore'`)).toEqual([{ state: 'done', done_count: 1 }]);
  });

  it('remove a rule from the rules page; trust and allow from the IP page', async () => {
    const s = await session();
    expect((await s.post('/rules/rm', { net: `${SPAMMER}/32` })).statusCode).toBe(303);
    expect(await rulesFor(`${SPAMMER}/32`)).toEqual([]);
    expect((await s.post('/ip/192.0.2.200/trust', { reason: 'new partner' })).statusCode).toBe(303);
    expect(await rulesFor('192.0.2.200/32')).toEqual([{ action: 'trust', who: OPERATOR }]);
    const rules = await s.get('/rules?action=trust');
    expect(rules.body).toContain('192.0.2.200/32');
    expect(rules.body).not.toContain(`${SPAMMER}/32`);
  });
});

describe.skipIf(!SERVER)('qguard web: the database down', () => {
  it('answers with a 503 page that says so, never a stack trace', async () => {
    const s = await session();
    const down = await buildWebApp(w.appInputs({ openDb: () => Promise.reject(new TemporaryError('unable to connect to database postgresql://db.invalid/x: refused')) }));
    try {
      const r = await down.inject({ method: 'GET', url: '/', headers: { cookie: cookieHeader(s.jar) } });
      expect(r.statusCode).toBe(503);
      expect(r.body).toContain('unavailable');
      expect(r.body).not.toMatch(/at .*\.(ts|js):\d+/);
      expect(r.headers['content-security-policy']).toBe(APP_CSP);
    } finally {
      await down.close();
    }
  });
});

describe.skipIf(!SERVER)('qguard web user and qguard web on the command line', () => {
  it('user ls, passwd (ends sessions), rm; a short password is a usage error', async () => {
    const ls = await runCli('qguard', ['web', 'user', 'ls', '--json'], { env: w.env });
    expect(JSON.parse(ls.stdout).map((u: { name: string }) => u.name)).toContain(OPERATOR);
    expect(ls.stdout).not.toContain('scrypt');
    expect(await runCli('qguard', ['web', 'user', 'add', 'carol'], { env: w.env, input: 'short\n' })).toMatchObject({ code: 2 });
    expect(await runCli('qguard', ['web', 'user', 'add', OPERATOR], { env: w.env, input: `${PASSWORD}\n` })).toMatchObject({ code: 100 });
    const s = await session();
    expect(await runCli('qguard', ['web', 'user', 'passwd', OPERATOR], { env: w.env, input: 'another long password\n' })).toMatchObject({ code: 0, stdout: '' });
    expect((await s.get('/')).statusCode).toBe(303);
    expect((await login(OPERATOR, 'another long password')).res.statusCode).toBe(303);
    expect(await runCli('qguard', ['web', 'user', 'rm', 'bob'], { env: w.env })).toMatchObject({ code: 0 });
    expect(await runCli('qguard', ['web', 'user', 'rm', 'bob'], { env: w.env })).toMatchObject({ code: 100 });
    // The password is stored as a scrypt hash only.
    const [u] = await sql<{ password_hash: string }>(`SELECT password_hash FROM qguard.web_users WHERE name = $1`, [OPERATOR]);
    expect(u.password_hash).toMatch(/^scrypt\$/);
    expect(u.password_hash).not.toContain('another');
  });

  it('refuses a non-loopback --listen without TLS or --behind-proxy, and the embedded database', async () => {
    const r = await runCli('qguard', ['web', '--listen', '0.0.0.0:8025'], { env: w.env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('not a loopback address');
    const { QGUARD_DATABASE_URL: _u, ...embedded } = w.env;
    const e = await runCli('qguard', ['web'], { env: embedded });
    expect(e.code).toBe(100);
    expect(e.stderr).toContain('needs a PostgreSQL server');
  });
});

export {};
