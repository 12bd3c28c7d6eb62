-- imgd schema, version 8: batches.
--
-- Every `imgd enqueue` records a batch: when, the roots it scanned, and how many images and
-- jobs it queued. A job carries the batch that last queued it (NULL for jobs queued before
-- batches existed), so a batch's progress, rate, time left and failures are counts of its jobs.
CREATE TABLE batches (
    id         INTEGER PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    roots      TEXT    NOT NULL,            -- JSON array of the scanned paths
    images     INTEGER NOT NULL DEFAULT 0,  -- images with a job queued by this batch
    jobs       INTEGER NOT NULL DEFAULT 0   -- jobs queued by this batch
);
ALTER TABLE jobs ADD COLUMN batch_id INTEGER REFERENCES batches (id);
CREATE INDEX jobs_batch ON jobs (batch_id, state) WHERE batch_id IS NOT NULL;
