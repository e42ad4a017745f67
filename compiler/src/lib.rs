//! archc-compiler: the Graph IR, lowering from `Spec`, the fusion passes, and the reference
//! interpreter.
//!
//! **Invariant:** of the project, this crate depends on `archc-spec` only; of the outside
//! world, on LLVM (through inkwell, in `codegen/llvm`). It never reads weight files
//! (weights reach the interpreter through the `interp::WeightSource` trait and compiled
//! kernels through buffer pointers the runtime passes).

pub mod codegen;
pub mod driver;
pub mod floats;
pub mod interp;
pub mod ir;
pub mod kernel;
pub mod lower;
pub mod passes;
pub mod testing;

pub use ir::{verify, Graph, Mode};
pub use lower::{lower, LowerError};
