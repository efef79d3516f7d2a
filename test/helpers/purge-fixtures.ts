// What purge-queue's tests need around a queue: a fake qmail-send (a process holding flock on
// queue/lock/sendmutex, as the real one does while it runs), stop/start commands that record
// their calls (the stop one kills the fake), a stand-in qmail-queue that records what it is
// given on descriptors 0 and 1, and exact snapshots of a queue tree to prove what changed.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';

/** A running fake qmail-send: `flock -o queue/lock/sendmutex sleep 600` in its own process group. */
export interface FakeQmailSend {
  pid: number;
  /** Kill it (idempotent). */
  kill(): void;
  alive(): boolean;
}

/** Is queue/lock/sendmutex locked by someone? */
export function mutexHeld(queueDir: string): boolean {
  try {
    execFileSync('flock', ['-n', '-E', '75', path.join(queueDir, 'lock', 'sendmutex'), 'true'], { stdio: 'ignore' });
    return false;
  } catch (err) {
    if ((err as { status?: number }).status === 75) return true;
    throw err;
  }
}

/** Start a fake qmail-send holding the queue's sendmutex; resolves once the lock is held. */
export async function startFakeQmailSend(queueDir: string, pidFile?: string): Promise<FakeQmailSend> {
  const child = spawn('flock', ['-o', path.join(queueDir, 'lock', 'sendmutex'), 'sleep', '600'], { detached: true, stdio: 'ignore' });
  child.unref();
  const pid = child.pid!;
  if (pidFile) fs.writeFileSync(pidFile, String(pid));
  for (let i = 0; i < 200 && !mutexHeld(queueDir); i++) await new Promise((r) => setTimeout(r, 10));
  if (!mutexHeld(queueDir)) throw new Error('the fake qmail-send did not take the lock');
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  return {
    pid,
    alive,
    kill() {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // gone already
      }
    },
  };
}

/** Stop/start commands that append to a log; stop kills the fake whose pid is in `pidFile`. */
export interface ControlScripts {
  stop: string;
  start: string;
  /** Lines logged so far: `stop`, `start N` (N = files under mess/ when start ran). */
  calls(): string[];
  reset(): void;
}

export function writeControlScripts(dir: string, queueDir: string, pidFile: string, opts: { stopExit?: number; stopKills?: boolean } = {}): ControlScripts {
  fs.mkdirSync(dir, { recursive: true });
  const log = path.join(dir, 'calls.log');
  const stop = path.join(dir, 'qmail-stop');
  const start = path.join(dir, 'qmail-start');
  const kill = opts.stopKills === false ? '' : `[ -f '${pidFile}' ] && kill -TERM -$(cat '${pidFile}') 2>/dev/null\n`;
  fs.writeFileSync(stop, `#!/bin/sh\necho "stop $*" >> '${log}'\n${kill}exit ${opts.stopExit ?? 0}\n`, { mode: 0o755 });
  fs.writeFileSync(start, `#!/bin/sh\necho "start $(find '${queueDir}/mess' -type f | wc -l)" >> '${log}'\n`, { mode: 0o755 });
  return {
    stop,
    start,
    calls: () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => l.trim()) : []),
    reset: () => fs.rmSync(log, { force: true }),
  };
}

/**
 * A stand-in qmail-queue: saves descriptor 0 (the message) and descriptor 1 (the envelope)
 * to numbered files in `outDir`, exits with $QQ_EXIT (default 0).
 */
export function writeQmailQueueStandIn(file: string, outDir: string): void {
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(
    file,
    `#!/bin/sh\nn=$(ls '${outDir}' | grep -c '^mess\\.')\ncat > '${outDir}/mess.'$n\ncat <&1 > '${outDir}/env.'$n\nexit \${QQ_EXIT:-0}\n`,
    { mode: 0o755 },
  );
}

/** Every file under a tree: path → size, mtime and content hash. */
export type TreeSnapshot = Map<string, { size: number; mtimeMs: number; sha1: string }>;

export function snapshotTree(root: string): TreeSnapshot {
  const out: TreeSnapshot = new Map();
  const walk = (rel: string) => {
    const abs = path.join(root, rel);
    const st = fs.lstatSync(abs);
    if (st.isDirectory()) {
      for (const n of fs.readdirSync(abs).sort()) walk(path.join(rel, n));
    } else if (st.isFile()) {
      out.set(rel, { size: st.size, mtimeMs: st.mtimeMs, sha1: crypto.createHash('sha1').update(fs.readFileSync(abs)).digest('hex') });
    }
  };
  walk('');
  return out;
}

/** Paths that differ: removed, added, changed. */
export function diffTrees(a: TreeSnapshot, b: TreeSnapshot): { removed: string[]; added: string[]; changed: string[] } {
  const removed = [...a.keys()].filter((k) => !b.has(k)).sort();
  const added = [...b.keys()].filter((k) => !a.has(k)).sort();
  const changed = [...a.keys()].filter((k) => b.has(k) && JSON.stringify(a.get(k)) !== JSON.stringify(b.get(k))).sort();
  return { removed, added, changed };
}

/** The message id of a queue file path (`mess/3/1491014` → `1491014`), or null for lock/ etc. */
export function idOfQueueFile(rel: string): string | null {
  const m = /^(mess|info|local|remote|todo|intd|bounce)\/(?:\d+\/)?([1-9]\d*)$/.exec(rel);
  return m ? m[2] : null;
}

/** Queue files grouped by message id. */
export function filesById(t: TreeSnapshot): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const rel of t.keys()) {
    const id = idOfQueueFile(rel);
    if (!id) continue;
    if (!out.has(id)) out.set(id, []);
    out.get(id)!.push(rel);
  }
  for (const v of out.values()) v.sort();
  return out;
}

/** Copy a queue tree exactly (hard links, modes, mtimes). */
export function copyTree(src: string, dst: string): void {
  execFileSync('cp', ['-a', `${src}/.`, dst]);
}
