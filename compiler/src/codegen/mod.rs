//! Code generation from the kernel IR, laid out as naga's `back/`: `body` translates a
//! kernel's statements and expressions to LLVM IR and knows no machine, and each target
//! is a sibling folder that implements `body::Target` for what does depend on the
//! machine. `llvm` compiles for CPUs (x86-64, aarch64) through LLVM 19; `ptx` compiles
//! for NVIDIA GPUs through LLVM's NVPTX target. `clif` is the fast tier: the same kernels
//! to machine code through Cranelift, in milliseconds, with the same calling convention
//! (`KernelFn`) and the same parallel split as `llvm`.
//!
//! **Invariant:** `llvm`, `ptx` and `clif` never import each other; what they share lives
//! in `body` (or here, as `CodegenError` and `KernelFn` do).
//!
//! The code generators are the crate's `codegen` feature. Without it, this module keeps
//! what running compiled code needs and nothing that produces it: the calling convention
//! (`KernelFn`, `invoke`) and the error type, which is what the ahead-of-time runtime
//! links.

#[cfg(feature = "codegen")]
pub(crate) mod body;
#[cfg(feature = "codegen")]
pub mod clif;
#[cfg(feature = "codegen")]
pub mod llvm;
#[cfg(feature = "codegen")]
pub mod ptx;

#[cfg(feature = "codegen")]
use inkwell::builder::BuilderError;
use std::fmt;

/// A compiled kernel: `bufs` points to one pointer per kernel buffer parameter (scratch
/// entries are ignored), `dims` to `[seq, past]`, and the call runs chunk `thread` of
/// `threads` of the kernel's parallel loop.
///
/// # Safety
/// Every buffer must be valid for all the elements the kernel touches at these sizes,
/// and two parameters may share memory only if the kernel reads both (the LLVM
/// target marks them `noalias`); parameters written by the kernel must not be touched by other threads
/// except through calls with the same arguments and another `thread`.
pub type KernelFn =
    unsafe extern "C" fn(bufs: *const *mut u8, dims: *const i64, thread: i64, threads: i64);

/// Calls compiled kernel `f` with `bufs` (one pointer per kernel parameter) at sizes
/// `dims = [seq, past]`, as chunk `thread` of `threads`: the one place every tier's
/// code is entered.
///
/// # Safety
/// See `KernelFn`: the buffers must be large enough and correctly typed for the kernel.
pub unsafe fn invoke(f: KernelFn, bufs: &[*mut u8], dims: [i64; 2], thread: i64, threads: i64) {
    // SAFETY: forwarded to the caller.
    unsafe { f(bufs.as_ptr(), dims.as_ptr(), thread, threads) }
}

/// Where the machine code of a program came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled in memory by the JIT (cache disabled, or it failed: see `warnings`).
    Jit,
    /// Compiled now, linked into a shared library in the cache and loaded from there.
    Built,
    /// Loaded from the disk cache without running LLVM.
    Cache,
    /// Compiled ahead of time and linked into this executable or library (`archc build`).
    Linked,
}

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
    /// Cranelift refused: the verifier, the code generator or the JIT.
    Cranelift {
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
            CodegenError::Cranelift { stage, message } => {
                write!(f, "Cranelift {stage}: {message}")
            }
            CodegenError::Target { message } => write!(f, "target: {message}"),
        }
    }
}

impl std::error::Error for CodegenError {}

#[cfg(feature = "codegen")]
impl From<BuilderError> for CodegenError {
    fn from(e: BuilderError) -> Self {
        CodegenError::Llvm {
            stage: "ir builder",
            message: e.to_string(),
        }
    }
}
