#!/usr/bin/env node
// sync-rules: not implemented yet (its own issue).

import { newProgram, runMain, withContext } from '../lib/cli/run-main.js';
import { PermanentError } from '../lib/errors.js';

const program = newProgram('sync-rules', 'not implemented yet').action(
  withContext('sync-rules', async () => {
    throw new PermanentError('not implemented yet');
  }),
);

await runMain(program);
