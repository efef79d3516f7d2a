// commander wiring for `qguard web` (serve the review page) and `qguard web user ...`.

import fs from 'node:fs';
import type { Command } from 'commander';
import { withContext } from '../run-main.js';
import { show } from '../output.js';
import { interfaceNets } from '../load-config.js';
import { readPassword } from '../password-input.js';
import { PermanentError, UsageError } from '../../errors.js';
import { forTerminal } from '../../text.js';
import { shortTime } from '../../time.js';
import { type WebUserView, webUserAdd, webUserList, webUserPasswd, webUserRemove } from '../../admin/web-users.js';

const EXAMPLES = `
Examples:
  qguard web                                   # http://127.0.0.1:8025 (QGUARD_WEB_LISTEN)
  ssh -L 8025:localhost:8025 mx1               # then open http://localhost:8025 on your machine
  qguard web --listen 0.0.0.0:8443 --tls-cert /etc/qguard/web.crt --tls-key /etc/qguard/web.key
  qguard web --listen 127.0.0.1:8025 --behind-proxy   # nginx/Apache on this host terminates TLS
  qguard web user add alice                    # asks for the password (or reads its first stdin line)

Needs a PostgreSQL server (QGUARD_DATABASE_URL): the embedded database serves one process at a
time, and cron's jobs must have it. Runs as an unprivileged user: it never reads the queue.`;

/** `HOST:PORT` or `[V6]:PORT`. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(text.trim());
  if (!m || Number(m[3]) < 1 || Number(m[3]) > 65535) throw new UsageError(`--listen: expected HOST:PORT or [IPV6]:PORT: ${JSON.stringify(text.slice(0, 60))}`);
  return { host: m[1] ?? m[2], port: Number(m[3]) };
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || /^127\./.test(host) || host === '::1';
}

interface WebOptions {
  listen?: string;
  tlsCert?: string;
  tlsKey?: string;
  behindProxy?: boolean;
}

function renderUsers(users: WebUserView[]): string {
  return users.map((u) => `${forTerminal(u.name).padEnd(20)} added ${shortTime(u.createdAt)} by ${forTerminal(u.createdBy)}, password set ${shortTime(u.passwordChangedAt)}\n`).join('');
}

export function registerWeb(program: Command): void {
  const web = program
    .command('web')
    .description('serve the review page: queued messages by sender IP, deny or purge in one click')
    .option('--listen <host:port>', 'address to listen on (default QGUARD_WEB_LISTEN, 127.0.0.1:8025)')
    .option('--tls-cert <file>', 'serve HTTPS with this certificate (PEM)')
    .option('--tls-key <file>', 'and this key (PEM)')
    .option('--behind-proxy', 'a reverse proxy on this host forwards to us: trust its X-Forwarded-* headers')
    .addHelpText('after', EXAMPLES)
    .action(
      withContext('qguard', async (ctx, opts: WebOptions) => {
        const { host, port } = parseListen(opts.listen ?? ctx.config.webListen);
        if (Boolean(opts.tlsCert) !== Boolean(opts.tlsKey)) throw new UsageError('--tls-cert and --tls-key go together');
        const tls = opts.tlsCert && opts.tlsKey ? { cert: readPem(opts.tlsCert, '--tls-cert'), key: readPem(opts.tlsKey, '--tls-key') } : null;
        if (!isLoopback(host) && !tls && !opts.behindProxy) {
          throw new UsageError(
            `--listen ${host}: not a loopback address; operators' passwords and sessions would cross the network in clear: give --tls-cert and --tls-key, or --behind-proxy (then listen on loopback behind your HTTPS proxy)`,
          );
        }
        if (!ctx.config.databaseUrl && !ctx.config.usePgEnv) {
          throw new PermanentError(
            'qguard web needs a PostgreSQL server (QGUARD_DATABASE_URL): the embedded database serves one process at a time, and cron\'s jobs must keep it',
          );
        }
        await ctx.db(); // fail now (exit 111) rather than on the first request
        const { buildWebApp } = await import('../../web/server.js');
        const { openDb } = await import('../../db/connect.js');
        const { lockFile } = await import('../../io/lock.js');
        const app = await buildWebApp({
          config: ctx.config,
          log: ctx.log,
          openDb: () => openDb(ctx.config, 'qguard web', lockFile),
          interfaceNets,
          tls,
          behindProxy: Boolean(opts.behindProxy),
        });
        await app.listen({ host, port });
        ctx.log.info(`serving the review page on ${tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`);
        await new Promise<void>((resolve) => {
          process.once('SIGTERM', resolve);
          process.once('SIGINT', resolve);
        });
        await app.close();
      }),
    );
  const user = web.command('user').description("the review page's operators");
  user
    .command('add <name>')
    .description('add an operator (password from a prompt, or the first line of stdin)')
    .action(withContext('qguard', async (ctx, name: string) => webUserAdd(ctx, name, await readPassword())));
  user
    .command('passwd <name>')
    .description("set an operator's password (ends their sessions)")
    .action(withContext('qguard', async (ctx, name: string) => webUserPasswd(ctx, name, await readPassword())));
  user
    .command('rm <name>')
    .description('remove an operator (ends their sessions)')
    .action(withContext('qguard', (ctx, name: string) => webUserRemove(ctx, name)));
  user
    .command('ls')
    .description('list the operators')
    .option('--json', 'print as JSON')
    .action(withContext('qguard', async (ctx, opts: { json?: boolean }) => show(ctx, opts.json, await webUserList(ctx), renderUsers)));
}

function readPem(file: string, flag: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new UsageError(`${flag}: unable to read ${file}: ${(err as Error).message}`);
  }
}
