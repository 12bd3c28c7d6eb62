-- The thumbnail module: a JPEG of each image, 256 px on its long edge (EXIF orientation
-- applied), made from the tier the decode threads already hold, so that a page showing the
-- image never decodes the original.
CREATE TABLE result_thumbnail (
    image_id      INTEGER PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    model_id      TEXT,
    model_version TEXT,
    created_ms    INTEGER NOT NULL,
    data          TEXT    NOT NULL,
    width         INTEGER NOT NULL,
    height        INTEGER NOT NULL,
    jpeg          BLOB    NOT NULL
);
