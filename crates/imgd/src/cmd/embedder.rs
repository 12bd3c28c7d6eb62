//! The text encoder behind semantic search.

use std::path::{Path, PathBuf};

use imgd_clip::runner::{TextTower, model_info};
use imgd_store::vectors::{ModelKey, TextEmbedder};

use super::config::FileConfig;

/// A CLIP or SigLIP text tower as a [`TextEmbedder`].
struct Text(TextTower);

impl TextEmbedder for Text {
    fn model(&self) -> (String, String) {
        let info = self.0.info();
        (info.id.clone(), info.version.clone())
    }

    fn embed(&mut self, text: &str) -> Result<Vec<f32>, String> {
        self.0
            .embed_text(&[text])
            .map_err(|e| e.to_string())?
            .pop()
            .ok_or_else(|| "the text encoder returned no vector".to_string())
    }
}

/// Folders under the model folder that hold a CLIP or SigLIP model, the configured ones first.
fn candidates(config: &FileConfig) -> Vec<PathBuf> {
    let context = config.load_context();
    let mut found = imgd_clip::loader::configured_clip_folders(&context).unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir(&context.models_dir) {
        let mut others: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        others.sort();
        found.extend(others);
    }
    let mut seen = std::collections::HashSet::new();
    found.retain(|dir| {
        dir.join("config.json").is_file()
            && dir.join("model.safetensors").is_file()
            && (dir.join("tokenizer.json").is_file() || dir.join("spiece.model").is_file())
            && seen.insert(dir.clone())
    });
    found
}

fn load(dir: &Path) -> Option<TextTower> {
    match TextTower::load(dir, &imgd_clip::Device::Cpu) {
        Ok(encoder) => Some(encoder),
        Err(err) => {
            eprintln!(
                "note: cannot load the text encoder in {}: {err}",
                dir.display()
            );
            None
        }
    }
}

/// The text encoder for a search: the installed CLIP or SigLIP model whose id and version are
/// `wanted` (the model the stored image vectors come from), else the configured embedding
/// model's (search then says the two differ instead of mixing them); `None` when no such model
/// with a tokenizer is installed. Semantic search without an encoder fails with a message naming
/// `imgd models fetch clip-vit-b32`; the default mode then falls back to text search.
pub fn text_embedder(
    wanted: Option<&ModelKey>,
    config: &FileConfig,
) -> Option<Box<dyn TextEmbedder + Send>> {
    // A query is one short sequence: the CPU encodes it in milliseconds.
    let folders = candidates(config);
    let chosen = wanted
        .and_then(|w| {
            folders
                .iter()
                .find(|dir| model_info(dir).is_ok_and(|i| i.id == w.id && i.version == w.version))
        })
        .or(folders.first())?;
    load(chosen).map(|encoder| Box::new(Text(encoder)) as Box<dyn TextEmbedder + Send>)
}
