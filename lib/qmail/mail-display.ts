// A queued message (its readable copy) made safe to show: the header section as raw text, the
// decoded From/To/Subject/Date, the text parts, the HTML part sanitized with an allowlist (for
// a sandboxed iframe served under its own strict CSP), and the attachments as a list — never
// their content. MIME is parsed by mailparser; broken MIME, unknown charsets and 8-bit
// headers still give a page (with a note), never an exception.

import type { ParsedMail } from 'mailparser';
import { decodeBytes } from '../text.js';

export interface MailAttachment {
  filename: string | null;
  contentType: string;
  size: number;
}

export interface MailDisplay {
  /** The header section as it is (bytes decoded, invalid ones kept as \xNN by visible()). */
  rawHeader: string;
  /** The whole copy as text. */
  raw: string;
  subject: string | null;
  from: string | null;
  to: string | null;
  date: string | null;
  text: string | null;
  /** Sanitized HTML of the HTML part, or null. */
  html: string | null;
  attachments: MailAttachment[];
  /** Why parts may be missing (a cut copy, broken MIME). */
  notes: string[];
}

/** The HTML allowed in the iframe: structure and emphasis; no scripts, styles, forms, links, remote images. */
async function sanitize(html: string): Promise<string> {
  const { default: sanitizeHtml } = await import('sanitize-html');
  return sanitizeHtml(html, {
    allowedTags: [
      'p', 'br', 'div', 'span', 'b', 'i', 'u', 's', 'strong', 'em', 'small', 'big', 'sub', 'sup', 'center', 'font',
      'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'blockquote', 'pre', 'code', 'hr', 'ul', 'ol', 'li', 'dl', 'dt', 'dd',
      'table', 'thead', 'tbody', 'tfoot', 'tr', 'td', 'th', 'caption', 'a', 'img',
    ],
    // Links keep their text; where they point is shown on hover, never followed.
    allowedAttributes: { a: ['title'], img: ['src', 'alt', 'width', 'height'], td: ['colspan', 'rowspan'], th: ['colspan', 'rowspan'] },
    allowedSchemes: [],
    allowedSchemesByTag: { img: ['data'] },
    allowProtocolRelative: false,
    disallowedTagsMode: 'discard',
    nonTextTags: ['script', 'style', 'textarea', 'option', 'noscript', 'title', 'head', 'svg', 'math', 'template', 'iframe', 'object'],
    transformTags: {
      a: (_tag, attribs) => {
        const shown: Record<string, string> = {};
        const href = (attribs.href ?? '').trim();
        if (/^(https?|mailto):/i.test(href)) shown.title = `link to ${href.slice(0, 500)}`;
        else if (href !== '') shown.title = 'a link of another kind (not shown)';
        return { tagName: 'a', attribs: shown };
      },
      img: (_tag, attribs) => {
        const src = attribs.src ?? '';
        if (/^data:image\/(png|gif|jpeg|webp);base64,/i.test(src)) return { tagName: 'img', attribs: { src, alt: attribs.alt ?? '' } };
        const none: Record<string, string> = {};
        return { tagName: 'span', attribs: none, text: `[image ${src.slice(0, 200)} not loaded]` };
      },
    },
  });
}

/** The header section of a message: up to the first empty line. */
function headerOf(text: string): string {
  const m = /\r?\n\r?\n/.exec(text);
  return m ? text.slice(0, m.index) : text;
}

export async function displayMail(data: Buffer, opts: { truncated: boolean; size: number }): Promise<MailDisplay> {
  // CR LF line ends are line ends; a lone CR stays visible (\r).
  const raw = decodeBytes(data).replace(/\r\n/g, '\n');
  const notes: string[] = [];
  if (opts.truncated) notes.push(`the copy holds the first ${data.length} of ${opts.size} bytes: parts past that are missing`);
  const out: MailDisplay = {
    rawHeader: headerOf(raw),
    raw,
    subject: null,
    from: null,
    to: null,
    date: null,
    text: null,
    html: null,
    attachments: [],
    notes,
  };
  let parsed: ParsedMail;
  try {
    const { simpleParser } = await import('mailparser');
    parsed = await simpleParser(data, { skipHtmlToText: true, skipTextToHtml: true, skipImageLinks: true, maxHtmlLengthToParse: 2 * 1024 * 1024 });
  } catch (err) {
    notes.push(`the MIME structure could not be read (${(err as Error).message}): only the raw source is shown`);
    return out;
  }
  const addr = (a: ParsedMail['from'] | ParsedMail['to']) => (a ? (Array.isArray(a) ? a.map((x) => x.text).join(', ') : a.text) : null);
  out.subject = parsed.subject ?? null;
  out.from = addr(parsed.from);
  out.to = addr(parsed.to);
  out.date = parsed.date && !Number.isNaN(parsed.date.getTime()) ? parsed.date.toISOString() : null;
  out.text = typeof parsed.text === 'string' ? parsed.text : null;
  if (typeof parsed.html === 'string' && parsed.html.trim() !== '') {
    try {
      out.html = await sanitize(parsed.html);
    } catch (err) {
      notes.push(`the HTML part could not be cleaned (${(err as Error).message}): not shown`);
    }
  }
  out.attachments = (parsed.attachments ?? []).map((a) => ({ filename: a.filename ?? null, contentType: a.contentType ?? 'application/octet-stream', size: a.size ?? 0 }));
  return out;
}
