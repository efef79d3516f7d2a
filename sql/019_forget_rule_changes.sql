-- One place that forgets old rule changes: sql/015's trigger on the rules and sql/018's on the
-- lists' entries each carried a copy of the same pruning. Both now call this function.
-- Behaviour unchanged: every 64th change number, the rows of rule_changes older than a day are
-- deleted and changes_after moves past them (a reader that far behind reads everything again).
CREATE FUNCTION qguard.forget_rule_changes(p_seq bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF p_seq % 64 = 0 THEN
    WITH gone AS (DELETE FROM qguard.rule_changes WHERE at < now() - interval '1 day' RETURNING seq)
    UPDATE qguard.state SET changes_after = greatest(changes_after, (SELECT max(seq) FROM gone))
     WHERE EXISTS (SELECT 1 FROM gone);
  END IF;
END $$;

CREATE OR REPLACE FUNCTION qguard.record_rule_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_ids bigint[];
  v_seq bigint;
BEGIN
  -- Which rules this statement touched (at most 10,001 looked at: a larger change is NULL).
  IF TG_OP = 'DELETE' THEN
    SELECT array_agg(o.id) INTO v_ids FROM (SELECT id FROM old_rows LIMIT 10001) o;
  ELSE
    SELECT array_agg(n.id) INTO v_ids FROM (SELECT id FROM new_rows LIMIT 10001) n;
  END IF;
  IF v_ids IS NULL THEN
    RETURN NULL; -- no row
  END IF;
  IF cardinality(v_ids) > 10000 THEN
    v_ids := NULL;
  END IF;
  -- The number the audit trigger just gave; a statement that changed nothing that matters got
  -- none and adds its ids to the last one (re-reading unchanged rules is harmless).
  SELECT change_seq INTO v_seq FROM qguard.state;
  INSERT INTO qguard.rule_changes AS c (seq, ids) VALUES (v_seq, v_ids)
    ON CONFLICT (seq) DO UPDATE SET ids = CASE WHEN c.ids IS NULL OR EXCLUDED.ids IS NULL THEN NULL ELSE c.ids || EXCLUDED.ids END;
  PERFORM qguard.forget_rule_changes(v_seq);
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION qguard.list_entries_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_seq bigint := qguard.bump_change();
BEGIN
  UPDATE qguard.state SET entries_seq = v_seq;
  INSERT INTO qguard.rule_changes AS c (seq, ids) VALUES (v_seq, NULL)
    ON CONFLICT (seq) DO UPDATE SET ids = NULL;
  PERFORM qguard.forget_rule_changes(v_seq);
  RETURN NULL;
END $$;
