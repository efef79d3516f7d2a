// Build step after tsc: each executable in dist/bin becomes one bundled file (esbuild), so
// cron's every-minute start loads one module instead of resolving some sixty of ours and the
// CommonJS packages they import (about 60 ms of a 220 ms no-op run on a 2-core machine). The
// sources stay as they are; dist/lib stays as tsc wrote it (scan-queue's reader threads and
// the benchmarks load it). Packages that are loaded only when used, or that find files beside
// themselves (PGlite's wasm, the review page's stack), stay outside the bundle.
//
// Run by `npm run build`; `node scripts/bundle.mjs` alone re-bundles an existing dist/.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const binDir = path.join(root, 'dist/bin');

const external = [
  '@electric-sql/pglite', // loads its wasm and data files from beside itself
  'pg-native', // optional in pg, never installed
  'pg-copy-streams',
  'fastify',
  '@fastify/*',
  'mailparser',
  'sanitize-html',
];

const entries = fs.readdirSync(path.join(root, 'bin')).filter((f) => f.endsWith('.ts')).map((f) => f.replace(/\.ts$/, ''));
for (const name of entries) {
  const out = path.join(binDir, `${name}.js`);
  const tmp = `${out}.bundle-tmp`;
  await build({
    entryPoints: [out],
    outfile: tmp,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external,
    logLevel: 'warning',
    // CommonJS packages inside an ES module bundle still call require() for node's modules.
    banner: { js: "import { createRequire as qguardCreateRequire } from 'node:module'; const require = qguardCreateRequire(import.meta.url);" },
    legalComments: 'none',
  });
  fs.renameSync(tmp, out);
  fs.chmodSync(out, 0o755);
  fs.rmSync(`${out}.map`, { force: true });
}
