//! archc-runtime: weight loading, parameter binding, execution and the KV cache.
//!
//! **Invariant:** the runtime never parses `.arch` text; it consumes a `Spec`.

pub mod bind;
pub mod exec;
pub mod npy;
pub mod weights;
