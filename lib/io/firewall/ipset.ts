// The ipset backend: a hash:net set per family, filled aside and swapped in (`ipset restore`),
// blocked by a chain of qguard's own (QGUARD) that INPUT jumps to exactly once, written with
// one iptables-restore commit per family. Reads set headers (entry counts, no members) and
// iptables-save.

import type { AppliedFirewall, FirewallBackend, KernelCheck } from './backend.js';
import { APPLY_TIMEOUT_MS, firewallProgram, fw, iptables } from './programs.js';
import type { Family } from '../../net/address.js';
import type { BlockPolicy } from '../../firewall/nft-script.js';
import {
  IPSET_NAMES,
  IPSET_TMP,
  IPT_CHAIN,
  IPT_JUMP,
  type IpsetHeader,
  checkIpsets,
  checkIptablesSave,
  parseIpsetHeaders,
  renderIptablesRestore,
  renderIpsetRestore,
} from '../../firewall/ipset-script.js';

/** What a look at the kernel learned that the apply can use. */
interface IpsetSeen {
  headers: Map<string, IpsetHeader>;
  /** Jumps from INPUT to QGUARD per family. */
  jumps: Record<Family, number>;
}

const seenOf = (check: KernelCheck | null): IpsetSeen | null => (check?.seen as IpsetSeen | undefined) ?? null;

async function headers(): Promise<Map<string, IpsetHeader>> {
  return parseIpsetHeaders((await fw('ipset', ['list', '-t'])).stdout);
}

async function dropTemporarySets(): Promise<void> {
  const h = await headers();
  for (const name of Object.values(IPSET_TMP)) if (h.has(name)) await fw('ipset', ['destroy', name]);
}

export const ipsetBackend: FirewallBackend = {
  name: 'ipset',
  describe: () => `ipsets ${IPSET_NAMES[4]}/${IPSET_NAMES[6]}, iptables/ip6tables chain ${IPT_CHAIN}`,
  installed: () => firewallProgram('ipset') !== null,
  async check(policy: BlockPolicy, expected: AppliedFirewall | null): Promise<KernelCheck> {
    const h = await headers();
    const sets = checkIpsets(h, expected);
    const jumps: Record<Family, number> = { 4: 0, 6: 0 };
    let present = sets.present;
    let problem = sets.problem;
    for (const family of [4, 6] as const) {
      const save = await fw(`${iptables(family)}-save`, ['-t', 'filter']);
      const c = checkIptablesSave(save.stdout, family, policy);
      jumps[family] = c.jumps;
      present ||= c.chain || c.jumps > 0;
      problem ??= c.problem;
    }
    if (!expected && problem === null) problem = 'never applied by this host';
    const seen: IpsetSeen = { headers: h, jumps };
    return { backend: 'ipset', present, intact: problem === null, problem, seen };
  },
  async apply(set, policy, protectedNets, check) {
    const seen = seenOf(check);
    const h = seen?.headers ?? (await headers());
    const script = renderIpsetRestore(set, protectedNets, new Set(h.keys()));
    try {
      await fw('ipset', ['restore'], { input: script, timeoutMs: APPLY_TIMEOUT_MS });
    } catch (err) {
      // The live sets are untouched (the swap is the last step); drop the half-filled ones.
      await dropTemporarySets().catch(() => {});
      throw err;
    }
    for (const family of [4, 6] as const) {
      const tool = iptables(family);
      await fw(`${tool}-restore`, ['-w', '--noflush'], { input: renderIptablesRestore(family, policy) });
      const has = await fw(tool, ['-w', '-C', ...IPT_JUMP], { ok: [0, 1] });
      if (has.exitCode === 1) {
        await fw(tool, ['-w', '-I', 'INPUT', '1', '-j', IPT_CHAIN]);
      } else {
        // Exactly one: drop duplicates someone (or an old version) added.
        for (let n = seen?.jumps[family] ?? 1; n > 1; n--) await fw(tool, ['-w', '-D', ...IPT_JUMP]);
      }
    }
  },
  async remove() {
    const removed: string[] = [];
    for (const family of [4, 6] as const) {
      const tool = iptables(family);
      if (!firewallProgram(tool)) continue;
      const save = checkIptablesSave((await fw(`${tool}-save`, ['-t', 'filter'])).stdout, family, { ports: [25], action: 'drop' });
      for (let n = save.jumps; n > 0; n--) await fw(tool, ['-w', '-D', ...IPT_JUMP]);
      if (save.chain) {
        await fw(tool, ['-w', '-F', IPT_CHAIN]);
        await fw(tool, ['-w', '-X', IPT_CHAIN]);
      }
      if (save.chain || save.jumps > 0) removed.push(`${tool} chain ${IPT_CHAIN}`);
    }
    const h = await headers();
    for (const name of [...Object.values(IPSET_NAMES), ...Object.values(IPSET_TMP)]) {
      if (h.has(name)) {
        await fw('ipset', ['destroy', name]);
        removed.push(`ipset ${name}`);
      }
    }
    return removed;
  },
  async count(check) {
    const h = seenOf(check)?.headers;
    return { v4: h?.get(IPSET_NAMES[4])?.entries ?? null, v6: h?.get(IPSET_NAMES[6])?.entries ?? null };
  },
};
