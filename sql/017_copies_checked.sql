-- scan-queue looks for queued messages without a readable copy (the review page's) after
-- every scan: with every copy in, that was a walk over all of the host's messages and a probe
-- of message_copies for each, every minute (200,000 rows for a 100,000-message queue). A
-- host's messages are recorded only by its own scan-queue, one run at a time, with ids from one
-- sequence, so they only grow: once a walk has seen every message up to an id, the next walks
-- start above it. Copies dropped (QGUARD_COPY_BYTES=0) set it back to 0.
ALTER TABLE qguard.queue_scans ADD COLUMN copies_checked_to bigint NOT NULL DEFAULT 0;
