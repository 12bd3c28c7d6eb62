//! The `faces` module's availability and loading ([`FacesLoader`]). It has no settings of its
//! own: its models are found in the model folder (see [`FaceModels::locate`]).

use imgd_core::Module;
use imgd_infer::batcher::BatchConfig;
use imgd_infer::loader::{Availability, LoadContext, LoadedModule, ModuleLoader};

use crate::{FACES, FaceModels};

/// The `faces` module's loader.
pub struct FacesLoader;

impl ModuleLoader for FacesLoader {
    fn module(&self) -> Module {
        FACES
    }

    fn model_keys(&self) -> &'static [&'static str] {
        &[]
    }

    fn check(&self, _context: &LoadContext<'_>) -> Result<(), String> {
        Ok(())
    }

    fn availability(&self, context: &LoadContext<'_>) -> Availability {
        let found = FaceModels::locate(&context.models_dir);
        let detector = found.scrfd.as_ref().or(found.mtcnn.as_ref());
        match (detector, &found.arcface) {
            (Some(det), Some(emb)) => Availability::Installed(format!(
                "detector {}, embeddings {}",
                det.display(),
                emb.display()
            )),
            (Some(det), None) => Availability::Installed(format!(
                "detector {}; faces are detected, not embedded (imgd models fetch arcface-r50)",
                det.display()
            )),
            (None, _) => Availability::Waiting(
                "waiting: no face detector installed (scripts/fetch-registry-models.sh \
                 for MTCNN, or imgd models fetch scrfd-10g)"
                    .to_string(),
            ),
        }
    }

    fn load(&self, context: &LoadContext<'_>, batch: BatchConfig) -> Result<LoadedModule, String> {
        crate::runner(&context.models_dir, &context.ort, batch)
            .map(LoadedModule::new)
            .map_err(|e| e.to_string())
    }
}

/// The `faces` module's loader, for the registry.
pub static FACES_LOADER: FacesLoader = FacesLoader;
