//! Decode benchmark (see scripts/bench-decode.sh).
fn main() {}
