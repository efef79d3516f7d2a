-- The live rules that contain one address on one mail server (`qguard ip why`, the page's IP
-- view): the rules through their btree (sql/010's covering networks), the lists' entries by one
-- scan of their table, which has no index (sql/018), one `>>=` a row.
-- In one process: PostgreSQL would plan that scan with parallel workers, and starting them costs
-- more than it saves on a small server (measured at a million entries on 2 CPUs: 42 ms a lookup
-- alone, 61 ms with two workers, p95 45 ms against 80), while the server's cores are wanted by
-- sync-rules, scan-queue and the page.
CREATE FUNCTION qguard.rules_containing(p_ip inet, p_host text) RETURNS SETOF qguard.live_rules
LANGUAGE sql STABLE
SET max_parallel_workers_per_gather = 0
AS $$
  SELECT * FROM qguard.live_rules
   WHERE network = ANY(qguard.covering(p_ip)) AND network >>= p_ip
     AND (host IS NULL OR host = p_host)
$$;
