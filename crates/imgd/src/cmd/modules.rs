//! The modules this build serves: `imgd-registry`'s.

pub use imgd_registry::{REGISTRY, cpu_analyses};
