//! imgd-store (work in progress).
