//! Clustering every embedded face into identities: `imgd faces cluster`.
//!
//! [`plan_by_model`] takes every embedded face the database holds and clusters each embedding
//! model's faces separately with [`crate::cluster::plan`]; the caller writes each plan in one
//! transaction and [`ClusterReport::record`]s it. Incremental: only faces without an identity
//! are assigned, so it is cheap to run after every batch of new images, and it never renames or
//! empties an identity. A reset (dissolving every *unnamed* identity first, to cluster again
//! from scratch) is the caller's, before planning; named identities keep their faces.
//! This crate reads and writes no database: the binary joins the plan to the store.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cluster::{ClusterConfig, ClusterPlan, FaceVector, plan};

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

/// One embedding model's share of a clustering run.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPlan {
    /// The embedding model.
    pub model: String,
    /// Its faces without an identity before the run.
    pub considered: usize,
    /// What to write.
    pub plan: ClusterPlan,
}

/// Plans a clustering run over `faces` (each with the model that embedded it): one plan per
/// embedding model, since vectors of two models are not comparable.
pub fn plan_by_model(
    faces: impl IntoIterator<Item = (String, FaceVector)>,
    config: &ClusterConfig,
) -> Vec<ModelPlan> {
    let mut by_model: BTreeMap<String, Vec<FaceVector>> = BTreeMap::new();
    for (model, face) in faces {
        by_model.entry(model).or_default().push(face);
    }
    by_model
        .into_iter()
        .map(|(model, faces)| ModelPlan {
            model,
            considered: faces.iter().filter(|f| f.identity.is_none()).count(),
            plan: plan(&faces, config),
        })
        .collect()
}

impl ClusterReport {
    /// Counts a written plan that created `created` identities.
    pub fn record(&mut self, written: &ModelPlan, created: usize) {
        let plan = &written.plan;
        self.considered += written.considered;
        self.joined += plan.joins.len();
        self.new_identities += created;
        self.in_new_identities += plan.new_identities.iter().map(Vec::len).sum::<usize>();
        self.unassigned += plan.unassigned;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(id: i64, identity: Option<i64>, vector: [f32; 2]) -> FaceVector {
        FaceVector {
            id,
            identity,
            vector: vector.to_vec(),
        }
    }

    #[test]
    fn each_model_is_clustered_apart_and_the_report_adds_up() {
        let config = ClusterConfig {
            max_distance: 0.5,
            min_faces: 2,
        };
        let faces = vec![
            ("a".to_string(), face(1, None, [1.0, 0.0])),
            ("b".to_string(), face(2, None, [1.0, 0.0])),
            ("a".to_string(), face(3, None, [1.0, 0.0])),
            ("b".to_string(), face(4, Some(9), [0.0, 1.0])),
        ];
        let plans = plan_by_model(faces, &config);
        assert_eq!(plans.len(), 2);
        // Model a: two alike faces make an identity; model b: one face alone, none.
        assert_eq!(plans[0].model, "a");
        assert_eq!(plans[0].plan.new_identities, vec![vec![1, 3]]);
        assert_eq!((plans[1].considered, plans[1].plan.unassigned), (1, 1));
        let mut report = ClusterReport::default();
        for plan in &plans {
            report.record(plan, plan.plan.new_identities.len());
        }
        assert_eq!(
            (
                report.considered,
                report.new_identities,
                report.in_new_identities
            ),
            (3, 1, 2)
        );
        assert_eq!(report.unassigned, 1);
    }
}
