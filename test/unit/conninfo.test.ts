// The connection target is read as libpq reads it: URL or keyword/value, then a service, then
// PG* variables, then the defaults (the local socket, the OS user, a database named like the user).

import { describe, expect, it } from 'vitest';
import { type ConnProbes, maskConnString, parseKeywordValue, parseServiceFile, pgpassLookup, resolveConnInfo } from '../../lib/db/conninfo.js';
import { QguardError } from '../../lib/errors.js';

function probes(o: { sockets?: string[]; files?: Record<string, string>; user?: string } = {}): ConnProbes {
  return {
    osUser: o.user ?? 'root',
    home: '/root',
    socketExists: (dir, port) => (o.sockets ?? ['/var/run/postgresql/5432']).includes(`${dir}/${port}`),
    readFile: (f) => o.files?.[f] ?? null,
  };
}

const resolve = (url: string | null, env: Record<string, string> = {}, p = probes()) => resolveConnInfo(url, env, p);

function refused(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(QguardError);
    expect((err as QguardError).exitCode).toBe(100);
    return (err as Error).message;
  }
  throw new Error('not refused');
}

describe('the libpq way', () => {
  it('postgresql:///mail is the local socket, the OS user, database mail', () => {
    const t = resolve('postgresql:///mail', {}, probes({ user: 'qguard' }));
    expect(t).toMatchObject({ host: '/var/run/postgresql', socket: true, port: 5432, user: 'qguard', database: 'mail', password: null, sslmode: 'prefer' });
    expect(t.origins.user).toBe('the operating-system user');
  });

  it('takes the socket directory that has the server: /var/run/postgresql, else /tmp', () => {
    expect(resolve('postgresql:///m', {}, probes({ sockets: ['/tmp/5432'] })).host).toBe('/tmp');
    expect(resolve('postgresql:///m', {}, probes({ sockets: ['/tmp/5432', '/var/run/postgresql/5432'] })).host).toBe('/var/run/postgresql');
    // Neither: the Debian default, so the error names the socket libpq would try.
    expect(resolve('postgresql:///m', {}, probes({ sockets: [] })).host).toBe('/var/run/postgresql');
    // The port decides which socket file is looked for.
    expect(resolve('postgresql:///m', { PGPORT: '5499' }, probes({ sockets: ['/tmp/5499', '/var/run/postgresql/5432'] })).host).toBe('/tmp');
  });

  it('PG* variables fill what the URL leaves out; the URL wins over them', () => {
    const env = { PGHOST: 'db.example.net', PGPORT: '6432', PGUSER: 'mailer', PGDATABASE: 'other', PGPASSWORD: 'pw', PGSSLMODE: 'require' };
    expect(resolve('postgresql:///mail', env)).toMatchObject({ host: 'db.example.net', socket: false, port: 6432, user: 'mailer', database: 'mail', password: 'pw', sslmode: 'require' });
    expect(resolve('postgresql://u@h:7/d?sslmode=disable', env)).toMatchObject({ host: 'h', port: 7, user: 'u', database: 'd', sslmode: 'disable' });
    expect(resolve(null, env)).toMatchObject({ host: 'db.example.net', user: 'mailer', database: 'other' });
    expect(resolve('postgresql://', { PGDATABASE: 'x' })).toMatchObject({ socket: true, user: 'root', database: 'x' });
  });

  it('the database defaults to the user name, the user to the OS user (never $USER)', () => {
    expect(resolve('postgresql://', { USER: 'someone-else' }, probes({ user: 'root' }))).toMatchObject({ user: 'root', database: 'root' });
    expect(resolve('postgresql://', { PGUSER: 'mailer' })).toMatchObject({ user: 'mailer', database: 'mailer' });
  });

  it('a socket directory in ?host=, in the host part (%2F) or in host=', () => {
    expect(resolve('postgresql:///mail?host=/srv/pg&port=5433')).toMatchObject({ host: '/srv/pg', socket: true, port: 5433 });
    expect(resolve('postgresql://%2Fsrv%2Fpg/mail')).toMatchObject({ host: '/srv/pg', socket: true, database: 'mail' });
    expect(resolve('host=/srv/pg dbname=mail user=qguard')).toMatchObject({ host: '/srv/pg', socket: true, database: 'mail', user: 'qguard' });
    expect(resolve('postgresql://[::1]:5433/d')).toMatchObject({ host: '::1', socket: false, port: 5433 });
  });

  it('keyword/value strings with quotes and escapes', () => {
    const kv = parseKeywordValue(`host = /tmp dbname='my \\'db\\'' password=a\\ b`, 'x');
    expect(Object.fromEntries(kv)).toEqual({ host: '/tmp', dbname: "my 'db'", password: 'a b' });
    expect(refused(() => parseKeywordValue("dbname='open", 'x'))).toMatch(/unterminated/);
    expect(refused(() => parseKeywordValue('dbname', 'x'))).toMatch(/missing "="/);
  });

  it('a service from pg_service.conf fills in below the string and above PG*', () => {
    const files = { '/root/.pg_service.conf': '# mine\n[mail]\nhost=/srv/pg\ndbname=mail\nuser=svc\n', '/etc/postgresql-common/pg_service.conf': '[sys]\nhost=sys.example\n' };
    expect(resolve('postgresql:///x?service=mail', { PGUSER: 'envuser' }, probes({ files }))).toMatchObject({ host: '/srv/pg', database: 'x', user: 'svc' });
    expect(resolve(null, { PGSERVICE: 'sys' }, probes({ files }))).toMatchObject({ host: 'sys.example' });
    expect(refused(() => resolve(null, { PGSERVICE: 'nope' }, probes({ files })))).toMatch(/service "nope" not found/);
    expect(parseServiceFile('[a]\nx = 1\n[b]\ny=2').get('a')?.get('x')).toBe('1');
  });

  it('refuses what it cannot honour, naming the parameter, never silently', () => {
    expect(refused(() => resolve('postgresql:///x?target_session_attrs=read-write'))).toMatch(/"target_session_attrs" is not supported/);
    expect(refused(() => resolve('postgresql:///x?colour=blue'))).toMatch(/unknown parameter "colour"/);
    expect(refused(() => resolve('postgresql://a,b/x'))).toMatch(/several hosts/);
    expect(refused(() => resolve('postgresql:///x', { PGPORT: 'fifty' }))).toMatch(/port from PGPORT/);
    expect(refused(() => resolve('postgresql:///x?sslmode=maybe'))).toMatch(/sslmode/);
    expect(refused(() => resolve('mail'))).toMatch(/expected a postgresql:\/\/ URL/);
  });

  it('never puts a password in what it says', () => {
    for (const s of ['postgresql://u:s3cret@h/d', 'postgresql://u@h/d?password=s3cret', "host=h password='s3cret' dbname=d", 'host=h password=s3cret']) {
      expect(maskConnString(s)).not.toContain('s3cret');
      const t = resolve(s);
      expect(t.password).toBe('s3cret');
      expect(t.given).not.toContain('s3cret');
      expect(JSON.stringify(t.origins)).not.toContain('s3cret');
    }
    const msg = refused(() => resolve('postgresql://u:s3cret@h/d?colour=x'));
    expect(msg).not.toContain('s3cret');
  });
});

describe('.pgpass as libpq matches it', () => {
  const t = { host: '/var/run/postgresql', socket: true, port: 5432, database: 'mail', user: 'qguard' };
  it('the default socket matches localhost; the first matching line wins; * matches anything', () => {
    expect(pgpassLookup('# comment\nother:5432:mail:qguard:no\nlocalhost:5432:mail:qguard:yes\n*:*:*:*:any\n', t)).toBe('yes');
    expect(pgpassLookup('*:*:*:qguard:any\n', t)).toBe('any');
    expect(pgpassLookup('localhost:5433:mail:qguard:no\n', t)).toBeNull();
    expect(pgpassLookup('/tmp:5432:mail:qguard:sock\n', { ...t, host: '/tmp' })).toBe('sock');
    expect(pgpassLookup('localhost:5432:mail:qguard:no\n', { ...t, host: '/tmp' })).toBeNull();
  });
  it('\\: and \\\\ escapes; a password may contain colons', () => {
    expect(pgpassLookup('db\\:1:5432:*:*:p\\:w\\\\x\n', { host: 'db:1', socket: false, port: 5432, database: 'd', user: 'u' })).toBe('p:w\\x');
    expect(pgpassLookup('h:5432:d:u:a:b:c\r\n', { host: 'h', socket: false, port: 5432, database: 'd', user: 'u' })).toBe('a:b:c');
    expect(pgpassLookup('short:line\n', t)).toBeNull();
  });
});
