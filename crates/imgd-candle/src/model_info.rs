//! The model id and version stored with every result a model produces.

use std::fs;
use std::path::{Path, PathBuf};

use crate::ModelError;

/// The model id and version stored with every result a model produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// A short stable name (`clip-vit-b32`).
    pub id: String,
    /// Changes whenever the weights change.
    pub version: String,
}

impl ModelInfo {
    /// The id and version of the model in `dir` whose weights are `weights`:
    ///
    /// - the id is `imgd_model_id` in `config.json` when set (what `imgd models fetch`
    ///   writes), else the preset id the architecture matches (`fallback_id`), else the
    ///   folder's name;
    /// - the version is `imgd_model_version` in `config.json` when set, else `fp-` and
    ///   [`fingerprint`] of the weights, so different weights of one shape get different
    ///   versions without reading a whole file of hundreds of MB at start-up.
    pub fn resolve(
        dir: &Path,
        weights: &Path,
        fallback_id: Option<&str>,
    ) -> Result<Self, ModelError> {
        let config: serde_json::Value = fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(serde_json::Value::Null);
        let field = |key: &str| {
            config
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        };
        let id = field("imgd_model_id")
            .or_else(|| fallback_id.map(str::to_string))
            .or_else(|| {
                dir.file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "model".to_string());
        let version = match field("imgd_model_version") {
            Some(version) => version,
            None => format!("fp-{}", fingerprint(weights)?),
        };
        Ok(ModelInfo { id, version })
    }
}

/// The weights fingerprint of [`ModelInfo::resolve`]: 16 hex digits
/// ([`imgd_vision::fingerprint`]).
pub fn fingerprint(path: &Path) -> Result<String, ModelError> {
    imgd_vision::fingerprint(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// `dir/name`, or an error naming it when it does not exist.
pub fn require(dir: &Path, name: &str) -> Result<PathBuf, ModelError> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ModelError::MissingFile(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_comes_from_config_then_preset_then_folder_and_the_version_from_the_weights() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("my-model");
        fs::create_dir(&folder).unwrap();
        let weights = folder.join("model.safetensors");
        fs::write(&weights, b"weights one").unwrap();
        let by_folder = ModelInfo::resolve(&folder, &weights, None).unwrap();
        assert_eq!(by_folder.id, "my-model");
        assert!(by_folder.version.starts_with("fp-"));
        assert_eq!(
            ModelInfo::resolve(&folder, &weights, Some("preset"))
                .unwrap()
                .id,
            "preset"
        );
        fs::write(&weights, b"weights two").unwrap();
        let changed = ModelInfo::resolve(&folder, &weights, None).unwrap();
        assert_ne!(changed.version, by_folder.version);
        fs::write(
            folder.join("config.json"),
            r#"{"imgd_model_id": "named", "imgd_model_version": "v7"}"#,
        )
        .unwrap();
        let named = ModelInfo::resolve(&folder, &weights, Some("preset")).unwrap();
        assert_eq!((named.id.as_str(), named.version.as_str()), ("named", "v7"));
        assert!(matches!(
            require(&folder, "absent.json"),
            Err(ModelError::MissingFile(_))
        ));
    }
}
