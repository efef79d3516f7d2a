-- qguard foundation: IP rules, their audit trail, the change counter, rcpthosts domains,
-- settings, housekeeping of expired rules, and the intranet's door (allow_login).
-- Everything lives in schema qguard, so it can share the intranet's database.

CREATE SCHEMA IF NOT EXISTS qguard;

-- Settings kept in the database (shared by every mail server and the intranet).
CREATE TABLE qguard.settings (
  key   text PRIMARY KEY,
  value text NOT NULL
);
-- The longest relay permission an intranet login may grant.
INSERT INTO qguard.settings (key, value) VALUES ('login_ttl_max', '7 days');

-- One row per (network, source, host scope). The same network may be listed by several
-- sources: removing one list must not drop another's entry.
CREATE TABLE qguard.rules (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  network     cidr NOT NULL,
  action      text NOT NULL CHECK (action IN ('relay', 'trust', 'deny')),
  source      text NOT NULL DEFAULT 'manual'
              CHECK (source ~ '^[a-z][a-z0-9_-]*(:[A-Za-z0-9][A-Za-z0-9_.-]*)?$' AND length(source) <= 64),
  reason      text CHECK (length(reason) <= 1000),
  who         text CHECK (length(who) <= 200),
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz,
  host        text CHECK (host <> '' AND length(host) <= 255),
  -- Never everything, and never the IPv4-mapped spelling (it is stored as IPv4).
  CONSTRAINT rules_not_everything CHECK (masklen(network) > 0),
  CONSTRAINT rules_no_mapped CHECK (NOT (family(network) = 6 AND network <<= '::ffff:0.0.0.0/96'::cidr)),
  CONSTRAINT rules_unique UNIQUE NULLS NOT DISTINCT (network, source, host)
);
-- Which rules contain an address (`network >>= ip`): GiST inet_ops. Not SP-GiST, although it
-- inserts and looks up faster: on PostgreSQL 15 its inet_ops misses IPv6 rows in a table of
-- mixed families (test/integration/db-foundation.test.ts keeps the case).
CREATE INDEX rules_network_gist ON qguard.rules USING gist (network inet_ops);
CREATE INDEX rules_expires ON qguard.rules (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX rules_source ON qguard.rules (source);

-- Every read of the policy goes through this view: a rule is gone from the moment it expires,
-- whether or not housekeeping has deleted it yet.
CREATE VIEW qguard.live_rules AS
  SELECT * FROM qguard.rules WHERE expires_at IS NULL OR expires_at > now();

-- Hosts for control/rcpthosts (host = NULL: every mail server).
CREATE TABLE qguard.domains (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name        text NOT NULL
              CHECK (name ~ '^\.?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$' AND length(name) <= 253),
  host        text CHECK (host <> '' AND length(host) <= 255),
  who         text,
  created_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT domains_unique UNIQUE NULLS NOT DISTINCT (name, host)
);

-- Who changed what, when and why. Written by triggers, so no path can skip it.
CREATE TABLE qguard.audit (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at          timestamptz NOT NULL DEFAULT now(),
  actor       text NOT NULL,
  op          text NOT NULL CHECK (op IN ('insert', 'update', 'delete', 'expire')),
  object      text NOT NULL CHECK (object IN ('rule', 'domain')),
  object_id   bigint,
  network     cidr,
  domain      text,
  action      text,
  source      text,
  host        text,
  who         text,
  reason      text,
  expires_at  timestamptz,
  old         jsonb
);
-- Only by time: a GiST on network tripled the cost of a million-entry list import, and the
-- history of one network is an occasional admin query that may scan.
CREATE INDEX audit_at ON qguard.audit (at);

-- The change counter: bumped (and announced with NOTIFY) by every statement that changes
-- rules or domains, readable in O(1) so sync-rules knows "nothing changed" without reading
-- the rules. It changes in the same transaction as the rows, so a reader never sees the new
-- number without the new rows.
CREATE TABLE qguard.state (
  singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  change_seq  bigint NOT NULL DEFAULT 0,
  changed_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO qguard.state DEFAULT VALUES;

CREATE FUNCTION qguard.bump_change() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  seq bigint;
BEGIN
  UPDATE qguard.state SET change_seq = change_seq + 1, changed_at = now() RETURNING change_seq INTO seq;
  PERFORM pg_notify('qguard_changed', seq::text);
  RETURN seq;
END $$;

-- The actor recorded in the audit: set per session by qguard (`set_config('qguard.actor', ...)`),
-- or the database user.
CREATE FUNCTION qguard.current_actor() RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('qguard.actor', true), ''), session_user::text)
$$;

CREATE FUNCTION qguard.audit_rules() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_actor text := qguard.current_actor();
  v_n bigint;
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO qguard.audit (actor, op, object, object_id, network, action, source, host, who, reason, expires_at)
      SELECT v_actor, 'insert', 'rule', n.id, n.network, n.action, n.source, n.host, n.who, n.reason, n.expires_at
      FROM new_rows n;
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO qguard.audit (actor, op, object, object_id, network, action, source, host, who, reason, expires_at, old)
      SELECT v_actor, 'update', 'rule', n.id, n.network, n.action, n.source, n.host, n.who, n.reason, n.expires_at,
             jsonb_build_object('action', o.action, 'who', o.who, 'reason', o.reason, 'expires_at', o.expires_at)
      FROM new_rows n JOIN old_rows o ON o.id = n.id
      WHERE (n.network, n.action, n.source, n.host, n.who, n.reason, n.expires_at)
            IS DISTINCT FROM (o.network, o.action, o.source, o.host, o.who, o.reason, o.expires_at);
  ELSE
    INSERT INTO qguard.audit (actor, op, object, object_id, network, action, source, host, who, reason, expires_at)
      SELECT v_actor,
             CASE WHEN current_setting('qguard.op', true) = 'expire' THEN 'expire' ELSE 'delete' END,
             'rule', o.id, o.network, o.action, o.source, o.host, o.who, o.reason, o.expires_at
      FROM old_rows o;
  END IF;
  GET DIAGNOSTICS v_n = ROW_COUNT;
  IF v_n > 0 THEN
    PERFORM qguard.bump_change();
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER rules_audit_insert AFTER INSERT ON qguard.rules
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION qguard.audit_rules();
CREATE TRIGGER rules_audit_update AFTER UPDATE ON qguard.rules
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION qguard.audit_rules();
CREATE TRIGGER rules_audit_delete AFTER DELETE ON qguard.rules
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION qguard.audit_rules();

CREATE FUNCTION qguard.audit_domains() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_actor text := qguard.current_actor();
  v_n bigint;
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO qguard.audit (actor, op, object, object_id, domain, host, who)
      SELECT v_actor, 'insert', 'domain', n.id, n.name, n.host, n.who FROM new_rows n;
  ELSE
    INSERT INTO qguard.audit (actor, op, object, object_id, domain, host, who)
      SELECT v_actor, 'delete', 'domain', o.id, o.name, o.host, o.who FROM old_rows o;
  END IF;
  GET DIAGNOSTICS v_n = ROW_COUNT;
  IF v_n > 0 THEN
    PERFORM qguard.bump_change();
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER domains_audit_insert AFTER INSERT ON qguard.domains
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION qguard.audit_domains();
CREATE TRIGGER domains_audit_delete AFTER DELETE ON qguard.domains
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION qguard.audit_domains();

-- Housekeeping: delete rules whose time is up, audited as 'expire'. Returns how many.
CREATE FUNCTION qguard.expire_rules() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  n integer;
BEGIN
  PERFORM set_config('qguard.op', 'expire', true);
  DELETE FROM qguard.rules WHERE expires_at <= now();
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM set_config('qguard.op', '', true);
  RETURN n;
END $$;

-- The intranet's door: a user who logged in from `ip` may relay for `ttl` (capped by the
-- setting login_ttl_max). Creates or extends one relay rule of source `login` for that single
-- address. SECURITY DEFINER with a fixed search_path, so a role that may execute only this
-- function (qguard_login) can grant exactly this and nothing else.
CREATE FUNCTION qguard.allow_login(ip inet, username text, ttl interval) RETURNS timestamptz
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_ip inet := ip;
  v_max interval;
  v_ttl interval;
  v_expires timestamptz;
BEGIN
  IF v_ip IS NULL THEN
    RAISE EXCEPTION 'allow_login: ip is required' USING ERRCODE = '22023';
  END IF;
  IF masklen(v_ip) <> (CASE family(v_ip) WHEN 4 THEN 32 ELSE 128 END) THEN
    RAISE EXCEPTION 'allow_login: % is a network; a single address is required', v_ip USING ERRCODE = '22023';
  END IF;
  IF family(v_ip) = 6 AND v_ip << '::ffff:0.0.0.0/96'::inet THEN
    v_ip := '0.0.0.0'::inet + (v_ip - '::ffff:0.0.0.0'::inet);
  END IF;
  IF v_ip = '0.0.0.0'::inet OR v_ip = '::'::inet OR v_ip << '224.0.0.0/4'::inet OR v_ip << 'ff00::/8'::inet THEN
    RAISE EXCEPTION 'allow_login: % is not a client address', v_ip USING ERRCODE = '22023';
  END IF;
  IF username IS NULL OR btrim(username) = '' OR length(username) > 200 THEN
    RAISE EXCEPTION 'allow_login: a user name (1-200 characters) is required' USING ERRCODE = '22023';
  END IF;
  IF ttl IS NULL OR ttl <= interval '0' THEN
    RAISE EXCEPTION 'allow_login: ttl must be positive' USING ERRCODE = '22023';
  END IF;
  SELECT value::interval INTO v_max FROM qguard.settings WHERE key = 'login_ttl_max';
  v_ttl := least(ttl, coalesce(v_max, interval '7 days'));
  PERFORM set_config('qguard.actor', 'login:' || username, true);
  INSERT INTO qguard.rules AS r (network, action, source, who, reason, expires_at)
    VALUES (v_ip::cidr, 'relay', 'login', username, 'intranet login', now() + v_ttl)
  ON CONFLICT ON CONSTRAINT rules_unique DO UPDATE
    SET action = 'relay',
        who = EXCLUDED.who,
        updated_at = now(),
        expires_at = CASE WHEN r.expires_at IS NULL OR r.expires_at < EXCLUDED.expires_at
                          THEN EXCLUDED.expires_at ELSE r.expires_at END
  RETURNING r.expires_at INTO v_expires;
  RETURN v_expires;
END $$;

-- Only qguard's own users (the schema owner) run the housekeeping and the internals.
REVOKE ALL ON FUNCTION qguard.allow_login(inet, text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION qguard.expire_rules() FROM PUBLIC;
REVOKE ALL ON FUNCTION qguard.bump_change() FROM PUBLIC;

-- The intranet's role: may execute allow_login and nothing else. Created when the migrating
-- user may create roles; otherwise a superuser runs the same two GRANTs by hand (README).
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'qguard_login')
     AND (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
    CREATE ROLE qguard_login NOLOGIN;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'qguard_login') THEN
    GRANT USAGE ON SCHEMA qguard TO qguard_login;
    GRANT EXECUTE ON FUNCTION qguard.allow_login(inet, text, interval) TO qguard_login;
  END IF;
END $$;
