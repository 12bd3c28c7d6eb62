//! Faces and identities: the SQL of the faces module (`migrations/0002_faces.sql`).
//!
//! - [`replace_faces`] runs inside the writer's commit, right after an image's
//!   `result_faces` row is upserted: it rewrites the image's rows in `faces` from the result's
//!   JSON, scales the coordinates from the analysed tier to the full-size image, stores each
//!   face's embedding (the row's `vectors`, never JSON) in `faces.embedding` as little-endian
//!   f32 bytes, and keeps the identity of a face that
//!   was there before (same place, IoU ≥ 0.5), so re-analysing an image keeps its names.
//! - Clustering reads [`Store::face_embeddings`] and writes [`Store::apply_clusters`]; the
//!   algorithm is `imgd_faces::cluster`.
//! - `imgd faces`: [`Store::identities`], [`Store::name_identity`],
//!   [`Store::merge_identities`], [`Store::split_identity`], [`Store::faces_summary`].
//!
//! Identity names are part of each image's search row (the `names` column); every command
//! that changes a name or which faces carry it rewrites the search rows of the images
//! concerned (those whose jobs are all finished; the others get theirs when they finish).

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Value, json};

use crate::db::{Db, Dialect};
use crate::results::refresh_search_row;
use crate::{Context, Store, StoreError, now_ms, params};
use imgd_core::Registry;

/// Errors of the identity commands.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No identity has this id.
    #[error("no identity {0}")]
    NoSuchIdentity(i64),
    /// Another identity already has this name.
    #[error(
        "the name `{name}` belongs to identity {owner}; merge the two with `imgd faces merge {owner} ID`"
    )]
    NameTaken {
        /// The name.
        name: String,
        /// The identity that has it.
        owner: i64,
    },
    /// A request that makes no sense (merging an identity into itself, an empty name).
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One face's embedding, for clustering.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEmbedding {
    /// The face's row id.
    pub face_id: i64,
    /// Its identity.
    pub identity_id: Option<i64>,
    /// The model that made the embedding.
    pub model: String,
    /// The vector (L2-normalised).
    pub vector: Vec<f32>,
}

/// One identity, as `imgd faces list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdentitySummary {
    /// Its id.
    pub id: i64,
    /// Its name, if named.
    pub name: Option<String>,
    /// Faces assigned.
    pub face_count: i64,
    /// When clustering (or a merge) created it.
    pub created_ms: i64,
    /// The image of its best-scoring face, for a look.
    pub sample_path: Option<String>,
}

/// One face of an identity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdentityFace {
    /// The face's row id.
    pub id: i64,
    /// Its image.
    pub image_id: i64,
    /// The image's path, as this host names it.
    pub path: String,
    /// `[x, y, w, h]` in the image's pixels.
    pub bbox: [f64; 4],
    /// The detector's score.
    pub score: f64,
}

/// Face counts, as `imgd faces list` and `imgd status` show them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FacesSummary {
    /// Images with a faces result.
    pub images_analysed: i64,
    /// Faces detected.
    pub faces: i64,
    /// Faces with an embedding.
    pub embedded: i64,
    /// Faces without one (no embedding model was installed when they were analysed).
    pub not_embedded: i64,
    /// Embedded faces without an identity (noise, or waiting for `imgd faces cluster`).
    pub unassigned: i64,
    /// Identities.
    pub identities: i64,
    /// Named identities.
    pub named: i64,
    /// Faces results per embedding model (`null`: detected only), as
    /// `result_faces.data.embedding_model` says.
    pub embedding_models: Vec<(Option<String>, i64)>,
}

fn f64_at(value: &Value, index: usize) -> Option<f64> {
    value.get(index).and_then(Value::as_f64)
}

/// Rewrites the `faces` rows of one image from its `result_faces` row (see the module docs)
/// and stores the data back in full-image coordinates.
pub(crate) fn replace_faces(
    tx: &Db,
    image_id: i64,
    row: &imgd_core::ResultRow,
) -> Result<(), StoreError> {
    let data = &row.data;
    let size: Option<(Option<f64>, Option<f64>)> = tx
        .query_opt(
            "SELECT width, height FROM images WHERE id = ?1",
            params![image_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ctx("reading the image size")?;
    let frame = data.get("frame");
    let (tw, th) = (
        frame.and_then(|f| f64_at(f, 0)),
        frame.and_then(|f| f64_at(f, 1)),
    );
    let (sx, sy, coords) = match (size, tw, th) {
        (Some((Some(w), Some(h))), Some(tw), Some(th)) if tw > 0.0 && th > 0.0 => {
            (w / tw, h / th, "image")
        }
        _ => (1.0, 1.0, "tier"),
    };
    let embedding_model = data
        .get("embedding_model")
        .and_then(Value::as_str)
        .map(str::to_string);

    // The faces there before, to carry their identities over.
    let old: Vec<([f64; 4], i64)> = tx
        .query_map(
            "SELECT x, y, w, h, identity_id FROM faces
             WHERE image_id = ?1 AND identity_id IS NOT NULL",
            params![image_id],
            |r| Ok(([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?], r.get(4)?)),
        )
        .ctx("reading old faces")?;
    let mut touched: BTreeSet<i64> = old.iter().map(|o| o.1).collect();
    let mut old_used = vec![false; old.len()];
    tx.execute("DELETE FROM faces WHERE image_id = ?1", params![image_id])
        .ctx("deleting old faces")?;

    let round = |v: f64| (v * 100.0).round() / 100.0;
    let mut stored = Vec::new();
    let faces = data.get("faces").and_then(Value::as_array);
    for (idx, face) in faces.into_iter().flatten().enumerate() {
        let b = face.get("box");
        let Some([x, y, w, h]) =
            b.and_then(|b| Some([f64_at(b, 0)?, f64_at(b, 1)?, f64_at(b, 2)?, f64_at(b, 3)?]))
        else {
            continue;
        };
        let bx = [round(x * sx), round(y * sy), round(w * sx), round(h * sy)];
        let landmarks: Vec<[f64; 2]> = face
            .get("landmarks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| Some([round(f64_at(p, 0)? * sx), round(f64_at(p, 1)? * sy)]))
            .collect();
        let score = face.get("score").and_then(Value::as_f64).unwrap_or(0.0);
        let embedding: Option<Vec<u8>> = row
            .vectors
            .get(idx)
            .filter(|v| !v.is_empty())
            .map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect());
        // The best-overlapping old face with an identity, if it overlaps enough.
        let identity = old
            .iter()
            .enumerate()
            .filter(|(k, _)| !old_used[*k])
            .map(|(k, (o, id))| (k, iou(&bx, o), *id))
            .filter(|(_, overlap, _)| *overlap >= 0.5)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(k, _, id)| {
                old_used[k] = true;
                id
            });
        touched.extend(identity);
        let landmarks_json = serde_json::to_string(&landmarks)?;
        tx.execute(
            "INSERT INTO faces (image_id, idx, x, y, w, h, score, landmarks, embedding,
                                embedding_model, identity_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                image_id,
                idx,
                bx[0],
                bx[1],
                bx[2],
                bx[3],
                score,
                landmarks_json,
                embedding,
                embedding.as_ref().and(embedding_model.as_deref()),
                identity,
            ],
        )
        .ctx("inserting a face")?;
        stored.push(json!({ "box": bx, "score": score, "landmarks": landmarks }));
    }
    recount(tx, &touched)?;

    let mut clean = data.clone();
    if let Some(obj) = clean.as_object_mut() {
        obj.insert("faces".into(), Value::Array(stored));
        obj.insert("coords".into(), Value::from(coords));
    }
    let clean = serde_json::to_string(&clean)?;
    tx.execute(
        "UPDATE result_faces SET data = ?2 WHERE image_id = ?1",
        params![image_id, clean],
    )
    .ctx("updating the faces data")?;
    Ok(())
}

/// Continuous IoU of two [x, y, w, h] boxes.
fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let w = ((a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0])).max(0.0);
    let h = ((a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Sets `face_count` of these identities from the faces table.
fn recount(tx: &Db, identities: &BTreeSet<i64>) -> Result<(), StoreError> {
    for id in identities {
        tx.execute(
            "UPDATE identities SET face_count =
                 (SELECT COUNT(*) FROM faces WHERE identity_id = ?1)
             WHERE id = ?1",
            params![id],
        )
        .ctx("recounting an identity")?;
    }
    Ok(())
}

/// Rewrites the search rows of the images with faces of these identities, for those with no
/// job in flight (the others get theirs when their jobs finish).
fn refresh_names(tx: &Db, modules: &Registry, image_ids: &BTreeSet<i64>) -> Result<(), StoreError> {
    for &image_id in image_ids {
        let unfinished: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM jobs WHERE image_id = ?1 AND state = 'leased'",
                params![image_id],
                |r| r.get(0),
            )
            .ctx("counting in-flight jobs")?;
        if unfinished == 0 {
            refresh_search_row(tx, modules, image_id)?;
        }
    }
    Ok(())
}

fn images_of_identity(tx: &Db, identity: i64) -> Result<BTreeSet<i64>, StoreError> {
    let images: Vec<i64> = tx
        .query_map(
            "SELECT DISTINCT image_id FROM faces WHERE identity_id = ?1",
            params![identity],
            |r| r.get(0),
        )
        .ctx("finding images")?;
    Ok(images.into_iter().collect())
}

fn identity_name(tx: &Db, id: i64) -> Result<Option<Option<String>>, StoreError> {
    tx.query_opt(
        "SELECT name FROM identities WHERE id = ?1",
        params![id],
        |r| r.get(0),
    )
    .ctx("reading an identity")
}

/// The identity called `name`, compared case-insensitively (as the unique index compares).
fn identity_named(tx: &Db, name: &str) -> Result<Option<i64>, StoreError> {
    tx.query_opt(
        "SELECT id FROM identities WHERE lower(name) = lower(?1)",
        params![name],
        |r| r.get(0),
    )
    .ctx("looking up a name")
}

impl Store {
    /// Every face with an embedding: what clustering compares.
    pub fn face_embeddings(&self) -> Result<Vec<StoredEmbedding>, StoreError> {
        self.db
            .query_map(
                "SELECT id, identity_id, coalesce(embedding_model, ''), embedding FROM faces
                 WHERE embedding IS NOT NULL ORDER BY id",
                params![],
                |r| {
                    let bytes: Vec<u8> = r.get(3)?;
                    Ok(StoredEmbedding {
                        face_id: r.get(0)?,
                        identity_id: r.get(1)?,
                        model: r.get(2)?,
                        vector: bytes
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect(),
                    })
                },
            )
            .ctx("reading embeddings")
    }

    /// Applies a clustering run in one transaction: each face in `joins` joins its identity,
    /// each group of `new_identities` becomes a new unnamed identity. Faces that got an
    /// identity meanwhile (another command) keep it. Returns the new identities' ids.
    pub fn apply_clusters(
        &self,
        joins: &[(i64, i64)],
        new_identities: &[Vec<i64>],
    ) -> Result<Vec<i64>, StoreError> {
        let tx = self.db.write_tx().ctx("starting a clustering commit")?;
        let now = now_ms();
        let mut touched = BTreeSet::new();
        let mut images = BTreeSet::new();
        let mut assign = |tx: &Db, face: i64, identity: i64| {
            let changed = tx
                .query_opt(
                    "UPDATE faces SET identity_id = ?2 WHERE id = ?1 AND identity_id IS NULL
                     RETURNING image_id",
                    params![face, identity],
                    |r| r.get::<i64>(0),
                )
                .ctx("assigning a face")?;
            if let Some(image) = changed {
                images.insert(image);
            }
            Ok::<(), StoreError>(())
        };
        for &(face, identity) in joins {
            let exists = identity_name(&tx, identity)?.is_some();
            if exists {
                assign(&tx, face, identity)?;
                touched.insert(identity);
            }
        }
        let mut created = Vec::new();
        for group in new_identities.iter().filter(|g| !g.is_empty()) {
            let id: i64 = tx
                .query_row(
                    "INSERT INTO identities (created_ms) VALUES (?1) RETURNING id",
                    params![now],
                    |r| r.get(0),
                )
                .ctx("creating an identity")?;
            for &face in group {
                assign(&tx, face, id)?;
            }
            touched.insert(id);
            created.push(id);
        }
        recount(&tx, &touched)?;
        // New identities have no name; joins to named ones change search rows.
        tx.execute(
            "DELETE FROM identities WHERE name IS NULL AND face_count = 0",
            params![],
        )
        .ctx("dropping empty identities")?;
        refresh_names(&tx, &self.options.modules, &images)?;
        tx.commit().ctx("committing a clustering run")?;
        Ok(created)
    }

    /// Detaches every face from the unnamed identities and deletes them, for a clustering run
    /// from scratch; named identities and their faces stay. Returns the faces detached.
    pub fn reset_unnamed_identities(&self) -> Result<usize, StoreError> {
        let tx = self.db.write_tx().ctx("starting an identity reset")?;
        let detached = tx
            .execute(
                "UPDATE faces SET identity_id = NULL
                 WHERE identity_id IN (SELECT id FROM identities WHERE name IS NULL)",
                params![],
            )
            .ctx("detaching faces")?;
        tx.execute("DELETE FROM identities WHERE name IS NULL", params![])
            .ctx("deleting unnamed identities")?;
        tx.commit().ctx("committing an identity reset")?;
        Ok(detached)
    }

    /// Every identity, the most faces first (named first among equals).
    pub fn identities(&self) -> Result<Vec<IdentitySummary>, StoreError> {
        self.db
            .query_map(
                "SELECT i.id, i.name, i.face_count, i.created_ms,
                        (SELECT im.path FROM faces f JOIN images im ON im.id = f.image_id
                         WHERE f.identity_id = i.id ORDER BY f.score DESC, f.id LIMIT 1)
                 FROM identities i
                 ORDER BY i.face_count DESC, i.name IS NULL, i.id",
                params![],
                |r| {
                    Ok(IdentitySummary {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        face_count: r.get(2)?,
                        created_ms: r.get(3)?,
                        sample_path: r.get(4)?,
                    })
                },
            )
            .ctx("listing identities")
    }

    /// Names an identity (or clears its name with `None`). Names are unique,
    /// case-insensitively.
    pub fn name_identity(&self, id: i64, name: Option<&str>) -> Result<(), IdentityError> {
        let name = name.map(str::trim);
        if name.is_some_and(str::is_empty) {
            return Err(IdentityError::Invalid("a name cannot be empty".into()));
        }
        let tx = self.db.write_tx().ctx("starting a rename")?;
        if identity_name(&tx, id)?.is_none() {
            return Err(IdentityError::NoSuchIdentity(id));
        }
        if let Some(name) = name
            && let Some(owner) = identity_named(&tx, name)?.filter(|&owner| owner != id)
        {
            return Err(IdentityError::NameTaken {
                name: name.to_string(),
                owner,
            });
        }
        tx.execute(
            "UPDATE identities SET name = ?2 WHERE id = ?1",
            params![id, name],
        )
        .ctx("naming an identity")?;
        let images = images_of_identity(&tx, id)?;
        refresh_names(&tx, &self.options.modules, &images)?;
        tx.commit().ctx("committing a rename")?;
        Ok(())
    }

    /// Moves every face of `from` into `into` and deletes `from`. The merged identity keeps
    /// `into`'s name, or takes `from`'s when `into` has none. Returns the faces moved.
    pub fn merge_identities(&self, into: i64, from: i64) -> Result<usize, IdentityError> {
        if into == from {
            return Err(IdentityError::Invalid(format!(
                "cannot merge identity {into} into itself"
            )));
        }
        let tx = self.db.write_tx().ctx("starting a merge")?;
        let into_name = identity_name(&tx, into)?.ok_or(IdentityError::NoSuchIdentity(into))?;
        let from_name = identity_name(&tx, from)?.ok_or(IdentityError::NoSuchIdentity(from))?;
        let moved = tx
            .execute(
                "UPDATE faces SET identity_id = ?1 WHERE identity_id = ?2",
                params![into, from],
            )
            .ctx("moving faces")?;
        tx.execute("DELETE FROM identities WHERE id = ?1", params![from])
            .ctx("deleting the merged identity")?;
        if into_name.is_none() && from_name.is_some() {
            tx.execute(
                "UPDATE identities SET name = ?2 WHERE id = ?1",
                params![into, from_name],
            )
            .ctx("keeping the merged name")?;
        }
        recount(&tx, &BTreeSet::from([into]))?;
        let images = images_of_identity(&tx, into)?;
        refresh_names(&tx, &self.options.modules, &images)?;
        tx.commit().ctx("committing a merge")?;
        Ok(moved)
    }

    /// Detaches faces from an identity so that the next clustering run can assign them again:
    /// the given faces, or all of them when `faces` is empty. An unnamed identity left without
    /// faces is deleted; a named one stays (with its name) until merged or emptied by hand.
    /// Returns the faces detached.
    pub fn split_identity(&self, id: i64, faces: &[i64]) -> Result<usize, IdentityError> {
        let tx = self.db.write_tx().ctx("starting a split")?;
        let name = identity_name(&tx, id)?.ok_or(IdentityError::NoSuchIdentity(id))?;
        let images = images_of_identity(&tx, id)?;
        let detached = if faces.is_empty() {
            tx.execute(
                "UPDATE faces SET identity_id = NULL WHERE identity_id = ?1",
                params![id],
            )
            .ctx("detaching faces")?
        } else {
            let mut n = 0;
            for &face in faces {
                let changed = tx
                    .execute(
                        "UPDATE faces SET identity_id = NULL WHERE id = ?1 AND identity_id = ?2",
                        params![face, id],
                    )
                    .ctx("detaching a face")?;
                if changed == 0 {
                    return Err(IdentityError::Invalid(format!(
                        "face {face} does not belong to identity {id}"
                    )));
                }
                n += changed;
            }
            n
        };
        recount(&tx, &BTreeSet::from([id]))?;
        if name.is_none() {
            tx.execute(
                "DELETE FROM identities WHERE id = ?1 AND face_count = 0",
                params![id],
            )
            .ctx("deleting an empty identity")?;
        }
        refresh_names(&tx, &self.options.modules, &images)?;
        tx.commit().ctx("committing a split")?;
        Ok(detached)
    }

    /// Names one face: it joins the identity called `name` (case-insensitively), which is
    /// created when no identity has that name. Its former identity loses it (and, unnamed and
    /// left empty, is deleted). Works for faces without an embedding too, which clustering
    /// cannot group. Returns the identity's id.
    pub fn name_face(&self, face: i64, name: &str) -> Result<i64, IdentityError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(IdentityError::Invalid("a name cannot be empty".into()));
        }
        let tx = self.db.write_tx().ctx("starting to name a face")?;
        let (image, former): (i64, Option<i64>) = tx
            .query_opt(
                "SELECT image_id, identity_id FROM faces WHERE id = ?1",
                params![face],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx("reading a face")?
            .ok_or_else(|| IdentityError::Invalid(format!("no face {face}")))?;
        let identity = match identity_named(&tx, name)? {
            Some(id) => id,
            None => tx
                .query_row(
                    "INSERT INTO identities (name, created_ms) VALUES (?1, ?2) RETURNING id",
                    params![name, crate::now_ms()],
                    |r| r.get(0),
                )
                .ctx("creating an identity")?,
        };
        tx.execute(
            "UPDATE faces SET identity_id = ?2 WHERE id = ?1",
            params![face, identity],
        )
        .ctx("naming a face")?;
        let mut touched = BTreeSet::from([identity]);
        touched.extend(former);
        recount(&tx, &touched)?;
        if let Some(former) = former.filter(|&f| f != identity) {
            tx.execute(
                "DELETE FROM identities WHERE id = ?1 AND face_count = 0 AND name IS NULL",
                params![former],
            )
            .ctx("deleting an empty identity")?;
        }
        refresh_names(&tx, &self.options.modules, &BTreeSet::from([image]))?;
        tx.commit().ctx("committing a face's name")?;
        Ok(identity)
    }

    /// The faces of one identity, best first.
    pub fn identity_faces(&self, id: i64) -> Result<Vec<IdentityFace>, StoreError> {
        self.db
            .query_map(
                "SELECT f.id, f.image_id, im.path, f.x, f.y, f.w, f.h, f.score
                 FROM faces f JOIN images im ON im.id = f.image_id
                 WHERE f.identity_id = ?1 ORDER BY f.score DESC, f.id",
                params![id],
                |r| {
                    Ok(IdentityFace {
                        id: r.get(0)?,
                        image_id: r.get(1)?,
                        path: imgd_core::stored_path::display(&r.get::<String>(2)?),
                        bbox: [r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?],
                        score: r.get(7)?,
                    })
                },
            )
            .ctx("listing faces")
    }

    /// Face and identity counts (see [`FacesSummary`]).
    pub fn faces_summary(&self) -> Result<FacesSummary, StoreError> {
        let mut summary = self
            .db
            .query_row(
                "SELECT (SELECT COUNT(*) FROM result_faces),
                        COUNT(*),
                        COUNT(embedding),
                        COUNT(*) - COUNT(embedding),
                        COUNT(CASE WHEN embedding IS NOT NULL AND identity_id IS NULL THEN 1 END),
                        (SELECT COUNT(*) FROM identities),
                        (SELECT COUNT(*) FROM identities WHERE name IS NOT NULL)
                 FROM faces",
                params![],
                |r| {
                    Ok(FacesSummary {
                        images_analysed: r.get(0)?,
                        faces: r.get(1)?,
                        embedded: r.get(2)?,
                        not_embedded: r.get(3)?,
                        unassigned: r.get(4)?,
                        identities: r.get(5)?,
                        named: r.get(6)?,
                        embedding_models: Vec::new(),
                    })
                },
            )
            .ctx("counting faces")?;
        let model = match self.db.dialect() {
            Dialect::Sqlite => "json_extract(data, '$.embedding_model')",
            Dialect::Postgres => "data::jsonb ->> 'embedding_model'",
        };
        summary.embedding_models = self
            .db
            .query_map(
                &format!(
                    "SELECT {model}, COUNT(*) FROM result_faces GROUP BY 1 ORDER BY 2 DESC, 1"
                ),
                params![],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx("counting embedding models")?;
        Ok(summary)
    }
}
