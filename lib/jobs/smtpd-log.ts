// scan-queue's second source: tcpserver's log (QGUARD_SMTPD_LOG, the multilog directory of
// qmail-smtpd's `tcpserver -v`). Each run reads what was written since the last one
// (lib/io/multilog-read.ts), counts connections and denied connections per client address and
// ten-minute slot (lib/qmail/tcpserver-log.ts), and adds them to qguard.connections with the
// new read position, in scan-queue's transaction: a failed run counts nothing and the next one
// reads the same lines again.

import type { RunContext } from '../context.js';
import type { Queryable } from '../db/connect.js';
import { addConnections, loadLogPosition, pruneConnections, saveLogPosition } from '../db/connections.js';
import { readLogBytesSince } from '../io/multilog-read.js';
import { ConnectionCounter, TcpserverLog } from '../qmail/tcpserver-log.js';

export interface SmtpdLogSummary {
  dir: string;
  files: number;
  bytes: number;
  lines: number;
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
  const read = readLogBytesSince(
    dir,
    from,
    (buf, s, e) => {
      const c = parser.lineBytes(buf, s, e);
      if (c === null) return;
      connections++;
      if (c.denied) denied++;
      counter.add(c, now);
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
    lines: read.lines,
    more: read.more,
    connections,
    denied,
    odd: parser.odd,
    lost: read.lost,
    ms: Math.round(performance.now() - started),
  };
}
