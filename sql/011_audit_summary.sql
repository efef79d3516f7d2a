-- The audit of a bulk change in summary rows: when a writer sets `qguard.audit` to 'summary'
-- for its transaction (import-spamlist does), each statement on qguard.rules writes one audit
-- row per kind of change (op, action, source, host, who, reason, expiry) with the networks it
-- changed in `networks`, instead of a row per rule: a million-entry list is a few rows instead
-- of a million (1.9 s of an 8 s first import). Who changed which network stays listable:
--   SELECT at, actor, op, n AS network, source
--     FROM qguard.audit, unnest(coalesce(networks, ARRAY[network])) AS n
--    WHERE object = 'rule' ORDER BY id DESC;
-- A summary row of a rewrite keeps the new values; the old ones (the previous expiry of an
-- entry the list still names) are not kept. Every other writer audits a row per rule, as before.
ALTER TABLE qguard.audit ADD COLUMN networks cidr[];

CREATE OR REPLACE FUNCTION qguard.audit_rules() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_actor text := qguard.current_actor();
  v_summary boolean := coalesce(current_setting('qguard.audit', true), '') = 'summary';
  v_op text := CASE WHEN current_setting('qguard.op', true) = 'expire' THEN 'expire' ELSE 'delete' END;
  v_n bigint;
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
    PERFORM qguard.bump_change();
  END IF;
  RETURN NULL;
END $$;
