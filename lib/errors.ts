// Typed failures. Library code throws these; only lib/cli/run-main.ts turns them into an
// exit code and a `command: fatal: ...` line (qmail's convention: 100 permanent, 111 temporary).

/** Exit codes every executable uses. */
export const EXIT = {
  ok: 0,
  usage: 2,
  permanent: 100,
  temporary: 111,
} as const;

/** Base class: a message for the admin and the exit code it maps to. */
export class QguardError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.exitCode = exitCode;
  }
}

/** A bad flag or argument: exit 2. */
export class UsageError extends QguardError {
  constructor(message: string) {
    super(message, EXIT.usage);
  }
}

/** Bad input, bad config, a safety guard refused: retrying will not help. Exit 100. */
export class PermanentError extends QguardError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, EXIT.permanent, options);
  }
}

/** Database unreachable, a program failed, a lock could not be had in time: exit 111. */
export class TemporaryError extends QguardError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, EXIT.temporary, options);
  }
}

/**
 * Another run of the same job holds its lock. Like `setlock -nx`: exit 0, say nothing
 * (or one line under --verbose).
 */
export class LockBusy extends QguardError {
  constructor(message: string) {
    super(message, EXIT.ok);
  }
}

/**
 * End the run with this exit code and no fatal line: the answer has already been printed
 * (`qguard status` exits 1 for WARNING and 2 for CRITICAL, as monitoring plugins do).
 */
export class SilentExit extends QguardError {
  constructor(exitCode: number) {
    super('', exitCode);
  }
}

/** The text of any thrown value, for messages. */
export function errorText(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
