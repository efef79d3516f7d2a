import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    pool: 'forks',
    // Firewall tests use network namespaces and the real tcprules: files run in parallel,
    // tests inside a file in order.
    sequence: { concurrent: false },
    reporters: ['default'],
  },
});
