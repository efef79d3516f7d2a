#!/usr/bin/env node
// import-spamlist: not implemented yet (its own issue).

import { newProgram, runMain, withContext } from '../lib/cli/run-main.js';
import { PermanentError } from '../lib/errors.js';

const program = newProgram('import-spamlist', 'not implemented yet').action(
  withContext('import-spamlist', async () => {
    throw new PermanentError('not implemented yet');
  }),
);

await runMain(program);
