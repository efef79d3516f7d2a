// The tcprules text parser (the admin's static file, the env values of the config) and the
// renderer of tcp.smtp; rcpthosts rendering. Inline fixtures; what tcprules itself does with
// the same lines is checked against the real program in the integration tests.

import { describe, expect, it } from 'vitest';
import {
  type OutcomeSettings,
  outcomeInstructions,
  parseAddressKey,
  parseRulesText,
  parseVars,
  refusesClient,
  relays,
  renderRulesText,
} from '../../lib/qmail/tcprules-file.js';
import { RCPTHOSTS_MAX, renderRcpthosts } from '../../lib/qmail/rcpthosts.js';
import { keyText, planKeys, ruleSortKey, v4Number } from '../../lib/net/tcprules-keys.js';

const problems = (text: string) => parseRulesText(text).problems;
const oneProblem = (line: string) => {
  const p = problems(`${line}\n`);
  expect(p).toHaveLength(1);
  expect(p[0].line).toBe(1);
  return p[0].reason;
};

describe('static file parser', () => {
  it('accepts what existing installations keep there', () => {
    const text = [
      '# relay for this machine',
      '127.:allow,RELAYCLIENT=""',
      '',
      '192.168.1.10-20:allow,RELAYCLIENT="",RBLSMTPD=""',
      '10.2-3.:deny',
      '=mail.partner.example:allow,RBLSMTPD=""',
      'joe@1.2.3.4:allow',
      ':allow,QMAILQUEUE="/var/qmail/bin/simscan"',
      '1.2.3.4:allow,X=/a"b/   ',
    ].join('\n');
    const r = parseRulesText(text);
    expect(r.problems).toEqual([]);
    expect(r.rules.map((x) => [x.line, x.kind, x.key])).toEqual([
      [2, 'ip', '127.'],
      [4, 'ip', '192.168.1.10-20'],
      [5, 'ip', '10.2-3.'],
      [6, 'host', '=mail.partner.example'],
      [7, 'info', 'joe@1.2.3.4'],
      [8, 'default', ''],
      [9, 'ip', '1.2.3.4'],
    ]);
    expect(r.rules[1].blocks).toHaveLength(11);
    expect(r.rules[2].blocks.map((b) => keyText(b.first, b.gran, 1))).toEqual(['10.2.', '10.3.']);
    expect(r.rules[6].instruction.vars).toEqual([{ name: 'X', value: 'a"b', delim: '/' }]);
    expect(r.rules[6].instructionText).toBe('allow,X=/a"b/');
    expect(relays(r.rules[0].instruction)).toBe(true);
    expect(relays(r.rules[5].instruction)).toBe(false);
  });

  it('refuses what tcprules refuses, naming the line', () => {
    expect(oneProblem('1.2.3.4:allow\r')).toMatch(/CRLF/);
    expect(oneProblem('1.2.3.4:Allow')).toMatch(/lower case/);
    expect(oneProblem('1.2.3.4:allow,RELAYCLIENT=')).toMatch(/RELAYCLIENT= needs a delimited value/);
    expect(oneProblem('1.2.3.4:allow,X="open')).toMatch(/not closed/);
    expect(oneProblem('1.2.3.4:allow # relay')).toMatch(/no spaces, no comments/);
    expect(oneProblem('1.2.3.4:allow ,X="y"')).toMatch(/unexpected/);
    expect(oneProblem('1.2.3.4:permit')).toMatch(/expected ADDRESS:allow/);
    expect(oneProblem('1.2.3.4:allow,X=abca')).toMatch(/delimited by/);
    expect(oneProblem('1.2.3.4:allow,1X="y"')).toMatch(/bad variable name/);
  });

  it('refuses what tcprules accepts but never matches', () => {
    expect(oneProblem(' 1.2.3.4:deny')).toMatch(/leading whitespace/);
    expect(oneProblem('\t1.2.3.4:deny')).toMatch(/leading whitespace/);
    expect(oneProblem('1.2:deny')).toMatch(/never matches/);
    expect(oneProblem('1.2.3.4.:deny')).toMatch(/never matches/);
    expect(oneProblem('01.2.3.4:deny')).toMatch(/leading zeros/);
    expect(oneProblem('1.2.3.256:deny')).toMatch(/0-255/);
    expect(oneProblem('1.2-3.4-5.6:deny')).toMatch(/only the first range/);
    expect(oneProblem('1.2.5-3.:deny')).toMatch(/empty range/);
    expect(oneProblem('1.2.3.0/24:deny')).toMatch(/never matches/);
    expect(oneProblem('::1:allow')).toMatch(/IPv6/);
    expect(oneProblem('1.2.3.4 :deny')).toMatch(/whitespace/);
    expect(oneProblem('1.2.3.4 deny')).toMatch(/no colon/);
  });

  it('refuses an open relay: RELAYCLIENT on the default, =host, =.domain and user@ keys', () => {
    expect(oneProblem(':allow,RELAYCLIENT=""')).toMatch(/default rule .*open relay/);
    expect(oneProblem('=:allow,RELAYCLIENT=""')).toMatch(/reverse DNS/);
    expect(oneProblem('=mx.example.com:allow,RELAYCLIENT=""')).toMatch(/reverse DNS/);
    expect(oneProblem('=.example.com:allow,RELAYCLIENT=""')).toMatch(/open relay/);
    expect(oneProblem('joe@:allow,RELAYCLIENT=""')).toMatch(/ident/);
    expect(oneProblem('joe@1.2.3.4:allow,RELAYCLIENT=""')).toMatch(/ident/);
  });

  it('reports every bad line, not only the first', () => {
    const p = problems('1.2.3.4:allow\n 5.6.7.8:deny\n:allow\n9.9:deny\n');
    expect(p.map((x) => x.line)).toEqual([2, 4]);
  });

  it('parses address keys as tcprules expands them', () => {
    const ok = (k: string) => {
      const r = parseAddressKey(k);
      if ('error' in r) throw new Error(r.error);
      return r.blocks.map((b) => keyText(b.first, b.gran, 1));
    };
    expect(ok('1.')).toEqual(['1.']);
    expect(ok('1-3.')).toEqual(['1.', '2.', '3.']);
    expect(ok('1.2.3.4')).toEqual(['1.2.3.4']);
    expect(ok('1.2.3.254-255')).toEqual(['1.2.3.254', '1.2.3.255']);
    expect(ok('1.2.0-1.')).toEqual(['1.2.0.', '1.2.1.']);
  });
});

describe('outcome instructions from the config', () => {
  const base: OutcomeSettings = { relayEnv: '', trustEnv: '', denyMode: 'deny', denyMessage: 'spam', defaultRule: ':allow' };
  const ok = (s: Partial<OutcomeSettings>) => {
    const r = outcomeInstructions({ ...base, ...s });
    if ('error' in r) throw new Error(r.error);
    return r.outcomes;
  };
  const err = (s: Partial<OutcomeSettings>) => {
    const r = outcomeInstructions({ ...base, ...s });
    if (!('error' in r)) throw new Error('accepted');
    return r.error;
  };

  it('renders relay, trust, deny and the default', () => {
    expect(ok({})).toEqual({ relay: 'allow,RELAYCLIENT=""', trust: 'allow', deny: 'deny', default: 'allow' });
    expect(ok({ relayEnv: 'RBLSMTPD="",QMAILQUEUE="/var/qmail/bin/simscan"', trustEnv: 'RBLSMTPD=""' })).toMatchObject({
      relay: 'allow,RELAYCLIENT="",RBLSMTPD="",QMAILQUEUE="/var/qmail/bin/simscan"',
      trust: 'allow,RBLSMTPD=""',
    });
    expect(ok({ denyMode: 'rblsmtpd', denyMessage: 'listed as a spam source' }).deny).toBe('allow,RBLSMTPD="-listed as a spam source"');
    expect(ok({ defaultRule: ':allow,QMAILQUEUE="/x"' }).default).toBe('allow,QMAILQUEUE="/x"');
  });

  it('refuses env values that are not tcprules syntax or that relay or refuse by surprise', () => {
    expect(err({ relayEnv: 'RBLSMTPD=' })).toMatch(/QGUARD_RELAY_ENV: RBLSMTPD= needs/);
    expect(err({ relayEnv: 'X="a\nb"' })).toMatch(/QGUARD_RELAY_ENV/);
    expect(err({ trustEnv: 'RELAYCLIENT=""' })).toMatch(/QGUARD_TRUST_ENV: RELAYCLIENT/);
    expect(err({ trustEnv: 'RBLSMTPD="-go away"' })).toMatch(/refuse the client/);
    expect(err({ relayEnv: 'RELAYCLIENT=""' })).toMatch(/do not repeat/);
    expect(err({ denyMode: 'rblsmtpd', denyMessage: 'say "no"' })).toMatch(/double quotes/);
    expect(err({ denyMode: 'rblsmtpd', denyMessage: 'a\nb' })).toMatch(/printable/);
    expect(err({ defaultRule: ':allow,RELAYCLIENT=""' })).toMatch(/QGUARD_DEFAULT_RULE: RELAYCLIENT on the default rule/);
    expect(err({ defaultRule: '1.2.3.4:allow' })).toMatch(/must be a default rule/);
    expect(err({ defaultRule: 'allow' })).toMatch(/QGUARD_DEFAULT_RULE/);
  });

  it('knows which instructions refuse the client', () => {
    const r = parseVars(',RBLSMTPD=""');
    if ('error' in r) throw new Error(r.error);
    expect(refusesClient({ verdict: 'allow', vars: r.vars })).toBe(false);
    expect(refusesClient({ verdict: 'allow', vars: [{ name: 'RBLSMTPD', value: '-no', delim: '"' }] })).toBe(true);
    expect(refusesClient({ verdict: 'deny', vars: [] })).toBe(true);
  });
});

describe('rendered tcp.smtp', () => {
  it('is header, static text verbatim, keys, default — and nothing from the database but keys', () => {
    const keys = new Float64Array([ruleSortKey(v4Number('10.0.0.0'), 8, 2), ruleSortKey(v4Number('10.1.2.3'), 32, 0)]);
    const plan = planKeys({
      rules: keys,
      ruleCount: 2,
      actionClass: [1, 2, 3],
      defaultClass: 0,
      denyLike: new Set([3]),
      statics: [],
      protectedRanges: [],
    });
    const text = renderRulesText({
      staticFile: '/etc/qguard/tcp.smtp.static',
      staticText: '127.:allow,RELAYCLIENT=""',
      lines: plan.lines,
      classText: ['allow', 'allow,RELAYCLIENT=""', 'allow', 'deny'],
      staticDefaultLine: null,
      defaultInstruction: 'allow',
      counts: { keys: 2, relay: 1, trust: 0, deny: 1 },
    });
    const lines = text.split('\n');
    expect(lines[0]).toMatch(/^# Generated by qguard sync-rules/);
    expect(text).toContain('\n127.:allow,RELAYCLIENT=""\n# ---- generated');
    expect(text.endsWith('10.:deny\n10.1.2.3:allow,RELAYCLIENT=""\n# ---- default ----\n:allow\n')).toBe(true);
    // Every non-comment line parses, and so the whole file is what tcprules will accept.
    expect(parseRulesText(text).problems).toEqual([]);
  });
});

describe('rcpthosts', () => {
  it('sorts, deduplicates and keeps only domain names', () => {
    const r = renderRcpthosts(['b.example', 'A.example', 'a.example', '.sub.example', 'bad name', 'x\ny'], { splitMore: true });
    expect(r.rcpthosts).toBe('.sub.example\na.example\nb.example\n');
    expect(r.morercpthosts).toBe('');
    expect(r.skipped).toEqual(['bad name', 'x\ny']);
    expect(r.count).toBe(3);
  });

  it('never renders an empty rcpthosts', () => {
    expect(renderRcpthosts([], { splitMore: true }).rcpthosts).toBeNull();
    expect(renderRcpthosts(['not a domain!'], { splitMore: true }).rcpthosts).toBeNull();
  });

  it('puts names beyond 50 in morercpthosts only when qmail-newmrh can compile them', () => {
    const names = Array.from({ length: 60 }, (_, i) => `d${String(i).padStart(2, '0')}.example`);
    const split = renderRcpthosts(names, { splitMore: true });
    expect(split.rcpthosts!.trim().split('\n')).toHaveLength(RCPTHOSTS_MAX);
    expect(split.morercpthosts.trim().split('\n')).toHaveLength(10);
    const whole = renderRcpthosts(names, { splitMore: false });
    expect(whole.rcpthosts!.trim().split('\n')).toHaveLength(60);
    expect(whole.morercpthosts).toBe('');
  });
});
