//! XMP sidecars: imgd's results where Lightroom, digiKam and darktable read them.
//!
//! - [`SidecarContent`]: what a sidecar says about one image, made from its results
//!   ([`SidecarContent::from_results`]): `dc:subject` keywords (object labels, people's names,
//!   answers), `lr:hierarchicalSubject` (`imgd|objects|dog`, `imgd|people|Anna`),
//!   `dc:description` (the caption), MWG face regions with names, an optional `xmp:Rating`
//!   from the aesthetic score, and imgd's own namespace for the rest.
//! - [`packet::merge`]: that content merged into an existing sidecar, keeping every field imgd
//!   does not own ([`tree`] keeps what it does not understand as it was written).
//! - [`write_sidecar`]: the sidecar's path ([`Naming`]), the merge, and an atomic write
//!   (a temporary file renamed into place). A sidecar that cannot be parsed is left untouched
//!   and reported. The originals are never modified.

#![deny(missing_docs)]

pub mod packet;
pub mod tree;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// The RDF namespace.
pub const RDF: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#";
/// The `x:xmpmeta` wrapper's namespace.
pub const X: &str = "adobe:ns:meta/";
/// Dublin Core.
pub const DC: &str = "http://purl.org/dc/elements/1.1/";
/// Lightroom (hierarchical keywords).
pub const LR: &str = "http://ns.adobe.com/lightroom/1.0/";
/// XMP basic (`xmp:Rating`).
pub const XMP: &str = "http://ns.adobe.com/xap/1.0/";
/// The Metadata Working Group's regions.
pub const MWG_RS: &str = "http://www.metadataworkinggroup.com/schemas/regions/";
/// The area structure of a region.
pub const ST_AREA: &str = "http://ns.adobe.com/xmp/sType/Area#";
/// The dimensions structure.
pub const ST_DIM: &str = "http://ns.adobe.com/xap/1.0/sType/Dimensions#";
/// imgd's own namespace.
pub const IMGD: &str = "urn:imgd:xmp:1.0/";

/// Errors writing a sidecar.
#[derive(Debug, thiserror::Error)]
pub enum XmpError {
    /// The existing sidecar is not an XMP packet imgd can read; it was left untouched.
    #[error("{path}: cannot be parsed ({message}); left untouched")]
    Unparseable {
        /// The sidecar.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// How a sidecar is named after its image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Naming {
    /// `IMG_0042.xmp` (Lightroom's convention).
    #[default]
    Replace,
    /// `IMG_0042.CR3.xmp` (darktable's and digiKam's).
    Append,
}

/// `[xmp]`: the sidecar settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct XmpSettings {
    /// The daemon writes each image's sidecar as it finishes.
    pub write: bool,
    /// How sidecars are named.
    pub naming: Naming,
    /// Also write sidecars for JPEG and HEIC files (programs often read XMP embedded in those
    /// instead; imgd never modifies an original).
    pub jpeg_heic: bool,
    /// Map the aesthetic score to `xmp:Rating` (1–5) where no rating is set.
    pub rating: bool,
}

impl Default for XmpSettings {
    fn default() -> Self {
        XmpSettings {
            write: false,
            naming: Naming::Replace,
            jpeg_heic: true,
            rating: false,
        }
    }
}

/// A face region: the box's centre and size as fractions of the image after EXIF orientation
/// (MWG's normalized area), and the person's name when known.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceRegion {
    /// Centre, from the left.
    pub x: f64,
    /// Centre, from the top.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
    /// The person's name.
    pub name: Option<String>,
}

/// A face as the store keeps it: pixels of the oriented image, top-left corner and size.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
    /// The person's name, when the face's identity has one.
    pub name: Option<String>,
}

/// What one image's sidecar says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SidecarContent {
    /// `dc:subject` keywords.
    pub keywords: Vec<String>,
    /// `lr:hierarchicalSubject` keywords, all under `imgd|`.
    pub hierarchical: Vec<String>,
    /// `dc:description`: the caption.
    pub description: Option<String>,
    /// Face regions.
    pub faces: Vec<FaceRegion>,
    /// The image's width and height after orientation (`mwg-rs:AppliedToDimensions`).
    pub dimensions: Option<(u64, u64)>,
    /// `xmp:Rating`, 1–5.
    pub rating: Option<u8>,
    /// imgd's own properties: (name, value).
    pub properties: Vec<(String, String)>,
}

impl SidecarContent {
    /// The content of one image from `imgd show`'s document of it (`image`, then one key per
    /// module with a result) and its faces with their names.
    pub fn from_results(show: &Value, faces: &[Face], settings: &XmpSettings) -> Self {
        let mut content = SidecarContent::default();
        let image = &show["image"];
        let (width, height) = (image["width"].as_u64(), image["height"].as_u64());
        content.dimensions = width.zip(height);
        let mut labels: Vec<&str> = show["objects"]["data"]["detections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["label"].as_str())
            .collect();
        let mut seen = std::collections::HashSet::new();
        labels.retain(|label| seen.insert(*label));
        for label in labels {
            content.keywords.push(label.to_string());
            content.hierarchical.push(format!("imgd|objects|{label}"));
        }
        for face in faces {
            if let Some(name) = &face.name {
                content.keywords.push(name.clone());
                content.hierarchical.push(format!("imgd|people|{name}"));
            }
        }
        if let Some((w, h)) = content.dimensions.filter(|(w, h)| *w > 0 && *h > 0) {
            let (w, h) = (w as f64, h as f64);
            content.faces = faces
                .iter()
                .map(|f| FaceRegion {
                    x: ((f.x + f.w / 2.0) / w).clamp(0.0, 1.0),
                    y: ((f.y + f.h / 2.0) / h).clamp(0.0, 1.0),
                    w: (f.w / w).clamp(0.0, 1.0),
                    h: (f.h / h).clamp(0.0, 1.0),
                    name: f.name.clone(),
                })
                .collect();
        }
        let caption = &show["caption"];
        content.description = caption["caption"]
            .as_str()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        if let Some(answers) = caption["data"]["answers"].as_object() {
            for (question, answer) in answers {
                let Some(answer) = answer.as_str().map(str::trim).filter(|a| !a.is_empty()) else {
                    continue;
                };
                content.keywords.push(answer.to_string());
                content
                    .hierarchical
                    .push(format!("imgd|{question}|{}", answer.replace('|', "/")));
            }
        }
        content.add_properties(show, settings);
        content
    }

    /// imgd's own namespace: the aesthetic score (and the rating from it), the technical
    /// flags, and each module's model.
    fn add_properties(&mut self, show: &Value, settings: &XmpSettings) {
        if let Some(score) = show["aesthetic"]["score"].as_f64() {
            self.properties
                .push(("AestheticScore".into(), format!("{score:.3}")));
            if settings.rating {
                self.rating = Some(rating_of(score));
            }
        }
        let technical = &show["technical"];
        for (column, property) in [
            ("is_blurry", "Blurry"),
            ("is_dark", "Dark"),
            ("is_overexposed", "Overexposed"),
        ] {
            if let Some(flag) = technical[column].as_i64() {
                self.properties
                    .push((property.into(), (flag != 0).to_string()));
            }
        }
        if let Some(jobs) = show["jobs"].as_object() {
            for (module, job) in jobs {
                if let Some(model) = job["model_id"].as_str() {
                    let mut name = String::from("Model");
                    for part in module.split('_') {
                        let mut chars = part.chars();
                        if let Some(first) = chars.next() {
                            name.extend(first.to_uppercase());
                            name.push_str(chars.as_str());
                        }
                    }
                    self.properties.push((name, model.to_string()));
                }
            }
        }
    }
}

/// The `xmp:Rating` of an aesthetic score (LAION's predictor, about 1–10, most photos 4–7):
/// below 4 one star, then one more per point, five from 7.
pub fn rating_of(score: f64) -> u8 {
    (score.floor() - 2.0).clamp(1.0, 5.0) as u8
}

/// The sidecar of `image` named as `naming` says.
pub fn sidecar_path(image: &Path, naming: Naming) -> PathBuf {
    match naming {
        Naming::Replace => image.with_extension("xmp"),
        Naming::Append => {
            let mut name = image.as_os_str().to_os_string();
            name.push(".xmp");
            PathBuf::from(name)
        }
    }
}

/// What [`write_sidecar`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// The sidecar was written (created or updated).
    Written(PathBuf),
    /// The sidecar already said this; nothing was written.
    Unchanged(PathBuf),
    /// No sidecar for this format with these settings.
    Skipped,
}

/// Writes or updates the sidecar of `image` (of `format`, as `imgd enqueue` named it) with
/// `content`, merged into what is there. Atomic: a temporary file beside it, renamed into place.
pub fn write_sidecar(
    image: &Path,
    format: &str,
    content: &SidecarContent,
    settings: &XmpSettings,
) -> Result<Written, XmpError> {
    if !settings.jpeg_heic && matches!(format, "jpeg" | "heic") {
        return Ok(Written::Skipped);
    }
    let path = sidecar_path(image, settings.naming);
    let io = |source| XmpError::Io {
        path: path.clone(),
        source,
    };
    let existing = match std::fs::read(&path) {
        Ok(bytes) => Some(String::from_utf8(bytes).map_err(|e| XmpError::Unparseable {
            path: path.clone(),
            message: e.to_string(),
        })?),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(io(err)),
    };
    let merged =
        packet::merge(existing.as_deref(), content).map_err(|message| XmpError::Unparseable {
            path: path.clone(),
            message,
        })?;
    if existing.as_deref() == Some(merged.as_str()) {
        return Ok(Written::Unchanged(path));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut temporary = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)
        .map_err(io)?;
    // The sidecar keeps its permissions; a new one is readable by all, as files usually are.
    let permissions = match std::fs::metadata(&path) {
        Ok(metadata) => metadata.permissions(),
        Err(_) => std::os::unix::fs::PermissionsExt::from_mode(0o644),
    };
    temporary
        .write_all(merged.as_bytes())
        .and_then(|()| temporary.as_file().set_permissions(permissions))
        .and_then(|()| temporary.as_file().sync_all())
        .map_err(io)?;
    temporary.persist(&path).map_err(|e| io(e.error))?;
    Ok(Written::Written(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_become_keywords_caption_regions_and_properties() {
        let show = serde_json::json!({
            "image": { "width": 4000, "height": 3000, "format": "raw" },
            "jobs": {
                "embedding": { "state": "done", "model_id": "clip-vit-b32" },
                "faces": { "state": "done", "model_id": "mtcnn" },
                "metadata": { "state": "done", "model_id": null },
            },
            "objects": { "data": { "detections": [
                { "label": "dog", "score": 0.9 },
                { "label": "person", "score": 0.8 },
                { "label": "dog", "score": 0.5 },
            ] } },
            "caption": {
                "caption": " a dog on a beach ",
                "data": { "answers": { "lighting": "soft | warm", "mood": "" } },
            },
            "aesthetic": { "score": 6.4 },
            "technical": { "is_blurry": 0, "is_dark": 1 },
        });
        let faces = [
            Face {
                x: 1000.0,
                y: 600.0,
                w: 400.0,
                h: 600.0,
                name: Some("Anna".into()),
            },
            Face {
                x: 0.0,
                y: 0.0,
                w: 100.0,
                h: 100.0,
                name: None,
            },
        ];
        let settings = XmpSettings {
            rating: true,
            ..XmpSettings::default()
        };
        let content = SidecarContent::from_results(&show, &faces, &settings);
        assert_eq!(content.keywords, ["dog", "person", "Anna", "soft | warm"]);
        assert_eq!(
            content.hierarchical,
            [
                "imgd|objects|dog",
                "imgd|objects|person",
                "imgd|people|Anna",
                "imgd|lighting|soft / warm"
            ]
        );
        assert_eq!(content.description.as_deref(), Some("a dog on a beach"));
        assert_eq!(content.dimensions, Some((4000, 3000)));
        assert_eq!(
            content.faces[0],
            FaceRegion {
                x: 0.3,
                y: 0.3,
                w: 0.1,
                h: 0.2,
                name: Some("Anna".into())
            }
        );
        assert_eq!(content.faces[1].name, None);
        assert_eq!(content.rating, Some(4));
        for (name, value) in [
            ("AestheticScore", "6.400"),
            ("Blurry", "false"),
            ("Dark", "true"),
            ("ModelEmbedding", "clip-vit-b32"),
            ("ModelFaces", "mtcnn"),
        ] {
            assert!(
                content
                    .properties
                    .contains(&(name.to_string(), value.to_string())),
                "{name}: {:?}",
                content.properties
            );
        }
        assert!(!content.properties.iter().any(|(n, _)| n == "ModelMetadata"));
    }

    #[test]
    fn sidecar_names_and_ratings() {
        let image = Path::new("/p/IMG_0042.CR3");
        assert_eq!(
            sidecar_path(image, Naming::Replace),
            Path::new("/p/IMG_0042.xmp")
        );
        assert_eq!(
            sidecar_path(image, Naming::Append),
            Path::new("/p/IMG_0042.CR3.xmp")
        );
        assert_eq!(
            [2.0, 4.2, 5.5, 6.9, 7.1, 9.5].map(rating_of),
            [1, 2, 3, 4, 5, 5]
        );
    }
}
