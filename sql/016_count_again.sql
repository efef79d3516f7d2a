-- scan-queue counts every host's queued messages per address each minute (a spammer's
-- messages on mx1 and mx2 add up), so on a fleet of N servers the database read N times the
-- whole fleet's messages a minute — 800,000 rows per server and minute for 8 servers of
-- 100,000 messages — to find what it found the minute before. A count can only rise when
-- messages are recorded; a decision can only change with the rules or the configuration. So:
--   recorded    bumped by each run of this host's scan-queue that recorded, changed or marked
--               gone any message (in the same transaction as the messages);
--   last_count  what this host's last count found, with the fleet's recorded numbers and the
--               change counter it saw before counting. Equal now (and the count less than ten
--               minutes old): the count is not run again and its result is reported as it was.
ALTER TABLE qguard.queue_scans ADD COLUMN recorded bigint NOT NULL DEFAULT 0;
ALTER TABLE qguard.queue_scans ADD COLUMN last_count jsonb;
