// Ask a real tcprulescheck about many addresses in one shell loop (one process start each, no
// node spawn per address): its whole answer per address, in order.

import { execa } from 'execa';

export async function askTcprulescheck(cdb: string, ips: readonly string[], program = 'tcprulescheck'): Promise<string[]> {
  const script = 'c="$1"; f="$2"; shift 2; for ip in "$@"; do TCPREMOTEIP="$ip" "$c" "$f"; echo "==="; done';
  const r = await execa('/bin/sh', ['-c', script, 'sh', program, cdb, ...ips], { env: { TCPREMOTEHOST: undefined, TCPREMOTEINFO: undefined } });
  return r.stdout.split('===\n').slice(0, ips.length);
}
