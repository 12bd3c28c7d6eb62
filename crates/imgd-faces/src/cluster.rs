//! Identities: incremental, DBSCAN-like clustering of face embeddings.
//!
//! Distances are cosine distances, `1 − a·b` of L2-normalised vectors. A face is **core** when
//! at least [`ClusterConfig::min_faces`] faces (itself included) lie within
//! [`ClusterConfig::max_distance`] of it. The defaults, 3 faces within 0.5, are Immich's
//! (`minFaces`, `maxDistance`), tuned there for the same InsightFace ArcFace embeddings: two
//! photos of one person typically lie at 0.2–0.45, two people at 0.7–1.0.
//!
//! One run ([`plan`]) looks only at faces without an identity; faces that have one never move
//! (so a name, once given, stays with its faces):
//!
//! 1. Each unassigned core face, in id order, joins the identity of its nearest neighbour
//!    that has one, or starts a new identity; then the identity grows through its
//!    unassigned neighbours, and through theirs while they are core (DBSCAN's expansion).
//! 2. Unassigned faces that are not core join the identity of their nearest assigned
//!    neighbour within the distance, if any (DBSCAN's border points, Immich's deferred pass).
//! 3. The rest stay unassigned (noise) until later faces make them core or bring an identity
//!    near.
//!
//! Two identities are never merged automatically, even when new faces bridge them: that is
//! `imgd faces merge`. Only embeddings of the same model are compared (the caller groups them).
//! Cost: every unassigned face is compared with every face, O(new × all × dim).

use std::collections::{BTreeMap, VecDeque};

/// Clustering thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterConfig {
    /// Faces closer than this (cosine distance) are neighbours (Immich: 0.5).
    pub max_distance: f32,
    /// Faces, itself included, a face needs within `max_distance` to found or grow an
    /// identity (Immich: 3).
    pub min_faces: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            max_distance: 0.5,
            min_faces: 3,
        }
    }
}

/// One face as clustering sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceVector {
    /// The face's row id.
    pub id: i64,
    /// Its identity, if it has one.
    pub identity: Option<i64>,
    /// Its embedding, L2-normalised.
    pub vector: Vec<f32>,
}

/// What a clustering run decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterPlan {
    /// Faces joining existing identities: (face, identity).
    pub joins: Vec<(i64, i64)>,
    /// New identities, each with its faces.
    pub new_identities: Vec<Vec<i64>>,
    /// Faces left unassigned.
    pub unassigned: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Existing(i64),
    New(usize),
}

/// Cosine distance of two L2-normalised vectors.
pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    1.0 - a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>()
}

/// Plans the assignment of every face without an identity (see the module docs).
pub fn plan(faces: &[FaceVector], config: &ClusterConfig) -> ClusterPlan {
    let mut labels: Vec<Option<Label>> = faces
        .iter()
        .map(|f| f.identity.map(Label::Existing))
        .collect();
    let mut open: Vec<usize> = (0..faces.len())
        .filter(|&i| faces[i].identity.is_none())
        .collect();
    open.sort_by_key(|&i| faces[i].id);
    // Neighbours (index, distance) of every unassigned face, nearest first.
    let neighbours: BTreeMap<usize, Vec<(usize, f32)>> = open
        .iter()
        .map(|&i| {
            let mut near: Vec<(usize, f32)> = faces
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(j, f)| (j, distance(&faces[i].vector, &f.vector)))
                .filter(|&(_, d)| d < config.max_distance)
                .collect();
            near.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            (i, near)
        })
        .collect();
    let is_core = |i: usize| neighbours[&i].len() + 1 >= config.min_faces;
    let mut new_count = 0;
    for &seed in &open {
        if labels[seed].is_some() || !is_core(seed) {
            continue;
        }
        let label = neighbours[&seed]
            .iter()
            .find_map(|&(j, _)| labels[j])
            .unwrap_or_else(|| {
                new_count += 1;
                Label::New(new_count - 1)
            });
        labels[seed] = Some(label);
        let mut queue = VecDeque::from([seed]);
        while let Some(q) = queue.pop_front() {
            for &(v, _) in &neighbours[&q] {
                if labels[v].is_none() && faces[v].identity.is_none() {
                    labels[v] = Some(label);
                    if is_core(v) {
                        queue.push_back(v);
                    }
                }
            }
        }
    }
    // Border faces: the nearest labelled neighbour's identity.
    let border: Vec<(usize, Label)> = open
        .iter()
        .filter(|&&i| labels[i].is_none())
        .filter_map(|&i| {
            neighbours[&i]
                .iter()
                .find_map(|&(j, _)| labels[j])
                .map(|l| (i, l))
        })
        .collect();
    for (i, label) in border {
        labels[i] = Some(label);
    }
    let mut out = ClusterPlan {
        new_identities: vec![Vec::new(); new_count],
        ..ClusterPlan::default()
    };
    for &i in &open {
        match labels[i] {
            Some(Label::Existing(identity)) => out.joins.push((faces[i].id, identity)),
            Some(Label::New(k)) => out.new_identities[k].push(faces[i].id),
            None => out.unassigned += 1,
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*), with Box–Muller normals.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Rng {
            Rng(seed.max(1))
        }
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        pub(crate) fn normal(&mut self) -> f32 {
            let (u, v) = (self.uniform(), self.uniform());
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
        }
        /// A unit vector near `centre` (cosine about 1/√(1+σ²·dim)).
        pub(crate) fn near(&mut self, centre: &[f32], sigma: f32) -> Vec<f32> {
            let v: Vec<f32> = centre.iter().map(|c| c + sigma * self.normal()).collect();
            crate::arcface::normalised(&v)
        }
        pub(crate) fn unit(&mut self, dim: usize) -> Vec<f32> {
            let v: Vec<f32> = (0..dim).map(|_| self.normal()).collect();
            crate::arcface::normalised(&v)
        }
    }

    /// Three people (8, 6 and 5 faces), a pair (below min_faces) and 4 strangers, in 128-d.
    pub(crate) fn synthetic_faces(rng: &mut Rng) -> (Vec<FaceVector>, Vec<usize>) {
        let dim = 128;
        let mut faces = Vec::new();
        let mut truth = Vec::new();
        let groups = [8usize, 6, 5, 2, 1, 1, 1, 1];
        for (person, &n) in groups.iter().enumerate() {
            let centre = rng.unit(dim);
            for _ in 0..n {
                // σ = 0.05 in 128-d: cosine to the centre ≈ 0.85, within a person ≈ 0.72.
                faces.push(FaceVector {
                    id: faces.len() as i64 + 1,
                    identity: None,
                    vector: rng.near(&centre, 0.05),
                });
                truth.push(person);
            }
        }
        // Shuffle the ids so that clusters do not arrive in order.
        let n = faces.len();
        for i in (1..n).rev() {
            let j = (rng.uniform() * (i + 1) as f64) as usize % (i + 1);
            faces.swap(i, j);
            truth.swap(i, j);
        }
        for (i, f) in faces.iter_mut().enumerate() {
            f.id = i as i64 + 1;
        }
        (faces, truth)
    }

    #[test]
    fn synthetic_people_become_three_identities_and_strangers_stay_unassigned() {
        let mut rng = Rng::new(7);
        let (faces, truth) = synthetic_faces(&mut rng);
        // The synthetic distances are what the thresholds expect.
        for (a, fa) in faces.iter().enumerate() {
            for (b, fb) in faces.iter().enumerate().skip(a + 1) {
                let d = distance(&fa.vector, &fb.vector);
                if truth[a] == truth[b] {
                    assert!(d < 0.45, "same person at {d}");
                } else {
                    assert!(d > 0.6, "two people at {d}");
                }
            }
        }
        let plan = plan(&faces, &ClusterConfig::default());
        assert!(plan.joins.is_empty());
        assert_eq!(plan.new_identities.len(), 3, "{plan:?}");
        let mut sizes: Vec<usize> = plan.new_identities.iter().map(Vec::len).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![5, 6, 8]);
        for identity in &plan.new_identities {
            let people: std::collections::BTreeSet<usize> = identity
                .iter()
                .map(|&id| truth[(id - 1) as usize])
                .collect();
            assert_eq!(people.len(), 1, "an identity mixes people: {identity:?}");
        }
        // The pair and the strangers are noise.
        assert_eq!(plan.unassigned, 2 + 4);
    }

    #[test]
    fn new_faces_join_existing_identities_and_assigned_faces_never_move() {
        let mut rng = Rng::new(11);
        let dim = 64;
        let alice = rng.unit(dim);
        let bob = rng.unit(dim);
        let mut faces: Vec<FaceVector> = (0..4)
            .map(|i| FaceVector {
                id: i + 1,
                identity: Some(100),
                vector: rng.near(&alice, 0.05),
            })
            .collect();
        // A Bob face wrongly in Alice's identity (a user's manual merge) stays there.
        faces.push(FaceVector {
            id: 5,
            identity: Some(100),
            vector: rng.near(&bob, 0.05),
        });
        // New: one Alice face (core through Alice's assigned faces) and three Bobs.
        faces.push(FaceVector {
            id: 6,
            identity: None,
            vector: rng.near(&alice, 0.05),
        });
        for id in 7..10 {
            faces.push(FaceVector {
                id,
                identity: None,
                vector: rng.near(&bob, 0.05),
            });
        }
        let plan = plan(&faces, &ClusterConfig::default());
        // Alice's new face joins her identity; the Bobs find the misfiled Bob face, so they
        // join identity 100 too: assignments follow the nearest assigned face.
        assert!(plan.joins.contains(&(6, 100)), "{plan:?}");
        assert_eq!(plan.joins.len(), 4);
        assert!(plan.new_identities.is_empty());

        // With a tiny distance nothing is near: everything stays unassigned.
        let strict = ClusterConfig {
            max_distance: 0.01,
            min_faces: 3,
        };
        let none = super::plan(&faces, &strict);
        assert_eq!(none.unassigned, 4);
    }
}
