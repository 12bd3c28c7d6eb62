//! Timing of the technical module (filled in with the module).

fn main() {}
