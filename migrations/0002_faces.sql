-- imgd schema, version 2: faces and identities.
--
-- `result_faces` (version 1) keeps one row per image with the faces as JSON, for `imgd show`.
-- `faces` holds one row per face, with its embedding, for clustering; `identities` the people
-- that clustering finds and users name. Both are written by the writer in the transaction that
-- stores the image's `result_faces` row (imgd_store::faces::replace_faces), and by the
-- `imgd faces` commands.

-- A person: found by clustering (name NULL) or named by the user. A name, once given, is never
-- changed by clustering.
CREATE TABLE identities (
    id         INTEGER PRIMARY KEY,
    name       TEXT UNIQUE COLLATE NOCASE,    -- NULL until named; unique, case-insensitively
    created_ms INTEGER NOT NULL,
    face_count INTEGER NOT NULL DEFAULT 0     -- faces assigned, kept up to date on each change
);
CREATE INDEX identities_face_count ON identities (face_count DESC);

-- One detected face. Coordinates in pixels of the full-size image (EXIF orientation applied).
CREATE TABLE faces (
    id              INTEGER PRIMARY KEY,
    image_id        INTEGER NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    idx             INTEGER NOT NULL,          -- position in result_faces.data.faces
    x               REAL    NOT NULL,
    y               REAL    NOT NULL,
    w               REAL    NOT NULL,
    h               REAL    NOT NULL,
    score           REAL    NOT NULL,
    landmarks       TEXT    NOT NULL,          -- JSON [[x, y] x 5]: eyes, nose, mouth corners
    embedding       BLOB,                      -- little-endian f32 x dim, L2-normalised; NULL
                                               -- when no embedding model was installed
    embedding_model TEXT,                      -- e.g. w600k_r50; only equal models are compared
    identity_id     INTEGER REFERENCES identities (id) ON DELETE SET NULL,
    UNIQUE (image_id, idx)
);
CREATE INDEX faces_identity ON faces (identity_id);
-- What the next clustering run looks at.
CREATE INDEX faces_unclustered ON faces (id) WHERE identity_id IS NULL AND embedding IS NOT NULL;
