-- imgd schema, version 6: SHA-256 of an image's content, for chain-of-custody records.
--
-- Computed by `imgd enqueue --hash sha256` (with BLAKE3, from one read of the file); NULL
-- otherwise. Like `content_hash`, it is cleared when the file changes and is not hashed again.
ALTER TABLE images ADD COLUMN sha256 TEXT;
