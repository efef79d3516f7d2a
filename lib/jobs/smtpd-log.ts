// scan-queue's second source: tcpserver's log (QGUARD_SMTPD_LOG, the multilog directory of
// qmail-smtpd's `tcpserver -v`). Each run reads what was written since the last one
// (lib/io/multilog-read.ts), counts connections and denied connections per client address and
// ten-minute slot (lib/qmail/tcpserver-log.ts), and adds them to qguard.connections with the
// new read position, in scan-queue's transaction: a failed run counts nothing and the next one
// reads the same lines again.
//
// The spool of accepted messages (QGUARD_ACCEPTED_SPOOL, written by contrib/qmail/qguard-queue)
// is read the same way, into the same rows' `accepted` count; scan-queue also renames and removes
// its files (lib/io/accepted-spool.ts), as multilog does for the log.

import type { RunContext } from '../context.js';
import type { Queryable } from '../db/connect.js';
import { addConnections, loadLogPosition, pruneConnections, saveLogPosition } from '../db/connections.js';
import { readBootClock, removeReadFiles, rotateIfRead } from '../io/accepted-spool.js';
import { type LogRead, readLogBytesSince, readLogChunksSince } from '../io/multilog-read.js';
import { parseAcceptedLine } from '../qmail/accepted-spool.js';
import { ConnectionCounter, TcpserverLog } from '../qmail/tcpserver-log.js';

export interface SmtpdLogSummary {
  dir: string;
  files: number;
  bytes: number;
  /** Stopped at the per-run limit: the next run reads on. */
  more: boolean;
  connections: number;
  denied: number;
  /** Lines of tcpserver's that did not parse. */
  odd: number;
  /** Set when lines may have been missed (multilog deleted a file before it was read). */
  lost: string | null;
  ms: number;
}

export interface AcceptedSpoolSummary {
  dir: string;
  files: number;
  bytes: number;
  lines: number;
  more: boolean;
  /** Messages counted. */
  accepted: number;
  /** Lines that are not the program's. */
  odd: number;
  /** Read files removed, and whether `current` was renamed. */
  removed: number;
  rotated: boolean;
  /** Set when lines may have been missed (a file was removed before it was read). */
  lost: string | null;
  ms: number;
}

/** Counted slots are kept this long beyond the window. */
const KEEP_MARGIN_SECONDS = 86400;
/**
 * At most this much of the log a run: the counts of a run are held until its reading ends (a
 * 1 GB first read peaked at 612 MB). The rest waits for the next minute's run.
 */
const MAX_BYTES_PER_RUN = 128 * 1024 * 1024;

export async function ingestSmtpdLog(ctx: RunContext, tx: Queryable, dir: string): Promise<SmtpdLogSummary> {
  const started = performance.now();
  const host = ctx.config.host;
  const from = await loadLogPosition(tx, host, dir);
  const parser = new TcpserverLog();
  const counter = new ConnectionCounter();
  const now = Date.now();
  let connections = 0;
  let denied = 0;
  const read = readLogChunksSince(
    dir,
    from,
    (buf, s, e) => {
      const c = parser.chunk(buf, s, e, counter, now);
      connections += c.connections;
      denied += c.denied;
    },
    MAX_BYTES_PER_RUN,
  );
  await addConnections(tx, host, counter.take());
  if (read.position) await saveLogPosition(tx, host, dir, read.position);
  await pruneConnections(tx, ctx.config.windowSeconds + KEEP_MARGIN_SECONDS);
  if (read.lost) ctx.log.warn(`${dir}: ${read.lost}`);
  return {
    dir,
    files: read.files,
    bytes: read.bytes,
    more: read.more,
    connections,
    denied,
    odd: parser.odd,
    lost: read.lost,
    ms: Math.round(performance.now() - started),
  };
}

export async function ingestAcceptedSpool(ctx: RunContext, tx: Queryable, dir: string): Promise<AcceptedSpoolSummary> {
  const started = performance.now();
  const host = ctx.config.host;
  const from = await loadLogPosition(tx, host, dir);
  // Only what the last kept run read to its end is removed: whatever this run's fate.
  const removed = removeReadFiles(dir, from);
  const counter = new ConnectionCounter();
  const clock = readBootClock();
  let accepted = 0;
  let odd = 0;
  const read: LogRead = readLogBytesSince(
    dir,
    from,
    (buf, s, e) => {
      const a = parseAcceptedLine(buf, s, e, clock);
      if (a === null) {
        odd++;
        return;
      }
      accepted++;
      counter.addAccepted(a.ip, a.at);
    },
    MAX_BYTES_PER_RUN,
  );
  await addConnections(tx, host, counter.take());
  if (read.position) await saveLogPosition(tx, host, dir, read.position);
  const rotated = read.more ? false : rotateIfRead(dir, read.position);
  if (read.lost) ctx.log.warn(`${dir}: ${read.lost}`);
  return { dir, files: read.files, bytes: read.bytes, lines: read.lines ?? 0, more: read.more, accepted, odd, removed, rotated, lost: read.lost, ms: Math.round(performance.now() - started) };
}
