//! Embedding vectors: which model search uses, loading its vectors into memory, exact top-k
//! search, fusion with full-text search, near-duplicate pairs and re-queueing after a model
//! change.
//!
//! # One model per ranking
//!
//! `result_embedding` holds one row per (image, model), so when the configured model changes
//! the old vectors stay until the new ones replace them. A ranking never mixes two models (their
//! vector spaces are unrelated): [`Store::serving_model`] picks one by this rule:
//!
//! 1. the **newest model whose coverage is complete**: every present image that has an
//!    `embedding` job has a vector from it ("newest" = the latest `created_ms` among its rows);
//! 2. else, while no model covers every image, the model with **the most vectors** (ties: the
//!    newer).
//!
//! So after a switch, search keeps serving the old model until the new one has caught up, then
//! moves to the new one at once. A text query must be embedded by the same model as the image
//! vectors: when the installed text encoder's model is not the serving model, search uses the
//! vectors of the encoder's model (a partial set, still never mixed) and says so in
//! [`SearchResponse::note`].
//!
//! A new version under the same model id replaces the old version's row in place (the key is
//! (image, model id)), so during such an upgrade the two versions count as two models with
//! partial coverage each, and the rule above still keeps them apart.
//!
//! # Vector search
//!
//! Exact top-k over a contiguous f32 matrix ([`VectorMatrix`]), on every core. A plain f32 scan
//! is limited by memory bandwidth (2 GB per query at 1 M × 512), so the matrix also keeps an
//! int8 copy of its rows (a per-row scale and one byte per component: a quarter of the bytes).
//! A search scans the int8 copy, keeps the best `max(10·k, 100)` estimates per thread, scores
//! those exactly with the f32 rows, and checks with a proven bound on the int8 error that no
//! row left out can reach the `k`-th exact score; when it cannot prove it (near-ties), a second
//! int8 pass scores every row still in doubt. The result is always the f32 scan's, ids and
//! scores ([`VectorMatrix::top_k_exact_threads`] is that scan); the engine is the
//! `imgd-vectors` crate. `scripts/bench-vector-search.sh` times both at 1 M vectors.
//!
//! Coding the rows costs several f32 scans, so the copy is built when a process searches the
//! same matrix a second time ([`VectorCache`]); a one-shot `imgd search` scans the f32 rows.
//!
//! The f32 rows stay in memory next to the int8 copy (at 1 M × 512: 2 GiB + 0.5 GiB): the
//! re-rank reads a few hundred of them per query, the second pass may read many, and
//! `imgd duplicates` scans them all. Re-reading the candidates from the database instead would
//! save the 2 GiB but put SQLite reads of rows that may have changed since the load on every
//! query's path. The int8 copy lives inside the matrix it was coded from, so it belongs to the
//! same single model and is dropped and rebuilt with it: search still never mixes models.
//!
//! # Fusion
//!
//! Hybrid search fuses the full-text ranking (FTS5, BM25) and the vector ranking with
//! reciprocal rank fusion: `score(d) = Σ 1 / (k + rank_i(d))` over the rankings that contain
//! `d`, ranks from 1, with `k =` [`RRF_K`] `= 60`, the constant of Cormack, Clarke and Büttcher
//! (SIGIR 2009), which damps the weight of the very top ranks so that neither ranking dominates.
//! Each ranking contributes its best [`FUSION_DEPTH`] (or `limit`, if larger) results.

mod search;

use std::sync::Arc;

use imgd_core::Module;
use serde::Serialize;

use crate::db::ValueRef;
use crate::{Context, Store, StoreError, now_ms, params};

pub use imgd_vectors::{ModelKey, Neighbour, ScanStats, VectorMatrix, dot, normalize, rank_order};
pub use search::{RankedHit, SearchMode, SearchRequest, SearchResponse, SortOrder};

/// The `k` of reciprocal rank fusion.
pub const RRF_K: f64 = 60.0;

/// How many results of each ranking take part in fusion (or `limit`, if larger).
pub const FUSION_DEPTH: usize = 100;

/// When sorting by aesthetic score with a query, how many of the query's best matches are
/// candidates (the query filters, the score orders).
pub const AESTHETIC_POOL: usize = 1000;

/// Default cosine distance (`1 − similarity`) under which `imgd duplicates` calls two images
/// near-duplicates. CLIP ViT-B/32 vectors of one photo resized, recompressed or lightly cropped
/// stay above 0.95 similarity, while different shots of one scene (a burst, a re-take) mostly
/// fall below it; raise it to also group bursts, lower it for copies only.
pub const DEFAULT_DUPLICATE_DISTANCE: f32 = 0.05;

/// Turns a text query into a vector in the image embedding space (the text tower of the model
/// that embedded the images).
pub trait TextEmbedder {
    /// The model's id and version, as stored in `result_embedding`.
    fn model(&self) -> (String, String);
    /// The query's vector (normalised or not: search normalises it).
    fn embed(&mut self, text: &str) -> Result<Vec<f32>, String>;
}

/// What the database holds for one embedding model, over present images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelCoverage {
    /// The model.
    pub model: ModelKey,
    /// Vector length (the largest stored; all rows of a model should agree).
    pub dim: usize,
    /// Present images with a vector from this model.
    pub vectors: usize,
    /// Present images with an `embedding` job but no vector from this model.
    pub missing: usize,
    /// The newest row's `created_ms`.
    pub newest_ms: i64,
}

impl ModelCoverage {
    /// Whether every image that should have a vector has one from this model.
    pub fn complete(&self) -> bool {
        self.missing == 0
    }
}

/// Picks the model search serves from, by the rule in the module docs: the newest complete
/// model, else the one with the most vectors.
pub fn choose_serving_model(models: &[ModelCoverage]) -> Option<&ModelCoverage> {
    let with_vectors = models.iter().filter(|m| m.vectors > 0);
    let complete = with_vectors
        .clone()
        .filter(|m| m.complete())
        .max_by(|a, b| (a.newest_ms, &a.model).cmp(&(b.newest_ms, &b.model)));
    complete.or_else(|| {
        with_vectors.max_by(|a, b| {
            (a.vectors, a.newest_ms, &a.model).cmp(&(b.vectors, b.newest_ms, &b.model))
        })
    })
}

/// Reciprocal rank fusion of rankings of image ids (best first): each id scores
/// `Σ 1 / (k + rank)` over the rankings that hold it, ranks from 1. Best first; equal scores in
/// ascending id order.
pub fn rrf(rankings: &[&[i64]], k: f64) -> Vec<(i64, f64)> {
    let mut scores: std::collections::HashMap<i64, f64> = std::collections::HashMap::new();
    for ranking in rankings {
        for (i, &id) in ranking.iter().enumerate() {
            *scores.entry(id).or_default() += 1.0 / (k + (i + 1) as f64);
        }
    }
    let mut fused: Vec<(i64, f64)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused
}

/// A group of near-duplicate images.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicateGroup {
    /// The images, ascending.
    pub image_ids: Vec<i64>,
    /// The largest cosine distance among the pairs that link the group.
    pub max_distance: f32,
}

/// Groups the rows of `matrix` whose cosine distance (`1 − dot`) is at most `max_distance`,
/// transitively (union-find over every close pair), largest groups first. Exact: every pair is
/// compared (see [`VectorMatrix::pairs_at_least`] for the cost).
pub fn near_duplicate_groups(
    matrix: &VectorMatrix,
    max_distance: f32,
    threads: usize,
) -> Vec<DuplicateGroup> {
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let pairs = matrix.pairs_at_least(1.0 - max_distance, threads);
    let mut parent: Vec<usize> = (0..matrix.len()).collect();
    for &(i, j, _) in &pairs {
        let (a, b) = (find(&mut parent, i), find(&mut parent, j));
        if a != b {
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut groups: std::collections::BTreeMap<usize, DuplicateGroup> =
        std::collections::BTreeMap::new();
    for &(i, j, score) in &pairs {
        let root = find(&mut parent, i);
        let group = groups.entry(root).or_insert_with(|| DuplicateGroup {
            image_ids: Vec::new(),
            max_distance: 0.0,
        });
        group.image_ids.push(matrix.ids()[i]);
        group.image_ids.push(matrix.ids()[j]);
        group.max_distance = group.max_distance.max((1.0 - score).max(0.0));
    }
    let mut out: Vec<DuplicateGroup> = groups
        .into_values()
        .map(|mut g| {
            g.image_ids.sort_unstable();
            g.image_ids.dedup();
            g
        })
        .collect();
    out.sort_by(|a, b| {
        b.image_ids
            .len()
            .cmp(&a.image_ids.len())
            .then(a.image_ids[0].cmp(&b.image_ids[0]))
    });
    out
}

/// Encodes a vector as stored in `result_embedding.vector`: little-endian f32.
pub fn vector_to_blob(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Decodes a `result_embedding.vector` BLOB; `None` when its length is not a multiple of 4.
pub fn blob_to_vector(blob: &[u8]) -> Option<Vec<f32>> {
    blob.len().is_multiple_of(4).then(|| {
        blob.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    })
}

/// Errors of vector search.
#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    /// A database error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A semantic search needs a text encoder and none is installed.
    #[error("no text encoder installed: imgd models fetch clip-vit-b32")]
    NoTextEncoder,
    /// The text encoder failed.
    #[error("the text encoder {model} failed: {message}")]
    Embedder {
        /// The encoder's model.
        model: ModelKey,
        /// Its error.
        message: String,
    },
    /// A semantic search was asked for but no image has a vector yet.
    #[error(
        "no image has an embedding yet: queue the embedding module (imgd enqueue) and run imgd"
    )]
    NoVectors,
    /// The text encoder's model has no image vectors to compare with.
    #[error(
        "the text encoder is {encoder}, but the images were embedded with {serving}; \
         run imgd to embed them with {encoder}, or install {serving}'s text encoder"
    )]
    EncoderModelMismatch {
        /// The text encoder's model.
        encoder: ModelKey,
        /// The model the image vectors come from.
        serving: ModelKey,
    },
    /// A query vector's length is not the stored vectors'.
    #[error("the query vector has {got} dimensions but {model}'s vectors have {want}")]
    DimensionMismatch {
        /// The model.
        model: ModelKey,
        /// The stored length.
        want: usize,
        /// The query's length.
        got: usize,
    },
    /// A stored vector has the wrong length.
    #[error("image {image_id} has a corrupt {model} vector: {bytes} bytes for {dim} dimensions")]
    CorruptVector {
        /// The image.
        image_id: i64,
        /// The model.
        model: ModelKey,
        /// The BLOB's length.
        bytes: usize,
        /// The dimension the row claims.
        dim: usize,
    },
    /// The image given to `--similar` has no vector from the serving model.
    #[error("{path} has no {model} embedding yet (its embedding job has not run)")]
    NoVectorForImage {
        /// The image's path.
        path: String,
        /// The serving model.
        model: ModelKey,
    },
    /// The request asks for nothing to search.
    #[error("{0}")]
    BadRequest(String),
}

/// A per-process cache of the serving model's matrix and of the model list, so that repeated
/// searches in one process load the vectors once. The matrix is reloaded when the model's row
/// count or newest `created_ms` changes; the model list is kept until [`VectorCache::clear`].
/// The first search of a loaded matrix scans its f32 rows; the next one builds its int8 copy
/// ([`VectorMatrix::prepare_search`]), which the searches from then on scan.
#[derive(Debug, Default)]
pub struct VectorCache {
    models: Option<Vec<ModelCoverage>>,
    matrix: Option<(Fingerprint, Arc<VectorMatrix>)>,
}

impl VectorCache {
    /// Forgets everything cached.
    pub fn clear(&mut self) {
        *self = VectorCache::default();
    }

    /// Forgets the models' coverage, keeping the loaded vectors: a long-lived cache (the
    /// daemon's web search) calls this before each search, so new vectors are seen; the
    /// vectors are reloaded only when their model's rows changed.
    pub fn forget_models(&mut self) {
        self.models = None;
    }
}

/// A cheap fingerprint of one model's rows: (count, newest created_ms).
type Fingerprint = (ModelKey, i64, i64);

impl Store {
    /// Every embedding model with vectors of present images, with its coverage.
    pub fn embedding_models(&self) -> Result<Vec<ModelCoverage>, StoreError> {
        let rows = self
            .db
            .query_map(
                "SELECT e.model_id, e.model_version, MAX(e.dim), COUNT(*), MAX(e.created_ms)
                 FROM result_embedding e JOIN images i ON i.id = e.image_id
                 WHERE i.state = 'present'
                 GROUP BY e.model_id, e.model_version ORDER BY 1, 2",
                params![],
                |r| {
                    Ok(ModelCoverage {
                        model: ModelKey::new(r.get::<String>(0)?, r.get::<String>(1)?),
                        dim: r.get::<i64>(2)?.max(0) as usize,
                        vectors: r.get::<i64>(3)? as usize,
                        missing: 0,
                        newest_ms: r.get(4)?,
                    })
                },
            )
            .ctx("listing embedding models")?;
        let mut out = Vec::with_capacity(rows.len());
        for mut m in rows {
            let n: i64 = self
                .db
                .query_row(
                    "SELECT COUNT(*) FROM images i
                     WHERE i.state = 'present'
                       AND EXISTS (SELECT 1 FROM jobs j
                                   WHERE j.image_id = i.id AND j.module = 'embedding')
                       AND NOT EXISTS (SELECT 1 FROM result_embedding e
                                       WHERE e.model_id = ?1 AND e.model_version = ?2
                                         AND e.image_id = i.id)",
                    params![m.model.id, m.model.version],
                    |r| r.get(0),
                )
                .ctx("measuring a model's coverage")?;
            m.missing = n as usize;
            out.push(m);
        }
        Ok(out)
    }

    /// The model search serves from now (see the module docs for the rule), or `None` when no
    /// present image has a vector.
    pub fn serving_model(&self) -> Result<Option<ModelCoverage>, StoreError> {
        Ok(choose_serving_model(&self.embedding_models()?).cloned())
    }

    /// [`Self::embedding_models`] through a cache.
    pub fn embedding_models_cached(
        &self,
        cache: &mut VectorCache,
    ) -> Result<Vec<ModelCoverage>, StoreError> {
        if cache.models.is_none() {
            cache.models = Some(self.embedding_models()?);
        }
        Ok(cache.models.clone().unwrap_or_default())
    }

    /// Loads every vector of `model` (present images only, in image-id order) into one
    /// contiguous matrix.
    pub fn load_vectors(&self, model: &ModelKey) -> Result<VectorMatrix, VectorError> {
        let (count, _) = self.vector_fingerprint(model)?;
        let mut matrix: Option<VectorMatrix> = None;
        let mut corrupt: Option<VectorError> = None;
        self.db
            .query_each(
                "SELECT e.image_id, e.dim, e.vector
                 FROM result_embedding e JOIN images i ON i.id = e.image_id
                 WHERE e.model_id = ?1 AND e.model_version = ?2 AND i.state = 'present'
                 ORDER BY e.image_id",
                params![model.id, model.version],
                |row| {
                    let image_id: i64 = row.get(0)?;
                    let dim = row.get::<i64>(1)?.max(0) as usize;
                    let bytes = match row.value(2)? {
                        ValueRef::Blob(bytes) => bytes,
                        _ => &[],
                    };
                    let m = matrix.get_or_insert_with(|| {
                        VectorMatrix::with_capacity(model.clone(), dim, count as usize)
                    });
                    if dim != m.dim() || !m.push_le_bytes(image_id, bytes) {
                        corrupt = Some(VectorError::CorruptVector {
                            image_id,
                            model: model.clone(),
                            bytes: bytes.len(),
                            dim: m.dim(),
                        });
                        return Ok(false);
                    }
                    Ok(true)
                },
            )
            .ctx("loading vectors")?;
        if let Some(error) = corrupt {
            return Err(error);
        }
        Ok(matrix.unwrap_or_else(|| VectorMatrix::new(model.clone(), 0)))
    }

    /// [`Self::load_vectors`] through a cache: reloads only when the model changed or its rows
    /// did (count or newest `created_ms`).
    pub fn load_vectors_cached(
        &self,
        cache: &mut VectorCache,
        model: &ModelKey,
    ) -> Result<Arc<VectorMatrix>, VectorError> {
        let (count, newest) = self.vector_fingerprint(model)?;
        let fingerprint = (model.clone(), count, newest);
        if let Some((cached, matrix)) = &cache.matrix
            && *cached == fingerprint
        {
            // Searched again: coding the rows now pays off over the searches to come.
            matrix.prepare_search();
            return Ok(Arc::clone(matrix));
        }
        let matrix = Arc::new(self.load_vectors(model)?);
        cache.matrix = Some((fingerprint, Arc::clone(&matrix)));
        Ok(matrix)
    }

    /// (row count, newest created_ms) of one model, from the index alone.
    fn vector_fingerprint(&self, model: &ModelKey) -> Result<(i64, i64), StoreError> {
        self.db
            .query_row(
                "SELECT COUNT(*), COALESCE(MAX(created_ms), 0) FROM result_embedding
                 WHERE model_id = ?1 AND model_version = ?2",
                params![model.id, model.version],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx("reading the vector fingerprint")
    }

    /// One image's vector from `model`, if it has one.
    pub fn image_vector(
        &self,
        image_id: i64,
        model: &ModelKey,
    ) -> Result<Option<Vec<f32>>, VectorError> {
        let blob: Option<Vec<u8>> = self
            .db
            .query_opt(
                "SELECT vector FROM result_embedding
                 WHERE image_id = ?1 AND model_id = ?2 AND model_version = ?3",
                params![image_id, model.id, model.version],
                |r| r.get(0),
            )
            .ctx("reading a vector")?;
        match blob {
            None => Ok(None),
            Some(b) => match blob_to_vector(&b) {
                Some(v) => Ok(Some(v)),
                None => Err(VectorError::CorruptVector {
                    image_id,
                    model: model.clone(),
                    bytes: b.len(),
                    dim: b.len() / 4,
                }),
            },
        }
    }

    /// Upserts many vectors of one model in one transaction (imports, benchmarks, tests; the
    /// pipeline writes through [`Store::commit_outcomes`]). Returns how many were written.
    pub fn insert_embeddings<V: AsRef<[f32]>>(
        &self,
        model: &ModelKey,
        vectors: impl IntoIterator<Item = (i64, V)>,
    ) -> Result<usize, StoreError> {
        let tx = self.db.write_tx().ctx("starting an embedding import")?;
        let now = now_ms();
        let mut written = 0;
        let mut blob = Vec::new();
        for (image_id, vector) in vectors {
            let vector = vector.as_ref();
            blob.clear();
            blob.extend(vector.iter().flat_map(|v| v.to_le_bytes()));
            tx.execute(
                "INSERT INTO result_embedding
                     (image_id, model_id, model_version, created_ms, dim, vector)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (image_id, model_id) DO UPDATE SET
                     model_version = excluded.model_version,
                     created_ms = excluded.created_ms, dim = excluded.dim,
                     vector = excluded.vector, data = '{}'",
                params![image_id, model.id, model.version, now, vector.len(), blob],
            )
            .ctx("importing an embedding")?;
            written += 1;
        }
        tx.commit().ctx("committing an embedding import")?;
        Ok(written)
    }

    /// After the configured model of `module` changed to (`model_id`, `model_version`): puts
    /// back in the queue the module's finished jobs of every present image whose result table
    /// has no row from that model. Queued and leased jobs are left as they are, and failed jobs
    /// stay failed (`imgd retry` re-queues them), so calling this at every start-up re-queues
    /// each image at most once per model change. Returns how many jobs were re-queued.
    pub fn requeue_missing_for_model(
        &self,
        module: Module,
        model_id: &str,
        model_version: &str,
    ) -> Result<usize, StoreError> {
        // The table name is a fixed identifier from `Module`, never user input.
        let sql = format!(
            "UPDATE jobs SET state = 'queued', attempts = 0, lease_expiries = 0,
                             last_error = NULL, lease_owner = NULL, lease_expires_ms = NULL,
                             queued_ms = ?4, updated_ms = ?4
             WHERE module = ?1 AND state = 'done'
               AND image_id IN (SELECT id FROM images WHERE state = 'present')
               AND NOT EXISTS (SELECT 1 FROM {table} r
                               WHERE r.image_id = jobs.image_id
                                 AND r.model_id = ?2 AND r.model_version = ?3)",
            table = module.result_table()
        );
        let tx = self.db.write_tx().ctx("starting a model re-queue")?;
        let n = tx
            .execute(
                &sql,
                params![module.name(), model_id, model_version, now_ms()],
            )
            .ctx("re-queuing jobs for a new model")?;
        if n > 0 {
            crate::queue::notify_work(&tx)?;
        }
        tx.commit().ctx("committing a model re-queue")?;
        Ok(n)
    }

    /// Aesthetic scores of present images, best first: of the images in `among` (any order)
    /// when given, else of every scored image; at most `limit`.
    pub fn aesthetic_scores(
        &self,
        among: Option<&[i64]>,
        limit: usize,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        // Ids are integers: written into the statement, they cannot inject anything.
        let among = match among {
            Some([]) => return Ok(Vec::new()),
            Some(ids) => {
                let listed: Vec<String> = ids.iter().map(i64::to_string).collect();
                format!("AND a.image_id IN ({})", listed.join(","))
            }
            None => String::new(),
        };
        self.db
            .query_map(
                &format!(
                    "SELECT a.image_id, a.score FROM result_aesthetic a
                     JOIN images i ON i.id = a.image_id
                     WHERE a.score IS NOT NULL AND i.state = 'present' {among}
                     ORDER BY a.score DESC, a.image_id LIMIT ?1"
                ),
                params![limit],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx("ranking by aesthetic score")
    }

    /// Paths of present images, by id (absent ids are left out).
    pub fn image_paths(
        &self,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, String>, StoreError> {
        let mut out = std::collections::HashMap::with_capacity(ids.len());
        for &id in ids {
            if let Some(path) = self
                .db
                .query_opt(
                    "SELECT path FROM images WHERE id = ?1 AND state = 'present'",
                    params![id],
                    |r| r.get::<String>(0),
                )
                .ctx("reading a path")?
            {
                out.insert(id, imgd_core::stored_path::display(&path));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cov(id: &str, vectors: usize, missing: usize, newest_ms: i64) -> ModelCoverage {
        ModelCoverage {
            model: ModelKey::new(id, "1"),
            dim: 4,
            vectors,
            missing,
            newest_ms,
        }
    }

    #[test]
    fn serving_model_is_the_newest_complete_else_the_largest() {
        // The old model is complete, the new one half done: keep the old one.
        let models = [cov("old", 10, 0, 100), cov("new", 5, 5, 200)];
        assert_eq!(choose_serving_model(&models).unwrap().model.id, "old");
        // Both complete: the newest.
        let models = [cov("old", 10, 0, 100), cov("new", 10, 0, 200)];
        assert_eq!(choose_serving_model(&models).unwrap().model.id, "new");
        // None complete (images were added): the one with the most vectors.
        let models = [
            cov("old", 8, 2, 100),
            cov("new", 9, 1, 200),
            cov("x", 0, 10, 300),
        ];
        assert_eq!(choose_serving_model(&models).unwrap().model.id, "new");
        assert!(choose_serving_model(&[]).is_none());
    }

    #[test]
    fn rrf_adds_reciprocal_ranks() {
        let fused = rrf(&[&[1, 2, 3], &[3, 4]], 60.0);
        let score = |id| fused.iter().find(|(i, _)| *i == id).unwrap().1;
        assert!((score(3) - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-12);
        assert!((score(4) - 1.0 / 62.0).abs() < 1e-12);
        assert_eq!(fused[0].0, 3);
        // 1 scores 1/61; 2 and 4 tie at 1/62 and rank by id.
        let order: Vec<i64> = fused.iter().map(|f| f.0).collect();
        assert_eq!(order, vec![3, 1, 2, 4]);
    }

    #[test]
    fn near_duplicates_group_transitively() {
        let mut m = VectorMatrix::new(ModelKey::new("m", "1"), 2);
        let at = |deg: f32| {
            let r = deg.to_radians();
            [r.cos(), r.sin()]
        };
        // 10, 11 and 12 chain within 3 degrees (distance ~0.0014 each); 20 is far; 30 and 31
        // are one pair.
        for (id, deg) in [
            (10, 0.0),
            (11, 3.0),
            (12, 6.0),
            (20, 60.0),
            (30, 120.0),
            (31, 121.0),
        ] {
            m.push(id, &at(deg));
        }
        let groups = near_duplicate_groups(&m, 0.002, 2);
        let ids: Vec<Vec<i64>> = groups.iter().map(|g| g.image_ids.clone()).collect();
        assert_eq!(ids, vec![vec![10, 11, 12], vec![30, 31]]);
        assert!(groups[0].max_distance > 0.001 && groups[0].max_distance <= 0.002);
        assert!(near_duplicate_groups(&m, 0.0001, 1).is_empty());
    }

    #[test]
    fn blobs_round_trip() {
        let v = vec![0.25f32, -3.5, 1e-7];
        assert_eq!(blob_to_vector(&vector_to_blob(&v)).unwrap(), v);
        assert!(blob_to_vector(&[0, 1, 2]).is_none());
    }
}
