-- The review page (`qguard web`): its operators and their sessions, the failed logins that
-- slow down guessing, the requests the unprivileged page files for a privileged run to carry
-- out (purge an IP's queued messages, restore a quarantined message), and the readable copies
-- of queued messages that scan-queue keeps so the page never opens the queue itself.

-- Operators of the page. The password is a scrypt hash (node:crypto), never stored elsewhere.
CREATE TABLE qguard.web_users (
  name                 text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$'),
  password_hash        text NOT NULL,
  created_at           timestamptz NOT NULL DEFAULT now(),
  created_by           text NOT NULL DEFAULT qguard.current_actor(),
  password_changed_at  timestamptz NOT NULL DEFAULT now()
);

-- A logged-in browser: the cookie holds a random token, the table only its sha256.
CREATE TABLE qguard.web_sessions (
  token_hash  text PRIMARY KEY,
  user_name   text NOT NULL REFERENCES qguard.web_users (name) ON DELETE CASCADE ON UPDATE CASCADE,
  csrf        text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  last_seen   timestamptz NOT NULL DEFAULT now(),
  remote_ip   text
);
CREATE INDEX web_sessions_user ON qguard.web_sessions (user_name);

-- Failed logins, counted per user name and per address over a window.
CREATE TABLE qguard.web_login_failures (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at         timestamptz NOT NULL DEFAULT now(),
  user_name  text NOT NULL,
  remote_ip  text NOT NULL
);
CREATE INDEX web_login_failures_user ON qguard.web_login_failures (user_name, at);
CREATE INDEX web_login_failures_ip ON qguard.web_login_failures (remote_ip, at);

-- Work the page asks of a privileged run on a mail server (`purge-queue --requests`).
CREATE TABLE qguard.requests (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind           text NOT NULL CHECK (kind IN ('purge', 'restore')),
  host           text NOT NULL,
  network        cidr,
  quarantine_id  bigint,
  requested_by   text NOT NULL,
  requested_at   timestamptz NOT NULL DEFAULT now(),
  state          text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'done', 'failed')),
  started_at     timestamptz,
  finished_at    timestamptz,
  done_count     integer,
  error          text,
  CHECK ((kind = 'purge' AND network IS NOT NULL) OR (kind = 'restore' AND quarantine_id IS NOT NULL))
);
CREATE INDEX requests_pending ON qguard.requests (host, id) WHERE state IN ('pending', 'running');
CREATE INDEX requests_at ON qguard.requests (requested_at);

-- Readable copies (capped) of queued messages from senders that are not relay/trust. Dropped
-- with the message when it leaves the queue, unless purge-queue quarantined it: then the copy
-- goes with the quarantine entry and is dropped when that is pruned.
CREATE TABLE qguard.message_copies (
  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  message_id     bigint UNIQUE REFERENCES qguard.messages (id) ON DELETE SET NULL,
  quarantine_id  bigint UNIQUE REFERENCES qguard.quarantine (id) ON DELETE CASCADE,
  host           text NOT NULL,
  data           bytea NOT NULL,
  size           bigint NOT NULL,
  truncated      boolean NOT NULL,
  copied_at      timestamptz NOT NULL DEFAULT now()
);

-- The audit learns the page's events: operators added/removed/changed, logins, requests.
ALTER TABLE qguard.audit DROP CONSTRAINT audit_op_check;
ALTER TABLE qguard.audit ADD CONSTRAINT audit_op_check
  CHECK (op IN ('insert', 'update', 'delete', 'expire', 'login', 'logout', 'login-failed', 'request'));
ALTER TABLE qguard.audit DROP CONSTRAINT audit_object_check;
ALTER TABLE qguard.audit ADD CONSTRAINT audit_object_check
  CHECK (object IN ('rule', 'domain', 'operator', 'session', 'request'));

-- scan-queue's copies: messages whose sender may relay or is trusted are marked, not copied.
ALTER TABLE qguard.messages ADD COLUMN copy_skipped boolean NOT NULL DEFAULT false;
CREATE INDEX messages_copy_todo ON qguard.messages (host, id) WHERE gone_at IS NULL AND source_ip IS NOT NULL AND NOT copy_skipped;

-- A message that leaves the queue takes its copy along (a quarantined one's copy was moved to
-- its quarantine entry first). Per row, and only for rows that just became gone.
CREATE FUNCTION qguard.drop_gone_copy() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM qguard.message_copies WHERE message_id = NEW.id AND quarantine_id IS NULL;
  RETURN NULL;
END $$;
CREATE TRIGGER messages_drop_gone_copy AFTER UPDATE OF gone_at ON qguard.messages
  FOR EACH ROW WHEN (OLD.gone_at IS NULL AND NEW.gone_at IS NOT NULL) EXECUTE FUNCTION qguard.drop_gone_copy();
