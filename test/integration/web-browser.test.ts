// The review page in a real browser: Debian's Chromium driven by playwright-core (no browser
// download), against `qguard web` listening on loopback with a real PostgreSQL. An operator
// logs in, reads the overview and the queue by IP, opens the spammer's IP page and its most
// hostile message, denies the IP (sync-rules then writes it to tcp.smtp, checked with the
// real tcprulescheck), requests a purge (purge-queue --requests quarantines the messages)
// and a restore. Throughout: no dialog ever opens, no request leaves the page's origin, every
// response carries the CSP, and nothing of the message's markup reaches the app's DOM.
// Screenshots of the queue page and a message page go to docs/ for the README.

import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import type { FastifyInstance } from 'fastify';
import { buildWebApp } from '../../lib/web/server.js';
import { OPERATOR, PASSWORD, SPAMMER, type WebWorld, createWebWorld } from '../helpers/web-fixture.js';
import { serverAvailable } from '../helpers/db.js';
import { ROOT, runCli } from '../helpers/cli.js';
import { IN_CI, haveTools } from '../helpers/tools.js';

const CHROMIUM = '/usr/bin/chromium';
const HAVE_BROWSER = fs.existsSync(CHROMIUM);
if (!HAVE_BROWSER) {
  if (IN_CI) throw new Error(`${CHROMIUM} is missing (apt-get install chromium); CI must run every test`);
  process.stderr.write(`skipping the browser tests: no ${CHROMIUM} (apt-get install chromium)\n`);
}
const SERVER = await serverAvailable();
const TOOLS = haveTools('tcprules', 'tcprulescheck');
const RUN = HAVE_BROWSER && SERVER && TOOLS;

let w: WebWorld;
let app: FastifyInstance;
let browser: Browser;
let page: Page;
let origin: string;
const dialogs: string[] = [];
const foreign: string[] = [];
const noCsp: string[] = [];

beforeAll(async () => {
  if (!RUN) return;
  w = await createWebWorld();
  app = await buildWebApp(w.appInputs());
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address() as { port: number };
  origin = `http://127.0.0.1:${addr.port}`;
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on('dialog', async (d) => {
    dialogs.push(d.message());
    await d.dismiss();
  });
  // Every request of the page and its frames: none may leave our origin.
  context.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(`${origin}/`) && !u.startsWith('data:') && u !== 'about:blank' && u !== 'about:srcdoc') foreign.push(u);
  });
  context.on('response', (r) => {
    if (r.url().startsWith(origin) && !r.headers()['content-security-policy']) noCsp.push(r.url());
  });
}, 180_000);
afterAll(async () => {
  await browser?.close();
  await app?.close();
  await w?.cleanup();
});

async function sql<T = Record<string, unknown>>(text: string, params: unknown[] = []): Promise<T[]> {
  const c = await w.db.open();
  try {
    return (await c.query(text, params)).rows as T[];
  } finally {
    await c.close();
  }
}

describe.skipIf(!RUN)('qguard web in Chromium', () => {
  it('login, then the overview', async () => {
    await page.goto(`${origin}/`);
    expect(page.url()).toContain('/login');
    await page.fill('input[name=user]', OPERATOR);
    await page.fill('input[name=password]', PASSWORD);
    await page.click('button[type=submit]');
    await page.waitForLoadState('load');
    if (page.url() !== `${origin}/`) throw new Error(`after login at ${page.url()}: ${await page.textContent('main')}`);
    expect(await page.textContent('h1')).toBe('Overview');
    expect(await page.textContent('main')).toContain('scan-queue');
  });

  it('queue by IP on the sample queue: the spammer first, its subject as text', async () => {
    await page.goto(`${origin}/queue`);
    const first = page.locator('table.queue tbody tr').first();
    expect(await first.locator('td').first().textContent()).toBe(SPAMMER);
    // The message's "<script>" is text in a cell, not an element.
    expect(await page.locator('main script').count()).toBe(0);
    fs.mkdirSync(path.join(ROOT, 'docs'), { recursive: true });
    await page.screenshot({ path: path.join(ROOT, 'docs', 'web-queue.png'), fullPage: true });
  });

  it('the IP page and the most hostile message: nothing runs, nothing loads, nothing of it in our DOM', async () => {
    await page.click(`a[href="/ip/${SPAMMER}"]`);
    await page.waitForURL(`${origin}/ip/${SPAMMER}`);
    expect(await page.textContent('h1')).toBe(`IP ${SPAMMER}`);
    const [hostile] = await sql<{ id: string }>(`SELECT id FROM qguard.messages WHERE queue_id = $1`, [w.ids.hostile]);
    await page.click(`a[href="/message/${hostile.id}"]`);
    await page.waitForURL(`${origin}/message/${hostile.id}`);
    const frame = page.frameLocator('iframe.html-part');
    await expect.poll(async () => (await frame.locator('body').textContent()) ?? '').toContain('Dear customer');
    await page.waitForTimeout(500);
    // In the app's own DOM: no element the message wrote.
    const dom = await page.evaluate(() => ({
      scripts: document.querySelectorAll('script').length,
      imgs: document.querySelectorAll('img').length,
      forms: [...document.querySelectorAll('form')].map((f) => f.getAttribute('action')),
      links: [...document.querySelectorAll('a')].map((a) => a.getAttribute('href')).filter((h) => h && !h.startsWith('/')),
      iframes: [...document.querySelectorAll('iframe')].map((f) => [f.getAttribute('sandbox'), f.getAttribute('src')]),
    }));
    expect(dom).toEqual({ scripts: 0, imgs: 0, forms: ['/logout'], links: [], iframes: [['', `/message/${hostile.id}/html`]] });
    // The subject is shown as the text it is, its RTL override made visible.
    expect(await page.textContent('dd.subject')).toBe("<script>alert('subject')</script> rtl \\u202egnp.exe");
    // Inside the frame too: no script, no remote image, no form.
    const inFrame = await frame.locator('body').evaluate((b) => ({
      scripts: b.ownerDocument.querySelectorAll('script').length,
      forms: b.ownerDocument.querySelectorAll('form').length,
      remoteImgs: [...b.ownerDocument.querySelectorAll('img')].filter((i) => !i.src.startsWith('data:')).length,
    }));
    expect(inFrame).toEqual({ scripts: 0, forms: 0, remoteImgs: 0 });
    await page.screenshot({ path: path.join(ROOT, 'docs', 'web-message.png'), fullPage: true });
    expect(dialogs).toEqual([]);
    expect(foreign).toEqual([]);
  });

  it('deny from the page: the rule is in the database, sync-rules writes it to tcp.smtp', async () => {
    await page.goto(`${origin}/ip/${SPAMMER}`);
    const deny = page.locator('form[action$="/deny"]');
    await deny.locator('input[name=reason]').fill('spam run seen on the page');
    await deny.locator('button').click();
    await page.waitForURL(`${origin}/ip/${SPAMMER}?done=deny`);
    expect(await page.textContent('p.notice')).toContain('Denied');
    expect(await sql(`SELECT action, who, reason FROM qguard.rules WHERE network = $1::cidr`, [`${SPAMMER}/32`])).toEqual([
      { action: 'deny', who: OPERATOR, reason: 'spam run seen on the page' },
    ]);
    const sync = await runCli('sync-rules', [], { env: w.env });
    expect(sync).toMatchObject({ code: 0, stdout: '' });
    const check = await runCli('qguard', ['ip', 'why', SPAMMER], { env: w.env });
    expect(check.stdout).toContain('deny');
    const { execa } = await import('execa');
    const tcprc = await execa('tcprulescheck', [w.env.QGUARD_RULES_CDB], { env: { TCPREMOTEIP: SPAMMER }, reject: false });
    expect(tcprc.stdout).toContain('deny connection');
  });

  it('purge request from the page, carried out by purge-queue --requests; restore from the quarantine page', async () => {
    await page.goto(`${origin}/ip/${SPAMMER}`);
    await page.locator('form[action$="/purge"] button').click();
    await page.waitForURL(`${origin}/ip/${SPAMMER}?done=purge`);
    expect(await page.textContent('table.requests')).toContain('pending');
    expect(await runCli('purge-queue', ['--requests'], { env: w.env })).toMatchObject({ code: 0, stdout: '' });
    await page.reload();
    expect(await page.textContent('table.requests')).toContain('done');
    await page.goto(`${origin}/quarantine`);
    const [entry] = await sql<{ id: string }>(`SELECT id FROM qguard.quarantine WHERE queue_id = $1`, [w.ids.hostile]);
    await page.click(`a[href="/quarantine/${entry.id}"]`);
    await page.locator('form[action$="/restore"] button').click();
    await page.waitForURL(/done=restore/);
    expect(await runCli('purge-queue', ['--requests'], { env: w.env })).toMatchObject({ code: 0 });
    expect(await sql(`SELECT state FROM qguard.quarantine WHERE id = $1`, [entry.id])).toEqual([{ state: 'restored' }]);
  });

  it('all along: no dialog, no foreign request, the CSP on every response', () => {
    expect(dialogs).toEqual([]);
    expect(foreign).toEqual([]);
    expect(noCsp).toEqual([]);
  });
});

export {};
