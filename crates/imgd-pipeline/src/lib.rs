//! imgd-pipeline (work in progress).
