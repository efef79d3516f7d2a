// What a firewall backend does for qguard: look at its objects in the kernel (cheaply, read
// only), replace the whole deny set atomically, take everything of qguard's out again, and
// count what the kernel holds. lib/ops/firewall.ts decides when; each backend knows how.

import type { DenySet } from '../../firewall/deny-set.js';
import type { FirewallBackendName } from '../../firewall/backends.js';
import type { BlockPolicy } from '../../firewall/nft-script.js';
import type { Net } from '../../net/address.js';

/** What the last successful apply put in the kernel; `$QGUARD_STATE_DIR/firewall.json`. */
export interface AppliedFirewall {
  backend: FirewallBackendName;
  ports: number[];
  action: BlockPolicy['action'];
  /** sha256 of the element lists: equal digest, equal set. */
  digest: string;
  v4: number;
  v6: number;
  appliedAt: string;
}

/** Our firewall objects as the kernel has them now. */
export interface KernelCheck {
  backend: FirewallBackendName;
  /** Some of our objects exist. */
  present: boolean;
  /** Everything is there as the last apply left it. */
  intact: boolean;
  problem: string | null;
  /** What the backend learned by looking that its apply can use (ipset: set headers, jumps). */
  seen?: unknown;
}

export interface FirewallBackend {
  readonly name: FirewallBackendName;
  /** The kernel objects qguard owns with this backend, for `qguard firewall status`. */
  describe(): string;
  /** Are the programs this backend needs installed? */
  installed(): boolean;
  /** One cheap read-only look. `expected` (the last apply by this backend) may sharpen it. */
  check(policy: BlockPolicy, expected: AppliedFirewall | null): Promise<KernelCheck>;
  /** Make the kernel hold exactly `set`, all or nothing; `seen` is this run's check, if any. */
  apply(set: DenySet, policy: BlockPolicy, protectedNets: readonly Net[], seen: KernelCheck | null): Promise<void>;
  /** Take qguard's objects out (idempotent, nothing else touched); what was removed. */
  remove(): Promise<string[]>;
  /** Elements in the kernel's sets now (null when a set is missing); may be slow. */
  count(check: KernelCheck): Promise<{ v4: number | null; v6: number | null }>;
}
