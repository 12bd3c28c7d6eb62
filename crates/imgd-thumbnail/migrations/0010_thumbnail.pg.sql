-- The thumbnail module's table, for PostgreSQL (see 0010_thumbnail.sql).
CREATE TABLE result_thumbnail (
    image_id      BIGINT PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    model_id      TEXT,
    model_version TEXT,
    created_ms    BIGINT NOT NULL,
    data          TEXT   NOT NULL,
    width         BIGINT NOT NULL,
    height        BIGINT NOT NULL,
    jpeg          BYTEA  NOT NULL
);
