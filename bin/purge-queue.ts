#!/usr/bin/env node
// purge-queue: not implemented yet (its own issue).

import { newProgram, runMain, withContext } from '../lib/cli/run-main.js';
import { PermanentError } from '../lib/errors.js';

const program = newProgram('purge-queue', 'not implemented yet').action(
  withContext('purge-queue', async () => {
    throw new PermanentError('not implemented yet');
  }),
);

await runMain(program);
