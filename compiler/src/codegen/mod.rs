//! Code generation from the kernel IR: one folder per backend. `llvm` compiles for CPUs
//! (x86-64, aarch64) through LLVM 19.

pub mod llvm;
