-- imgd schema, version 7: what was done recently, for rates and ETAs.
--
-- `imgd status` and `/status` count each module's jobs done in the last minutes to state its
-- rate and the time left for what is queued; this index makes that a range read of the recent
-- rows, not a scan of every job.
CREATE INDEX jobs_done_recently ON jobs (updated_ms, module) WHERE state = 'done';
