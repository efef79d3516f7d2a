-- tcpserver's log (QGUARD_SMTPD_LOG, read by scan-queue): SMTP connections per client address,
-- mail server and ten-minute slot, counted from each connection's `ok` or `deny` line, and how
-- far each mail server has read its log. The counts of every server add up per address.
CREATE TABLE qguard.connections (
  ip inet NOT NULL,
  host text NOT NULL,
  slot timestamptz NOT NULL,
  connections integer NOT NULL CHECK (connections >= 0),
  denied integer NOT NULL CHECK (denied >= 0 AND denied <= connections),
  first_seen timestamptz NOT NULL,
  last_seen timestamptz NOT NULL,
  PRIMARY KEY (ip, host, slot)
);
CREATE INDEX connections_slot ON qguard.connections (slot);

-- Where the next read of a log starts: the file (inode and first bytes) and the offset after
-- the last complete line counted. Written in the transaction that stores the counts, so a
-- line is counted once, whatever fails.
CREATE TABLE qguard.log_positions (
  host text NOT NULL,
  log text NOT NULL,
  inode bigint NOT NULL,
  "offset" bigint NOT NULL,
  head bytea NOT NULL,
  read_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (host, log)
);
