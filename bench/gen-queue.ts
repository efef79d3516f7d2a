// Generate a large qmail queue for benchmarks, in qmail's exact layout, from the real fixture
// messages (test/fixtures/qmail-queue) queued again from many source IPs: mostly network
// mail from a few thousand IPs (a heavy head of big senders, a long tail), plus bounces,
// double bounces, forwarded copies, local mail and some not yet preprocessed (todo/).
// Deterministic for a given seed. Used by bench/scan-queue.ts (and purge-queue's bench).
//
// Run: npm run build:bench && node dist/bench/gen-queue.js DIR [COUNT]   (default 100000)

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  NO_MAILBOX,
  QueueBuilder,
  bounceMessage,
  doubleBounceMessage,
  fixtureTemplates,
  forwardedMessage,
  fromTemplate,
  localMessage,
} from '../test/helpers/queue-builder.js';

/** mulberry32: a small deterministic PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface GenerateOptions {
  count: number;
  seed?: number;
  /** Distinct source IPs (default 5000). */
  ips?: number;
  split?: number;
  /** Arrivals spread over this many seconds before now (default 2 days). */
  spreadSeconds?: number;
}

/** Fill `dir` with a queue of `count` messages. Returns the builder and the IP of each rank. */
export function generateQueue(dir: string, o: GenerateOptions): { queue: QueueBuilder; ips: string[] } {
  const rnd = prng(o.seed ?? 4);
  const templates = fixtureTemplates();
  const nIps = o.ips ?? 5000;
  const ips: string[] = [];
  for (let i = 0; i < nIps; i++) {
    const r = rnd();
    if (r < 0.02) ips.push(`2001:db8:${(i >> 8).toString(16)}::${(i & 255).toString(16)}`);
    else if (r < 0.03) ips.push(`::ffff:198.18.${(i >> 8) & 255}.${i & 255}`);
    else ips.push(`${[203, 198, 192, 45, 185][i % 5]}.${(i * 7) & 255}.${(i >> 3) & 255}.${(i * 13 + 1) & 255}`);
  }
  // A heavy head: rank = nIps * r^3 puts most mail on a few hundred addresses.
  const pickIp = () => ips[Math.min(nIps - 1, Math.floor(nIps * rnd() ** 3))];
  const q = QueueBuilder.create({ dir, split: o.split ?? 23, firstId: 1_000_000 });
  const now = Date.now();
  const spread = (o.spreadSeconds ?? 2 * 86400) * 1000;
  let pid = 10_000;
  for (let n = 0; n < o.count; n++) {
    const t = templates[Math.floor(rnd() * templates.length)];
    const date = new Date(now - Math.floor(rnd() * spread));
    const ip = pickIp();
    const kind = rnd();
    const original = fromTemplate(t, { ip, pid: pid++, date });
    const failed = [{ address: t.recipients[0] ?? 'nobody@example.net', reason: NO_MAILBOX }];
    if (kind < 0.05) {
      const mess = bounceMessage({ original: original.toString('latin1'), originalSender: t.sender, failed, pid: pid++, date });
      q.add({ mess: Buffer.from(mess, 'latin1'), sender: '', recipients: [t.sender || 'postmaster@example.net'], arrival: date });
    } else if (kind < 0.06) {
      const bounce = bounceMessage({ original: original.toString('latin1'), originalSender: 'nobody@example.net', failed, pid: pid++, date });
      const mess = doubleBounceMessage({ originalBounce: bounce, failed: [{ address: 'nobody@example.net', reason: NO_MAILBOX }], pid: pid++, date });
      q.add({ mess: Buffer.from(mess, 'latin1'), sender: '#@[]', recipients: ['postmaster@ops.example.com'], arrival: date });
    } else if (kind < 0.09) {
      const mess = forwardedMessage({ original: original.toString('latin1'), deliveredTo: 'carol@example.net', pid: pid++, date });
      q.add({ mess: Buffer.from(mess, 'latin1'), sender: t.sender, recipients: ['carol@home-isp.example'], arrival: date });
    } else if (kind < 0.11) {
      q.add({ mess: localMessage({ pid: pid++, date }), sender: 'www-data@mx.example.net', recipients: ['customer@remote.example'], arrival: date });
    } else {
      q.add({ mess: original, sender: t.sender, recipients: t.recipients.length ? t.recipients : ['dave@example.net'], arrival: date, state: kind < 0.12 ? 'todo' : 'preprocessed' });
    }
  }
  return { queue: q, ips };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const dir = process.argv[2];
  if (!dir) {
    process.stderr.write('usage: gen-queue DIR [COUNT]\n');
    process.exit(2);
  }
  const count = Number(process.argv[3] ?? 100_000);
  const t0 = performance.now();
  generateQueue(path.resolve(dir), { count });
  process.stdout.write(`${count} messages in ${dir} (${Math.round(performance.now() - t0)} ms)\n`);
}
