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

-- Written by triggers of their own, after the audit triggers (same event: triggers fire in name
-- order), which have bumped the change number when the statement changed anything that matters.
CREATE FUNCTION qguard.record_rule_changes() RETURNS trigger
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
  -- Now and then, forget the changes of more than a day ago (no reader is that far behind
  -- without reading everything again anyway).
  IF v_seq % 64 = 0 THEN
    WITH gone AS (DELETE FROM qguard.rule_changes WHERE at < now() - interval '1 day' RETURNING seq)
    UPDATE qguard.state SET changes_after = greatest(changes_after, (SELECT max(seq) FROM gone))
     WHERE EXISTS (SELECT 1 FROM gone);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER rules_changes_insert AFTER INSERT ON qguard.rules
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION qguard.record_rule_changes();
CREATE TRIGGER rules_changes_update AFTER UPDATE ON qguard.rules
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION qguard.record_rule_changes();
CREATE TRIGGER rules_changes_delete AFTER DELETE ON qguard.rules
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION qguard.record_rule_changes();
