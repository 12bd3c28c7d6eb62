//! imgd-modules (work in progress).
