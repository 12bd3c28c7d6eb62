//! Clustering on the database: `imgd faces cluster`.
//!
//! Reads every embedded face ([`imgd_store::Store::face_embeddings`]), clusters each embedding
//! model's faces separately with [`crate::cluster::plan`], and writes the result in one
//! transaction ([`imgd_store::Store::apply_clusters`]). Incremental: only faces without an
//! identity are assigned, so it is cheap to run after every batch of new images, and it never
//! renames or empties an identity. `reset` first dissolves every *unnamed* identity, to
//! cluster again from scratch (e.g. with other thresholds); named identities keep their faces.

use std::collections::BTreeMap;

use imgd_store::Store;
use serde::Serialize;

use crate::FacesError;
use crate::cluster::{ClusterConfig, FaceVector, plan};

/// What a clustering run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterReport {
    /// Faces detached from unnamed identities first (`reset`).
    pub reset: usize,
    /// Embedded faces without an identity before the run.
    pub considered: usize,
    /// Faces that joined an existing identity.
    pub joined: usize,
    /// New identities.
    pub new_identities: usize,
    /// Faces in the new identities.
    pub in_new_identities: usize,
    /// Faces left without an identity.
    pub unassigned: usize,
}

/// Clusters the faces without an identity (see the module docs).
pub fn cluster(
    store: &Store,
    config: &ClusterConfig,
    reset: bool,
) -> Result<ClusterReport, FacesError> {
    let mut report = ClusterReport::default();
    if reset {
        report.reset = store.reset_unnamed_identities()?;
    }
    let mut by_model: BTreeMap<String, Vec<FaceVector>> = BTreeMap::new();
    for e in store.face_embeddings()? {
        by_model.entry(e.model).or_default().push(FaceVector {
            id: e.face_id,
            identity: e.identity_id,
            vector: e.vector,
        });
    }
    for faces in by_model.values() {
        report.considered += faces.iter().filter(|f| f.identity.is_none()).count();
        let plan = plan(faces, config);
        let created = store.apply_clusters(&plan.joins, &plan.new_identities)?;
        report.joined += plan.joins.len();
        report.new_identities += created.len();
        report.in_new_identities += plan.new_identities.iter().map(Vec::len).sum::<usize>();
        report.unassigned += plan.unassigned;
    }
    Ok(report)
}
