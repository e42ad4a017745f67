//! Code generation from the kernel IR: one folder per backend. `llvm` compiles for CPUs
//! (x86-64, aarch64) through LLVM 19; `ptx` compiles for NVIDIA GPUs through LLVM's NVPTX
//! target, sharing `llvm`'s translation of kernel bodies.

pub mod llvm;
pub mod ptx;
