//! Totals of the cloud module for `imgd status`: calls, tokens and spend summed over the
//! stored `result_cloud` rows.

use serde::Serialize;

use crate::db::Dialect;
use crate::{Context, Store, StoreError, params};

/// What the stored cloud results cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CloudTotals {
    /// Images with a cloud result.
    pub images: i64,
    /// Calls answered (one per image and prompt: `data.calls`).
    pub calls: i64,
    /// Input + output tokens the provider reported.
    pub tokens: i64,
    /// Spend by the configured price table, in US dollars (rows without a price count 0).
    pub cost_usd: f64,
}

impl Store {
    /// Sums `result_cloud`: images, calls, tokens and cost so far.
    pub fn cloud_totals(&self) -> Result<CloudTotals, StoreError> {
        let calls = match self.db.dialect() {
            Dialect::Sqlite => "CASE WHEN json_valid(data) THEN json_extract(data, '$.calls') END",
            Dialect::Postgres => "CAST(data::jsonb ->> 'calls' AS BIGINT)",
        };
        self.db
            .query_row(
                &format!(
                    "SELECT COUNT(*),
                            CAST(COALESCE(SUM({calls}), 0) AS BIGINT),
                            CAST(COALESCE(SUM(tokens), 0) AS BIGINT),
                            CAST(COALESCE(SUM(cost_usd), 0.0) AS DOUBLE PRECISION)
                     FROM result_cloud"
                ),
                params![],
                |r| {
                    Ok(CloudTotals {
                        images: r.get(0)?,
                        calls: r.get(1)?,
                        tokens: r.get(2)?,
                        cost_usd: r.get(3)?,
                    })
                },
            )
            .ctx("summing the cloud results")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    #[test]
    fn totals_sum_the_stored_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("imgd.db"),
            StoreOptions {
                modules: imgd_registry::registry(),
                ..StoreOptions::default()
            },
        )
        .unwrap();
        assert_eq!(store.cloud_totals().unwrap(), CloudTotals::default());
        let conn = store.connection();
        for (id, cost, tokens, data) in [
            (1, Some(0.0025), 900, r#"{"answers":{"a":"x"},"calls":3}"#),
            (2, Some(0.0010), 600, r#"{"answers":{"a":"y"},"calls":2}"#),
            (3, None, 300, r#"{"answers":{"a":"z"},"calls":1}"#),
        ] {
            conn.execute(
                "INSERT INTO images (id, path, size, mtime_ns, format, first_seen_ms, last_seen_ms)
                 VALUES (?1, ?2, 1, 1, 'jpeg', 0, 0)",
                rusqlite::params![id, format!("/p/{id}.jpg")],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO result_cloud (image_id, created_ms, cost_usd, tokens, data)
                 VALUES (?1, 0, ?2, ?3, ?4)",
                rusqlite::params![id, cost, tokens, data],
            )
            .unwrap();
        }
        let totals = store.cloud_totals().unwrap();
        assert_eq!((totals.images, totals.calls, totals.tokens), (3, 6, 1800));
        assert!((totals.cost_usd - 0.0035).abs() < 1e-12);
    }
}
