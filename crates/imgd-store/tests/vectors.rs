//! Vector search on real databases, SQLite and PostgreSQL: exact top-k, reciprocal rank fusion with full-text
//! search, each mode alone, the aesthetic sort, and switching the embedding model.

use std::time::Duration;

use imgd_core::{ResultRow, SqlValue};
use imgd_store::queue::ClaimRequest;
use imgd_store::results::ImageOutcome;
use imgd_store::scan::{Fingerprint, FoundFile, ScanAction};
use imgd_store::vectors::{
    ModelKey, Neighbour, SearchMode, SearchRequest, SortOrder, TextEmbedder, VectorCache,
    VectorError, VectorMatrix, dot, normalize, rank_order,
};
use imgd_store::{Store, params};

mod common;
use common::backends::{TestDb, each_backend};

/// A text encoder that maps known queries to fixed vectors.
struct FakeEmbedder {
    model: ModelKey,
    queries: Vec<(&'static str, Vec<f32>)>,
}

impl TextEmbedder for FakeEmbedder {
    fn model(&self) -> (String, String) {
        (self.model.id.clone(), self.model.version.clone())
    }
    fn embed(&mut self, text: &str) -> Result<Vec<f32>, String> {
        self.queries
            .iter()
            .find(|(q, _)| *q == text)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("unknown query {text:?}"))
    }
}

/// xorshift64*: reproducible random numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn unit(&mut self, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| self.next_f32()).collect();
        normalize(&mut v);
        v
    }
}

/// Registers `names` as present images with an `embedding` job (and `aesthetic`), through the
/// scanner's own path. Image ids are 1, 2, ... in order.
fn store_with(db: &TestDb, names: &[&str]) -> Store {
    let store = db.open();
    let actions: Vec<ScanAction> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            ScanAction::New(FoundFile {
                path: format!("/photos/{name}.jpg"),
                fingerprint: Fingerprint {
                    size: 1000 + i as i64,
                    mtime_ns: 1,
                    inode: None,
                },
                format: "jpeg".into(),
                content_hash: None,
                sha256: None,
            })
        })
        .collect();
    store
        .apply_scan(&actions, &[imgd_clip::EMBEDDING, imgd_clip::AESTHETIC], 0)
        .unwrap();
    store
}

fn set_caption(store: &Store, image_id: i64, caption: &str) {
    store
        .db()
        .execute(
            "INSERT INTO result_caption (image_id, created_ms, caption) VALUES (?1, 0, ?2)",
            params![image_id, caption],
        )
        .unwrap();
    store.refresh_search_row(image_id).unwrap();
}

fn set_aesthetic(store: &Store, image_id: i64, score: f64) {
    store
        .db()
        .execute(
            "INSERT INTO result_aesthetic (image_id, created_ms, score) VALUES (?1, 0, ?2)",
            params![image_id, score],
        )
        .unwrap();
}

fn ids(hits: &[imgd_store::vectors::RankedHit]) -> Vec<i64> {
    hits.iter().map(|h| h.image_id).collect()
}

const CLIP: (&str, &str) = ("clip-test", "1");

fn clip() -> ModelKey {
    ModelKey::new(CLIP.0, CLIP.1)
}

/// Five images with captions and 4-d vectors, built so that the text ranking, the vector
/// ranking and their fusion all differ.
fn corpus(db: &TestDb) -> (Store, FakeEmbedder) {
    let store = store_with(db, &["a", "b", "c", "d", "e"]);
    set_caption(&store, 1, "red car red car red car");
    set_caption(&store, 2, "red car");
    set_caption(&store, 3, "blue boat");
    set_caption(
        &store,
        4,
        "a red car parked at night on a long wet street under many lamps",
    );
    set_caption(&store, 5, "green tree");
    let vectors: Vec<(i64, Vec<f32>)> = vec![
        (1, vec![0.0, 1.0, 0.0, 0.0]),
        (2, vec![0.8, 0.6, 0.0, 0.0]),
        (3, vec![1.0, 0.0, 0.0, 0.0]),
        (4, vec![0.6, 0.8, 0.0, 0.0]),
        (5, vec![-1.0, 0.0, 0.0, 0.0]),
    ];
    store
        .insert_embeddings(&clip(), vectors.iter().map(|(i, v)| (*i, v.as_slice())))
        .unwrap();
    let embedder = FakeEmbedder {
        model: clip(),
        queries: vec![("red car", vec![2.0, 0.0, 0.0, 0.0])],
    };
    (store, embedder)
}

fn request(text: Option<&str>, mode: Option<SearchMode>) -> SearchRequest<'_> {
    SearchRequest {
        text,
        similar_to: None,
        mode,
        sort: SortOrder::Relevance,
        limit: 20,
    }
}

#[test]
fn hybrid_ranking_is_reciprocal_rank_fusion_of_text_and_vector_rankings() {
    each_backend(|db| {
        let (store, mut embedder) = corpus(db);
        let mut cache = VectorCache::default();

        // Each ranking alone.
        let text = store
            .search(
                &request(Some("red car"), Some(SearchMode::Text)),
                None,
                &mut cache,
            )
            .unwrap();
        assert_eq!(text.mode, Some(SearchMode::Text));
        assert_eq!(text.model, None);
        let text_ids = ids(&text.hits);
        assert_eq!(text_ids, vec![1, 2, 4], "BM25: most matches, then shortest");

        let semantic = store
            .search(
                &request(Some("red car"), Some(SearchMode::Semantic)),
                Some(&mut embedder),
                &mut cache,
            )
            .unwrap();
        assert_eq!(semantic.mode, Some(SearchMode::Semantic));
        assert_eq!(semantic.model, Some(clip()));
        let vector_ids = ids(&semantic.hits);
        assert_eq!(vector_ids, vec![3, 2, 4, 1, 5]);
        let sims: Vec<f32> = semantic
            .hits
            .iter()
            .map(|h| h.similarity.unwrap())
            .collect();
        for (got, want) in sims.iter().zip([1.0, 0.8, 0.6, 0.0, -1.0]) {
            assert!((got - want).abs() < 1e-6, "{sims:?}");
        }

        // Hybrid, the default when vectors and an encoder exist.
        let hybrid = store
            .search(
                &request(Some("red car"), None),
                Some(&mut embedder),
                &mut cache,
            )
            .unwrap();
        assert_eq!(hybrid.mode, Some(SearchMode::Hybrid));
        // RRF with k = 60, computed here from the two rankings.
        let mut expected: Vec<(i64, f64)> = (1..=5)
            .map(|id| {
                let rr = |ranking: &[i64]| {
                    ranking
                        .iter()
                        .position(|&x| x == id)
                        .map_or(0.0, |p| 1.0 / (60.0 + (p + 1) as f64))
                };
                (id, rr(&text_ids) + rr(&vector_ids))
            })
            .collect();
        expected.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_eq!(
            ids(&hybrid.hits),
            expected.iter().map(|e| e.0).collect::<Vec<_>>()
        );
        // By hand: 2 = 1/62 + 1/62, 1 = 1/61 + 1/64, 4 = 1/63 + 1/63, 3 = 1/61, 5 = 1/65.
        assert_eq!(ids(&hybrid.hits), vec![2, 1, 4, 3, 5]);
        for (hit, (_, score)) in hybrid.hits.iter().zip(&expected) {
            assert!((hit.score - score).abs() < 1e-12);
        }
        assert_eq!(hybrid.hits[0].text_rank, Some(2));
        assert_eq!(hybrid.hits[0].vector_rank, Some(2));
        assert!(hybrid.hits[0].snippet.contains("[red]"));
        assert_eq!(hybrid.hits[3].text_rank, None, "image 3 is vector-only");

        // The limit cuts the fused list.
        let mut limited = request(Some("red car"), None);
        limited.limit = 2;
        let top2 = store
            .search(&limited, Some(&mut embedder), &mut cache)
            .unwrap();
        assert_eq!(ids(&top2.hits), vec![2, 1]);
    });
}

#[test]
fn text_mode_works_without_vectors_or_encoder_and_semantic_needs_an_encoder() {
    each_backend(|db| {
        let (store, _) = corpus(db);
        let mut cache = VectorCache::default();
        // No encoder: the default falls back to text, and says why.
        let got = store
            .search(&request(Some("red car"), None), None, &mut cache)
            .unwrap();
        assert_eq!(got.mode, Some(SearchMode::Text));
        assert_eq!(ids(&got.hits), vec![1, 2, 4]);
        assert!(got.note.unwrap().contains("no text encoder"));
        let err = store
            .search(
                &request(Some("red car"), Some(SearchMode::Semantic)),
                None,
                &mut cache,
            )
            .unwrap_err();
        assert!(matches!(err, VectorError::NoTextEncoder));
        assert_eq!(
            err.to_string(),
            "no text encoder installed: imgd models fetch clip-vit-b32"
        );

        // A database with no vectors at all: text mode, no note.
        let empty = db.another();
        let store = store_with(&empty, &["x", "y"]);
        set_caption(&store, 1, "red car");
        let mut embedder = FakeEmbedder {
            model: clip(),
            queries: vec![("red car", vec![1.0, 0.0, 0.0, 0.0])],
        };
        let got = store
            .search(
                &request(Some("red car"), None),
                Some(&mut embedder),
                &mut VectorCache::default(),
            )
            .unwrap();
        assert_eq!(got.mode, Some(SearchMode::Text));
        assert_eq!(got.note, None);
        assert_eq!(ids(&got.hits), vec![1]);
    });
}

#[test]
fn similar_image_search_and_aesthetic_sort() {
    each_backend(|db| {
        let (store, mut embedder) = corpus(db);
        let mut cache = VectorCache::default();
        // Image to image, no text encoder needed; the image itself is left out.
        let similar = store
            .search(
                &SearchRequest {
                    similar_to: Some(3),
                    limit: 10,
                    ..SearchRequest::default()
                },
                None,
                &mut cache,
            )
            .unwrap();
        assert_eq!(similar.mode, Some(SearchMode::Semantic));
        assert_eq!(ids(&similar.hits), vec![2, 4, 1, 5]);

        for (id, score) in [(1, 3.0), (2, 5.0), (3, 7.0), (4, 9.0)] {
            set_aesthetic(&store, id, score);
        }
        // The query filters, the score orders.
        let mut sorted = request(Some("red car"), Some(SearchMode::Text));
        sorted.sort = SortOrder::Aesthetic;
        let got = store.search(&sorted, None, &mut cache).unwrap();
        assert_eq!(ids(&got.hits), vec![4, 2, 1]);
        assert_eq!(got.hits[0].aesthetic, Some(9.0));
        // Hybrid candidates hold every image; unscored ones come last.
        sorted.mode = None;
        let got = store
            .search(&sorted, Some(&mut embedder), &mut cache)
            .unwrap();
        assert_eq!(got.mode, Some(SearchMode::Hybrid));
        assert_eq!(ids(&got.hits), vec![4, 3, 2, 1, 5]);
        // No query: browse by score.
        let browse = store
            .search(
                &SearchRequest {
                    sort: SortOrder::Aesthetic,
                    limit: 3,
                    ..SearchRequest::default()
                },
                None,
                &mut cache,
            )
            .unwrap();
        assert_eq!(browse.mode, None);
        assert_eq!(ids(&browse.hits), vec![4, 3, 2]);
        assert_eq!(browse.hits[0].score, 9.0);
        // Nothing at all to search for is a clear error.
        assert!(matches!(
            store.search(&SearchRequest::default(), None, &mut cache),
            Err(VectorError::BadRequest(_))
        ));
    });
}

fn naive_top_k(matrix: &VectorMatrix, query: &[f32], k: usize) -> Vec<Neighbour> {
    let mut all: Vec<Neighbour> = (0..matrix.len())
        .map(|i| Neighbour {
            image_id: matrix.ids()[i],
            score: dot(matrix.row(i), query),
        })
        .collect();
    all.sort_by(rank_order);
    all.truncate(k);
    all
}

#[test]
fn top_k_equals_a_naive_full_sort_on_random_data() {
    // From a real database (the ranking is the engine's own, whichever database holds it).
    let db = &TestDb::sqlite();
    let names: Vec<String> = (0..2000).map(|i| format!("img{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let store = store_with(db, &refs);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let vectors: Vec<Vec<f32>> = (0..2000).map(|_| rng.unit(64)).collect();
    store
        .insert_embeddings(
            &clip(),
            vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (i as i64 + 1, v.as_slice())),
        )
        .unwrap();
    let matrix = store.load_vectors(&clip()).unwrap();
    assert_eq!(matrix.len(), 2000);
    assert_eq!(matrix.dim(), 64);
    assert_eq!(matrix.row_of(7).unwrap(), vectors[6].as_slice());
    for _ in 0..5 {
        let q = rng.unit(64);
        for k in [1, 10, 100, 2000, 5000] {
            assert_eq!(matrix.top_k(&q, k), naive_top_k(&matrix, &q, k.min(2000)));
        }
    }

    // In memory, large enough to split across threads, with exact ties.
    let mut big = VectorMatrix::new(clip(), 32);
    for i in 0..40_000 {
        let v = if i % 1000 == 0 {
            vec![0.5; 32]
        } else {
            rng.unit(32)
        };
        big.push(40_000 - i as i64, &v);
    }
    for _ in 0..3 {
        let q = rng.unit(32);
        let want = naive_top_k(&big, &q, 50);
        for threads in [1, 2, 3, 8] {
            assert_eq!(
                big.top_k_threads(&q, 50, threads),
                want,
                "{threads} threads"
            );
        }
    }
    let tied = vec![0.5f32; 32];
    let got = big.top_k_threads(&tied, 40, 4);
    let want = naive_top_k(&big, &tied, 40);
    assert_eq!(got, want);
    assert!(got.windows(2).all(|w| rank_order(&w[0], &w[1]).is_lt()));
}

fn embedding_row(model: &ModelKey, v: &[f32]) -> ResultRow {
    ResultRow {
        module: imgd_clip::EMBEDDING,
        model_id: Some(model.id.clone()),
        model_version: Some(model.version.clone()),
        columns: vec![
            ("dim", SqlValue::Integer(v.len() as i64)),
            (
                "vector",
                SqlValue::Blob(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            ),
        ],
        data: serde_json::json!({}),
        vectors: Vec::new(),
    }
}

/// Runs the queued embedding jobs of up to `n` images with `model`, the way the daemon's writer
/// commits them.
fn run_embedding_jobs(
    store: &mut Store,
    model: &ModelKey,
    n: usize,
    vector: impl Fn(i64) -> Vec<f32>,
) -> usize {
    let claimed = store
        .claim(&ClaimRequest {
            owner: "test",
            modules: &[imgd_clip::EMBEDDING],
            max_images: n,
            lease: Duration::from_secs(60),
            idle: true,
        })
        .unwrap();
    let outcomes: Vec<ImageOutcome> = claimed
        .iter()
        .map(|image| ImageOutcome {
            image_id: image.image_id,
            dimensions: None,
            done: image
                .jobs
                .iter()
                .map(|j| (j.job_id, embedding_row(model, &vector(image.image_id))))
                .collect(),
            failed: Vec::new(),
            missing: false,
        })
        .collect();
    store.commit_outcomes("test", &outcomes).unwrap().acked
}

fn count(store: &Store, sql: &str) -> i64 {
    store.db().query_row(sql, params![], |r| r.get(0)).unwrap()
}

#[test]
fn switching_the_model_requeues_every_image_and_search_never_mixes_models() {
    each_backend(|db| {
        let names: Vec<String> = (0..40).map(|i| format!("img{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut store = store_with(db, &refs);
        let old = ModelKey::new("clip-a", "1");
        let new = ModelKey::new("clip-b", "1");
        // Old model: image i points along axis 0 with a tilt growing with i. New model: the
        // reverse order along axis 1, so any mixing would show in the ranking or the scores.
        let old_vec = |id: i64| {
            let mut v = vec![1.0, id as f32 * 0.01, 0.0, 0.0];
            normalize(&mut v);
            v
        };
        let new_vec = |id: i64| {
            let mut v = vec![0.0, 1.0, (41 - id) as f32 * 0.01, 0.0];
            normalize(&mut v);
            v
        };
        assert_eq!(run_embedding_jobs(&mut store, &old, 100, old_vec), 40);
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM jobs WHERE module = 'embedding' AND state = 'done'"
            ),
            40
        );
        // A failed job stays failed across a model change.
        store
            .db()
            .execute(
                "UPDATE jobs SET state = 'failed' WHERE module = 'embedding' AND image_id = 40",
                params![],
            )
            .unwrap();
        store
            .db()
            .execute(
                "DELETE FROM result_embedding WHERE image_id = 40",
                params![],
            )
            .unwrap();
        assert_eq!(store.serving_model().unwrap().unwrap().model, old);
        assert!(!store.serving_model().unwrap().unwrap().complete());

        // The configured model is unchanged: nothing to do.
        assert_eq!(
            store
                .requeue_missing_for_model(imgd_clip::EMBEDDING, "clip-a", "1")
                .unwrap(),
            0
        );
        // Switch: every finished image is queued again, once.
        assert_eq!(
            store
                .requeue_missing_for_model(imgd_clip::EMBEDDING, "clip-b", "1")
                .unwrap(),
            39
        );
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM jobs WHERE module = 'embedding' AND state = 'queued'"
            ),
            39
        );
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM jobs WHERE module = 'aesthetic' AND state = 'queued'"
            ),
            40,
            "other modules untouched"
        );
        assert_eq!(
            store
                .requeue_missing_for_model(imgd_clip::EMBEDDING, "clip-b", "1")
                .unwrap(),
            0
        );

        let old_encoder = || FakeEmbedder {
            model: old.clone(),
            queries: vec![("q", vec![1.0, 0.0, 0.0, 0.0])],
        };
        let new_encoder = || FakeEmbedder {
            model: new.clone(),
            queries: vec![("q", vec![0.0, 1.0, 0.0, 0.0])],
        };
        let check_unmixed = |store: &Store, encoder: &mut FakeEmbedder, want: &ModelKey| {
            let got = store
                .search(
                    &SearchRequest {
                        text: Some("q"),
                        mode: Some(SearchMode::Semantic),
                        limit: 100,
                        ..SearchRequest::default()
                    },
                    Some(encoder),
                    &mut VectorCache::default(),
                )
                .unwrap();
            assert_eq!(got.model.as_ref(), Some(want));
            let mut q = encoder.embed("q").unwrap();
            normalize(&mut q);
            let mut seen = std::collections::HashSet::new();
            for hit in &got.hits {
                assert!(seen.insert(hit.image_id), "image {} twice", hit.image_id);
                assert_eq!(hit.model.as_ref(), Some(want));
                let v = store.image_vector(hit.image_id, want).unwrap().unwrap();
                assert_eq!(hit.similarity.unwrap(), dot(&v, &q));
            }
            got
        };

        // Half-way through: the old model still serves, with all its images.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(run_embedding_jobs(&mut store, &new, 20, new_vec), 20);
        let serving = store.serving_model().unwrap().unwrap();
        assert_eq!(serving.model, old);
        let got = check_unmixed(&store, &mut old_encoder(), &old);
        assert_eq!(got.hits.len(), 39);
        assert_eq!(got.note, None);
        let models = store.embedding_models().unwrap();
        assert_eq!(models.len(), 2);
        let new_cov = models.iter().find(|m| m.model == new).unwrap();
        assert_eq!((new_cov.vectors, new_cov.missing), (20, 20));
        // --similar uses the serving model's vectors only.
        let similar = store
            .search(
                &SearchRequest {
                    similar_to: Some(1),
                    limit: 100,
                    ..SearchRequest::default()
                },
                None,
                &mut VectorCache::default(),
            )
            .unwrap();
        assert_eq!(similar.model, Some(old.clone()));
        assert_eq!(similar.hits.len(), 38);
        assert_eq!(similar.hits[0].image_id, 2);
        // An encoder of the new model searches only the new model's vectors, and says so.
        let got = check_unmixed(&store, &mut new_encoder(), &new);
        assert_eq!(got.hits.len(), 20);
        assert!(got.note.unwrap().contains("clip-a@1"));

        // Done (the failed image aside, which no model covers): the new model serves.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(run_embedding_jobs(&mut store, &new, 100, new_vec), 19);
        // Both lack image 40 and hold 39 vectors: the tie goes to the newer model.
        assert_eq!(store.serving_model().unwrap().unwrap().model, new);
        store
            .db()
            .execute(
                "UPDATE images SET state = 'missing' WHERE id = 40",
                params![],
            )
            .unwrap();
        assert_eq!(store.serving_model().unwrap().unwrap().model, new);
        let got = check_unmixed(&store, &mut new_encoder(), &new);
        assert_eq!(got.hits.len(), 39);
        assert_eq!(got.hits[0].image_id, 39, "the new model's order");
        let similar = store
            .search(
                &SearchRequest {
                    similar_to: Some(1),
                    limit: 100,
                    ..SearchRequest::default()
                },
                None,
                &mut VectorCache::default(),
            )
            .unwrap();
        assert_eq!(similar.model, Some(new.clone()));
        assert_eq!(similar.hits[0].image_id, 2);
        assert_eq!(
            store
                .requeue_missing_for_model(imgd_clip::EMBEDDING, "clip-b", "1")
                .unwrap(),
            0
        );
    });
}

#[test]
fn the_vector_cache_reloads_when_rows_change() {
    each_backend(|db| {
        let store = store_with(db, &["a", "b"]);
        let mut cache = VectorCache::default();
        store
            .insert_embeddings(&clip(), [(1, [1.0f32, 0.0].as_slice())])
            .unwrap();
        let first = store.load_vectors_cached(&mut cache, &clip()).unwrap();
        // One search scans the f32 rows; searching the same matrix again builds its int8 copy.
        assert!(!first.is_prepared());
        let again = store.load_vectors_cached(&mut cache, &clip()).unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &again));
        assert!(again.is_prepared());
        store
            .insert_embeddings(&clip(), [(2, [0.0f32, 1.0].as_slice())])
            .unwrap();
        let reloaded = store.load_vectors_cached(&mut cache, &clip()).unwrap();
        assert_eq!(reloaded.len(), 2);
        // A corrupt row is a clear error, not a panic.
        store
            .db()
            .execute(
                "UPDATE result_embedding SET vector = ?1 WHERE image_id = 2",
                params![vec![0u8, 0]],
            )
            .unwrap();
        let err = store.load_vectors(&clip()).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    });
}
