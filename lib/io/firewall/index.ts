// The backend registry: the one place a backend name becomes its implementation (the names
// are lib/firewall/backends.ts's list, so a name without a module does not compile).

import type { FirewallBackendName } from '../../firewall/backends.js';
import type { FirewallBackend } from './backend.js';
import { ipsetBackend } from './ipset.js';
import { nftBackend } from './nft.js';

const BACKENDS: Record<FirewallBackendName, FirewallBackend> = { nft: nftBackend, ipset: ipsetBackend };

/** The implementation of a backend. */
export function firewallBackend(name: FirewallBackendName): FirewallBackend {
  return BACKENDS[name];
}

/** Every backend, for `qguard firewall remove` (take out whatever any of them left). */
export function allFirewallBackends(): FirewallBackend[] {
  return Object.values(BACKENDS);
}
