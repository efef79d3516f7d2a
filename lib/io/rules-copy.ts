// sync-rules' copy of the rules it read last time (lib/db/rules-snapshot.ts patches it with
// what changed since), one binary file beside its state file: a header line of JSON (the
// database instance, host, change number, when it was read in full, the IPv6 rules), then the
// IPv4 rules as three arrays of 8-byte numbers (ids, sort keys, expiry) in this machine's
// byte order — a million rules are 24 MB, read in a few milliseconds — and a CRC-32 of all of
// it. Renamed into place but not fsynced (up to 0.1 s a run): after a crash the file is the old
// copy, the new one, or bytes that fail the CRC. A missing, foreign or broken file is no copy
// (the rules are read in full, as on a first run); an old one is patched from its own change
// number, as it should be.

import fs from 'node:fs';
import zlib from 'node:zlib';
import type { Config } from '../config.js';
import type { CopyRule6, RulesCopy } from '../db/rules-snapshot.js';
import { formatNet, mustParseNet } from '../net/address.js';
import type { Action } from '../policy/decide.js';
import { removeStaleTemps, tempName } from './atomic-write.js';
import { readIfExists } from './read-optional.js';
import { statePath } from './sync-state.js';

const MAGIC = 'qguard rules copy 1\n';

/** CRC-32 (zlib's, native since Node 20.15; the same polynomial in JavaScript before). */
const crc32: (data: Uint8Array, value?: number) => number =
  (zlib as { crc32?: (data: Uint8Array, value?: number) => number }).crc32 ?? jsCrc32;

let table: Int32Array | null = null;
export function jsCrc32(data: Uint8Array, value = 0): number {
  if (!table) {
    table = new Int32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c;
    }
  }
  let c = ~value;
  for (let i = 0; i < data.length; i++) c = table[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** The copy's file for this target: the state file's name with `.rules` instead of `.state`. */
export function rulesCopyPath(c: Config): string {
  return statePath(c).replace(/\.state$/, '.rules');
}

interface Header {
  instance: string;
  host: string;
  changeSeq: number;
  fullAt: number;
  v4Count: number;
  /** id, cidr, action, expiry (µs since 1970; null = never). */
  v6: [number, string, Action, number | null][];
}

/** The file's bytes. */
export function encodeCopy(c: RulesCopy): Buffer {
  const header: Header = {
    instance: c.instance,
    host: c.host,
    changeSeq: c.changeSeq,
    fullAt: c.fullAt,
    v4Count: c.v4Count,
    v6: c.v6.map((r) => [r.id, formatNet(r.net), r.action, Number.isFinite(r.expires) ? r.expires : null]),
  };
  let head = Buffer.from(`${MAGIC}${JSON.stringify(header)}\n`);
  // The arrays start at a multiple of 8, so a Float64Array could view them where they lie
  // (decodeCopy copies them out instead, free of the file's buffer).
  head = Buffer.concat([head, Buffer.alloc((8 - (head.length % 8)) % 8, ' ')]);
  const n = c.v4Count * 8;
  const arrays = [c.v4Ids, c.v4Keys, c.v4Expires].map((a) => Buffer.from(a.buffer, a.byteOffset, n));
  const out = Buffer.allocUnsafe(head.length + 3 * n + 4);
  let crc = 0;
  let pos = 0;
  for (const part of [head, ...arrays]) {
    part.copy(out, pos);
    pos += part.length;
    crc = crc32(part, crc);
  }
  out.writeUInt32BE(crc, pos);
  return out;
}

/** The copy in `b`, or null when it is not one (wrong magic, lengths, values). */
export function decodeCopy(b: Buffer): RulesCopy | null {
  try {
    if (b.length < MAGIC.length + 4 || b.toString('latin1', 0, MAGIC.length) !== MAGIC) return null;
    if (crc32(b.subarray(0, b.length - 4)) !== b.readUInt32BE(b.length - 4)) return null;
    b = b.subarray(0, b.length - 4);
    const nl = b.indexOf(10, MAGIC.length);
    if (nl < 0) return null;
    const h = JSON.parse(b.toString('utf8', MAGIC.length, nl)) as Header;
    const start = nl + 1 + ((8 - ((nl + 1) % 8)) % 8);
    const n = h.v4Count;
    if (!Number.isSafeInteger(n) || n < 0 || b.length !== start + 3 * n * 8) return null;
    if (typeof h.instance !== 'string' || typeof h.host !== 'string' || !Number.isSafeInteger(h.changeSeq) || !Number.isFinite(h.fullAt)) return null;
    // A copy of its own (aligned, and free of the file's buffer).
    const all = new Float64Array(b.buffer.slice(b.byteOffset + start, b.byteOffset + b.length));
    const v6: CopyRule6[] = h.v6.map(([id, cidr, action, expires]) => {
      const net = mustParseNet(cidr);
      if (net.family !== 6 || !Number.isSafeInteger(id) || !['relay', 'trust', 'deny'].includes(action)) throw new Error('bad rule');
      return { id, net, action, expires: expires ?? Infinity };
    });
    return {
      instance: h.instance,
      host: h.host,
      changeSeq: h.changeSeq,
      fullAt: h.fullAt,
      v4Ids: all.subarray(0, n),
      v4Keys: all.subarray(n, 2 * n),
      v4Expires: all.subarray(2 * n, 3 * n),
      v4Count: n,
      v6,
    };
  } catch {
    return null;
  }
}

export function readCopy(file: string): RulesCopy | null {
  const b = readIfExists(file);
  return b ? decodeCopy(b) : null;
}

export function writeCopy(file: string, c: RulesCopy): void {
  removeStaleTemps(file);
  const tmp = tempName(file);
  try {
    fs.writeFileSync(tmp, encodeCopy(c), { mode: 0o600 });
    fs.renameSync(tmp, file);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}
