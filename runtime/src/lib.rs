//! archc-runtime: weight loading, parameter binding, execution and the KV cache.
//!
//! **Invariant:** the runtime never parses `.arch` text; it consumes a `Spec`.

pub mod aot;
#[cfg(feature = "jit")]
pub mod bench;
pub mod bind;
pub mod chat;
pub mod exec;
pub mod fetch;
pub mod front;
pub mod generate;
pub mod npy;
pub mod outfile;
pub mod quant;
pub mod sample;
pub mod tokenize;
pub mod weights;
