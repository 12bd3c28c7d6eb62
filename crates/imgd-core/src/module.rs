//! One analysis module as its crate declares it.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Serialize, Serializer};

use crate::ResultRow;

/// Everything the pipeline and the store need to know about one analysis module. Each module
/// crate declares its own as a `static`, and the binary's registry lists them; nothing outside
/// the module's crate matches on a module by name.
#[derive(Debug)]
pub struct ModuleSpec {
    /// The name used on the command line, in the database and in metrics.
    pub name: &'static str,
    /// The module's bit in `images.modules_mask` (0–62). Never reuse a bit: a database keeps
    /// the bits of every module it has seen.
    pub bit: u8,
    /// One line on what it computes (for `imgd status` and `--help`).
    pub summary: &'static str,
    /// The long edge, in pixels, of the image it reads; `None` when it reads no pixels (the
    /// header only).
    pub tier: Option<u32>,
    /// Where it runs.
    pub runs_on: RunsOn,
    /// Whether `imgd enqueue` queues it when `--modules` is not given.
    pub queued_by_default: bool,
    /// The table holding its results: `image_id`, `model_id`, `model_version`,
    /// `created_ms`, `data` (JSON) and the typed columns its rows carry.
    pub result_table: &'static str,
    /// What its result rows are keyed by.
    pub result_key: ResultKey,
    /// The migrations that create and change its tables, numbered in the one sequence every
    /// migration of the database shares.
    pub migrations: &'static [Migration],
    /// What it adds to an image's full-text search row.
    pub search_text: &'static [SearchText],
    /// Another module whose result decides whether this one runs on an image.
    pub gate: Option<Gate>,
    /// Extra rows the store writes from its result rows, in the same transaction.
    pub store_hook: Option<StoreHook>,
}

/// Where a module runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsOn {
    /// On the decode threads, on the CPU, from the header and the decoded tier (no model).
    DecodeThreads,
    /// On the inference thread, which owns the models.
    InferenceThread,
}

/// What a module's result rows are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultKey {
    /// One row per image: a new result replaces the old one.
    Image,
    /// One row per image and model: results of several models live side by side (vectors of
    /// two embedding models are never compared).
    ImageAndModel,
}

impl ResultKey {
    /// The key's columns, as an `ON CONFLICT` target.
    pub const fn columns(self) -> &'static str {
        match self {
            ResultKey::Image => "image_id",
            ResultKey::ImageAndModel => "image_id, model_id",
        }
    }
}

/// One numbered schema migration.
#[derive(Debug)]
pub struct Migration {
    /// Its number in the database's one migration sequence (recorded in `schema_version`).
    pub version: i64,
    /// Its file name without `.sql`.
    pub name: &'static str,
    /// The SQL (SQLite).
    pub sql: &'static str,
    /// The SQL for PostgreSQL, where the dialects differ (`None`: `sql` serves both).
    pub postgres: Option<&'static str>,
}

impl Migration {
    /// The SQL for PostgreSQL.
    pub fn postgres_sql(&self) -> &'static str {
        self.postgres.unwrap_or(self.sql)
    }
}

/// One part of an image's full-text search row.
#[derive(Debug)]
pub struct SearchText {
    /// The `search_fts` column it fills.
    pub column: &'static str,
    /// A query with the image id as `?1` whose rows (text or NULL) are joined with spaces.
    pub sql: &'static str,
    /// The query for PostgreSQL, where the dialects differ (`None`: `sql` serves both).
    pub postgres: Option<&'static str>,
    /// Turns the joined text into the words indexed (e.g. a date into its year, month and
    /// month name); `None` indexes it as it is.
    pub words: Option<fn(&str) -> String>,
}

impl SearchText {
    /// The query for PostgreSQL.
    pub fn postgres_sql(&self) -> &'static str {
        self.postgres.unwrap_or(self.sql)
    }
}

/// A module that runs on an image only when another module's result says so.
#[derive(Debug)]
pub struct Gate {
    /// The module whose result opens the gate.
    pub after: &'static str,
    /// The boolean column of that module's result table that opens it; a missing column value
    /// or a failed result leaves it open.
    pub column: &'static str,
    /// The row stored, without running, when the gate stays shut.
    pub skipped_row: fn() -> ResultRow,
}

/// Rows the store derives from a module's result rows, in the transaction that stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreHook {
    /// `data.faces` become rows of the `faces` table (boxes in full-image pixels, embeddings
    /// as blobs, identities carried over by overlap).
    FaceRows,
}

/// A handle on one module's [`ModuleSpec`]: copyable, compared, ordered and hashed by its bit.
#[derive(Clone, Copy)]
pub struct Module(&'static ModuleSpec);

impl Module {
    /// The handle of `spec`.
    pub const fn of(spec: &'static ModuleSpec) -> Module {
        Module(spec)
    }

    /// The module's declaration.
    pub const fn spec(self) -> &'static ModuleSpec {
        self.0
    }

    /// The module's name as used on the command line, in the database and in metrics.
    pub const fn name(self) -> &'static str {
        self.0.name
    }

    /// This module's bit in `images.modules_mask`.
    pub const fn bit(self) -> i64 {
        1 << self.0.bit
    }

    /// The long edge, in pixels, of the image this module wants; `None` when it reads headers
    /// only.
    pub const fn tier(self) -> Option<u32> {
        self.0.tier
    }

    /// Whether the module runs a model on the inference thread (as opposed to the CPU modules
    /// that run on the decode threads).
    pub const fn needs_model(self) -> bool {
        matches!(self.0.runs_on, RunsOn::InferenceThread)
    }

    /// The name of the table holding this module's results.
    pub const fn result_table(self) -> &'static str {
        self.0.result_table
    }

    /// The mask with the bits of `modules` set.
    pub fn mask_of(modules: &[Module]) -> i64 {
        modules.iter().fold(0, |mask, m| mask | m.bit())
    }
}

impl PartialEq for Module {
    fn eq(&self, other: &Self) -> bool {
        self.0.bit == other.0.bit
    }
}

impl Eq for Module {}

impl Hash for Module {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.bit.hash(state);
    }
}

impl PartialOrd for Module {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Module {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.bit.cmp(&other.0.bit)
    }
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Module {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}
