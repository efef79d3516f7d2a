import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type Net, formatNet, netFirst, netLast, parseNet } from '../../lib/net/address.js';
import { aggregateNets, mergeRanges, rangeToCidrs } from '../../lib/net/cidr-set.js';

const net = (s: string): Net => (parseNet(s) as { ok: true; net: Net }).net;

describe('CIDR sets', () => {
  it('turns a range into the fewest CIDRs', () => {
    const cidrs = (a: string, b: string) =>
      rangeToCidrs({ family: 4, first: net(a).addr, last: net(b).addr }).map(formatNet);
    expect(cidrs('1.2.3.37', '1.2.3.53')).toEqual(['1.2.3.37/32', '1.2.3.38/31', '1.2.3.40/29', '1.2.3.48/30', '1.2.3.52/31']);
    expect(cidrs('10.0.0.0', '10.255.255.255')).toEqual(['10.0.0.0/8']);
    expect(cidrs('0.0.0.0', '255.255.255.255')).toEqual(['0.0.0.0/0']);
    expect(cidrs('255.255.255.255', '255.255.255.255')).toEqual(['255.255.255.255/32']);
  });

  it('covers exactly the range with aligned blocks, for any range', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 0xffffffffn }), fc.bigInt({ min: 0n, max: 0xffffffffn }), (a, b) => {
        const [first, last] = a <= b ? [a, b] : [b, a];
        const out = rangeToCidrs({ family: 4, first, last });
        let next = first;
        for (const n of out) {
          expect(netFirst(n)).toBe(next);
          next = netLast(n) + 1n;
        }
        expect(next - 1n).toBe(last);
        // minimal: no two neighbours could merge into one aligned block
        for (let i = 1; i < out.length; i++) {
          const p = out[i - 1];
          const q = out[i];
          const mergeable = p.prefix === q.prefix && (p.addr >> BigInt(33 - p.prefix)) === (q.addr >> BigInt(33 - q.prefix));
          expect(mergeable).toBe(false);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('merges overlapping and adjacent networks', () => {
    const out = aggregateNets(['10.0.0.0/25', '10.0.0.128/25', '10.0.1.0/24', '10.0.0.5', '192.0.2.0/24', '2001:db8::/33', '2001:db8:8000::/33'].map(net));
    expect(out.map(formatNet)).toEqual(['10.0.0.0/23', '192.0.2.0/24', '2001:db8::/32']);
    expect(mergeRanges([])).toEqual([]);
  });
});
