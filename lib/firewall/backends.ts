// The firewall backends qguard knows, by name: the one list config validation, the backend
// registry (lib/io/firewall/index.ts) and the docs agree on. A new backend is a name here and a
// module in lib/io/firewall/ implementing FirewallBackend. Pure.

export const FIREWALL_BACKENDS = ['nft', 'ipset'] as const;

/** A kernel firewall qguard can keep its deny set in. */
export type FirewallBackendName = (typeof FIREWALL_BACKENDS)[number];

/** What one apply of the deny set did (sync-rules' summary, its state file). */
export interface FirewallResult {
  backend: 'none' | FirewallBackendName;
  /** True when the kernel set was (or, with dryRun, would be) rewritten. */
  changed: boolean;
  /** Elements in the set (aggregated CIDRs), per family. */
  v4: number;
  v6: number;
  /** True when the set was unchanged but the kernel had lost it (reboot, flush): restored. */
  repaired: boolean;
}
