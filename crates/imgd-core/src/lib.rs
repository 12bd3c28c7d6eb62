//! Shared vocabulary of imgd: what an analysis module is ([`ModuleSpec`], declared by the
//! module's own crate, and [`Module`], a copyable handle on it), the set of modules a build
//! serves ([`Registry`]), one module's result for one image ([`ResultRow`]), and how a file
//! path is stored as text ([`stored_path`], through the host's [`path_map`]), and how a
//! duration is written for people ([`human_duration`]). It knows no module by name: each module crate
//! declares its own spec, and the binary lists them in its registry.

#![deny(missing_docs)]

mod module;
pub mod path_map;
mod registry;
pub mod stored_path;

pub use module::{Gate, Migration, Module, ModuleSpec, ResultKey, RunsOn, SearchText, StoreHook};
pub use registry::{Registry, RegistryError, UnknownModule};

/// A duration as people read it: `45s`, `12m 05s`, `3h 20m`, `2d 04h` (negative as zero).
pub fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A value for one typed column of a result table.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// SQL NULL: the value is unknown or absent.
    Null,
    /// An integer (also booleans, as 0/1).
    Integer(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(String),
    /// Raw bytes (e.g. an embedding vector).
    Blob(Vec<u8>),
}

impl From<Option<f64>> for SqlValue {
    fn from(v: Option<f64>) -> Self {
        v.map_or(SqlValue::Null, SqlValue::Real)
    }
}

impl From<Option<i64>> for SqlValue {
    fn from(v: Option<i64>) -> Self {
        v.map_or(SqlValue::Null, SqlValue::Integer)
    }
}

impl From<Option<String>> for SqlValue {
    fn from(v: Option<String>) -> Self {
        v.map_or(SqlValue::Null, SqlValue::Text)
    }
}

impl From<bool> for SqlValue {
    fn from(v: bool) -> Self {
        SqlValue::Integer(i64::from(v))
    }
}

/// The result of one module for one image, ready to be upserted into `result_<module>`:
/// typed columns for what people filter and sort on, JSON for the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    /// The module that produced the row; selects the table.
    pub module: Module,
    /// The model that produced it (`None` for modules without a model).
    pub model_id: Option<String>,
    /// The model's version.
    pub model_version: Option<String>,
    /// Typed columns by name; the names must be columns of the module's table.
    pub columns: Vec<(&'static str, SqlValue)>,
    /// Everything else, stored in the `data` JSON column.
    pub data: serde_json::Value,
    /// Vectors that go with the row's items, in order, for the module's store hook to write as
    /// blobs, never as JSON numbers (the faces module: one embedding per face of
    /// `data.faces`, empty for a face that was not embedded).
    pub vectors: Vec<Vec<f32>>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_people_write_them() {
        let cases = [
            (-3.0, "0s"),
            (44.6, "45s"),
            (725.0, "12m 05s"),
            (12_000.0, "3h 20m"),
            (187_200.0, "2d 04h"),
        ];
        for (seconds, text) in cases {
            assert_eq!(super::human_duration(seconds), text);
        }
    }
}
