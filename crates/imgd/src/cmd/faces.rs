//! `imgd faces`: identities (people) found by clustering face embeddings.

use imgd_store::location::Location;
use std::process::ExitCode;

use anyhow::{Result, bail};
use imgd_faces::cluster::{ClusterConfig, FaceVector};
use imgd_faces::identities::{ClusterReport, plan_by_model};
use imgd_store::Store;
use serde_json::json;

use super::{open_store, print_json};
use crate::cli::{FacesArgs, FacesCommand};

pub fn run(db: &Location, args: FacesArgs) -> Result<ExitCode> {
    let store = open_store(db)?;
    match args.command {
        FacesCommand::List { json, id } => {
            if let Some(id) = id {
                let faces = store.identity_faces(id)?;
                if json {
                    let faces: Vec<_> = faces
                        .iter()
                        .map(|f| {
                            json!({ "face": f.id, "path": f.path, "box": f.bbox, "score": f.score })
                        })
                        .collect();
                    print_json(&json!({ "identity": id, "faces": faces }))?;
                } else {
                    for f in &faces {
                        let b = f.bbox;
                        println!(
                            "face {:>7}  {:.3}  [{:.0}, {:.0}, {:.0}, {:.0}]  {}",
                            f.id, f.score, b[0], b[1], b[2], b[3], f.path
                        );
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            let identities = store.identities()?;
            let summary = store.faces_summary()?;
            if json {
                print_json(&json!({ "summary": summary, "identities": identities }))?;
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{} faces in {} images; {} embedded, {} not embedded; {} identities ({} named); \
                 {} embedded faces without an identity",
                summary.faces,
                summary.images_analysed,
                summary.embedded,
                summary.not_embedded,
                summary.identities,
                summary.named,
                summary.unassigned
            );
            if summary.not_embedded > 0 {
                println!(
                    "note: faces without an embedding cannot be grouped into identities; install \
                     ArcFace (w600k_r50.onnx, `imgd models fetch`) and re-run the faces module \
                     (imgd enqueue --modules faces --force PATH)"
                );
            }
            if !identities.is_empty() {
                println!();
                println!("{:>6} {:>6}  {:<24} sample", "id", "faces", "name");
            }
            for i in &identities {
                println!(
                    "{:>6} {:>6}  {:<24} {}",
                    i.id,
                    i.face_count,
                    i.name.as_deref().unwrap_or("-"),
                    i.sample_path.as_deref().unwrap_or("")
                );
            }
        }
        FacesCommand::Name { id, name } => {
            let name = name.join(" ");
            let name = (!name.trim().is_empty() && name != "-").then_some(name);
            store.name_identity(id, name.as_deref())?;
            match name {
                Some(name) => eprintln!("identity {id} is now `{}`", name.trim()),
                None => eprintln!("identity {id} has no name now"),
            }
        }
        FacesCommand::Merge { into, from } => {
            let moved = store.merge_identities(into, from)?;
            eprintln!("merged identity {from} into {into} ({moved} faces moved)");
        }
        FacesCommand::Split { id, faces } => {
            let detached = store.split_identity(id, &faces)?;
            eprintln!(
                "detached {detached} faces from identity {id}; `imgd faces cluster` assigns them \
                 again (use a smaller --max-distance to keep them apart)"
            );
        }
        FacesCommand::Cluster {
            max_distance,
            min_faces,
            reset,
            json,
        } => {
            if !(0.0..=2.0).contains(&max_distance) || min_faces == 0 {
                bail!("--max-distance must be within 0..2 and --min-faces at least 1");
            }
            let config = ClusterConfig {
                max_distance,
                min_faces,
            };
            let report = cluster_identities(&store, &config, reset)?;
            if json {
                print_json(&report)?;
            } else {
                eprintln!(
                    "{} faces without an identity: {} joined existing identities, {} formed {} \
                     new identities, {} left unassigned",
                    report.considered,
                    report.joined,
                    report.in_new_identities,
                    report.new_identities,
                    report.unassigned
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One clustering run on the database: dissolves the unnamed identities first when `reset`,
/// plans every embedding model's faces, and writes each plan in one transaction.
pub fn cluster_identities(
    store: &Store,
    config: &ClusterConfig,
    reset: bool,
) -> Result<ClusterReport> {
    let mut report = ClusterReport::default();
    if reset {
        report.reset = store.reset_unnamed_identities()?;
    }
    let faces = store.face_embeddings()?.into_iter().map(|face| {
        let vector = FaceVector {
            id: face.face_id,
            identity: face.identity_id,
            vector: face.vector,
        };
        (face.model, vector)
    });
    for written in plan_by_model(faces, config) {
        let created = store.apply_clusters(&written.plan.joins, &written.plan.new_identities)?;
        report.record(&written, created.len());
    }
    Ok(report)
}
