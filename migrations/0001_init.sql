-- imgd schema, version 1.
--
-- One pattern for results: a table `result_<module>` per module, keyed by image, with typed
-- columns for what people filter and sort on, a JSON `data` column for everything else, and the
-- model id + version that produced the row. Results are upserts keyed by image (and, for
-- embeddings, by model), so replaying a job never duplicates a row.

-- Every file the scanner has registered.
CREATE TABLE images (
    id            INTEGER PRIMARY KEY,
    path          TEXT    NOT NULL UNIQUE,
    size          INTEGER NOT NULL,
    mtime_ns      INTEGER NOT NULL,
    inode         INTEGER,
    content_hash  TEXT,                       -- BLAKE3, hex; only with `enqueue --hash`
    format        TEXT    NOT NULL,           -- from the extension: jpeg, png, tiff, ..., raw
    width         INTEGER,                    -- filled in by the pipeline
    height        INTEGER,
    state         TEXT    NOT NULL DEFAULT 'present' CHECK (state IN ('present', 'missing')),
    modules_mask  INTEGER NOT NULL DEFAULT 0,  -- bit i set: a job row exists for module i
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL
);
CREATE INDEX images_content_hash ON images (content_hash) WHERE content_hash IS NOT NULL;

-- One job per (image, module).
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    image_id         INTEGER NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    module           TEXT    NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'leased', 'done', 'failed')),
    priority         INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,  -- failed attempts so far
    lease_expiries   INTEGER NOT NULL DEFAULT 0,  -- leases that ran out (worker died)
    lease_owner      TEXT,
    lease_expires_ms INTEGER,
    last_error       TEXT,
    model_id         TEXT,
    model_version    TEXT,
    queued_ms        INTEGER NOT NULL,
    updated_ms       INTEGER NOT NULL,
    UNIQUE (image_id, module)
);
-- The claim scan: queued jobs in priority order, then oldest image first.
CREATE INDEX jobs_claim ON jobs (state, priority DESC, image_id);
CREATE INDEX jobs_lease_expiry ON jobs (lease_expires_ms) WHERE state = 'leased';
CREATE INDEX jobs_module_state ON jobs (module, state);

-- Small key/value settings shared by every process on this database (e.g. `paused`).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- metadata: EXIF, from headers only.
CREATE TABLE result_metadata (
    image_id      INTEGER PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    model_id      TEXT,
    model_version TEXT,
    created_ms    INTEGER NOT NULL,
    make          TEXT,
    model         TEXT,
    lens          TEXT,
    iso           INTEGER,
    aperture      REAL,
    shutter_s     REAL,
    focal_mm      REAL,
    focal_35mm    REAL,
    taken_at      TEXT,    -- local wall-clock time as written by the camera, ISO 8601
    taken_utc_ms  INTEGER, -- only when the file records an offset
    gps_lat       REAL,
    gps_lon       REAL,
    gps_alt       REAL,
    orientation   INTEGER,
    width         INTEGER,
    height        INTEGER,
    software      TEXT,
    data          TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX result_metadata_taken ON result_metadata (taken_at);
CREATE INDEX result_metadata_camera ON result_metadata (make, model);

-- technical: sharpness, exposure, noise, colours.
CREATE TABLE result_technical (
    image_id         INTEGER PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    model_id         TEXT,
    model_version    TEXT,
    created_ms       INTEGER NOT NULL,
    sharpness        REAL,
    sharpness_max    REAL,
    mean_luma        REAL,
    clipped_high_pct REAL,
    clipped_low_pct  REAL,
    noise            REAL,
    is_blurry        INTEGER,
    is_dark          INTEGER,
    is_overexposed   INTEGER,
    data             TEXT NOT NULL DEFAULT '{}'
);

-- embedding: one vector per image and model, so that switching models keeps the old vectors
-- searchable until the new ones exist.
CREATE TABLE result_embedding (
    image_id      INTEGER NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    model_id      TEXT    NOT NULL,
    model_version TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL,
    dim           INTEGER NOT NULL,
    vector        BLOB    NOT NULL,           -- little-endian f32 x dim, L2-normalised
    data          TEXT    NOT NULL DEFAULT '{}',
    PRIMARY KEY (image_id, model_id)
);

CREATE TABLE result_aesthetic (
    image_id      INTEGER PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    model_id      TEXT,
    model_version TEXT,
    created_ms    INTEGER NOT NULL,
    score         REAL,
    data          TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX result_aesthetic_score ON result_aesthetic (score);

CREATE TABLE result_objects (
    image_id      INTEGER PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    model_id      TEXT,
    model_version TEXT,
    created_ms    INTEGER NOT NULL,
    has_text      INTEGER,
    labels        TEXT,                       -- space-separated distinct labels, for search
    data          TEXT NOT NULL DEFAULT '{}'  -- boxes, scores, phrases
);

CREATE TABLE result_caption (
    image_id      INTEGER PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    model_id      TEXT,
    model_version TEXT,
    created_ms    INTEGER NOT NULL,
    caption       TEXT,
    data          TEXT NOT NULL DEFAULT '{}'  -- answers to the configured questions
);

CREATE TABLE result_ocr (
    image_id      INTEGER PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    model_id      TEXT,
    model_version TEXT,
    created_ms    INTEGER NOT NULL,
    text          TEXT,
    line_count    INTEGER,
    data          TEXT NOT NULL DEFAULT '{}'  -- lines with boxes and confidences
);

CREATE TABLE result_faces (
    image_id      INTEGER PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    model_id      TEXT,
    model_version TEXT,
    created_ms    INTEGER NOT NULL,
    face_count    INTEGER,
    data          TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE result_cloud (
    image_id      INTEGER PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    model_id      TEXT,
    model_version TEXT,
    created_ms    INTEGER NOT NULL,
    cost_usd      REAL,
    tokens        INTEGER,
    data          TEXT NOT NULL DEFAULT '{}'  -- answers per prompt
);

-- Full-text search: one row per image (rowid = images.id), written once its modules are done.
CREATE VIRTUAL TABLE search_fts USING fts5 (
    path,      -- file name and folder names, split into words
    camera,    -- make, model, lens, software
    taken,     -- date words: 2024 2024-07 2024-07-14 july summer
    caption,
    ocr,
    labels,
    names,
    cloud,
    tokenize = 'porter unicode61'
);
