-- scan-queue: one row per queued message seen on each mail server, and per server the state
-- of its last scan (directory signatures, so an unchanged queue is not read again).
-- Counting for the auto-deny reads the live rows of every server sharing this database.

-- A message as scan-queue last read it. Identity: (host, queue_id, line1). queue_id is
-- the inode number qmail named the files after, and inode numbers are reused quickly:
-- line 1 of mess/ (qmail-queue's pid and date) tells a new message with an old number apart.
CREATE TABLE qguard.messages (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  host            text NOT NULL CHECK (host <> '' AND length(host) <= 255),
  queue_id        bigint NOT NULL CHECK (queue_id > 0),
  line1           text NOT NULL CHECK (length(line1) <= 1000),
  -- queue_id mod conf-split: the subdirectory group, how scan-queue loads what it compares.
  split           integer NOT NULL CHECK (split >= 0),
  state           text NOT NULL
                  CHECK (state IN ('preprocessed', 'todo', 'in-flight-intd', 'in-flight-mess-only')),
  kind            text NOT NULL CHECK (kind IN ('network', 'local', 'bounce', 'double-bounce', 'unknown')),
  -- A copy forwarded by a .qmail file; chain lists the wrappers from the outside in.
  forwarded       boolean NOT NULL DEFAULT false,
  chain           text[] NOT NULL DEFAULT '{}',
  -- The date in line 1 (qmail-queue's clock).
  birth           timestamptz,
  -- info/ mtime (qmail's own birth time), or todo/ (intd/, mess/) before preprocessing.
  arrival         timestamptz NOT NULL,
  -- The client that sent the (innermost original) message, from our own two Received lines.
  source_ip       inet CHECK (source_ip IS NULL OR masklen(source_ip) = CASE family(source_ip) WHEN 4 THEN 32 ELSE 128 END),
  source_recorded text CHECK (length(source_recorded) <= 200),
  helo            text CHECK (length(helo) <= 1000),
  remote_host     text CHECK (length(remote_host) <= 1000),
  remote_info     text CHECK (length(remote_info) <= 1000),
  -- Envelope sender: '' for a bounce, '#@[]' for a double bounce, NULL before the envelope.
  sender          text,
  -- Every recipient the queue still records, and those not yet done (capped lists, exact counts).
  recipients      text[] NOT NULL DEFAULT '{}',
  pending         text[] NOT NULL DEFAULT '{}',
  rcpt_count      integer NOT NULL DEFAULT 0,
  pending_count   integer NOT NULL DEFAULT 0,
  bounce_pending  boolean NOT NULL DEFAULT false,
  size            bigint NOT NULL CHECK (size >= 0),
  subject         text CHECK (length(subject) <= 1000),
  problems        text[] NOT NULL DEFAULT '{}',
  -- Change detection: the stat signature of the message's files, and of mess/ alone.
  sig             text NOT NULL,
  mess_sig        text NOT NULL,
  first_seen      timestamptz NOT NULL DEFAULT now(),
  -- When the files were last read.
  read_at         timestamptz NOT NULL DEFAULT now(),
  -- When scan-queue found the message no longer in the queue (delivered, bounced, purged).
  gone_at         timestamptz,
  CONSTRAINT messages_key UNIQUE (host, queue_id, line1)
);

-- What scan-queue compares with the directory it is looking at.
CREATE INDEX messages_live_group ON qguard.messages (host, split) WHERE gone_at IS NULL;
-- The threshold and `qguard queue top`: queued messages per source IP within the window,
-- over every host. Index-only for the count.
CREATE INDEX messages_count ON qguard.messages (source_ip, arrival)
  WHERE gone_at IS NULL AND source_ip IS NOT NULL AND state IN ('preprocessed', 'todo');
-- Housekeeping of rows whose message left the queue.
CREATE INDEX messages_gone ON qguard.messages (gone_at) WHERE gone_at IS NOT NULL;

-- Per mail server: the queue it scans, and the signature of each queue directory at its last
-- scan. A directory whose signature did not change holds the same files: not listed again.
CREATE TABLE qguard.queue_scans (
  host         text PRIMARY KEY CHECK (host <> '' AND length(host) <= 255),
  queue_dir    text NOT NULL,
  split        integer NOT NULL CHECK (split > 0),
  dirs         jsonb NOT NULL DEFAULT '{}',
  -- Which group is re-checked in full this run, whatever the signatures say (in-place
  -- changes of local/ and remote/ files do not change their directory).
  rotation     integer NOT NULL DEFAULT 0,
  scanned_at   timestamptz NOT NULL DEFAULT now(),
  duration_ms  integer,
  messages     integer NOT NULL DEFAULT 0
);
