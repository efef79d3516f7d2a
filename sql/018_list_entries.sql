-- The public lists' entries in a lean table of their own. A row of qguard.rules costs its
-- primary key, rules_unique and the audit and change triggers' copies of every row: a million
-- list entries inserted there cost the server 2.4-2.7 s where a plain table takes 0.24 s
-- (bench/import-spamlist.ts). An entry is only a network and an expiry of one list — always
-- deny, for every mail server, with the list's reason — so it is stored as just that:
--   qguard.lists         one row per list (`list:NAME`): its reason, its next expiry;
--   qguard.list_entries  (list, network, expiry, added), no index at all: written and read
--                        whole by import-spamlist; a lookup (`qguard ip why`) is a scan of it.
-- qguard.live_rules shows them as rules like any other (id 0, action deny, host NULL), so
-- everything that reads the policy reads both. qguard.rules keeps every rule people and jobs
-- write, a `list:NAME` source included (`qguard ip deny --source list:NAME`).
--
-- Audit: the writers of list entries (import-spamlist, expire_rules, `qguard ip rm`) write the
-- audit rows themselves, as summary rows (sql/011) whose networks are in `networks` or, for
-- the IPv4 networks of an import, packed in `entries` (5 bytes each: the address, the prefix):
-- qguard.audit_networks(audit) lists them either way. Every statement on list_entries bumps the
-- change counter and records a change of unknown rules (sync-rules reads everything again).

CREATE TABLE qguard.lists (
  id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  source      text NOT NULL UNIQUE
              CHECK (source ~ '^list:[A-Za-z0-9][A-Za-z0-9_.-]*$' AND length(source) <= 64),
  reason      text CHECK (length(reason) <= 1000),
  -- The earliest expiry of its entries (NULL: none expires); expire_rules looks only at lists due.
  next_expiry timestamptz,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE qguard.list_entries (
  list_id     integer NOT NULL,
  network     cidr NOT NULL,
  expires_at  timestamptz,
  -- NULL: added when the list was (its first import: the same transaction, so the same time).
  -- A million entries of a first import are 15% cheaper to write without a time each.
  created_at  timestamptz,
  -- Never everything. (import-spamlist stores IPv4-mapped addresses as IPv4, as qguard.rules
  -- requires; the check costs 15% of writing a million entries, so it is not repeated here.)
  CONSTRAINT list_entries_not_everything CHECK (masklen(network) > 0)
);
ALTER TABLE qguard.audit ADD COLUMN entries bytea;
-- Stored as it is: pglz took 0.8 s to compress the 5-7 MB of a million-entry import.
ALTER TABLE qguard.audit ALTER COLUMN entries SET STORAGE EXTERNAL;

-- The networks an audit row names: its network, its networks, its packed IPv4 entries.
-- (PL/pgSQL: PostgreSQL 15 fails to plan the inlined SQL version in `FROM audit a, audit_networks(a)`.)
CREATE FUNCTION qguard.audit_networks(a qguard.audit) RETURNS SETOF cidr
LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF a.network IS NOT NULL THEN
    RETURN NEXT a.network;
  END IF;
  RETURN QUERY SELECT unnest(a.networks);
  RETURN QUERY
    SELECT set_masklen('0.0.0.0'::inet + ('x' || encode(substring(a.entries FROM i * 5 + 1 FOR 4), 'hex'))::bit(32)::bigint,
                       get_byte(a.entries, i * 5 + 4))::cidr
      FROM generate_series(0, coalesce(length(a.entries), 0) / 5 - 1) AS i;
END $$;

-- qguard.state.entries_seq: the change number of the last change of any list's entries, so a
-- reader that saw the entries at that number knows they are still the same (scan-queue's
-- decisions on its last count reuse the entries they found instead of reading them again).
ALTER TABLE qguard.state ADD COLUMN entries_seq bigint NOT NULL DEFAULT 0;

CREATE FUNCTION qguard.list_entries_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_seq bigint := qguard.bump_change();
BEGIN
  UPDATE qguard.state SET entries_seq = v_seq;
  INSERT INTO qguard.rule_changes AS c (seq, ids) VALUES (v_seq, NULL)
    ON CONFLICT (seq) DO UPDATE SET ids = NULL;
  IF v_seq % 64 = 0 THEN
    WITH gone AS (DELETE FROM qguard.rule_changes WHERE at < now() - interval '1 day' RETURNING seq)
    UPDATE qguard.state SET changes_after = greatest(changes_after, (SELECT max(seq) FROM gone))
     WHERE EXISTS (SELECT 1 FROM gone);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER list_entries_changed AFTER INSERT OR UPDATE OR DELETE ON qguard.list_entries
  FOR EACH STATEMENT EXECUTE FUNCTION qguard.list_entries_changed();

-- The lists' entries already stored as rules move: the plain ones (deny, for every server, no
-- who, the reason most of the list has). Anything else written under a list's name stays a rule.
INSERT INTO qguard.lists (source, reason, next_expiry)
  SELECT source, mode() WITHIN GROUP (ORDER BY reason), NULL
    FROM qguard.rules
   WHERE source LIKE 'list:%' AND action = 'deny' AND host IS NULL AND who IS NULL
     AND source ~ '^list:[A-Za-z0-9][A-Za-z0-9_.-]*$'
   GROUP BY source;
INSERT INTO qguard.list_entries (list_id, network, expires_at, created_at)
  SELECT l.id, r.network, r.expires_at, r.created_at
    FROM qguard.rules r JOIN qguard.lists l ON l.source = r.source
   WHERE r.action = 'deny' AND r.host IS NULL AND r.who IS NULL AND r.reason IS NOT DISTINCT FROM l.reason
   ORDER BY l.id, family(r.network), r.network;
UPDATE qguard.lists l SET next_expiry = (SELECT min(expires_at) FROM qguard.list_entries e WHERE e.list_id = l.id);
-- A move, not a change: no audit rows, no rule_changes (the entries' trigger has marked the
-- change as one of unknown rules, so every sync-rules reads everything again).
ALTER TABLE qguard.rules DISABLE TRIGGER USER;
DELETE FROM qguard.rules r USING qguard.lists l
 WHERE l.source = r.source AND r.action = 'deny' AND r.host IS NULL AND r.who IS NULL
   AND r.reason IS NOT DISTINCT FROM l.reason;
ALTER TABLE qguard.rules ENABLE TRIGGER USER;

-- Few list entries are rules now: the source index may hold every source again (sql/014).
DROP INDEX qguard.rules_source;
CREATE INDEX rules_source ON qguard.rules (source);

-- Every rule, the lists' entries included.
CREATE OR REPLACE VIEW qguard.live_rules AS
  SELECT id, network, action, source, reason, who, created_at, updated_at, expires_at, host
    FROM qguard.rules WHERE expires_at IS NULL OR expires_at > now()
  UNION ALL
  SELECT 0::bigint, e.network, 'deny'::text, l.source, l.reason, NULL::text,
         coalesce(e.created_at, l.created_at), coalesce(e.created_at, l.created_at), e.expires_at, NULL::text
    FROM qguard.list_entries e JOIN qguard.lists l ON l.id = e.list_id
   WHERE e.expires_at IS NULL OR e.expires_at > now();

-- Housekeeping: rules and list entries whose time is up, audited as 'expire'.
CREATE OR REPLACE FUNCTION qguard.expire_rules() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  n integer;
  m integer;
  l record;
BEGIN
  PERFORM set_config('qguard.op', 'expire', true);
  DELETE FROM qguard.rules WHERE expires_at <= now();
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM set_config('qguard.op', '', true);
  FOR l IN SELECT id, source, reason FROM qguard.lists WHERE next_expiry <= now() ORDER BY id FOR UPDATE LOOP
    WITH gone AS (DELETE FROM qguard.list_entries WHERE list_id = l.id AND expires_at <= now() RETURNING network),
         a AS (INSERT INTO qguard.audit (actor, op, object, action, source, reason, networks)
                 SELECT qguard.current_actor(), 'expire', 'rule', 'deny', l.source, l.reason, array_agg(network ORDER BY network)
                   FROM gone HAVING count(*) > 0
               RETURNING cardinality(networks) AS k)
    SELECT coalesce((SELECT k FROM a), 0) INTO m;
    n := n + m;
    UPDATE qguard.lists SET next_expiry = (SELECT min(expires_at) FROM qguard.list_entries WHERE list_id = l.id)
     WHERE id = l.id;
  END LOOP;
  RETURN n;
END $$;
REVOKE ALL ON FUNCTION qguard.expire_rules() FROM PUBLIC;
