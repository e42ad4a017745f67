//! archc-compiler: the Graph IR, lowering from `Spec`, the fusion passes, and the reference
//! interpreter.
//!
//! **Invariant:** this crate depends on `archc-spec` only; it never reads weight files
//! (weights reach the interpreter through the `interp::WeightSource` trait).

pub mod interp;
pub mod ir;
pub mod kernel;
pub mod lower;
pub mod passes;

pub use ir::{verify, Graph, Mode};
pub use lower::{lower, LowerError};
