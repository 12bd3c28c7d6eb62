-- imgd schema, version 11, for PostgreSQL: the daemons that drain the queue (see
-- 0011_workers.sql).
CREATE TABLE workers (
    owner             TEXT   PRIMARY KEY,
    host              TEXT   NOT NULL,
    pid               BIGINT NOT NULL,
    started_ms        BIGINT NOT NULL,
    heartbeat_ms      BIGINT NOT NULL,
    images            BIGINT NOT NULL DEFAULT 0,
    images_per_second DOUBLE PRECISION NOT NULL DEFAULT 0,
    ended_ms          BIGINT,
    ended             TEXT
);
