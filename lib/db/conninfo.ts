// Where to connect, read the way libpq (psql, pg_dump, every PostgreSQL tool) reads it: a URL
// (`postgresql:///mail`, `postgresql://u@db/mail?sslmode=require`) or keyword/value conninfo
// (`host=/var/run/postgresql dbname=mail`), then a pg_service.conf service, then the PG*
// environment, then libpq's built-in defaults — the Unix socket, the operating-system user,
// a database named like the user. node-postgres has defaults of its own (TCP localhost, $USER);
// resolving everything here and handing it over explicitly means they never apply.
//
// Pure: the caller hands in the environment, the OS user, and probes for the file system (is
// there a server socket in this directory? the text of a service file). It does not read
// .pgpass (that is matched lazily, only when the server asks for a password: see
// pgpassLookup) and never connects.
//
// Size: libpq's connection rules (URL, keyword/value, services, PG* variables, .pgpass, defaults) are one resolution and read best together.

import { parse as parseUri } from 'pg-connection-string';
import { PermanentError } from '../errors.js';

/** libpq's sslmode values. */
export type SslMode = 'disable' | 'allow' | 'prefer' | 'require' | 'verify-ca' | 'verify-full';
const SSL_MODES: readonly SslMode[] = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'];

/** Debian's libpq default socket directory (DEFAULT_PGSOCKET_DIR), then the upstream one. */
export const SOCKET_DIRS = ['/var/run/postgresql', '/tmp'] as const;

/** The keywords qguard passes on; libpq's own names. */
const SUPPORTED = new Set([
  'host',
  'hostaddr',
  'port',
  'dbname',
  'user',
  'password',
  'passfile',
  'connect_timeout',
  'application_name',
  'fallback_application_name',
  'options',
  'client_encoding',
  'sslmode',
  'sslcert',
  'sslkey',
  'sslrootcert',
  'service',
  'keepalives',
  'keepalives_idle',
]);

/** libpq keywords that node-postgres cannot honour: refused, not silently ignored. */
const UNSUPPORTED = new Set([
  'requiressl',
  'sslcompression',
  'sslcrl',
  'sslcrldir',
  'sslpassword',
  'sslsni',
  'sslcertmode',
  'sslnegotiation',
  'ssl_min_protocol_version',
  'ssl_max_protocol_version',
  'gssencmode',
  'gsslib',
  'gssdelegation',
  'krbsrvname',
  'requirepeer',
  'require_auth',
  'channel_binding',
  'target_session_attrs',
  'load_balance_hosts',
  'replication',
  'keepalives_interval',
  'keepalives_count',
  'tcp_user_timeout',
]);

/** PG* variables and the keyword each one fills (libpq's table, the ones we support). */
const ENV_KEYS: readonly [string, string][] = [
  ['PGHOST', 'host'],
  ['PGHOSTADDR', 'hostaddr'],
  ['PGPORT', 'port'],
  ['PGDATABASE', 'dbname'],
  ['PGUSER', 'user'],
  ['PGPASSWORD', 'password'],
  ['PGPASSFILE', 'passfile'],
  ['PGCONNECT_TIMEOUT', 'connect_timeout'],
  ['PGAPPNAME', 'application_name'],
  ['PGOPTIONS', 'options'],
  ['PGCLIENTENCODING', 'client_encoding'],
  ['PGSSLMODE', 'sslmode'],
  ['PGSSLCERT', 'sslcert'],
  ['PGSSLKEY', 'sslkey'],
  ['PGSSLROOTCERT', 'sslrootcert'],
];

/** What the resolver may look at outside itself. */
export interface ConnProbes {
  /** The operating-system user (os.userInfo().username), libpq's default user. */
  osUser: string;
  /** The user's home directory, for ~/.pgpass, ~/.pg_service.conf and ~/.postgresql/. */
  home: string;
  /** Is there a server socket `dir/.s.PGSQL.port`? */
  socketExists(dir: string, port: number): boolean;
  /** A file's text, or null when it does not exist (service files). */
  readFile(file: string): string | null;
}

/** Where a value came from, for messages: "URL", "PGHOST", "service mail", "default". */
export type Origin = string;

/** One resolved connection target. Never printed whole: it may hold a password. */
export interface ConnTarget {
  /** A socket directory (`socket` true) or a host name / address for TCP. */
  host: string;
  socket: boolean;
  /** hostaddr: the numeric address to dial, when given (host then names it for TLS and .pgpass). */
  hostaddr: string | null;
  port: number;
  user: string;
  database: string;
  /** An explicit password (URL, conninfo, service or PGPASSWORD), or null: see passfile. */
  password: string | null;
  /** The password file to consult when the server asks and no password was given. */
  passfile: string;
  /** For sockets always 'disable' in effect: libpq never uses TLS on a Unix socket. */
  sslmode: SslMode;
  sslcert: string | null;
  sslkey: string | null;
  sslrootcert: string | null;
  connectTimeoutSeconds: number | null;
  applicationName: string | null;
  fallbackApplicationName: string | null;
  options: string | null;
  clientEncoding: string | null;
  keepalives: boolean | null;
  keepalivesIdleSeconds: number | null;
  /** Where host, port, user, database came from. */
  origins: { host: Origin; port: Origin; user: Origin; database: Origin };
  /** How the connection string itself was given, password masked ("QGUARD_DATABASE_URL \"postgresql:///mail\""). */
  given: string;
  /** The connection string, password masked; null when only the PG* environment names the server. */
  masked: string | null;
}

type Values = Map<string, { value: string; origin: Origin }>;

function fail(given: string, msg: string): never {
  throw new PermanentError(`database connection ${given}: ${msg}`);
}

/** A connection string with any password masked, for messages. */
export function maskConnString(s: string): string {
  if (/^postgres(ql)?:\/\//i.test(s)) {
    return s
      .replace(/^(postgres(?:ql)?:\/\/[^:/@?#]*:)[^@/?#]*@/i, '$1***@')
      .replace(/([?&]password=)[^&#]*/gi, '$1***');
  }
  return s.replace(/(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)/gi, '$1***');
}

/**
 * Parse libpq keyword/value conninfo: `host=/tmp dbname='my db' user=x`. Values may be
 * single-quoted, with `\'` and `\\` escapes inside (libpq's rules).
 */
export function parseKeywordValue(s: string, given: string): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  const n = s.length;
  const space = (c: string) => c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v';
  while (i < n) {
    while (i < n && space(s[i])) i++;
    if (i >= n) break;
    let key = '';
    while (i < n && s[i] !== '=' && !space(s[i])) key += s[i++];
    while (i < n && space(s[i])) i++;
    if (s[i] !== '=') fail(given, `missing "=" after "${key}" in connection info string`);
    i++;
    while (i < n && space(s[i])) i++;
    let value = '';
    if (s[i] === "'") {
      i++;
      let closed = false;
      while (i < n) {
        if (s[i] === '\\' && i + 1 < n) {
          value += s[i + 1];
          i += 2;
        } else if (s[i] === "'") {
          i++;
          closed = true;
          break;
        } else value += s[i++];
      }
      if (!closed) fail(given, 'unterminated quoted string in connection info string');
    } else {
      while (i < n && !space(s[i])) {
        if (s[i] === '\\' && i + 1 < n) {
          value += s[i + 1];
          i += 2;
        } else value += s[i++];
      }
    }
    out.set(key, value);
  }
  return out;
}

/** A postgresql:// URL's parts as libpq keywords (pg-connection-string does the URL work). */
function uriKeywords(uri: string, given: string): Map<string, string> {
  const out = new Map<string, string>();
  const authority = /^postgres(?:ql)?:\/\/([^/?#]*)/i.exec(uri)?.[1] ?? '';
  if (authority.replace(/^[^@]*@/, '').includes(',')) fail(given, 'several hosts in one URL are not supported');
  // The query parameters are ours to check (pg-connection-string would read certificate files
  // and print warnings); the rest goes through its parser.
  const q = uri.indexOf('?');
  const base = q >= 0 ? uri.slice(0, q) : uri;
  const query = q >= 0 ? uri.slice(q + 1).replace(/#.*$/, '') : '';
  let parsed: ReturnType<typeof parseUri>;
  try {
    parsed = parseUri(base);
  } catch {
    fail(given, 'not a valid postgresql:// URL');
  }
  if (parsed.host) out.set('host', parsed.host);
  if (parsed.port) out.set('port', String(parsed.port));
  if (parsed.user) out.set('user', parsed.user);
  if (parsed.password) out.set('password', parsed.password);
  if (parsed.database) out.set('dbname', parsed.database);
  if (query) {
    for (const part of query.split('&')) {
      if (part === '') continue;
      const eq = part.indexOf('=');
      if (eq < 0) fail(given, `URL parameter without "=": ${JSON.stringify(part.slice(0, 40))}`);
      let k: string;
      let v: string;
      try {
        k = decodeURIComponent(part.slice(0, eq));
        v = decodeURIComponent(part.slice(eq + 1).replace(/\+/g, ' '));
      } catch {
        fail(given, `bad %-escape in URL parameter ${JSON.stringify(part.slice(0, 40))}`);
      }
      // libpq accepts ssl=true as sslmode=require in URLs (JDBC compatibility).
      if (k === 'ssl' && v === 'true') {
        k = 'sslmode';
        v = 'require';
      }
      out.set(k, v);
    }
  }
  return out;
}

function checkKeywords(kv: Map<string, string>, where: string, given: string): void {
  for (const k of kv.keys()) {
    if (SUPPORTED.has(k)) continue;
    if (UNSUPPORTED.has(k)) fail(given, `${where} parameter "${k}" is not supported by qguard (node-postgres)`);
    fail(given, `${where}: unknown parameter "${k}"`);
  }
}

/** Parse a pg_service.conf text: `[name]` sections of `key=value` lines. */
export function parseServiceFile(text: string): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>();
  let cur: Map<string, string> | null = null;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const sec = /^\[(.*)\]$/.exec(line);
    if (sec) {
      cur = new Map();
      if (!out.has(sec[1])) out.set(sec[1], cur);
      continue;
    }
    const eq = line.indexOf('=');
    if (cur && eq > 0) cur.set(line.slice(0, eq).trim(), line.slice(eq + 1).trim());
  }
  return out;
}

function serviceValues(name: string, env: Record<string, string | undefined>, probes: ConnProbes, given: string): Map<string, string> {
  const files = [
    env.PGSERVICEFILE || `${probes.home}/.pg_service.conf`,
    `${env.PGSYSCONFDIR || '/etc/postgresql-common'}/pg_service.conf`,
  ];
  for (const f of files) {
    const text = probes.readFile(f);
    if (text === null) continue;
    const s = parseServiceFile(text).get(name);
    if (s) {
      checkKeywords(s, `service file ${f}, service "${name}":`, given);
      return s;
    }
  }
  fail(given, `definition of service "${name}" not found (looked in ${files.join(', ')})`);
}

const number = (v: { value: string; origin: Origin }, what: string, min: number, max: number, given: string): number => {
  if (!/^\d{1,9}$/.test(v.value.trim()) || Number(v.value) < min || Number(v.value) > max) {
    fail(given, `${what} from ${v.origin} is not a number from ${min} to ${max}: ${JSON.stringify(v.value.slice(0, 40))}`);
  }
  return Number(v.value);
};

/**
 * Resolve where to connect. `conn` is the configured connection string (null when only the
 * PG* environment names a server); `givenAs` says where it came from, for messages.
 */
export function resolveConnInfo(
  conn: string | null,
  env: Record<string, string | undefined>,
  probes: ConnProbes,
  givenAs = 'QGUARD_DATABASE_URL',
): ConnTarget {
  const given = conn === null ? 'from the PG* environment' : `${givenAs} ${JSON.stringify(maskConnString(conn))}`;
  const values: Values = new Map();
  if (conn !== null && conn.trim() !== '') {
    const s = conn.trim();
    let kv: Map<string, string>;
    let where: string;
    if (/^postgres(ql)?:\/\//i.test(s)) {
      kv = uriKeywords(s, given);
      where = 'URL';
    } else if (s.includes('=')) {
      kv = parseKeywordValue(s, given);
      where = 'conninfo';
    } else {
      fail(given, 'expected a postgresql:// URL or libpq "keyword=value" pairs');
    }
    checkKeywords(kv, where, given);
    for (const [k, v] of kv) values.set(k, { value: v, origin: where });
  }
  // A service (from the string, else PGSERVICE) fills what the string left out.
  const service = values.get('service')?.value ?? (env.PGSERVICE || undefined);
  if (service !== undefined) {
    for (const [k, v] of serviceValues(service, env, probes, given)) {
      if (!values.has(k)) values.set(k, { value: v, origin: `service ${service}` });
    }
  }
  for (const [envKey, k] of ENV_KEYS) {
    const v = env[envKey];
    if (v !== undefined && !values.has(k)) values.set(k, { value: v, origin: envKey });
  }
  const get = (k: string) => {
    const v = values.get(k);
    return v && v.value !== '' ? v : undefined;
  };

  for (const k of ['host', 'hostaddr', 'port']) {
    const v = get(k);
    if (v && v.value.includes(',')) fail(given, `several hosts or ports (${k} from ${v.origin}) are not supported`);
  }

  const portV = get('port');
  const port = portV ? number(portV, 'port', 1, 65535, given) : 5432;
  const hostV = get('host');
  const hostaddrV = get('hostaddr');
  let host: string;
  let hostOrigin: Origin;
  if (hostV) {
    host = hostV.value;
    hostOrigin = hostV.origin;
  } else if (hostaddrV) {
    host = hostaddrV.value;
    hostOrigin = hostaddrV.origin;
  } else {
    host = SOCKET_DIRS.find((d) => probes.socketExists(d, port)) ?? SOCKET_DIRS[0];
    hostOrigin = 'default: the local socket';
  }
  const socket = host.startsWith('/');
  const userV = get('user');
  const user = userV?.value ?? probes.osUser;
  const dbV = get('dbname');
  const database = dbV?.value ?? user;
  const sslV = get('sslmode');
  if (sslV && !(SSL_MODES as readonly string[]).includes(sslV.value)) {
    fail(given, `sslmode from ${sslV.origin} must be one of ${SSL_MODES.join(', ')}: ${JSON.stringify(sslV.value.slice(0, 40))}`);
  }
  const timeoutV = get('connect_timeout');
  const keepV = get('keepalives');
  const idleV = get('keepalives_idle');
  return {
    host,
    socket,
    hostaddr: hostV && hostaddrV ? hostaddrV.value : null,
    port,
    user,
    database,
    password: values.get('password')?.value ?? null,
    passfile: get('passfile')?.value ?? `${probes.home}/.pgpass`,
    sslmode: (sslV?.value as SslMode | undefined) ?? 'prefer',
    sslcert: get('sslcert')?.value ?? null,
    sslkey: get('sslkey')?.value ?? null,
    sslrootcert: get('sslrootcert')?.value ?? null,
    // libpq: 0 or nothing means wait indefinitely; below 2 seconds counts as 2.
    connectTimeoutSeconds: timeoutV ? Math.max(2, number(timeoutV, 'connect_timeout', 0, 86400, given)) || null : null,
    applicationName: get('application_name')?.value ?? null,
    fallbackApplicationName: get('fallback_application_name')?.value ?? null,
    options: get('options')?.value ?? null,
    clientEncoding: get('client_encoding')?.value ?? null,
    keepalives: keepV ? keepV.value !== '0' : null,
    keepalivesIdleSeconds: idleV ? number(idleV, 'keepalives_idle', 0, 86400, given) : null,
    origins: {
      host: hostOrigin,
      port: portV?.origin ?? 'default',
      user: userV?.origin ?? 'the operating-system user',
      database: dbV?.origin ?? 'default: the user name',
    },
    given,
    masked: conn === null ? null : maskConnString(conn),
  };
}

/** "socket /var/run/postgresql/.s.PGSQL.5432" or "host db.example.net port 5432". */
export function describeEndpoint(t: ConnTarget): string {
  if (t.socket) return `socket ${t.host.replace(/\/$/, '')}/.s.PGSQL.${t.port}`;
  return `host ${t.host}${t.hostaddr ? ` (${t.hostaddr})` : ''} port ${t.port}`;
}

/** Everything tried, for an error message and `qguard db status`; never the password. */
export function describeTarget(t: ConnTarget): string {
  return `${describeEndpoint(t)}, user ${t.user}, database ${t.database}`;
}

/** How each part was chosen: "host from default: the local socket, user from PGUSER, ...". */
export function describeOrigins(t: ConnTarget): string {
  return `host from ${t.origins.host}, port from ${t.origins.port}, user from ${t.origins.user}, database from ${t.origins.database}`;
}

// ---------------------------------------------------------------------------------------
// .pgpass

/** Split a .pgpass line into its five fields (`\:` and `\\` escapes); null when malformed. */
function pgpassFields(line: string): string[] | null {
  const fields: string[] = [];
  let cur = '';
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '\\' && i + 1 < line.length) {
      cur += line[++i];
    } else if (c === ':' && fields.length < 4) {
      fields.push(cur);
      cur = '';
    } else cur += c;
  }
  fields.push(cur);
  return fields.length === 5 ? fields : null;
}

/**
 * The password libpq would take from a .pgpass text for this target: the first line whose
 * host, port, database and user fields match (`*` matches anything). As in libpq, a
 * connection through the default socket directory matches the host name `localhost`.
 */
export function pgpassLookup(text: string, t: Pick<ConnTarget, 'host' | 'socket' | 'port' | 'database' | 'user'>): string | null {
  const host = t.socket && t.host.replace(/\/$/, '') === SOCKET_DIRS[0] ? 'localhost' : t.host;
  const want = [host, String(t.port), t.database, t.user];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (line === '' || line.startsWith('#')) continue;
    const f = pgpassFields(line);
    if (!f) continue;
    if (want.every((w, i) => f[i] === '*' || f[i] === w)) return f[4];
  }
  return null;
}
