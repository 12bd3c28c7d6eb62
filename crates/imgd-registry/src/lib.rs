//! The modules imgd serves: one line per module. A module's crate declares everything
//! else about it (its tier, result table, migrations, search text and gate); the binary and
//! the tests that need real modules take them from here.

#![deny(missing_docs)]

use std::sync::{Arc, LazyLock};

use imgd_core::{Module, Registry};
use imgd_infer::runner::CpuAnalysis;

/// Every module of this build, in bit order.
pub const MODULES: &[Module] = &[
    imgd_modules::METADATA,
    imgd_modules::TECHNICAL,
    imgd_clip::EMBEDDING,
    imgd_clip::AESTHETIC,
    imgd_objects::OBJECTS,
    imgd_caption::CAPTION,
    imgd_ocr::OCR,
    imgd_faces::FACES,
    imgd_cloud::CLOUD,
];

/// The registry of [`MODULES`], checked once.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    Registry::new(MODULES).unwrap_or_else(|e| panic!("the built-in modules clash: {e}"))
});

/// A copy of [`REGISTRY`].
pub fn registry() -> Registry {
    REGISTRY.clone()
}

/// The modules the decode threads compute without a model.
pub fn cpu_analyses() -> Vec<Arc<dyn CpuAnalysis>> {
    vec![
        Arc::new(imgd_modules::Metadata),
        Arc::new(imgd_modules::Technical),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_modules_register_without_clashes() {
        let names = REGISTRY.names();
        assert_eq!(
            names,
            [
                "metadata",
                "technical",
                "embedding",
                "aesthetic",
                "objects",
                "caption",
                "ocr",
                "faces",
                "cloud"
            ]
        );
        let defaults = REGISTRY.defaults();
        assert_eq!(defaults.len(), 8, "every local module, not cloud");
        assert!(!defaults.contains(&imgd_cloud::CLOUD));
        let cpu: Vec<Module> = cpu_analyses().iter().map(|a| a.module()).collect();
        assert!(cpu.iter().all(|m| !m.needs_model()));
    }
}
