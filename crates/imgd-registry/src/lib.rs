//! The modules imgd serves: one line per module. A module's crate declares everything
//! else about it (its tier, result table, migrations, search text and gate); the binary and
//! the tests that need real modules take them from here.

#![deny(missing_docs)]

use std::sync::LazyLock;

use imgd_core::{Module, Registry};
use imgd_infer::runner::CpuAnalysis;

/// One module of this build: its declaration and, for a module the decode threads compute
/// without a model, that computation.
#[derive(Clone, Copy)]
pub struct Entry {
    /// The module.
    pub module: Module,
    /// What the decode threads run for it; `None` for a model module (its runner is loaded
    /// by the binary from the installed weights).
    pub analysis: Option<&'static dyn CpuAnalysis>,
}

impl Entry {
    /// A module computed on the decode threads by `analysis`.
    pub const fn cpu(module: Module, analysis: &'static dyn CpuAnalysis) -> Entry {
        Entry {
            module,
            analysis: Some(analysis),
        }
    }

    /// A module that runs a model on the inference thread.
    pub const fn model(module: Module) -> Entry {
        Entry {
            module,
            analysis: None,
        }
    }
}

/// Every module of this build, in bit order.
pub const ENTRIES: &[Entry] = &[
    Entry::cpu(imgd_modules::METADATA, &imgd_modules::Metadata),
    Entry::cpu(imgd_modules::TECHNICAL, &imgd_modules::Technical),
    Entry::model(imgd_clip::EMBEDDING),
    Entry::model(imgd_clip::AESTHETIC),
    Entry::model(imgd_objects::OBJECTS),
    Entry::model(imgd_caption::CAPTION),
    Entry::model(imgd_ocr::OCR),
    Entry::model(imgd_faces::FACES),
    Entry::model(imgd_cloud::CLOUD),
    Entry::cpu(imgd_phash::PHASH, &imgd_phash::PerceptualHashes),
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
            assert_eq!(entry.analysis.is_none(), entry.module.needs_model());
        }
    }
}
