//! One library, several mount points: `[store] path_map` says where the folders the database
//! names are on this host (`"/mnt/photos" = "/Volumes/photos"`). The database keeps one
//! spelling of every path (the stored one); this host reads `/Volumes/photos/x.jpg` for a
//! stored `/mnt/photos/x.jpg`, and registers its `/Volumes/photos/y.jpg` as
//! `/mnt/photos/y.jpg`, so hosts that mount a share in different places, or a library whose
//! mount point moved, share its images, results and queue without re-analysing anything.
//!
//! [`stored_path`](crate::stored_path) applies the map [`install`]ed for the process to every
//! path it encodes, decodes or displays.

use std::borrow::Cow;
use std::sync::OnceLock;

/// Why a path map cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathMapError {
    /// A prefix that is not an absolute path.
    #[error("store.path_map: {0:?} is not an absolute path")]
    NotAbsolute(String),
    /// Two stored prefixes map to one local one, or one to two.
    #[error("store.path_map: {0:?} appears twice")]
    Repeated(String),
    /// A different map was installed already.
    #[error("a different path map is installed already")]
    AlreadyInstalled,
}

/// Stored prefixes and this host's prefixes for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathMap {
    /// (stored, local), the longest stored prefix first.
    pairs: Vec<(String, String)>,
}

fn normalized(prefix: &str) -> Result<String, PathMapError> {
    if !prefix.starts_with('/') {
        return Err(PathMapError::NotAbsolute(prefix.to_string()));
    }
    let trimmed = prefix.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_string())
}

/// `path` with `from` replaced by `to` when `from` is a whole-component prefix of it.
fn replaced<'a>(path: &'a str, from: &str, to: &str) -> Option<Cow<'a, str>> {
    let rest = path.strip_prefix(from)?;
    if from == "/" {
        return Some(Cow::Owned(format!("{}/{rest}", to.trim_end_matches('/'))));
    }
    (rest.is_empty() || rest.starts_with('/')).then(|| Cow::Owned(format!("{to}{rest}")))
}

impl PathMap {
    /// A map from (stored prefix, this host's prefix) pairs; both absolute, each at most once.
    pub fn new<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, PathMapError> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (stored, local) in pairs {
            let (stored, local) = (normalized(stored)?, normalized(local)?);
            if out.iter().any(|(s, _)| *s == stored) {
                return Err(PathMapError::Repeated(stored));
            }
            if out.iter().any(|(_, l)| *l == local) {
                return Err(PathMapError::Repeated(local));
            }
            out.push((stored, local));
        }
        out.sort_by_key(|(stored, _)| std::cmp::Reverse(stored.len()));
        Ok(PathMap { pairs: out })
    }

    /// Whether it maps nothing.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Where the stored `path` is on this host.
    pub fn to_local<'a>(&self, path: &'a str) -> Cow<'a, str> {
        self.pairs
            .iter()
            .find_map(|(stored, local)| replaced(path, stored, local))
            .unwrap_or(Cow::Borrowed(path))
    }

    /// How the database spells this host's `path`.
    pub fn to_stored<'a>(&self, path: &'a str) -> Cow<'a, str> {
        let mut by_local: Vec<&(String, String)> = self.pairs.iter().collect();
        by_local.sort_by_key(|(_, local)| std::cmp::Reverse(local.len()));
        by_local
            .into_iter()
            .find_map(|(stored, local)| replaced(path, local, stored))
            .unwrap_or(Cow::Borrowed(path))
    }
}

static INSTALLED: OnceLock<PathMap> = OnceLock::new();

/// Makes `map` the process's map (once; installing the same map again is fine).
pub fn install(map: PathMap) -> Result<(), PathMapError> {
    let installed = INSTALLED.get_or_init(|| map.clone());
    if *installed == map {
        Ok(())
    } else {
        Err(PathMapError::AlreadyInstalled)
    }
}

/// The process's map (empty unless [`install`]ed).
pub fn installed() -> &'static PathMap {
    static EMPTY: PathMap = PathMap { pairs: Vec::new() };
    INSTALLED.get().unwrap_or(&EMPTY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_map_whole_components_both_ways() {
        let map = PathMap::new([
            ("/mnt/photos", "/Volumes/photos/"),
            ("/mnt/photos/raw", "/srv/raw"),
        ])
        .unwrap();
        assert_eq!(
            map.to_local("/mnt/photos/2024/a.jpg"),
            "/Volumes/photos/2024/a.jpg"
        );
        assert_eq!(map.to_local("/mnt/photos"), "/Volumes/photos");
        // The longest prefix wins.
        assert_eq!(map.to_local("/mnt/photos/raw/b.dng"), "/srv/raw/b.dng");
        // Not a whole component: untouched.
        assert_eq!(map.to_local("/mnt/photos2/c.jpg"), "/mnt/photos2/c.jpg");
        assert_eq!(
            map.to_stored("/Volumes/photos/2024/a.jpg"),
            "/mnt/photos/2024/a.jpg"
        );
        assert_eq!(map.to_stored("/srv/raw/b.dng"), "/mnt/photos/raw/b.dng");
        assert_eq!(map.to_stored("/home/x.jpg"), "/home/x.jpg");
        for path in ["/mnt/photos/x/y.jpg", "/mnt/photos/raw/z", "/other"] {
            assert_eq!(map.to_stored(&map.to_local(path)), path);
        }
    }

    #[test]
    fn relative_or_repeated_prefixes_are_refused() {
        assert_eq!(
            PathMap::new([("photos", "/x")]),
            Err(PathMapError::NotAbsolute("photos".into()))
        );
        assert!(matches!(
            PathMap::new([("/a", "/x"), ("/b", "/x/")]),
            Err(PathMapError::Repeated(_))
        ));
        assert!(PathMap::new([]).unwrap().is_empty());
    }
}
