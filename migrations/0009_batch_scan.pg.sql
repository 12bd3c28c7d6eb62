-- imgd schema, version 9, for PostgreSQL: a batch's scan, as its own state (see
-- 0009_batch_scan.sql).
ALTER TABLE batches ADD COLUMN finished_ms BIGINT;
ALTER TABLE batches ADD COLUMN scan TEXT;
UPDATE batches SET finished_ms = created_ms;
