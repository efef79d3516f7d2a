-- The source index without the public lists' entries. Inserting a million entries of one list
-- into a btree of a million equal keys cost 1.4 s of a 6.4 s first import (sql/010's measure of
-- the same kind); the only readers of a list's rules are import-spamlist (which reads all of
-- them: a scan of the table) and `qguard ip list --source list:NAME`. The sources people and
-- jobs write (manual, scan, login, intranet ...) keep their index: a query for one of them
-- repeats the predicate (`source NOT LIKE 'list:%'`, see NOT_LIST in lib/db/rules.ts) so the
-- planner can use it.
DROP INDEX qguard.rules_source;
CREATE INDEX rules_source ON qguard.rules (source) WHERE source NOT LIKE 'list:%';
