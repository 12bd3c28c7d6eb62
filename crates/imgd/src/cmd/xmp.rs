//! `imgd xmp write`, and the daemon's sidecar thread (`[xmp] write = true`).

use imgd_store::location::Location;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use imgd_store::Store;
use imgd_store::report::ImageRef;
use imgd_store::sidecars::FinishedImage;
use imgd_xmp::{Face, SidecarContent, Written, XmpSettings, write_sidecar};
use serde_json::json;

use super::config::FileConfig;
use super::{open_store, print_json};
use crate::cli::{XmpArgs, XmpCommand};

pub fn run(db: &Location, args: XmpArgs) -> Result<ExitCode> {
    match args.command {
        XmpCommand::Write {
            paths,
            config,
            json,
        } => write(db, &paths, config.as_deref(), json),
    }
}

/// What a batch of sidecar writes did.
#[derive(Debug, Default)]
struct Report {
    written: u64,
    unchanged: u64,
    skipped: u64,
    problems: Vec<String>,
}

fn write(db: &Location, paths: &[PathBuf], config: Option<&Path>, json: bool) -> Result<ExitCode> {
    let settings = FileConfig::load(config)?.xmp;
    let store = open_store(db)?;
    let roots: Vec<Option<String>> = if paths.is_empty() {
        vec![None]
    } else {
        paths
            .iter()
            .map(|path| {
                let path = std::fs::canonicalize(path)
                    .with_context(|| format!("cannot find {}", path.display()))?;
                imgd_core::stored_path::encode(&path)
                    .map(Some)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
            })
            .collect::<Result<_>>()?
    };
    let mut report = Report::default();
    for root in &roots {
        for image in store.finished_images(root.as_deref())? {
            match write_one(&store, &image, &settings) {
                Ok(Written::Written(_)) => report.written += 1,
                Ok(Written::Unchanged(_)) => report.unchanged += 1,
                Ok(Written::Skipped) => report.skipped += 1,
                Err(problem) => report.problems.push(problem),
            }
        }
    }
    if json {
        print_json(&json!({
            "written": report.written,
            "unchanged": report.unchanged,
            "skipped": report.skipped,
            "problems": report.problems,
        }))?;
    } else {
        for problem in &report.problems {
            eprintln!("imgd: warning: {problem}");
        }
        println!(
            "{} sidecars written, {} unchanged, {} skipped (JPEG/HEIC with [xmp] jpeg_heic = \
             false), {} problems",
            report.written,
            report.unchanged,
            report.skipped,
            report.problems.len()
        );
    }
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Writes or updates one image's sidecar from its results; the error names the image.
fn write_one(
    store: &Store,
    image: &FinishedImage,
    settings: &XmpSettings,
) -> Result<Written, String> {
    let shown = imgd_core::stored_path::display(&image.path);
    let path = imgd_core::stored_path::decode(&image.path);
    if !path.is_file() {
        return Err(format!(
            "{shown}: the image is no longer there; no sidecar written"
        ));
    }
    let show = store
        .show(&ImageRef::Id(image.id))
        .map_err(|e| format!("{shown}: {e}"))?;
    let faces: Vec<Face> = store
        .image_faces(image.id)
        .map_err(|e| format!("{shown}: {e}"))?
        .into_iter()
        .map(|f| Face {
            x: f.x,
            y: f.y,
            w: f.w,
            h: f.h,
            name: f.name,
        })
        .collect();
    let content = SidecarContent::from_results(&show, &faces, settings);
    let format = show["image"]["format"].as_str().unwrap_or_default();
    write_sidecar(&path, format, &content, settings).map_err(|e| e.to_string())
}

/// The daemon's sidecar thread: writes the sidecar of each committed image with results and
/// nothing in progress, off the pipeline's threads. It ends when every sender is dropped.
pub fn spawn_writer(
    db: &Location,
    settings: XmpSettings,
    committed: crossbeam_channel::Receiver<i64>,
) -> Result<JoinHandle<()>> {
    let store = open_store(db)?;
    std::thread::Builder::new()
        .name("imgd-xmp".into())
        .spawn(move || {
            for id in committed {
                let image = match store.finished_image(id) {
                    Ok(Some(image)) => image,
                    Ok(None) => continue,
                    Err(err) => {
                        tracing::warn!("xmp: image {id}: {err}");
                        continue;
                    }
                };
                if let Err(problem) = write_one(&store, &image, &settings) {
                    tracing::warn!("xmp: {problem}");
                }
            }
        })
        .context("cannot start the XMP sidecar thread")
}
