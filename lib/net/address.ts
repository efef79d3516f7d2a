// IP addresses and networks as qguard holds them: family, network address as a bigint,
// prefix length. Parsing is strict (ipaddr.js underneath, no hand-written IP regexes) because
// every loose spelling is a way to deny or open the wrong thing: `1.2.3` and `01.2.3.4` are
// refused, not guessed; `::ffff:a.b.c.d` becomes the IPv4 address it stands for. Pure.

import { forTerminal } from '../text.js';
import ipaddr from 'ipaddr.js';

export type Family = 4 | 6;

/** A network (CIDR) with its host bits clear. A single address is a /32 or /128. */
export interface Net {
  family: Family;
  /** The network address as an unsigned integer (32 or 128 bits). */
  addr: bigint;
  prefix: number;
}

export const FAMILY_BITS: Record<Family, number> = { 4: 32, 6: 128 };

/** Longest text accepted as an address: anything longer is not an address. */
const MAX_TEXT = 100;

export type ParseResult = { ok: true; net: Net } | { ok: false; error: string };

/** Show an offending input in a message without pasting 10 kB of it into the terminal. */
export function quoteInput(text: string): string {
  const shown = text.length > 60 ? `${text.slice(0, 60)}…(${text.length} chars)` : text;
  return `"${forTerminal(shown).replace(/"/g, '\\"')}"`;
}

/** Number of addresses in a family's space as a bigint mask helper. */
export function familyMax(family: Family): bigint {
  return family === 4 ? 0xffffffffn : (1n << 128n) - 1n;
}

function hostMask(family: Family, prefix: number): bigint {
  const bits = FAMILY_BITS[family];
  return (1n << BigInt(bits - prefix)) - 1n;
}

/** First address of a network. */
export function netFirst(net: Net): bigint {
  return net.addr;
}

/** Last address of a network. */
export function netLast(net: Net): bigint {
  return net.addr | hostMask(net.family, net.prefix);
}

/** True when `outer` contains `inner` (equal networks contain each other). */
export function netContains(outer: Net, inner: Net): boolean {
  if (outer.family !== inner.family || outer.prefix > inner.prefix) return false;
  return (inner.addr & ~hostMask(outer.family, outer.prefix)) === outer.addr;
}

/** True when two networks share at least one address (with CIDRs: one contains the other). */
export function netOverlaps(a: Net, b: Net): boolean {
  return netContains(a, b) || netContains(b, a);
}

/** True when the network is a single address. */
export function isHost(net: Net): boolean {
  return net.prefix === FAMILY_BITS[net.family];
}

function addrToBytes(family: Family, addr: bigint): number[] {
  const n = family === 4 ? 4 : 16;
  const out = new Array<number>(n);
  let v = addr;
  for (let i = n - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** An address as text: dotted quad, or RFC 5952 compressed IPv6 (as PostgreSQL prints it). */
export function formatAddr(family: Family, addr: bigint): string {
  if (family === 4) {
    const n = Number(addr);
    return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
  }
  return ipaddr.fromByteArray(addrToBytes(6, addr)).toString();
}

/** A network as canonical CIDR text, always with its prefix: `10.0.0.0/24`, `1.2.3.4/32`. */
export function formatNet(net: Net): string {
  return `${formatAddr(net.family, net.addr)}/${net.prefix}`;
}

/** A network as an admin writes it: single addresses without `/32` or `/128`. */
export function formatNetShort(net: Net): string {
  return isHost(net) ? formatAddr(net.family, net.addr) : formatNet(net);
}

function bytesToBigint(bytes: number[]): bigint {
  let v = 0n;
  for (const b of bytes) v = (v << 8n) | BigInt(b);
  return v;
}

/** Parse one address (no prefix) strictly; IPv4-mapped IPv6 becomes IPv4. */
function parseAddrText(text: string): { family: Family; addr: bigint } | { error: string } {
  // IPv6 first: ipaddr's IPv4 check throws (slowly) inside on anything with a colon.
  if (!text.includes(':') && ipaddr.IPv4.isValidFourPartDecimal(text)) {
    return { family: 4, addr: bytesToBigint(ipaddr.IPv4.parse(text).toByteArray()) };
  }
  if (/^[\d.]+$/.test(text)) {
    if (/(^|\.)0\d/.test(text)) {
      return { error: `leading zeros in an IPv4 address (octal-looking): ${quoteInput(text)}` };
    }
    return { error: `not an IPv4 address (four decimal parts 0-255 required): ${quoteInput(text)}` };
  }
  if (text.includes(':')) {
    if (text.includes('%')) return { error: `IPv6 zone index not allowed: ${quoteInput(text)}` };
    if (!ipaddr.IPv6.isValid(text)) return { error: `not an IPv6 address: ${quoteInput(text)}` };
    if (text.includes('.')) {
      const tail = text.slice(text.lastIndexOf(':') + 1);
      if (!ipaddr.IPv4.isValidFourPartDecimal(tail)) {
        return { error: `bad embedded IPv4 part in IPv6 address: ${quoteInput(text)}` };
      }
    }
    const v6 = ipaddr.IPv6.parse(text);
    if (v6.isIPv4MappedAddress()) {
      return { family: 4, addr: bytesToBigint(v6.toIPv4Address().toByteArray()) };
    }
    return { family: 6, addr: bytesToBigint(v6.toByteArray()) };
  }
  return { error: `not an IP address: ${quoteInput(text)}` };
}

/**
 * Parse an address or CIDR as an admin or a list writes it. Host bits set (`10.0.0.5/24`) are
 * an error that names the network meant, unless `allowHostBits` (then they are cleared).
 */
export function parseNet(input: string, opts: { allowHostBits?: boolean } = {}): ParseResult {
  const text = input.trim();
  if (text === '') return { ok: false, error: 'empty address' };
  if (text.length > MAX_TEXT) return { ok: false, error: `not an IP address or network: ${quoteInput(text)}` };
  const slash = text.indexOf('/');
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const parsed = parseAddrText(addrText);
  if ('error' in parsed) return { ok: false, error: parsed.error };
  const wasMapped = parsed.family === 4 && addrText.includes(':');
  const bits = FAMILY_BITS[parsed.family];
  let prefix = bits;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^(0|[1-9]\d{0,2})$/.test(p)) return { ok: false, error: `bad prefix length in ${quoteInput(text)}` };
    let n = Number(p);
    if (wasMapped) {
      if (n < 96) return { ok: false, error: `prefix of an IPv4-mapped network must be /96 or longer: ${quoteInput(text)}` };
      n -= 96;
    }
    if (n > bits) {
      return { ok: false, error: `prefix /${p} is longer than /${wasMapped ? 128 : bits} in ${quoteInput(text)}` };
    }
    prefix = n;
  }
  const mask = hostMask(parsed.family, prefix);
  if ((parsed.addr & mask) !== 0n && !opts.allowHostBits) {
    const meant: Net = { family: parsed.family, addr: parsed.addr & ~mask, prefix };
    return { ok: false, error: `host bits set in ${quoteInput(text)}: did you mean ${formatNet(meant)}?` };
  }
  return { ok: true, net: { family: parsed.family, addr: parsed.addr & ~mask, prefix } };
}

/** Parse a single address (no prefix allowed). */
export function parseIp(input: string): ParseResult {
  const text = input.trim();
  if (text.includes('/')) return { ok: false, error: `a single address is needed, not a network: ${quoteInput(text)}` };
  return parseNet(text);
}

/** Parse or throw with the message; for internal data already validated once. */
export function mustParseNet(text: string): Net {
  const r = parseNet(text, { allowHostBits: true });
  if (!r.ok) throw new Error(r.error);
  return r.net;
}

/** Order networks by family, then address, then prefix (shorter first). */
export function compareNets(a: Net, b: Net): number {
  if (a.family !== b.family) return a.family - b.family;
  if (a.addr !== b.addr) return a.addr < b.addr ? -1 : 1;
  return a.prefix - b.prefix;
}

/** Number of addresses in a network, as a bigint. */
export function netSize(net: Net): bigint {
  return 1n << BigInt(FAMILY_BITS[net.family] - net.prefix);
}
