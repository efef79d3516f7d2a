// How a command prints its view: `--json` as one exact JSON document, otherwise the text form
// from lib/cli/render.ts (nothing when it is empty: quiet on success).

import type { RunContext } from '../context.js';

export function show<V>(ctx: RunContext, json: boolean | undefined, view: V, text: (v: V) => string, toJson: (v: V) => unknown = (v) => v): void {
  if (json) {
    ctx.printJson(toJson(view));
    return;
  }
  const out = text(view);
  if (out) ctx.print(out);
}
