// The impure half of configuration: read the config file, the host name and this machine's
// interface addresses, then hand them to the pure resolveConfig().

import fs from 'node:fs';
import os from 'node:os';
import { type Config, parseConfigText, resolveConfig } from '../config.js';
import { PermanentError } from '../errors.js';
import { type Net, parseNet } from '../net/address.js';

export const DEFAULT_CONFIG_FILE = '/etc/qguard/qguard.conf';

/**
 * Resolve the configuration for this run. `flags` holds values given on the command line,
 * keyed by config key; `configFlag` is --config.
 */
export function loadConfig(
  flags: Record<string, string | undefined>,
  configFlag: string | undefined,
  env: Record<string, string | undefined> = process.env,
): Config {
  const explicit = configFlag ?? env.QGUARD_CONFIG;
  const name = explicit && explicit !== '' ? explicit : DEFAULT_CONFIG_FILE;
  let text: string | null = null;
  try {
    text = fs.readFileSync(name, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // A missing default file means the defaults; a missing named one is a mistake.
    if (!(code === 'ENOENT' && !explicit)) {
      throw new PermanentError(`unable to read config file ${name}: ${(err as Error).message}`);
    }
  }
  let file: { name: string; values: Record<string, string> } | null = null;
  if (text !== null) {
    const parsed = parseConfigText(text);
    if (parsed.problems.length > 0) {
      throw new PermanentError(`config file ${name}: ${parsed.problems[0]}`);
    }
    file = { name, values: parsed.values };
  }
  return resolveConfig({ flags, env, file, hostname: os.hostname() });
}

/** This machine's own addresses: never to be denied, whatever the database says. */
export function interfaceNets(): Net[] {
  const out: Net[] = [];
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) {
      const r = parseNet(a.address.replace(/%.*$/, ''));
      if (r.ok) out.push(r.net);
    }
  }
  return out;
}
