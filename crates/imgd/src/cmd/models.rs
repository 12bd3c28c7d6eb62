//! `imgd models list|fetch|verify`: the model manifest (`models/manifest.toml`, or
//! `IMGD_MANIFEST`) against the files in the models folders.

use std::process::ExitCode;

use anyhow::Result;
use imgd_infer::manifest::{self, Dirs, FileStatus, Manifest, ModelEntry};
use serde_json::json;

use crate::cli::{ModelsArgs, ModelsCommand};

/// Runs `imgd models …`.
pub fn run(args: ModelsArgs) -> Result<ExitCode> {
    let manifest = Manifest::load_or_builtin(super::config::env_path("IMGD_MANIFEST").as_deref())?;
    let dirs = Dirs::current();
    match args.command {
        ModelsCommand::List { json } => list(&manifest, &dirs, json),
        ModelsCommand::Fetch { ids } => fetch(&manifest, &dirs, &ids),
        ModelsCommand::Verify { json } => verify(&manifest, &dirs, json),
    }
}

/// Presence by size only (cheap); `verify` hashes.
fn presence(model: &ModelEntry, dirs: &Dirs) -> &'static str {
    let mut missing = 0;
    let mut wrong_size = 0;
    for file in &model.files {
        match std::fs::metadata(file.local_path(dirs)) {
            Ok(meta) if file.size.is_none_or(|size| size == meta.len()) => {}
            Ok(_) => wrong_size += 1,
            Err(_) => missing += 1,
        }
    }
    match (missing, wrong_size) {
        (0, 0) => "installed",
        (_, 1..) => "damaged",
        (m, 0) if m == model.files.len() => "missing",
        _ => "partial",
    }
}

fn source_kind(model: &ModelEntry) -> &'static str {
    if model.files.iter().all(|f| f.from_registry()) {
        "registry"
    } else {
        "download"
    }
}

fn human_size(model: &ModelEntry) -> String {
    if model.files.iter().any(|f| f.size.is_none()) {
        return "?".to_string();
    }
    let bytes: u64 = model.files.iter().filter_map(|f| f.size).sum();
    if bytes < 1_000_000 {
        format!("{:.0} kB", bytes as f64 / 1e3)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

fn list(manifest: &Manifest, dirs: &Dirs, as_json: bool) -> Result<ExitCode> {
    if as_json {
        let models: Vec<_> = manifest
            .models
            .iter()
            .map(|model| {
                json!({
                    "id": model.id,
                    "version": model.version,
                    "module": model.module,
                    "licence": model.licence,
                    "status": presence(model, dirs),
                    "source": source_kind(model),
                    "input": model.input,
                    "files": model.files.iter().map(|file| json!({
                        "path": file.local_path(dirs),
                        "size": file.size,
                        "sha256": file.sha256,
                        "source": file.source(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        super::print_json(&models)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Columns as wide as their longest entry.
    let width = |header: &str, cell: &dyn Fn(&ModelEntry) -> usize| {
        manifest
            .models
            .iter()
            .map(cell)
            .fold(header.len(), usize::max)
    };
    let id_w = width("id", &|m| m.id.len());
    let module_w = width("module", &|m| m.module.len());
    let version_w = width("version", &|m| m.version.len());
    println!(
        "{:<id_w$} {:<module_w$} {:<version_w$} {:<10} {:<9} {:>9}  source",
        "id", "module", "version", "status", "kind", "size"
    );
    for model in &manifest.models {
        println!(
            "{:<id_w$} {:<module_w$} {:<version_w$} {:<10} {:<9} {:>9}  {}",
            model.id,
            model.module,
            model.version,
            presence(model, dirs),
            source_kind(model),
            human_size(model),
            model.files[0].source()
        );
    }
    println!(
        "\nmodels folder: {}\nregistry folder: {} (scripts/fetch-registry-models.sh)",
        dirs.models.display(),
        dirs.registry.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn fetch(manifest: &Manifest, dirs: &Dirs, ids: &[String]) -> Result<ExitCode> {
    let chosen: Vec<&ModelEntry> = if ids.is_empty() {
        // Everything downloadable; registry models are the setup script's job.
        manifest
            .models
            .iter()
            .filter(|m| source_kind(m) == "download")
            .collect()
    } else {
        ids.iter()
            .map(|id| manifest.get(id))
            .collect::<Result<_, _>>()?
    };
    let mut failed = false;
    for model in chosen {
        eprintln!("{} ({})", model.id, model.version);
        match manifest::fetch_model(model, dirs, true) {
            Ok(files) => {
                for file in files {
                    let state = match (file.already_present, file.verified) {
                        (true, true) => "present, verified",
                        (true, false) => "present, UNVERIFIED (manifest sha256 unknown)",
                        (false, true) => "fetched, verified",
                        (false, false) => "fetched, UNVERIFIED (manifest sha256 unknown)",
                    };
                    println!("  {}  sha256 {}  {state}", file.path.display(), file.sha256);
                }
            }
            Err(error) => {
                eprintln!("  error: {error}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn verify(manifest: &Manifest, dirs: &Dirs, as_json: bool) -> Result<ExitCode> {
    let mut rows = Vec::new();
    let mut bad = false;
    for model in &manifest.models {
        for file in &model.files {
            let path = file.local_path(dirs);
            let status = manifest::verify_file(&path, file)?;
            bad |= matches!(status, FileStatus::Mismatch { .. });
            rows.push((model, file, path, status));
        }
    }
    if as_json {
        let value: Vec<_> = rows
            .iter()
            .map(|(model, file, path, status)| {
                json!({
                    "id": model.id,
                    "path": path,
                    "expected_sha256": file.sha256,
                    "expected_size": file.size,
                    "result": status,
                })
            })
            .collect();
        super::print_json(&value)?;
    } else {
        for (model, file, path, status) in &rows {
            let detail = match status {
                FileStatus::Ok => String::new(),
                FileStatus::Missing => format!("  (from {})", file.source()),
                FileStatus::Unverified { sha256 } => {
                    format!("  sha256 {sha256}: the manifest does not know this digest")
                }
                FileStatus::Mismatch { size, sha256 } => format!(
                    "  size {size} sha256 {sha256}, expected size {} sha256 {}",
                    file.size.map_or("?".to_string(), |s| s.to_string()),
                    file.sha256
                ),
            };
            println!(
                "{:<10} {:<14} {}{detail}",
                status.word(),
                model.id,
                path.display()
            );
        }
    }
    Ok(if bad {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
