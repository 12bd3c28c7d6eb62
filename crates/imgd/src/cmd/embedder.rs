//! The text encoder behind semantic search.

use imgd_store::vectors::{ModelKey, TextEmbedder};

/// The text encoder for a search: the one of `wanted` (the model the images are served from)
/// when its weights are installed, else the configured embedding model's; `None` when no CLIP
/// model is installed. Semantic search without an encoder fails with "no text encoder
/// installed: imgd models fetch clip-vit-b32"; the default mode then falls back to text search.
pub fn text_embedder(wanted: Option<&ModelKey>) -> Option<Box<dyn TextEmbedder>> {
    // No CLIP text tower is wired in yet.
    let _ = wanted;
    None
}
