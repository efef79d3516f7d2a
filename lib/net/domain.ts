// Domain names as control/rcpthosts holds them: lower-case ASCII (IDNs in their xn-- form), an
// optional leading dot meaning "every subdomain". Pure.

/** Normalise a domain for rcpthosts, or return why it cannot be one. */
export function parseDomain(input: string): { ok: true; name: string } | { ok: false; error: string } {
  const shown = JSON.stringify(input.length > 60 ? `${input.slice(0, 60)}…` : input);
  let name = input.trim().toLowerCase();
  if (name.endsWith('.') && name.length > 1) name = name.slice(0, -1);
  if (name === '') return { ok: false, error: 'empty domain' };
  if (name.length > 253) return { ok: false, error: `domain longer than 253 characters: ${shown}` };
  const labels = (name.startsWith('.') ? name.slice(1) : name).split('.');
  for (const label of labels) {
    if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(label)) {
      return { ok: false, error: `not a domain name (letters, digits, hyphens, dots; IDNs as xn--): ${shown}` };
    }
  }
  return { ok: true, name };
}
