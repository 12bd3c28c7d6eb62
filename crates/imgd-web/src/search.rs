//! What web searches keep between requests: the loaded vectors and the text encoder.

use imgd_store::Store;
use imgd_store::vectors::{
    ModelKey, SearchRequest, SearchResponse, TextEmbedder, VectorCache, VectorError,
    choose_serving_model,
};

/// Loads the text encoder of an embedding model; `None` when it is not installed.
pub type EncoderLoader =
    Box<dyn Fn(&ModelKey) -> Option<Box<dyn TextEmbedder + Send>> + Send + Sync>;

/// The vectors loaded by earlier searches (reloaded only when their rows change) and the
/// text encoder of the model they come from, loaded on the first search with words.
pub struct SearchState {
    cache: VectorCache,
    encoder: Option<(ModelKey, Option<Box<dyn TextEmbedder + Send>>)>,
    load: EncoderLoader,
}

impl std::fmt::Debug for SearchState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchState")
            .field("encoder", &self.encoder.as_ref().map(|(key, _)| key))
            .finish_non_exhaustive()
    }
}

impl SearchState {
    /// A state that loads text encoders with `load`.
    pub fn new(load: EncoderLoader) -> Self {
        SearchState {
            cache: VectorCache::default(),
            encoder: None,
            load,
        }
    }

    /// Runs `request`, with the text encoder of the model whose vectors serve search when the
    /// request has words.
    pub fn search(
        &mut self,
        store: &Store,
        request: &SearchRequest<'_>,
    ) -> Result<SearchResponse, VectorError> {
        self.cache.forget_models();
        let wants_encoder = request.text.is_some_and(|t| !t.trim().is_empty());
        if wants_encoder {
            let models = store.embedding_models_cached(&mut self.cache)?;
            if let Some(serving) = choose_serving_model(&models) {
                let loaded = self.encoder.as_ref().map(|(key, _)| key);
                if loaded != Some(&serving.model) {
                    let encoder = (self.load)(&serving.model);
                    self.encoder = Some((serving.model.clone(), encoder));
                }
            }
        }
        let encoder = self
            .encoder
            .as_mut()
            .filter(|_| wants_encoder)
            .and_then(|(_, encoder)| encoder.as_mut())
            .map(|encoder| encoder.as_mut() as &mut dyn TextEmbedder);
        store.search(request, encoder, &mut self.cache)
    }
}
