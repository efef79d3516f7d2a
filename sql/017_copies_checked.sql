-- scan-queue looks for queued messages without a readable copy (the review page's) after
-- every scan: with every copy in, that was a walk over all of the host's messages and a probe
-- of message_copies for each, every minute (200,000 rows for a 100,000-message queue), and while
-- copies filled, each run walked again past all those copied before it. A host's messages are
-- recorded only by its own scan-queue, one run at a time, with ids from one sequence, so they
-- only grow; what a walk has seen is kept:
--   copies_checked_to  every message up to this id has its copy or needs none;
--   copies_walk_from, copies_walk_top  a walk that ran out of time saw everything from _from
--                      to _top as well (NULL: none); the next run looks above _top, then goes
--                      on below _from.
-- Copies dropped (QGUARD_COPY_BYTES=0) set it all back.
ALTER TABLE qguard.queue_scans ADD COLUMN copies_checked_to bigint NOT NULL DEFAULT 0;
ALTER TABLE qguard.queue_scans ADD COLUMN copies_walk_from bigint;
ALTER TABLE qguard.queue_scans ADD COLUMN copies_walk_top bigint;
