//! imgd-decode (work in progress).
