-- The phash module: a 64-bit DCT perceptual hash and a 64-bit difference hash per image, as
-- signed integers (the hash's bits, big-endian), for near-duplicate search without a model.
CREATE TABLE result_phash (
    image_id      INTEGER PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    model_id      TEXT,
    model_version TEXT,
    created_ms    INTEGER NOT NULL,
    data          TEXT    NOT NULL,
    phash         INTEGER NOT NULL,
    dhash         INTEGER NOT NULL
);
