//! Narrowing images down by what the modules found: camera, date, person, object label, text,
//! aesthetic score. The web page's search filters.

use std::borrow::Cow;

use crate::db::Value as SqlParam;
use crate::{Context, Store, StoreError, params};

/// What an image must have to be kept; every field set must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageFilter {
    /// Words found in the camera's make or model (`canon`, `eos 5d`), case-insensitive.
    pub camera: Option<String>,
    /// Taken on or after this day (`YYYY-MM-DD`, the camera's wall clock).
    pub taken_from: Option<String>,
    /// Taken on or before this day.
    pub taken_to: Option<String>,
    /// A face of the identity with this name (case-insensitive).
    pub person: Option<String>,
    /// An object of this label.
    pub label: Option<String>,
    /// Text found by OCR.
    pub has_text: bool,
    /// An aesthetic score of at least this much.
    pub min_aesthetic: Option<f64>,
    /// A job of this module failed.
    pub failed_module: Option<String>,
}

impl ImageFilter {
    /// Whether no field is set (every image passes).
    pub fn is_empty(&self) -> bool {
        *self == ImageFilter::default()
    }

    /// The SQL conditions on `i` (images) and their parameters.
    fn conditions(&self) -> (Vec<String>, Vec<SqlParam<'static>>) {
        let mut conditions = vec!["i.state = 'present'".to_string()];
        let mut params = Vec::new();
        if let Some(camera) = &self.camera {
            for word in camera.split_whitespace() {
                params.push(text(format!("%{}%", like_escaped(&word.to_lowercase()))));
                conditions.push(format!(
                    "i.id IN (SELECT image_id FROM result_metadata WHERE \
                     lower(coalesce(make, '') || ' ' || coalesce(model, '')) LIKE ?{} ESCAPE '\\')",
                    params.len()
                ));
            }
        }
        if let Some(from) = &self.taken_from {
            params.push(text(from.clone()));
            conditions.push(format!(
                "i.id IN (SELECT image_id FROM result_metadata WHERE substr(taken_at, 1, 10) >= ?{})",
                params.len()
            ));
        }
        if let Some(to) = &self.taken_to {
            params.push(text(to.clone()));
            conditions.push(format!(
                "i.id IN (SELECT image_id FROM result_metadata WHERE substr(taken_at, 1, 10) <= ?{})",
                params.len()
            ));
        }
        if let Some(person) = &self.person {
            params.push(text(person.clone()));
            conditions.push(format!(
                "i.id IN (SELECT f.image_id FROM faces f JOIN identities n ON n.id = f.identity_id \
                 WHERE lower(n.name) = lower(?{}))",
                params.len()
            ));
        }
        if let Some(label) = &self.label {
            params.push(text(label.to_lowercase()));
            conditions.push(format!(
                "i.id IN (SELECT image_id FROM result_objects WHERE \
                 ' ' || lower(labels) || ' ' LIKE '% ' || ?{} || ' %')",
                params.len()
            ));
        }
        if self.has_text {
            conditions
                .push("i.id IN (SELECT image_id FROM result_ocr WHERE line_count > 0)".to_string());
        }
        if let Some(score) = self.min_aesthetic {
            params.push(SqlParam::Real(score));
            conditions.push(format!(
                "i.id IN (SELECT image_id FROM result_aesthetic WHERE score >= ?{})",
                params.len()
            ));
        }
        if let Some(module) = &self.failed_module {
            params.push(text(module.clone()));
            conditions.push(format!(
                "i.id IN (SELECT image_id FROM jobs WHERE state = 'failed' AND module = ?{})",
                params.len()
            ));
        }
        (conditions, params)
    }
}

/// An owned text parameter.
fn text(value: String) -> SqlParam<'static> {
    SqlParam::Text(Cow::Owned(value))
}

/// `word` with LIKE's wildcards escaped by `\`.
fn like_escaped(word: &str) -> String {
    word.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

impl Store {
    /// The present images passing `filter`, newest first (by id), at most `limit`.
    pub fn filtered_images(
        &self,
        filter: &ImageFilter,
        limit: usize,
    ) -> Result<Vec<i64>, StoreError> {
        let (conditions, mut params) = filter.conditions();
        params.push(SqlParam::Int(limit as i64));
        let sql = format!(
            "SELECT i.id FROM images i WHERE {} ORDER BY i.id DESC LIMIT ?{}",
            conditions.join(" AND "),
            params.len()
        );
        self.ids(&sql, params)
    }

    /// Those of `ids` passing `filter`, in the order given.
    pub fn keep_passing(&self, ids: &[i64], filter: &ImageFilter) -> Result<Vec<i64>, StoreError> {
        if filter.is_empty() || ids.is_empty() {
            return Ok(ids.to_vec());
        }
        let (conditions, params) = filter.conditions();
        // Ids are integers: written into the statement, they cannot inject anything.
        let listed: Vec<String> = ids.iter().map(i64::to_string).collect();
        let sql = format!(
            "SELECT i.id FROM images i WHERE {} AND i.id IN ({})",
            conditions.join(" AND "),
            listed.join(",")
        );
        let passing: std::collections::HashSet<i64> = self.ids(&sql, params)?.into_iter().collect();
        Ok(ids
            .iter()
            .copied()
            .filter(|id| passing.contains(id))
            .collect())
    }

    /// The cameras the library's photos were taken with (the model, after the make unless
    /// the model names it), with their photo counts, most used first.
    pub fn cameras(&self, limit: usize) -> Result<Vec<(String, i64)>, StoreError> {
        self.db
            .query_map(
                "SELECT CASE WHEN lower(model) LIKE lower(make) || '%' THEN model
                        ELSE trim(coalesce(make, '') || ' ' || coalesce(model, '')) END AS camera,
                        COUNT(*)
                 FROM result_metadata WHERE make IS NOT NULL OR model IS NOT NULL
                 GROUP BY camera ORDER BY 2 DESC, 1 LIMIT ?1",
                params![limit],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ctx("listing cameras")
    }

    fn ids(&self, sql: &str, params: Vec<SqlParam<'_>>) -> Result<Vec<i64>, StoreError> {
        self.db
            .query_map(sql, &params, |r| r.get(0))
            .ctx("filtering images")
    }
}
