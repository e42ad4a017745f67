//! archc-spec: the architecture language (grammar, parser, validator), the `Spec` it
//! produces, HF config import, the parameter-tensor list and size/KV/FLOP statistics.
//!
//! **Invariant:** this crate depends on nothing of the compiler, the runtime, LLVM or CUDA.

pub mod ast;
pub mod diagnostics;
pub mod diff;
pub mod figure;
pub mod fmt;
pub mod import;
pub mod mtp;
pub mod naming;
pub mod parse;
pub mod print;
pub mod source;
pub mod spec;
pub mod stats;
pub mod tensors;
pub mod validate;

pub use spec::*;
