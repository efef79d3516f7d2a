// One typed configuration, resolved once per run: defaults < config file < environment <
// flags. The keys are the environment names of INTERFACE.md; the config file holds the same
// keys as `KEY=value` lines. This module is pure: the caller reads the file, the host name and
// the interface addresses and hands them in (see lib/cli/load-config.ts).

import { PermanentError, UsageError } from './errors.js';
import { parseDuration } from './duration.js';
import { FIREWALL_BACKENDS, type FirewallBackendName } from './firewall/backends.js';
import { type Net, parseNet, quoteInput } from './net/address.js';

export type FirewallBackend = 'none' | FirewallBackendName;

/** Everything a run needs to know, resolved. */
export interface Config {
  /** The config file that was read, or null. */
  configFile: string | null;
  /** PostgreSQL server URL; null with `usePgEnv` false means the embedded database. */
  databaseUrl: string | null;
  /** No URL, but libpq PG* variables name a server: connect with them. */
  usePgEnv: boolean;
  /** Where databaseUrl was given, for messages ("QGUARD_DATABASE_URL", "--database-url", "FILE: KEY"). */
  databaseUrlFrom: string | null;
  /** libpq's PG* variables as given to this run (read the libpq way by lib/db/conninfo.ts). */
  pgEnv: Readonly<Record<string, string>>;
  stateDir: string;
  host: string;
  qmailHome: string;
  queueDir: string;
  controlDir: string;
  rulesFile: string;
  rulesCdb: string;
  rulesStatic: string;
  tcprules: string;
  tcprulescheck: string;
  /** IPv6 keys in tcp.smtp: `auto` when the installed tcprules is the IPv6 one (ucspi-tcp-ipv6). */
  tcprulesIpv6: 'auto' | 'on' | 'off';
  /** Extra env for relay rules, tcprules syntax: `RBLSMTPD="",X="y"`. Validated by sync-rules. */
  relayEnv: string;
  trustEnv: string;
  denyMode: 'deny' | 'rblsmtpd';
  denyMessage: string;
  defaultRule: string;
  manageRcpthosts: boolean;
  qmailNewmrh: string;
  firewall: FirewallBackend;
  firewallPorts: number[];
  firewallAction: 'drop' | 'reject';
  /** QGUARD_PROTECT as given (the built-in protections are added by protectedNets()). */
  protect: Net[];
  /** Broadest network accepted for a rule, per family. */
  minPrefix: { 4: number; 6: number };
  threshold: number;
  windowSeconds: number;
  /** Expiry of scan-queue's denials, seconds; null = never. */
  scanBanSeconds: number | null;
  scanExempt: Net[];
  qmailStop: string;
  qmailStart: string;
  qmailQueue: string;
  quarantineDir: string;
  quarantineKeepSeconds: number;
  syslog: boolean;
  /** How long to wait for the embedded database's lock before exit 111, seconds. */
  lockWaitSeconds: number;
  /** Bytes of each queued message scan-queue keeps readable for the review page; 0: none. */
  copyBytes: number;
  /** tcpserver's multilog directory that scan-queue counts connections from; null: none. */
  smtpdLog: string | null;
  /** The spool contrib/qmail/qguard-queue appends accepted messages to; null: none. */
  acceptedSpool: string | null;
  /** What the threshold counts: messages still queued, accepted messages (the spool), or either. */
  count: CountMode;
  /** Deny an address that opens this many connections (refused ones too) within `seconds`; null: off. */
  connectionLimit: { connections: number; seconds: number } | null;
  /** `qguard web`: where it listens (HOST:PORT). */
  webListen: string;
  /** `qguard web`: a session ends after this long without a request, seconds. */
  webIdleSeconds: number;
}

type Kind = 'string' | 'path' | 'bool' | 'int' | 'duration' | 'nets' | 'ports' | 'enum' | 'prefixes' | 'rate';

export const COUNT_MODES = ['queued', 'accepted', 'both'] as const;
export type CountMode = (typeof COUNT_MODES)[number];

interface KeySpec {
  key: string;
  kind: Kind;
  /** Commander flag, when the key has one. */
  flag?: string;
  /** Short help for the flag. */
  help?: string;
  values?: readonly string[];
}

/** Every configuration key; the flags are shared by every executable. */
export const CONFIG_KEYS: readonly KeySpec[] = [
  { key: 'QGUARD_DATABASE_URL', kind: 'string', flag: '--database-url <url>', help: 'PostgreSQL server URL (default: embedded database)' },
  { key: 'DATABASE_URL', kind: 'string' },
  { key: 'QGUARD_STATE_DIR', kind: 'path', flag: '--state-dir <dir>', help: 'embedded database and local state (default /var/lib/qguard)' },
  { key: 'QGUARD_HOST', kind: 'string', flag: '--host <name>', help: "this mail server's name (default: host name)" },
  { key: 'QMAIL_HOME', kind: 'path', flag: '--qmail-home <dir>', help: 'qmail directory (default /var/qmail)' },
  { key: 'QGUARD_QUEUE', kind: 'path', flag: '--queue <dir>', help: 'qmail queue (default $QMAIL_HOME/queue)' },
  { key: 'QGUARD_CONTROL', kind: 'path', flag: '--control <dir>', help: 'qmail control directory (default $QMAIL_HOME/control)' },
  { key: 'QGUARD_RULES', kind: 'path', flag: '--rules <file>', help: 'generated rules text (default /etc/tcp.smtp)' },
  { key: 'QGUARD_RULES_CDB', kind: 'path', flag: '--cdb <file>', help: 'compiled rules for tcpserver -x (default /etc/tcp.smtp.cdb)' },
  { key: 'QGUARD_RULES_STATIC', kind: 'path', flag: '--static <file>', help: 'hand-written rules copied first (default /etc/qguard/tcp.smtp.static)' },
  { key: 'QGUARD_TCPRULES', kind: 'path', flag: '--tcprules <path>', help: 'ucspi-tcp tcprules (default: on PATH)' },
  { key: 'QGUARD_TCPRULESCHECK', kind: 'path', flag: '--tcprulescheck <path>', help: 'ucspi-tcp tcprulescheck (default: on PATH)' },
  { key: 'QGUARD_TCPRULES_IPV6', kind: 'enum', values: ['auto', 'on', 'off'] },
  { key: 'QGUARD_RELAY_ENV', kind: 'string' },
  { key: 'QGUARD_TRUST_ENV', kind: 'string' },
  { key: 'QGUARD_DENY_MODE', kind: 'enum', values: ['deny', 'rblsmtpd'] },
  { key: 'QGUARD_DENY_MESSAGE', kind: 'string' },
  { key: 'QGUARD_DEFAULT_RULE', kind: 'string' },
  { key: 'QGUARD_MANAGE_RCPTHOSTS', kind: 'bool' },
  { key: 'QGUARD_QMAIL_NEWMRH', kind: 'path' },
  { key: 'QGUARD_FIREWALL', kind: 'enum', values: ['none', ...FIREWALL_BACKENDS], flag: '--firewall <backend>', help: `firewall backend: ${FIREWALL_BACKENDS.join(', ')} or none (default none)` },
  { key: 'QGUARD_FIREWALL_PORTS', kind: 'ports', flag: '--ports <list>', help: 'TCP ports blocked for denied addresses (default 25,110)' },
  { key: 'QGUARD_FIREWALL_ACTION', kind: 'enum', values: ['drop', 'reject'] },
  { key: 'QGUARD_PROTECT', kind: 'nets', flag: '--protect <list>', help: 'networks never denied, added to loopback and this host (comma-separated)' },
  { key: 'QGUARD_MIN_PREFIX', kind: 'prefixes' },
  { key: 'QGUARD_THRESHOLD', kind: 'int', flag: '--threshold <n>', help: 'messages per IP that make scan-queue deny it (default 20)' },
  { key: 'QGUARD_WINDOW', kind: 'duration', flag: '--window <dur>', help: 'window for the threshold (default 3d)' },
  { key: 'QGUARD_SCAN_BAN', kind: 'duration' },
  { key: 'QGUARD_SCAN_EXEMPT', kind: 'nets' },
  { key: 'QGUARD_QMAIL_STOP', kind: 'string', flag: '--stop <cmd>', help: 'command that stops qmail-send (default svc -d /service/qmail-send)' },
  { key: 'QGUARD_QMAIL_START', kind: 'string', flag: '--start <cmd>', help: 'command that starts qmail-send (default svc -u /service/qmail-send)' },
  { key: 'QGUARD_QMAIL_QUEUE', kind: 'path', flag: '--qmail-queue <path>', help: 'qmail-queue used to re-inject restored mail' },
  { key: 'QGUARD_QUARANTINE_DIR', kind: 'path', flag: '--quarantine <dir>', help: 'where purged messages are kept' },
  { key: 'QGUARD_QUARANTINE_KEEP', kind: 'duration' },
  { key: 'QGUARD_SYSLOG', kind: 'bool' },
  { key: 'QGUARD_LOCK_WAIT', kind: 'duration' },
  { key: 'QGUARD_COPY_BYTES', kind: 'int' },
  { key: 'QGUARD_SMTPD_LOG', kind: 'string' },
  { key: 'QGUARD_ACCEPTED_SPOOL', kind: 'string' },
  { key: 'QGUARD_COUNT', kind: 'enum', values: COUNT_MODES },
  { key: 'QGUARD_CONNECTION_LIMIT', kind: 'rate' },
  { key: 'QGUARD_WEB_LISTEN', kind: 'string' },
  { key: 'QGUARD_WEB_IDLE', kind: 'duration' },
];

const KNOWN = new Map(CONFIG_KEYS.map((k) => [k.key, k]));

/** Default scan exemptions: RFC 1918, loopback, link-local, IPv6 unique-local. */
export const DEFAULT_SCAN_EXEMPT = '10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,127.0.0.0/8,169.254.0.0/16,::1/128,fe80::/10,fc00::/7';

/** Always protected, whatever QGUARD_PROTECT says. */
export const BUILTIN_PROTECT = '127.0.0.0/8,::1/128';

/** Parse `KEY=value` config text. Returns values and problems naming the line. */
export function parseConfigText(text: string): { values: Record<string, string>; problems: string[] } {
  const values: Record<string, string> = {};
  const problems: string[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) return;
    const m = /^([A-Z_][A-Z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) {
      problems.push(`line ${i + 1}: expected KEY=value: ${quoteInput(line)}`);
      return;
    }
    const [, key, rawValue] = m;
    if (!KNOWN.has(key)) {
      problems.push(`line ${i + 1}: unknown key ${key}`);
      return;
    }
    let value = rawValue;
    // Allow shell-style quoting of the whole value, as in /etc/default files.
    const q = /^(["'])(.*)\1$/.exec(value);
    if (q) value = q[2];
    values[key] = value;
  });
  return { values, problems };
}

/** Where a value came from, for error messages and exit codes. */
type Origin = { kind: 'flag'; name: string } | { kind: 'env'; name: string } | { kind: 'file'; name: string };

function fail(origin: Origin, msg: string): never {
  if (origin.kind === 'flag') throw new UsageError(`${origin.name}: ${msg}`);
  throw new PermanentError(`${origin.kind === 'env' ? `${origin.name} (environment)` : origin.name}: ${msg}`);
}

function parseBool(v: string, origin: Origin): boolean {
  const s = v.trim().toLowerCase();
  if (['1', 'yes', 'true', 'on'].includes(s)) return true;
  if (['0', 'no', 'false', 'off', ''].includes(s)) return false;
  return fail(origin, `not a yes/no value: ${quoteInput(v)}`);
}

/** Parse a comma/space separated list of networks. */
export function parseNetList(v: string): { nets: Net[] } | { error: string } {
  const nets: Net[] = [];
  for (const part of v.split(/[\s,]+/)) {
    if (part === '') continue;
    const r = parseNet(part);
    if (!r.ok) return { error: r.error };
    nets.push(r.net);
  }
  return { nets };
}

export interface ConfigInputs {
  /** Flag values keyed by config key (only those given on the command line). */
  flags: Record<string, string | undefined>;
  env: Record<string, string | undefined>;
  /** Parsed config file values and its name, if one was read. */
  file: { name: string; values: Record<string, string> } | null;
  hostname: string;
}

/** Resolve the configuration. Throws UsageError for bad flags, PermanentError otherwise. */
export function resolveConfig(inputs: ConfigInputs): Config {
  const pick = (key: string): { value: string; origin: Origin } | undefined => {
    const spec = KNOWN.get(key);
    const flagValue = inputs.flags[key];
    if (flagValue !== undefined) return { value: flagValue, origin: { kind: 'flag', name: spec?.flag?.split(' ')[0] ?? key } };
    const envValue = inputs.env[key];
    if (envValue !== undefined) return { value: envValue, origin: { kind: 'env', name: key } };
    const fileValue = inputs.file?.values[key];
    if (fileValue !== undefined) return { value: fileValue, origin: { kind: 'file', name: `${inputs.file!.name}: ${key}` } };
    return undefined;
  };
  const str = (key: string, dflt: string): string => pick(key)?.value ?? dflt;
  const path = (key: string, dflt: string): string => {
    const p = pick(key);
    if (!p) return dflt;
    if (p.value.trim() === '') fail(p.origin, 'empty path');
    if (p.value.includes('\0')) fail(p.origin, 'NUL in path');
    return p.value;
  };
  const bool = (key: string, dflt: boolean): boolean => {
    const p = pick(key);
    return p ? parseBool(p.value, p.origin) : dflt;
  };
  const int = (key: string, dflt: number, min: number, max: number): number => {
    const p = pick(key);
    if (!p) return dflt;
    if (!/^\d{1,9}$/.test(p.value.trim())) fail(p.origin, `not a whole number: ${quoteInput(p.value)}`);
    const n = Number(p.value.trim());
    if (n < min || n > max) fail(p.origin, `must be between ${min} and ${max}: ${n}`);
    return n;
  };
  const duration = (key: string, dflt: number | null): number | null => {
    const p = pick(key);
    if (!p) return dflt;
    if (['', 'none', 'never'].includes(p.value.trim()) && dflt === null) return null;
    const r = parseDuration(p.value);
    if ('error' in r) fail(p.origin, r.error);
    return r.seconds;
  };
  const nets = (key: string, dflt: string): Net[] => {
    const p = pick(key);
    const r = parseNetList(p ? p.value : dflt);
    if ('error' in r) return fail(p!.origin, r.error);
    return r.nets;
  };
  const oneOf = <T extends string>(key: string, dflt: T): T => {
    const p = pick(key);
    if (!p) return dflt;
    const values = KNOWN.get(key)!.values!;
    const v = p.value.trim().toLowerCase();
    if (!values.includes(v)) fail(p.origin, `must be one of ${values.join(', ')}: ${quoteInput(p.value)}`);
    return v as T;
  };
  /** `N/DURATION` (300/10m), or empty for none. */
  const rate = (key: string): { connections: number; seconds: number } | null => {
    const p = pick(key);
    if (!p || ['', 'none', 'off'].includes(p.value.trim())) return null;
    const m = /^\s*(\d{1,9})\s*\/\s*(\S+)\s*$/.exec(p.value);
    if (!m) return fail(p.origin, `not COUNT/DURATION (such as 300/10m): ${quoteInput(p.value)}`);
    const d = parseDuration(m[2]);
    if ('error' in d) return fail(p.origin, d.error);
    if (Number(m[1]) < 1 || d.seconds < 60) return fail(p.origin, `at least 1 connection in at least 1m: ${quoteInput(p.value)}`);
    return { connections: Number(m[1]), seconds: d.seconds };
  };
  const ports = (key: string, dflt: number[]): number[] => {
    const p = pick(key);
    if (!p) return dflt;
    const out: number[] = [];
    for (const part of p.value.split(/[\s,]+/)) {
      if (part === '') continue;
      if (!/^\d{1,5}$/.test(part) || Number(part) < 1 || Number(part) > 65535) fail(p.origin, `not a TCP port: ${quoteInput(part)}`);
      if (!out.includes(Number(part))) out.push(Number(part));
    }
    if (out.length === 0) fail(p.origin, 'no ports');
    return out;
  };
  const prefixes = (key: string): { 4: number; 6: number } => {
    const p = pick(key);
    if (!p) return { 4: 8, 6: 32 };
    const m = /^\s*\/?(\d{1,3})\s*(?:[,\s]\s*\/?(\d{1,3})\s*)?$/.exec(p.value);
    if (!m) fail(p.origin, `expected "V4" or "V4,V6" prefix lengths such as 8,32: ${quoteInput(p.value)}`);
    const v4 = Number(m[1]);
    const v6 = m[2] === undefined ? 32 : Number(m[2]);
    if (v4 < 1 || v4 > 32 || v6 < 1 || v6 > 128) fail(p.origin, 'prefix lengths out of range (1-32, 1-128)');
    return { 4: v4, 6: v6 };
  };

  const qmailHome = path('QMAIL_HOME', '/var/qmail');
  const stateDir = path('QGUARD_STATE_DIR', '/var/lib/qguard');
  const urlPick = pick('QGUARD_DATABASE_URL') ?? pick('DATABASE_URL');
  const databaseUrl = urlPick && urlPick.value.trim() !== '' ? urlPick.value.trim() : null;
  const usePgEnv = databaseUrl === null && ['PGHOST', 'PGDATABASE', 'PGSERVICE'].some((k) => (inputs.env[k] ?? '') !== '');
  const pgEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(inputs.env)) if (k.startsWith('PG') && v !== undefined) pgEnv[k] = v;
  const host = str('QGUARD_HOST', inputs.hostname).trim();
  if (host === '' || host.length > 255 || /[\s\0]/.test(host)) {
    const p = pick('QGUARD_HOST');
    if (p) fail(p.origin, `bad host name: ${quoteInput(host)}`);
  }

  return {
    configFile: inputs.file?.name ?? null,
    databaseUrl,
    databaseUrlFrom: databaseUrl === null || !urlPick ? null : urlPick.origin.name,
    usePgEnv,
    pgEnv,
    stateDir,
    host,
    qmailHome,
    queueDir: path('QGUARD_QUEUE', `${qmailHome}/queue`),
    controlDir: path('QGUARD_CONTROL', `${qmailHome}/control`),
    rulesFile: path('QGUARD_RULES', '/etc/tcp.smtp'),
    rulesCdb: path('QGUARD_RULES_CDB', '/etc/tcp.smtp.cdb'),
    rulesStatic: path('QGUARD_RULES_STATIC', '/etc/qguard/tcp.smtp.static'),
    tcprules: path('QGUARD_TCPRULES', 'tcprules'),
    tcprulescheck: path('QGUARD_TCPRULESCHECK', 'tcprulescheck'),
    tcprulesIpv6: oneOf<'auto' | 'on' | 'off'>('QGUARD_TCPRULES_IPV6', 'auto'),
    relayEnv: str('QGUARD_RELAY_ENV', ''),
    trustEnv: str('QGUARD_TRUST_ENV', ''),
    denyMode: oneOf('QGUARD_DENY_MODE', 'deny'),
    denyMessage: str('QGUARD_DENY_MESSAGE', 'your address is listed as a source of spam'),
    defaultRule: str('QGUARD_DEFAULT_RULE', ':allow'),
    manageRcpthosts: bool('QGUARD_MANAGE_RCPTHOSTS', false),
    qmailNewmrh: path('QGUARD_QMAIL_NEWMRH', `${qmailHome}/bin/qmail-newmrh`),
    firewall: oneOf<FirewallBackend>('QGUARD_FIREWALL', 'none'),
    firewallPorts: ports('QGUARD_FIREWALL_PORTS', [25, 110]),
    firewallAction: oneOf('QGUARD_FIREWALL_ACTION', 'drop'),
    protect: nets('QGUARD_PROTECT', ''),
    minPrefix: prefixes('QGUARD_MIN_PREFIX'),
    threshold: int('QGUARD_THRESHOLD', 20, 1, 1_000_000_000),
    windowSeconds: duration('QGUARD_WINDOW', 3 * 86400)!,
    scanBanSeconds: duration('QGUARD_SCAN_BAN', null),
    scanExempt: nets('QGUARD_SCAN_EXEMPT', DEFAULT_SCAN_EXEMPT),
    qmailStop: str('QGUARD_QMAIL_STOP', 'svc -d /service/qmail-send'),
    qmailStart: str('QGUARD_QMAIL_START', 'svc -u /service/qmail-send'),
    qmailQueue: path('QGUARD_QMAIL_QUEUE', `${qmailHome}/bin/qmail-queue`),
    quarantineDir: path('QGUARD_QUARANTINE_DIR', `${stateDir}/quarantine`),
    quarantineKeepSeconds: duration('QGUARD_QUARANTINE_KEEP', 30 * 86400)!,
    syslog: bool('QGUARD_SYSLOG', false),
    lockWaitSeconds: duration('QGUARD_LOCK_WAIT', 60)!,
    copyBytes: int('QGUARD_COPY_BYTES', 64 * 1024, 0, 16 * 1024 * 1024),
    smtpdLog: str('QGUARD_SMTPD_LOG', '').trim() === '' ? null : path('QGUARD_SMTPD_LOG', ''),
    acceptedSpool: str('QGUARD_ACCEPTED_SPOOL', '').trim() === '' ? null : path('QGUARD_ACCEPTED_SPOOL', ''),
    count: oneOf<CountMode>('QGUARD_COUNT', 'queued'),
    connectionLimit: rate('QGUARD_CONNECTION_LIMIT'),
    webListen: str('QGUARD_WEB_LISTEN', '127.0.0.1:8025').trim(),
    webIdleSeconds: duration('QGUARD_WEB_IDLE', 30 * 60)!,
  };
}

/**
 * Every network that may never be denied: loopback, QGUARD_PROTECT and this machine's own
 * addresses (passed in by the caller, who can read the interfaces).
 */
export function protectedNets(config: Config, interfaceAddrs: readonly Net[]): Net[] {
  const builtin = parseNetList(BUILTIN_PROTECT);
  if ('error' in builtin) throw new Error(builtin.error);
  return [...builtin.nets, ...config.protect, ...interfaceAddrs];
}
