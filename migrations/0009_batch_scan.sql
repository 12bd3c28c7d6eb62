-- imgd schema, version 9: a batch's scan, as its own state.
--
-- A batch is scanning until `finished_ms` is set; its scan's report (new, changed, unchanged,
-- missing, skipped, errors, the first problems; or the error that stopped it) is kept as JSON,
-- so a client that started a batch over HTTP sees how its scan went. Batches recorded before
-- this version had finished their scans.
ALTER TABLE batches ADD COLUMN finished_ms INTEGER;
ALTER TABLE batches ADD COLUMN scan TEXT;
UPDATE batches SET finished_ms = created_ms;
