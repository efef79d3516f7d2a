-- purge-queue's quarantine: one row per message taken out of a qmail queue, kept with a copy
-- of it (message file, envelope, meta) in the quarantine directory of the mail server that
-- removed it, until `qguard quarantine prune` (or the daily run's retention) drops both.
--
-- The row is also the purge's journal for crash repair. Its files are written and made
-- durable first; the row is then inserted in state 'removing' (the commit point: from here
-- on the message may be partly gone from the queue); once every queue file is unlinked and
-- that is durable too it becomes 'removed'. A run killed in between leaves 'removing' rows,
-- which the next run finishes first. Quarantine directories without a row were never
-- committed: the queue still holds their message, and they are deleted.

-- Ids are taken before the files are written (the directory is named after the id), so the
-- sequence is a separate object and the column takes explicit values.
CREATE SEQUENCE qguard.quarantine_ids;

CREATE TABLE qguard.quarantine (
  id              bigint PRIMARY KEY DEFAULT nextval('qguard.quarantine_ids'),
  -- The mail server whose queue held the message, and whose quarantine directory holds it.
  host            text NOT NULL CHECK (host <> '' AND length(host) <= 255),
  -- Identity in the queue: the inode number qmail named it after, and line 1 of mess/.
  queue_id        bigint NOT NULL CHECK (queue_id > 0),
  line1           text NOT NULL CHECK (length(line1) <= 1000),
  -- The date in line 1, and the arrival (info/ mtime, or todo/ before preprocessing).
  birth           timestamptz,
  arrival         timestamptz,
  -- Where it was in qmail's lifecycle when removed: 'preprocessed' or 'todo'.
  queue_state     text NOT NULL CHECK (queue_state IN ('preprocessed', 'todo', 'in-flight-intd', 'in-flight-mess-only')),
  kind            text NOT NULL CHECK (kind IN ('network', 'local', 'bounce', 'double-bounce', 'unknown')),
  forwarded       boolean NOT NULL DEFAULT false,
  source_ip       inet CHECK (source_ip IS NULL OR masklen(source_ip) = CASE family(source_ip) WHEN 4 THEN 32 ELSE 128 END),
  -- Envelope sender: '' for a bounce, '#@[]' for a double bounce.
  sender          text NOT NULL,
  -- Every recipient the queue recorded and those still pending (capped lists, exact counts).
  -- The envelope file in the quarantine directory holds all pending ones.
  recipients      text[] NOT NULL DEFAULT '{}',
  pending         text[] NOT NULL DEFAULT '{}',
  rcpt_count      integer NOT NULL DEFAULT 0,
  pending_count   integer NOT NULL DEFAULT 0,
  subject         text CHECK (length(subject) <= 1000),
  size            bigint NOT NULL CHECK (size >= 0),
  -- Which policy selected it, and why in words (`from 203.0.113.7, denied by scan rule ...`).
  policy          text NOT NULL CHECK (policy IN ('denied', 'backscatter', 'stale', 'admin', 'id')),
  reason          text NOT NULL CHECK (length(reason) <= 2000),
  who             text,
  -- The quarantine directory of this entry (absolute; the config may change later).
  path            text NOT NULL,
  -- removing: copy durable, queue removal in progress (crash repair finishes it)
  -- removed:  gone from the queue, kept here
  -- restoring: handed to qmail-queue, outcome not yet recorded (an interrupted restore)
  -- restored: re-injected through qmail-queue
  state           text NOT NULL CHECK (state IN ('removing', 'removed', 'restoring', 'restored')),
  purged_at       timestamptz NOT NULL DEFAULT now(),
  removed_at      timestamptz,
  restored_at     timestamptz,
  restored_by     text
);

-- Crash repair (state 'removing') and `quarantine ls` of one host.
CREATE INDEX quarantine_host_state ON qguard.quarantine (host, state);
-- Retention: the oldest entries of one host.
CREATE INDEX quarantine_host_purged ON qguard.quarantine (host, purged_at);
-- `quarantine ls --ip`, review by address.
CREATE INDEX quarantine_source ON qguard.quarantine (source_ip) WHERE source_ip IS NOT NULL;
