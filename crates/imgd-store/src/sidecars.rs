//! What XMP sidecars are written from: the images whose work is finished, and the faces of one
//! image with the names of their people.

use crate::{Context, Store, StoreError, params};

/// One face of an image, in pixels of the full image after EXIF orientation.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFace {
    /// The face's row id.
    pub id: i64,
    /// Its identity, when it has one.
    pub identity_id: Option<i64>,
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

/// An image with results to show and none being made: present, with a job done and none
/// leased. (Jobs still queued may be waiting for a model that is not installed; their results
/// reach the sidecar when they come.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedImage {
    /// Row id.
    pub id: i64,
    /// Stored path (see `imgd_core::stored_path`).
    pub path: String,
}

/// Every finished image under the folder `root` (or the file `root`), all of them when `root`
/// is `None`, by id. (The cast gives PostgreSQL the type of a parameter it first meets in
/// `IS NULL`.)
const FINISHED: &str = "SELECT i.id, i.path FROM images i
     WHERE i.state = 'present'
       AND (CAST(?1 AS TEXT) IS NULL OR i.path = ?1 OR (i.path >= ?2 AND i.path < ?3))
       AND EXISTS (SELECT 1 FROM jobs j WHERE j.image_id = i.id AND j.state = 'done')
       AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.image_id = i.id AND j.state = 'leased')
     ORDER BY i.id";

impl Store {
    /// The finished images under `root` (a stored path; every image when `None`).
    pub fn finished_images(&self, root: Option<&str>) -> Result<Vec<FinishedImage>, StoreError> {
        let (lo, hi) = match root {
            Some(root) => {
                let root = root.trim_end_matches('/');
                (format!("{root}/"), format!("{root}0"))
            }
            None => (String::new(), String::new()),
        };
        self.db
            .query_map(FINISHED, params![root, lo, hi], |r| {
                Ok(FinishedImage {
                    id: r.get(0)?,
                    path: r.get(1)?,
                })
            })
            .ctx("listing finished images")
    }

    /// Image `id`, when it is finished (see [`FinishedImage`]).
    pub fn finished_image(&self, id: i64) -> Result<Option<FinishedImage>, StoreError> {
        self.db
            .query_opt(
                "SELECT i.id, i.path FROM images i
                 WHERE i.id = ?1 AND i.state = 'present'
                   AND EXISTS (SELECT 1 FROM jobs WHERE image_id = ?1 AND state = 'done')
                   AND NOT EXISTS (SELECT 1 FROM jobs WHERE image_id = ?1 AND state = 'leased')",
                params![id],
                |r| {
                    Ok(FinishedImage {
                        id: r.get(0)?,
                        path: r.get(1)?,
                    })
                },
            )
            .ctx("checking whether an image is finished")
    }

    /// The faces of image `id`, in their order in its `faces` result.
    pub fn image_faces(&self, id: i64) -> Result<Vec<ImageFace>, StoreError> {
        self.db
            .query_map(
                "SELECT f.x, f.y, f.w, f.h, i.name, f.id, f.identity_id
                 FROM faces f LEFT JOIN identities i ON i.id = f.identity_id
                 WHERE f.image_id = ?1 ORDER BY f.idx",
                params![id],
                |r| {
                    Ok(ImageFace {
                        x: r.get(0)?,
                        y: r.get(1)?,
                        w: r.get(2)?,
                        h: r.get(3)?,
                        name: r.get(4)?,
                        id: r.get(5)?,
                        identity_id: r.get(6)?,
                    })
                },
            )
            .ctx("listing an image's faces")
    }
}
