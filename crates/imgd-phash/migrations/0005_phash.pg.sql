-- The phash module's table, for PostgreSQL (see 0005_phash.sql).
CREATE TABLE result_phash (
    image_id      BIGINT PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    model_id      TEXT,
    model_version TEXT,
    created_ms    BIGINT NOT NULL,
    data          TEXT   NOT NULL,
    phash         BIGINT NOT NULL,
    dhash         BIGINT NOT NULL
);
