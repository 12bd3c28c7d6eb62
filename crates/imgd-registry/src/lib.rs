//! The modules imgd serves: one line per module. A module's crate declares everything
//! else about it (its tier, result table, migrations, search text and gate; for a model
//! module its settings, availability and loading); the binary and the tests that need real
//! modules take them from here.

#![deny(missing_docs)]

use std::sync::LazyLock;

use imgd_core::{Module, Registry};
use imgd_infer::loader::ModuleLoader;
use imgd_infer::runner::CpuAnalysis;

/// One module of this build: its declaration and either the computation the decode threads
/// run for it (a module without a model) or the loader of its model.
#[derive(Clone, Copy)]
pub struct Entry {
    /// The module.
    pub module: Module,
    /// What the decode threads run for it; `None` for a model module.
    pub analysis: Option<&'static dyn CpuAnalysis>,
    /// How its model is configured, found and loaded; `None` for a module without a model.
    pub loader: Option<&'static dyn ModuleLoader>,
}

impl Entry {
    /// A module computed on the decode threads by `analysis`.
    pub const fn cpu(module: Module, analysis: &'static dyn CpuAnalysis) -> Entry {
        Entry {
            module,
            analysis: Some(analysis),
            loader: None,
        }
    }

    /// A module that runs a model on the inference thread, loaded by `loader`.
    pub const fn model(module: Module, loader: &'static dyn ModuleLoader) -> Entry {
        Entry {
            module,
            analysis: None,
            loader: Some(loader),
        }
    }
}

/// Every module of this build, in bit order.
pub const ENTRIES: &[Entry] = &[
    Entry::cpu(imgd_modules::METADATA, &imgd_modules::Metadata),
    Entry::cpu(imgd_modules::TECHNICAL, &imgd_modules::Technical),
    Entry::model(imgd_clip::EMBEDDING, &imgd_clip::EMBEDDING_LOADER),
    Entry::model(imgd_clip::AESTHETIC, &imgd_clip::AESTHETIC_LOADER),
    Entry::model(imgd_objects::OBJECTS, &imgd_objects::OBJECTS_LOADER),
    Entry::model(imgd_caption::CAPTION, &imgd_caption::CAPTION_LOADER),
    Entry::model(imgd_ocr::OCR, &imgd_trocr::OCR_LOADER),
    Entry::model(imgd_faces::FACES, &imgd_faces::FACES_LOADER),
    Entry::model(imgd_cloud::CLOUD, &imgd_cloud::CLOUD_LOADER),
    Entry::cpu(imgd_phash::PHASH, &imgd_phash::PerceptualHashes),
    Entry::cpu(imgd_thumbnail::THUMBNAIL, &imgd_thumbnail::Thumbnails),
];

/// The registry of [`ENTRIES`], checked once.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let modules: Vec<Module> = ENTRIES.iter().map(|entry| entry.module).collect();
    Registry::new(&modules).unwrap_or_else(|e| panic!("the built-in modules clash: {e}"))
});

/// A copy of [`REGISTRY`].
pub fn registry() -> Registry {
    REGISTRY.clone()
}

/// The modules the decode threads compute without a model.
pub fn cpu_analyses() -> Vec<&'static dyn CpuAnalysis> {
    ENTRIES.iter().filter_map(|entry| entry.analysis).collect()
}

/// The model modules' loaders, in bit order.
pub fn loaders() -> Vec<&'static dyn ModuleLoader> {
    ENTRIES.iter().filter_map(|entry| entry.loader).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_modules_register_without_clashes() {
        assert_eq!(REGISTRY.all().len(), ENTRIES.len());
        assert_eq!(REGISTRY.names()[..2], ["metadata", "technical"]);
        // Every local module is queued by default; the paid cloud API only when asked for.
        let defaults = REGISTRY.defaults();
        for module in REGISTRY.all() {
            assert_eq!(defaults.contains(module), *module != imgd_cloud::CLOUD);
        }
        // A CPU analysis computes its own module, and exactly the modules that need no model
        // have one.
        for entry in ENTRIES {
            if let Some(analysis) = entry.analysis {
                assert_eq!(analysis.module(), entry.module);
            }
            if let Some(loader) = entry.loader {
                assert_eq!(loader.module(), entry.module);
            }
            assert_eq!(entry.analysis.is_none(), entry.module.needs_model());
            assert_eq!(entry.loader.is_some(), entry.module.needs_model());
        }
        // No two loaders own one `[models]` key or one section.
        let mut keys = std::collections::HashSet::new();
        let mut sections = std::collections::HashSet::new();
        for loader in loaders() {
            for key in loader.model_keys() {
                assert!(keys.insert(*key), "two modules own [models] {key}");
            }
            for section in loader.sections() {
                assert!(sections.insert(*section), "two modules own [{section}]");
            }
        }
    }
}
