-- The rules each change touched, so sync-rules on every mail server can bring its copy of the
-- rules up to date by reading those rules only, instead of all of them (a million rules are
-- about 16 MB and 2M rows read per server and change). The statement triggers of qguard.rules
-- write one row per statement that changed rules: the change number it got and the ids of the
-- rules it inserted, changed or deleted, or NULL ids for a change of more than 10,000 rules
-- (readers read everything again: patching a copy with that many is no cheaper). Change numbers
-- are given under the lock of qguard.state's one row, so they commit in order: a reader whose
-- snapshot shows change number N sees every row of rule_changes up to N.
-- qguard.state.changes_after: rule_changes holds every rule change numbered above it (older
-- rows are deleted after a day). qguard.state.instance tells one database from another, so a
-- copy of the rules taken from one is never patched with the changes of another.
CREATE TABLE qguard.rule_changes (
  seq  bigint PRIMARY KEY,
  ids  bigint[],
  at   timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE qguard.state ADD COLUMN changes_after bigint;
UPDATE qguard.state SET changes_after = change_seq;
ALTER TABLE qguard.state ALTER COLUMN changes_after SET NOT NULL;
ALTER TABLE qguard.state ADD COLUMN instance uuid NOT NULL DEFAULT gen_random_uuid();

-- sql/011's function, recording the touched rules after the bump.
CREATE OR REPLACE FUNCTION qguard.audit_rules() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_actor text := qguard.current_actor();
  v_summary boolean := coalesce(current_setting('qguard.audit', true), '') = 'summary';
  v_op text := CASE WHEN current_setting('qguard.op', true) = 'expire' THEN 'expire' ELSE 'delete' END;
  v_n bigint;
  v_seq bigint;
  v_ids bigint[];
BEGIN
  IF v_summary THEN
    IF TG_OP = 'INSERT' THEN
      INSERT INTO qguard.audit (actor, op, object, action, source, host, who, reason, expires_at, networks)
        SELECT v_actor, 'insert', 'rule', n.action, n.source, n.host, n.who, n.reason, n.expires_at, array_agg(n.network ORDER BY n.network)
        FROM new_rows n GROUP BY n.action, n.source, n.host, n.who, n.reason, n.expires_at;
    ELSIF TG_OP = 'UPDATE' THEN
      INSERT INTO qguard.audit (actor, op, object, action, source, host, who, reason, expires_at, networks)
        SELECT v_actor, 'update', 'rule', n.action, n.source, n.host, n.who, n.reason, n.expires_at, array_agg(n.network ORDER BY n.network)
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE (n.network, n.action, n.source, n.host, n.who, n.reason, n.expires_at)
              IS DISTINCT FROM (o.network, o.action, o.source, o.host, o.who, o.reason, o.expires_at)
        GROUP BY n.action, n.source, n.host, n.who, n.reason, n.expires_at;
    ELSE
      INSERT INTO qguard.audit (actor, op, object, action, source, host, who, reason, networks)
        SELECT v_actor, v_op, 'rule', o.action, o.source, o.host, o.who, o.reason, array_agg(o.network ORDER BY o.network)
        FROM old_rows o GROUP BY o.action, o.source, o.host, o.who, o.reason;
    END IF;
  ELSIF TG_OP = 'INSERT' THEN
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
      SELECT v_actor, v_op, 'rule', o.id, o.network, o.action, o.source, o.host, o.who, o.reason, o.expires_at
      FROM old_rows o;
  END IF;
  GET DIAGNOSTICS v_n = ROW_COUNT;
  IF v_n > 0 THEN
    v_seq := qguard.bump_change();
    -- Which rules this statement touched (at most 10,001 looked at: a larger change is NULL).
    IF TG_OP = 'DELETE' THEN
      SELECT array_agg(o.id) INTO v_ids FROM (SELECT id FROM old_rows LIMIT 10001) o;
    ELSE
      SELECT array_agg(n.id) INTO v_ids FROM (SELECT id FROM new_rows LIMIT 10001) n;
    END IF;
    IF cardinality(v_ids) > 10000 THEN
      v_ids := NULL;
    END IF;
    INSERT INTO qguard.rule_changes (seq, ids) VALUES (v_seq, v_ids);
    -- Now and then, forget the changes of more than a day ago (no reader is that far behind
    -- without reading everything again anyway).
    IF v_seq % 64 = 0 THEN
      WITH gone AS (DELETE FROM qguard.rule_changes WHERE at < now() - interval '1 day' RETURNING seq)
      UPDATE qguard.state SET changes_after = greatest(changes_after, (SELECT max(seq) FROM gone))
       WHERE EXISTS (SELECT 1 FROM gone);
    END IF;
  END IF;
  RETURN NULL;
END $$;
