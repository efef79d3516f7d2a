// Benchmark: the firewall with 100,000 denied entries (issue 6; goal: our apply within 1.5x
// of loading the same elements alone with `nft -f` / `ipset restore`), and proof that an
// unchanged run makes no write call. Everything runs in a network namespace of its own,
// created and deleted here: the machine's own firewall is never touched.
//
// For each backend, in the same run: the floor (the elements alone, one nft -f / ipset
// restore, text prepared beforehand), our first apply into an empty kernel, our apply after
// one address changed (a full reload, like every run where something changed), and an
// unchanged run. Our figures are applyFirewall() end to end: deny spans, aggregation, the
// safety assertion, rendering, `nft -c` + `nft -f` (or ipset restore + iptables), the state
// file. Every firewall program call goes through a logging wrapper so the calls are listed.
//
// Run (root): npm run build:bench && node dist/bench/firewall.js   (ENTRIES=N, ROUNDS=N)

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ENTRIES = Number(process.env.ENTRIES ?? 100_000);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const HERE = fileURLToPath(import.meta.url);

/** Outside: make the namespace, run this script inside it, always delete it. */
function outside(): void {
  const ns = `qgfw-bench-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
    execFileSync('ip', ['netns', 'exec', ns, process.execPath, HERE, '--inside'], { stdio: 'inherit' });
  } finally {
    execFileSync('ip', ['netns', 'delete', ns]);
  }
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const sec = (m: number) => `${(m / 1000).toFixed(2)} s`;

async function inside(): Promise<void> {
  // Logging wrappers in front on PATH (before the job looks its programs up).
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qgfw-bench-'));
  const log = path.join(tmp, 'calls.log');
  const bin = path.join(tmp, 'bin');
  fs.mkdirSync(bin);
  const real = (p: string) => execFileSync('sh', ['-c', `PATH=/usr/sbin:/sbin:/usr/bin:/bin command -v ${p}`]).toString().trim();
  for (const p of ['nft', 'ipset', 'iptables', 'ip6tables', 'iptables-save', 'ip6tables-save', 'iptables-restore', 'ip6tables-restore']) {
    fs.writeFileSync(path.join(bin, p), `#!/bin/sh\necho "${p} $*" >> ${log}\nexec ${real(p)} "$@"\n`, { mode: 0o755 });
  }
  process.env.PATH = `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`;

  const { resolveConfig } = await import('../lib/config.js');
  const { applyFirewall } = await import('../lib/ops/firewall.js');
  const { parseNet } = await import('../lib/net/address.js');
  const { renderNftScript } = await import('../lib/firewall/nft-script.js');
  const { denySet, elementTexts } = await import('../lib/firewall/deny-set.js');
  type RunContext = import('../lib/context.js').RunContext;
  type PolicyRule = import('../lib/policy/decide.js').PolicyRule;

  // 100,000 IPv4 addresses, none adjacent, so each is one element (as on a spam list).
  const rules: PolicyRule[] = [];
  let a = 0x0b000000;
  for (let i = 0; i < ENTRIES; i++) {
    a += 2 + ((i * 7919) % 13);
    rules.push({ net: { family: 4, addr: BigInt(a), prefix: 32 }, action: 'deny' });
  }
  const changed = [...rules, { net: { family: 4 as const, addr: BigInt(a + 100), prefix: 32 }, action: 'deny' as const }];
  const protectedNets = ['127.0.0.0/8', '::1'].map((s) => {
    const r = parseNet(s);
    if (!r.ok) throw new Error(r.error);
    return r.net;
  });
  const elements = elementTexts(denySet(rules, protectedNets).v4);
  if (elements.length !== ENTRIES) throw new Error(`expected ${ENTRIES} elements, got ${elements.length}`);

  const sh = (file: string, args: string[], input?: string) =>
    execFileSync(real(file), args, { input, stdio: ['pipe', 'pipe', 'inherit'], maxBuffer: 1 << 30 });
  const clean = () => {
    sh('nft', ['flush', 'ruleset']); // iptables-nft rules live here too
    sh('ipset', ['destroy']);
  };
  const calls = () => {
    const text = fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '';
    fs.rmSync(log, { force: true });
    return text.split('\n').filter(Boolean);
  };
  const newCtx = (backend: 'nft' | 'ipset', stateDir: string): RunContext =>
    ({
      command: 'bench',
      config: resolveConfig({ flags: {}, env: { QGUARD_STATE_DIR: stateDir, QGUARD_FIREWALL: backend }, file: null, hostname: 'bench' }),
      log: { verbose: false, info() {}, warn(m: string) { console.log(`  (warning: ${m})`); }, fatal() {}, async close() {} },
    }) as unknown as RunContext;
  const min = (xs: number[]) => Math.min(...xs);

  // The floors: the same elements, text ready, loaded alone.
  const chunks: string[] = [];
  for (let i = 0; i < elements.length; i += 2000) chunks.push(elements.slice(i, i + 2000).join(', '));
  const nftFloor = ['table inet floor {', '\tset s { type ipv4_addr; flags interval; }', '}', ...chunks.map((c) => `add element inet floor s { ${c} }`), ''].join('\n');
  const ipsetFloor = [`create floor hash:net family inet maxelem ${Math.max(65536, ENTRIES)}`, ...elements.map((e) => `add floor ${e}`), ''].join('\n');
  const floor = (backend: 'nft' | 'ipset') => {
    clean();
    const t0 = process.hrtime.bigint();
    if (backend === 'nft') sh('nft', ['-f', '-'], nftFloor);
    else sh('ipset', ['restore'], ipsetFloor);
    return ms(t0);
  };

  console.log(`firewall bench: ${ENTRIES} denied IPv4 addresses = ${elements.length} set elements, ${ROUNDS} rounds, min shown`);
  console.log(`machine: ${os.cpus().length} CPUs shared with other work: figures are noisy; floor and ours alternate in the same run`);
  for (const backend of ['nft', 'ipset'] as const) {
    const floors: number[] = [];
    const first: number[] = [];
    const replace: number[] = [];
    const same: number[] = [];
    let sameCalls: string[] = [];
    let firstCalls: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      floors.push(floor(backend));
      clean();
      const stateDir = fs.mkdtempSync(path.join(tmp, 'state-'));
      calls();
      let t0 = process.hrtime.bigint();
      let r = await applyFirewall(newCtx(backend, stateDir), { rules, protectedNets }, { dryRun: false });
      first.push(ms(t0));
      firstCalls = calls();
      if (!r.changed || r.v4 !== ENTRIES) throw new Error(`first apply: ${JSON.stringify(r)}`);
      t0 = process.hrtime.bigint();
      r = await applyFirewall(newCtx(backend, stateDir), { rules: changed, protectedNets }, { dryRun: false });
      replace.push(ms(t0));
      calls();
      if (!r.changed || r.v4 !== ENTRIES + 1) throw new Error(`replace: ${JSON.stringify(r)}`);
      t0 = process.hrtime.bigint();
      r = await applyFirewall(newCtx(backend, stateDir), { rules: changed, protectedNets }, { dryRun: false });
      same.push(ms(t0));
      sameCalls = calls();
      if (r.changed) throw new Error(`unchanged run changed: ${JSON.stringify(r)}`);
    }
    const f = min(floors);
    const tool = backend === 'nft' ? 'nft -f' : 'ipset restore';
    console.log(`\n${backend}:`);
    console.log(`  floor  ${tool} of the ${ENTRIES} elements alone        ${sec(f)}   (all rounds: ${floors.map(sec).join(', ')})`);
    console.log(`  ours   first apply, empty kernel                ${sec(min(first))}   = ${(min(first) / f).toFixed(2)}x floor (goal <= 1.5x)`);
    console.log(`  ours   one address changed (full reload)        ${sec(min(replace))}   = ${(min(replace) / f).toFixed(2)}x floor`);
    console.log(`  ours   unchanged run                            ${min(same).toFixed(0)} ms`);
    console.log(`         calls of the first apply: ${firstCalls.map((c) => c.replace(/ -$/, '')).join(' | ')}`);
    console.log(`         calls of the unchanged run: ${sameCalls.join(' | ') || 'none'} (read-only; no write)`);
    if (backend === 'nft') {
      // Where our nft time goes: the check (`nft -c -f`) is a full second pass over the script.
      const script = renderNftScript(denySet(rules, protectedNets), { ports: [25, 110], action: 'drop' }, protectedNets);
      const checks: number[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        clean();
        const t0 = process.hrtime.bigint();
        sh('nft', ['-c', '-f', '-'], script);
        checks.push(ms(t0));
      }
      console.log(`         of which the nft -c check alone: ${sec(min(checks))} (${(min(checks) / f).toFixed(2)}x floor)`);
    }
  }
  clean();
  fs.rmSync(tmp, { recursive: true, force: true });
}

if (process.argv.includes('--inside')) await inside();
else outside();
