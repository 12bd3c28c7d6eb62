//! `imgd search`: full-text, semantic and hybrid rankings, and the aesthetic sort.

use std::collections::HashMap;

use serde::Serialize;

use super::{
    AESTHETIC_POOL, FUSION_DEPTH, ModelCoverage, ModelKey, Neighbour, RRF_K, TextEmbedder,
    VectorCache, VectorError, choose_serving_model, normalize, rrf,
};
use crate::Store;
use crate::report::{SearchHit, fts_query};

/// Which rankings a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Full-text (FTS5, BM25) only.
    Text,
    /// Vector similarity only: to the query's text embedding, or to the `--similar` image.
    Semantic,
    /// Both, fused by reciprocal rank fusion.
    Hybrid,
}

impl SearchMode {
    /// The mode's name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SearchMode::Text => "text",
            SearchMode::Semantic => "semantic",
            SearchMode::Hybrid => "hybrid",
        }
    }
}

/// How results are ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    /// By the ranking's relevance.
    #[default]
    Relevance,
    /// By `result_aesthetic.score`, best first; the query (if any) only filters.
    Aesthetic,
}

/// What to search for.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest<'a> {
    /// Query words (plain text; FTS syntax is not interpreted).
    pub text: Option<&'a str>,
    /// Rank by similarity to this image's vector instead of the text's.
    pub similar_to: Option<i64>,
    /// The rankings to use; `None`: hybrid when vectors and a query vector are available,
    /// else text (semantic when there are no query words).
    pub mode: Option<SearchMode>,
    /// The order of the results.
    pub sort: SortOrder,
    /// At most this many results.
    pub limit: usize,
}

/// One result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankedHit {
    /// The image's row id.
    pub image_id: i64,
    /// Its path.
    pub path: String,
    /// The ranking score: BM25 (text), cosine similarity (semantic), the RRF sum (hybrid), or
    /// the aesthetic score when browsing by it with no query.
    pub score: f64,
    /// The best-matching text with matches in `[brackets]` (empty for vector-only hits).
    pub snippet: String,
    /// The mode that produced the ranking (`None`: browsing by aesthetic score).
    pub mode: Option<SearchMode>,
    /// The embedding model of the vector ranking, if one took part.
    pub model: Option<ModelKey>,
    /// The hit's rank (from 1) in the full-text ranking, if it is in it.
    pub text_rank: Option<usize>,
    /// Its rank (from 1) in the vector ranking, if it is in it.
    pub vector_rank: Option<usize>,
    /// Its cosine similarity to the query vector, if it is in the vector ranking.
    pub similarity: Option<f32>,
    /// Its aesthetic score, if it has one.
    pub aesthetic: Option<f64>,
}

/// The results and how they were found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResponse {
    /// The mode used (`None`: browsing by aesthetic score with no query).
    pub mode: Option<SearchMode>,
    /// The embedding model of the vector ranking, if one took part.
    pub model: Option<ModelKey>,
    /// Something the user should know, e.g. why semantic search was not used.
    pub note: Option<String>,
    /// Best first.
    pub hits: Vec<RankedHit>,
}

impl Store {
    /// Runs a search: see [`SearchRequest`] and the module docs of [`crate::vectors`] for the
    /// rules (mode defaults, which model, fusion, the aesthetic sort). `embedder` turns query
    /// words into a vector; without one, only `similar_to` gives a vector ranking.
    pub fn search(
        &self,
        request: &SearchRequest<'_>,
        embedder: Option<&mut dyn TextEmbedder>,
        cache: &mut VectorCache,
    ) -> Result<SearchResponse, VectorError> {
        let text = request.text.unwrap_or("").trim();
        let has_words = fts_query(text).is_some();
        let limit = request.limit;
        if !has_words && request.similar_to.is_none() {
            if request.sort == SortOrder::Aesthetic {
                return self.browse_by_aesthetic(limit);
            }
            return Err(VectorError::BadRequest(
                "nothing to search for: give query words, --similar PATH or --sort aesthetic"
                    .into(),
            ));
        }

        let models = self.embedding_models_cached(cache)?;
        let serving = choose_serving_model(&models).map(|m| m.model.clone());
        let has_query_vector = request.similar_to.is_some() || embedder.is_some();
        let (mode, mut note) =
            choose_mode(request.mode, has_words, serving.is_some(), has_query_vector)?;
        let depth = match (request.sort, mode) {
            (SortOrder::Aesthetic, _) => AESTHETIC_POOL.max(limit),
            (SortOrder::Relevance, SearchMode::Hybrid) => FUSION_DEPTH.max(limit),
            (SortOrder::Relevance, _) => limit,
        };

        let (model, neighbours) = if mode == SearchMode::Text {
            (None, Vec::new())
        } else {
            let serving = serving.ok_or(VectorError::NoVectors)?;
            let query = VectorQuery {
                text,
                similar_to: request.similar_to,
                serving,
                depth,
            };
            let (used, neighbours) =
                self.vector_ranking(&query, embedder, &models, cache, &mut note)?;
            (Some(used), neighbours)
        };
        let text_hits = if mode == SearchMode::Semantic {
            Vec::new()
        } else {
            self.search_text(text, depth)?
        };
        let ranked: Vec<(i64, f64)> = match mode {
            SearchMode::Text => text_hits.iter().map(|h| (h.image_id, h.score)).collect(),
            SearchMode::Semantic => neighbours
                .iter()
                .map(|n| (n.image_id, f64::from(n.score)))
                .collect(),
            SearchMode::Hybrid => {
                let text_ids: Vec<i64> = text_hits.iter().map(|h| h.image_id).collect();
                let vector_ids: Vec<i64> = neighbours.iter().map(|n| n.image_id).collect();
                rrf(&[&text_ids, &vector_ids], RRF_K)
            }
        };
        let ranked = if request.sort == SortOrder::Aesthetic {
            self.order_by_aesthetic(ranked)?
        } else {
            ranked
        };
        let rankings = Rankings {
            mode,
            model: model.clone(),
            text_hits: &text_hits,
            neighbours: &neighbours,
        };
        let hits = self.ranked_hits(ranked.into_iter().take(limit).collect(), &rankings)?;
        Ok(SearchResponse {
            mode: Some(mode),
            model,
            note,
            hits,
        })
    }

    /// The nearest images to the query's vector (an image's own, or the text's through
    /// `embedder`) among the vectors of the model that serves it, closest first.
    fn vector_ranking(
        &self,
        query: &VectorQuery<'_>,
        embedder: Option<&mut dyn TextEmbedder>,
        models: &[ModelCoverage],
        cache: &mut VectorCache,
        note: &mut Option<String>,
    ) -> Result<(ModelKey, Vec<Neighbour>), VectorError> {
        let serving = query.serving.clone();
        let (used, mut vector) = match (query.similar_to, embedder) {
            (Some(image_id), _) => {
                let vector = self.image_vector(image_id, &serving)?.ok_or_else(|| {
                    VectorError::NoVectorForImage {
                        path: self
                            .image_paths(&[image_id])
                            .ok()
                            .and_then(|mut p| p.remove(&image_id))
                            .unwrap_or_else(|| format!("image {image_id}")),
                        model: serving.clone(),
                    }
                })?;
                (serving, vector)
            }
            (None, Some(embedder)) => {
                let (id, version) = embedder.model();
                let encoder = ModelKey::new(id, version);
                if encoder != serving {
                    if !models.iter().any(|m| m.model == encoder && m.vectors > 0) {
                        return Err(VectorError::EncoderModelMismatch { encoder, serving });
                    }
                    *note = Some(format!(
                        "the images are served from {serving}, but the text encoder is \
                         {encoder}: searching only the images {encoder} has embedded"
                    ));
                }
                let vector =
                    embedder
                        .embed(query.text)
                        .map_err(|message| VectorError::Embedder {
                            model: encoder.clone(),
                            message,
                        })?;
                (encoder, vector)
            }
            (None, None) => return Err(VectorError::NoTextEncoder),
        };
        normalize(&mut vector);
        let matrix = self.load_vectors_cached(cache, &used)?;
        if vector.len() != matrix.dim() {
            return Err(VectorError::DimensionMismatch {
                model: used,
                want: matrix.dim(),
                got: vector.len(),
            });
        }
        let extra = usize::from(query.similar_to.is_some());
        let mut neighbours = matrix.top_k(&vector, query.depth + extra);
        neighbours.retain(|n| Some(n.image_id) != query.similar_to);
        neighbours.truncate(query.depth);
        Ok((used, neighbours))
    }

    /// `ranked` reordered by aesthetic score, best first; images without a score keep their
    /// relevance order after the scored ones.
    fn order_by_aesthetic(&self, ranked: Vec<(i64, f64)>) -> Result<Vec<(i64, f64)>, VectorError> {
        let ids: Vec<i64> = ranked.iter().map(|r| r.0).collect();
        let scored = self.aesthetic_scores(Some(&ids), ids.len())?;
        let relevance: HashMap<i64, f64> = ranked.iter().copied().collect();
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<(i64, f64)> = scored
            .iter()
            .map(|&(id, _)| {
                seen.insert(id);
                (id, relevance[&id])
            })
            .collect();
        out.extend(ranked.iter().filter(|r| !seen.contains(&r.0)).copied());
        Ok(out)
    }

    /// The hits of the `top` images, with their paths, snippets, ranks in each ranking and
    /// aesthetic scores.
    fn ranked_hits(
        &self,
        top: Vec<(i64, f64)>,
        rankings: &Rankings<'_>,
    ) -> Result<Vec<RankedHit>, VectorError> {
        let text_pos: HashMap<i64, usize> = rankings
            .text_hits
            .iter()
            .enumerate()
            .map(|(i, h)| (h.image_id, i))
            .collect();
        let vector_pos: HashMap<i64, usize> = rankings
            .neighbours
            .iter()
            .enumerate()
            .map(|(i, n)| (n.image_id, i))
            .collect();
        let ids: Vec<i64> = top.iter().map(|r| r.0).collect();
        let paths = self.image_paths(&ids)?;
        let aesthetic: HashMap<i64, f64> = self
            .aesthetic_scores(Some(&ids), ids.len())?
            .into_iter()
            .collect();
        Ok(top
            .into_iter()
            .filter_map(|(image_id, score)| {
                let path = paths.get(&image_id)?.clone();
                let t = text_pos.get(&image_id).copied();
                let v = vector_pos.get(&image_id).copied();
                Some(RankedHit {
                    image_id,
                    path,
                    score,
                    snippet: t
                        .map(|i| rankings.text_hits[i].snippet.clone())
                        .unwrap_or_default(),
                    mode: Some(rankings.mode),
                    model: rankings.model.clone(),
                    text_rank: t.map(|i| i + 1),
                    vector_rank: v.map(|i| i + 1),
                    similarity: v.map(|i| rankings.neighbours[i].score),
                    aesthetic: aesthetic.get(&image_id).copied(),
                })
            })
            .collect())
    }

    /// The best-scored images by aesthetic score, with no query.
    fn browse_by_aesthetic(&self, limit: usize) -> Result<SearchResponse, VectorError> {
        let scored = self.aesthetic_scores(None, limit)?;
        let ids: Vec<i64> = scored.iter().map(|s| s.0).collect();
        let paths = self.image_paths(&ids)?;
        let hits = scored
            .into_iter()
            .filter_map(|(image_id, score)| {
                Some(RankedHit {
                    image_id,
                    path: paths.get(&image_id)?.clone(),
                    score,
                    snippet: String::new(),
                    mode: None,
                    model: None,
                    text_rank: None,
                    vector_rank: None,
                    similarity: None,
                    aesthetic: Some(score),
                })
            })
            .collect();
        Ok(SearchResponse {
            mode: None,
            model: None,
            note: None,
            hits,
        })
    }
}

/// What the vector ranking searches for.
struct VectorQuery<'a> {
    /// The query text (for a text encoder).
    text: &'a str,
    /// The image whose neighbours are wanted, instead of the text's.
    similar_to: Option<i64>,
    /// The model whose vectors serve searches.
    serving: ModelKey,
    /// How many neighbours to keep.
    depth: usize,
}

/// The rankings a search's hits are described from.
struct Rankings<'a> {
    mode: SearchMode,
    model: Option<ModelKey>,
    text_hits: &'a [SearchHit],
    neighbours: &'a [Neighbour],
}

/// The search mode a request gets, and a note when semantic search is off for want of a text
/// encoder: the asked-for mode when it can run, else hybrid when words and a query vector
/// both exist, semantic with a vector alone, text with words alone.
fn choose_mode(
    asked: Option<SearchMode>,
    has_words: bool,
    has_vectors: bool,
    has_query_vector: bool,
) -> Result<(SearchMode, Option<String>), VectorError> {
    let by_words = |mode| {
        if has_words {
            mode
        } else {
            SearchMode::Semantic
        }
    };
    match asked {
        Some(SearchMode::Text) if !has_words => Err(VectorError::BadRequest(
            "--mode text needs query words".into(),
        )),
        Some(SearchMode::Text) => Ok((SearchMode::Text, None)),
        Some(_) if !has_query_vector => Err(VectorError::NoTextEncoder),
        Some(_) if !has_vectors => Err(VectorError::NoVectors),
        Some(wanted) => Ok((by_words(wanted), None)),
        None if has_vectors && has_query_vector => Ok((by_words(SearchMode::Hybrid), None)),
        None if has_words => {
            let note = has_vectors.then(|| {
                "semantic search is off: no text encoder installed \
                 (imgd models fetch clip-vit-b32); text search only"
                    .to_string()
            });
            Ok((SearchMode::Text, note))
        }
        None => Err(VectorError::NoVectors),
    }
}
