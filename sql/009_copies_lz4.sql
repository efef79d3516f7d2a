-- The readable copies compress with lz4 where the server has it (Debian's PostgreSQL does):
-- several times faster than the default pglz for scan-queue to write, as fast to read. A
-- server built without lz4 (the embedded one) keeps pglz.
DO $$
BEGIN
  ALTER TABLE qguard.message_copies ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
  NULL;
END $$;
