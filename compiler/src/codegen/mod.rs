//! Code generation from the kernel IR, laid out as naga's `back/`: `body` translates a
//! kernel's statements and expressions to LLVM IR and knows no machine, and each target
//! is a sibling folder that implements `body::Target` for what does depend on the
//! machine. `llvm` compiles for CPUs (x86-64, aarch64) through LLVM 19; `ptx` compiles
//! for NVIDIA GPUs through LLVM's NVPTX target.
//!
//! **Invariant:** `llvm` and `ptx` never import each other; what both need lives in
//! `body` (or here, as `CodegenError` does).

pub(crate) mod body;
pub mod llvm;
pub mod ptx;

use inkwell::builder::BuilderError;
use std::fmt;

/// Why code generation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodegenError {
    /// The kernel is malformed (a type mismatch, an id out of range).
    Kernel { kernel: String, message: String },
    /// LLVM refused: the verifier, the pass pipeline, the JIT or the object writer.
    Llvm {
        stage: &'static str,
        message: String,
    },
    /// The target is unknown, or cannot run in this process.
    Target { message: String },
}

impl fmt::Display for CodegenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodegenError::Kernel { kernel, message } => write!(f, "kernel `{kernel}`: {message}"),
            CodegenError::Llvm { stage, message } => write!(f, "LLVM {stage}: {message}"),
            CodegenError::Target { message } => write!(f, "target: {message}"),
        }
    }
}

impl std::error::Error for CodegenError {}

impl From<BuilderError> for CodegenError {
    fn from(e: BuilderError) -> Self {
        CodegenError::Llvm {
            stage: "ir builder",
            message: e.to_string(),
        }
    }
}
