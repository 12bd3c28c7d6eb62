-- imgd schema, version 4: images that were in flight when a daemon died.
--
-- A job whose lease was taken back from a dead daemon (or ran out) is queued again with its
-- `lease_expiries` raised. Such "suspect" images are claimed apart from all others, in groups
-- that shrink as their count grows, until a file that kills the daemon runs alone and is
-- failed alone. This index finds them, most suspect first, without scanning the whole queue.
CREATE INDEX jobs_suspect ON jobs (lease_expiries DESC, priority DESC, image_id)
    WHERE state = 'queued' AND lease_expiries > 0;
