// HTML that escapes by default: the `html` tag escapes every interpolated value unless it is
// already Html (made by `html` itself, or by `trusted()` for markup built here). Arrays are
// joined; null, undefined and false render nothing. Text from outside (a message, a header, a
// rule's reason) is shown with `visible()`: its control characters, bidi overrides and invalid
// bytes made visible the same way the terminal shows them (lib/text.ts), then escaped.
// Pure. Why not a template library: see the README (review page, "Stack").

import { forTerminal } from '../text.js';

/** Markup that may be written as it is. */
export class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;' };

/** Text as HTML text or attribute value (quotes included). */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"'`]/g, (c) => ESCAPES[c]);
}

export type Interpolation = Html | string | number | boolean | null | undefined | readonly Interpolation[];

function render(v: Interpolation): string {
  if (v === null || v === undefined || v === false) return '';
  if (v instanceof Html) return v.value;
  if (Array.isArray(v)) return v.map(render).join('');
  return escapeHtml(String(v));
}

/** The template tag. */
export function html(strings: TemplateStringsArray, ...values: Interpolation[]): Html {
  let out = strings[0];
  for (let i = 0; i < values.length; i++) out += render(values[i]) + strings[i + 1];
  return new Html(out);
}

/** Markup built by this program (never text from outside). */
export function trusted(markup: string): Html {
  return new Html(markup);
}

/**
 * Text from outside, for display: control characters, bidi overrides, invisible characters
 * and invalid bytes shown as `\x1b`, `\u202e`, `\xff` (marked so the page can style them),
 * then escaped. `multiline` keeps newlines and tabs.
 */
export function visible(text: string | null | undefined, opts: { multiline?: boolean } = {}): Html {
  if (text === null || text === undefined) return new Html('');
  const shown = forTerminal(text, { multiline: Boolean(opts.multiline) });
  // forTerminal doubles backslashes and writes escapes as \xNN / \uNNNN / \n \r \t: mark those.
  let out = '';
  const re = /\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4}|[nrt])/g;
  let last = 0;
  for (let m = re.exec(shown); m; m = re.exec(shown)) {
    out += escapeHtml(shown.slice(last, m.index));
    out += m[1] === '\\' ? '\\' : `<span class="esc">${escapeHtml(m[0])}</span>`;
    last = m.index + m[0].length;
  }
  out += escapeHtml(shown.slice(last));
  return new Html(out);
}

/** A URL path segment or query value. */
export function urlPart(text: string): string {
  return encodeURIComponent(text);
}
