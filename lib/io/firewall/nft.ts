// The nftables backend: one table of qguard's own (inet qguard) with a set per family and a
// rule per set; replaced in one `nft -f` transaction: nft sends the whole script as one netlink
// batch, which the kernel commits or refuses whole, so a refused script changes nothing (no
// `nft -c` pass first: it parsed and checked the script a second time, 0.85 s of 1.79 s for
// 100,000 elements). Reads with `nft -t -j list ruleset inet` (no set members: cheap).

import type { FirewallBackend, KernelCheck } from './backend.js';
import { APPLY_TIMEOUT_MS, firewallProgram, fw } from './programs.js';
import type { Family } from '../../net/address.js';
import { NFT_FAMILY, NFT_SETS, NFT_TABLE, checkNftRuleset, countNftElements, renderNftRemove, renderNftScript } from '../../firewall/nft-script.js';

export const nftBackend: FirewallBackend = {
  name: 'nft',
  describe: () => `table ${NFT_FAMILY} ${NFT_TABLE}, sets ${NFT_SETS[4]}/${NFT_SETS[6]}`,
  installed: () => firewallProgram('nft') !== null,
  async check(policy): Promise<KernelCheck> {
    const r = await fw('nft', ['-t', '-j', 'list', 'ruleset', NFT_FAMILY]);
    return { backend: 'nft', ...checkNftRuleset(r.stdout, policy) };
  },
  async apply(set, policy, protectedNets, seen) {
    // No table a moment ago: create it, flushing nothing (a third of a large first apply). If
    // it appeared meanwhile, the kernel refuses that script whole and the usual one follows.
    if (seen && !seen.present) {
      try {
        await fw('nft', ['-f', '-'], { input: renderNftScript(set, policy, protectedNets, { fresh: true }), timeoutMs: APPLY_TIMEOUT_MS });
        return;
      } catch {
        // the usual script below: it says what is wrong, if anything still is
      }
    }
    const script = renderNftScript(set, policy, protectedNets);
    await fw('nft', ['-f', '-'], { input: script, timeoutMs: APPLY_TIMEOUT_MS });
  },
  async remove() {
    const r = await fw('nft', ['-t', '-j', 'list', 'ruleset', NFT_FAMILY]);
    if (!checkNftRuleset(r.stdout, { ports: [25], action: 'drop' }).present) return [];
    await fw('nft', ['-f', '-'], { input: renderNftRemove() });
    return [`nft table ${NFT_FAMILY} ${NFT_TABLE}`];
  },
  async count(check) {
    if (!check.present) return { v4: null, v6: null };
    const one = async (family: Family) => {
      const r = await fw('nft', ['-j', 'list', 'set', NFT_FAMILY, NFT_TABLE, NFT_SETS[family]], { ok: [0, 1] });
      return r.exitCode === 0 ? countNftElements(r.stdout) : null;
    };
    return { v4: await one(4), v6: await one(6) };
  },
};
