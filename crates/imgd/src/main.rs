//! The `imgd` command line.
fn main() {}
