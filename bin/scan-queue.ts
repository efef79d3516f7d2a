#!/usr/bin/env node
// scan-queue: not implemented yet (its own issue).

import { newProgram, runMain, withContext } from '../lib/cli/run-main.js';
import { PermanentError } from '../lib/errors.js';

const program = newProgram('scan-queue', 'not implemented yet').action(
  withContext('scan-queue', async () => {
    throw new PermanentError('not implemented yet');
  }),
);

await runMain(program);
