-- imgd schema, version 3: vector search by model.
--
-- Search ranks the vectors of one embedding model only, chosen by how many images each model
-- covers; a re-queue after a model change asks which images lack a row for the new model. This
-- index answers both from the index alone (never reading the vector BLOBs), and keeps a cheap
-- fingerprint (count, newest created_ms) for an in-process vector cache.
CREATE INDEX result_embedding_model
    ON result_embedding (model_id, model_version, image_id, created_ms, dim);
