//! The model manifest (`models/manifest.toml`). Work in progress.
