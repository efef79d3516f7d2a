#!/usr/bin/env node
// import-spamlist: a spam IP list on stdin or in files → the deny rules of one named source.
// Flags only; the work is in lib/jobs/import-spamlist.ts.

import { newProgram, runMain, withContext } from '../lib/cli/run-main.js';
import { type ImportOptions, importSpamlist } from '../lib/jobs/import-spamlist.js';

const EXAMPLES = `
Formats (per line, mixed freely): 1.2.3.4, 1.2.3.0/24, 2001:db8::/32, 1.2.3.4-1.2.3.20,
1.2.3.4-20, Spamhaus DROP "1.2.3.0/24 ; SBL123", Spamhaus JSON {"cidr":"1.2.3.0/24"},
tcprules "1.2.3.:deny" and "1.2.3.4-20:deny", # and ; comments, CRLF, a UTF-8 BOM.

Examples:
  curl -fsS https://www.spamhaus.org/drop/drop.txt | import-spamlist --source spamhaus-drop --replace
  import-spamlist --source local --for 30d /etc/qguard/extra-spammers.txt
  import-spamlist --source blocklist-de --replace --dry-run --json < all.txt

Exit: 0 imported (also with up to --max-invalid percent invalid lines), 100 refused (nothing
changed), 111 database trouble.`;

const program = newProgram('import-spamlist', 'spam IP list on stdin or in files → deny rules of one named source (list:NAME)')
  .argument('[files...]', 'list files (default: standard input; - means standard input)')
  .option('--source <name>', 'the list this is; entries belong to source list:NAME (required)')
  .option('--replace', 'afterwards the source holds exactly this input (others of the source removed)')
  .option('--force', 'with --replace: allow removing more than half of the source')
  .option('--for <duration>', 'entries lapse after this long (90s, 15m, 12h, 3d, 2w); default never')
  .option('--max-invalid <percent>', 'refuse the input when more than this percentage of entry lines is invalid (default 1)')
  .option('--dry-run', 'compute and report what would change, change nothing')
  .option('--json', 'print a JSON summary on stdout')
  .addHelpText('after', EXAMPLES)
  .action(
    withContext('import-spamlist', (ctx, files: string[], opts: ImportOptions) => importSpamlist(ctx, files, opts)),
  );

await runMain(program);
