//! LLVM 19 code generation of the kernel IR for CPUs: kernels to one LLVM module, optimized
//! with `default<O3>`, then run in this process (a shared library from the disk cache, or
//! MCJIT) or written as an object file for any built-in target.
//!
//! Every kernel becomes `void archc_k{index}_{name}(ptr bufs, ptr dims, i64 thread, i64
//! threads)`, the kernel IR's calling convention (see `crate::kernel`). The body emitter
//! (`codegen::body`) writes the kernels; `cpu.rs` is the CPU's `body::Target` (entry,
//! thread chunks, scratch, math, loop hints), with the matmul tiles it lowers itself in
//! `tiles/`. The module verifier runs on every generated module before optimization;
//! its complaints are errors, not panics.
//!
//! **Invariant:** the generated code only depends on the kernels and the `Target`, so
//! the text of both (plus the version of this code) keys the disk cache.

mod aot;
mod cache;
mod cpu;
mod jit;
mod math;
mod target;
mod tiles;

pub use super::CodegenError;
pub use aot::emit_linkable_object;
pub use cache::{cache_key, CacheSettings};
pub use target::Target;

use super::body::{self, new_context};
use crate::kernel::Kernel;
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{FileType, TargetMachine};
use std::fmt;
use std::path::PathBuf;

pub use super::{KernelFn, Origin};

/// How `compile_kernels_with` uses the disk cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The cache directory, or `None` to compile in memory only.
    pub cache: Option<PathBuf>,
    /// The C compiler that links cached libraries; `None` means `$CC`, else `cc`.
    pub cc: Option<String>,
}

impl Options {
    /// The cache as the environment configures it (see `CacheSettings::from_env`).
    pub fn from_env() -> Options {
        Options {
            cache: CacheSettings::from_env().dir,
            cc: None,
        }
    }

    /// In-memory compilation, no files.
    pub fn no_cache() -> Options {
        Options {
            cache: None,
            cc: None,
        }
    }
}

/// The machine code of a list of kernels, loaded in this process.
pub struct CompiledProgram {
    fns: Vec<KernelFn>,
    origin: Origin,
    warnings: Vec<String>,
    // Keeps the code mapped; declared last so it is dropped after the pointers.
    _code: Code,
}

/// The owner of the machine code; never read, only dropped.
#[allow(dead_code)]
enum Code {
    Jit(jit::Jit),
    Library(libloading::Library),
}

impl fmt::Debug for CompiledProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledProgram")
            .field("kernels", &self.fns.len())
            .field("origin", &self.origin)
            .field("warnings", &self.warnings)
            .finish()
    }
}

impl CompiledProgram {
    /// The function of kernel `index` (its index in the slice given to the compiler).
    pub fn kernel(&self, index: usize) -> Option<KernelFn> {
        self.fns.get(index).copied()
    }

    /// All kernel functions, in the order of the kernels.
    pub fn kernels(&self) -> &[KernelFn] {
        &self.fns
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Problems that made compilation fall back (cache unusable, no C compiler); each
    /// was also printed to stderr as a warning.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Runs kernel `index` with `bufs` (one pointer per kernel parameter) at sizes
    /// `dims = [seq, past]`, as chunk `thread` of `threads`.
    ///
    /// # Safety
    /// See `KernelFn`: the buffers must be large enough and correctly typed for the kernel.
    pub unsafe fn call(
        &self,
        index: usize,
        bufs: &[*mut u8],
        dims: [i64; 2],
        thread: i64,
        threads: i64,
    ) {
        // SAFETY: forwarded to the caller.
        unsafe { super::invoke(self.fns[index], bufs, dims, thread, threads) }
    }
}

/// The symbol name of each kernel in generated modules, objects and libraries.
pub fn symbols(kernels: &[Kernel]) -> Vec<String> {
    kernels
        .iter()
        .enumerate()
        .map(|(i, k)| body::symbol(i, k))
        .collect()
}

/// Translates the kernels into a verified (not yet optimized) module.
fn build_module<'ctx>(
    ctx: &'ctx Context,
    kernels: &[Kernel],
    target: &Target,
    tm: &TargetMachine,
) -> Result<Module<'ctx>, CodegenError> {
    let module = ctx.create_module("archc");
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    let attrs = cpu::CpuAttrs {
        cpu: target.cpu.clone(),
        features: target.features.clone(),
    };
    let cpu = cpu::Cpu::new(&attrs);
    for (i, k) in kernels.iter().enumerate() {
        let k = cpu.prepare(k);
        body::emit_kernel(ctx, &module, i, &k, &cpu)?;
    }
    module.verify().map_err(|e| CodegenError::Llvm {
        stage: "verifier",
        message: e.to_string(),
    })?;
    Ok(module)
}

/// `default<O3>` with loop and SLP vectorization and unrolling.
fn optimize(module: &Module<'_>, tm: &TargetMachine) -> Result<(), CodegenError> {
    let opts = PassBuilderOptions::create();
    opts.set_loop_vectorization(true);
    opts.set_loop_slp_vectorization(true);
    opts.set_loop_interleaving(true);
    opts.set_loop_unrolling(true);
    module
        .run_passes("default<O3>", tm, opts)
        .map_err(|e| CodegenError::Llvm {
            stage: "optimizer",
            message: e.to_string(),
        })
}

/// The optimized module of the kernels.
fn optimized_module<'ctx>(
    ctx: &'ctx Context,
    kernels: &[Kernel],
    target: &Target,
    tm: &TargetMachine,
) -> Result<Module<'ctx>, CodegenError> {
    let module = build_module(ctx, kernels, target, tm)?;
    optimize(&module, tm)?;
    Ok(module)
}

/// The LLVM IR text of the kernels for `target`, after the `O3` pipeline when
/// `optimized` (what runs: vectorized loops, inlined bodies) or straight from the
/// translation otherwise. Deterministic for the same kernels and target.
pub fn emit_llvm_ir(
    kernels: &[Kernel],
    target: &Target,
    optimized: bool,
) -> Result<String, CodegenError> {
    let tm = target.machine()?;
    let ctx = new_context();
    let module = build_module(&ctx, kernels, target, &tm)?;
    if optimized {
        optimize(&module, &tm)?;
    }
    Ok(module.print_to_string().to_string())
}

/// A relocatable, position-independent object file of the optimized kernels.
pub fn emit_object(kernels: &[Kernel], target: &Target) -> Result<Vec<u8>, CodegenError> {
    let tm = target.machine()?;
    let ctx = new_context();
    let module = optimized_module(&ctx, kernels, target, &tm)?;
    object_of(&module, &tm)
}

fn object_of(module: &Module<'_>, tm: &TargetMachine) -> Result<Vec<u8>, CodegenError> {
    tm.write_to_memory_buffer(module, FileType::Object)
        .map(|buf| buf.as_slice().to_vec())
        .map_err(|e| CodegenError::Llvm {
            stage: "object writer",
            message: e.to_string(),
        })
}

/// Compiles the kernels for this process, using the disk cache as the environment says
/// (`ARCHC_CACHE_DIR`, `ARCHC_NO_CACHE`, `XDG_CACHE_HOME`; see `CacheSettings`).
pub fn compile_kernels(
    kernels: &[Kernel],
    target: &Target,
) -> Result<CompiledProgram, CodegenError> {
    compile_kernels_with(kernels, target, &Options::from_env())
}

/// Compiles the kernels for this process. With a cache directory: load the shared
/// library of these kernels if the cache has it (no LLVM backend run), else compile an
/// object, link it with the system C compiler, store and load it. Any cache or linker
/// problem falls back to the JIT with a warning.
pub fn compile_kernels_with(
    kernels: &[Kernel],
    target: &Target,
    options: &Options,
) -> Result<CompiledProgram, CodegenError> {
    if !target.runs_here() {
        return Err(CodegenError::Target {
            message: format!(
                "`{}` code cannot run on this {} machine; use emit_object instead",
                target.triple,
                std::env::consts::ARCH
            ),
        });
    }
    let syms = symbols(kernels);
    let mut warnings = Vec::new();
    if let Some(dir) = &options.cache {
        let key = cache_key(kernels, target);
        match cache::load(dir, &key, &syms) {
            Ok(Some((lib, fns))) => {
                return Ok(CompiledProgram {
                    fns,
                    origin: Origin::Cache,
                    warnings,
                    _code: Code::Library(lib),
                })
            }
            Ok(None) => {}
            Err(w) => warn(&mut warnings, w),
        }
        let tm = target.machine()?;
        let ctx = new_context();
        let module = optimized_module(&ctx, kernels, target, &tm)?;
        let object = object_of(&module, &tm)?;
        drop(module);
        match cache::store_and_load(dir, &key, &object, &syms, options.cc.as_deref()) {
            Ok((lib, fns)) => {
                return Ok(CompiledProgram {
                    fns,
                    origin: Origin::Built,
                    warnings,
                    _code: Code::Library(lib),
                })
            }
            Err(w) => warn(&mut warnings, w),
        }
    }
    let tm = target.machine()?;
    let (jit, fns) = jit::Jit::compile(|ctx| optimized_module(ctx, kernels, target, &tm), &syms)?;
    Ok(CompiledProgram {
        fns,
        origin: Origin::Jit,
        warnings,
        _code: Code::Jit(jit),
    })
}

fn warn(warnings: &mut Vec<String>, message: String) {
    eprintln!("warning: {message}; compiling in memory instead");
    warnings.push(message);
}
