-- imgd schema, version 11: the daemons that drain the queue.
--
-- Each `imgd run` records itself under its lease owner name (host:pid:start-boot), beats every
-- ten seconds with the images it finished and its recent rate, and records how it ended: a
-- clean stop, or found dead by a later daemon of its host. `imgd status` lists them.
CREATE TABLE workers (
    owner             TEXT    PRIMARY KEY,
    host              TEXT    NOT NULL,
    pid               INTEGER NOT NULL,
    started_ms        INTEGER NOT NULL,
    heartbeat_ms      INTEGER NOT NULL,
    images            INTEGER NOT NULL DEFAULT 0,  -- finished since it started
    images_per_second REAL    NOT NULL DEFAULT 0,  -- over its last minute
    ended_ms          INTEGER,                     -- NULL while it runs
    ended             TEXT                         -- 'stopped' or 'died'
);
