// Guards on a rule before it is stored, shared by `qguard ip`, import-spamlist and scan-queue:
// never everything, never broader than QGUARD_MIN_PREFIX, never a deny that touches a
// protected address (loopback, this machine, QGUARD_PROTECT). Pure.

import { type Net, formatNet, formatNetShort, netContains } from '../net/address.js';
import type { Action } from './decide.js';

export interface GuardSettings {
  protectedNets: readonly Net[];
  minPrefix: { 4: number; 6: number };
}

/** Why a rule must not be stored, or null when it may. */
export function ruleRefusal(net: Net, action: Action, settings: GuardSettings): string | null {
  if (net.prefix === 0) return `${formatNet(net)} is every address: refused`;
  const min = settings.minPrefix[net.family];
  if (net.prefix < min) {
    return `${formatNet(net)} is broader than /${min}: refused (QGUARD_MIN_PREFIX)`;
  }
  if (action === 'deny') {
    for (const p of settings.protectedNets) {
      if (netContains(p, net)) return `${formatNetShort(net)} is protected (inside ${formatNetShort(p)}): never denied`;
      if (netContains(net, p)) return `${formatNetShort(net)} contains protected ${formatNetShort(p)}: refused`;
    }
  }
  return null;
}

/** Source names: `manual`, `login`, `scan`, `list:spamhaus-drop`, ... */
export function sourceRefusal(source: string): string | null {
  if (source.length > 64 || !/^[a-z][a-z0-9_-]*(:[A-Za-z0-9][A-Za-z0-9_.-]*)?$/.test(source)) {
    return `bad source name ${JSON.stringify(source.slice(0, 70))}: lower-case letters, digits, - and _, optionally followed by :NAME (e.g. list:spamhaus-drop)`;
  }
  return null;
}
