//! The Cranelift tier: every kernel of a program to machine code in this process, in
//! milliseconds, for the kernel calling convention (`KernelFn`) of the host.
//!
//! Where LLVM spends its time making fast code (vectorising, unrolling, the matmul tiles
//! of `codegen/llvm/tiles`), this tier translates each kernel literally (`translate.rs`)
//! and lets Cranelift's own optimizer do the rest: loops run scalar in the order written,
//! and the math functions are calls to the same Rust functions the kernel IR interpreter
//! uses (`helpers.rs`), so outside matmul tiles the code computes what the interpreter
//! computes, bit for bit. The one place it uses SIMD is the dot-product tile over f32 or
//! bf16 operands (`tile.rs`: `f32x4` accumulators, sums reassociated as a tile allows);
//! other tiles are expanded into their loops. The text of `archc emit --stage clif` is the
//! CLIF each kernel's function is compiled from.

mod helpers;
mod tile;
mod translate;

use super::{CodegenError, KernelFn};
use crate::kernel::Kernel;
use cranelift_codegen::ir::{types, AbiParam, Function, Signature, UserFuncName};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module};
use std::fmt::Write as _;

/// The kernels of a program compiled by Cranelift: the module that owns the code, and a
/// function pointer per kernel.
pub struct ClifProgram {
    module: Option<JITModule>,
    fns: Vec<KernelFn>,
}

// SAFETY: after `finalize_definitions` the module is only kept to free its memory on
// drop; the code the pointers point to is immutable and safe to call from any thread.
unsafe impl Send for ClifProgram {}
unsafe impl Sync for ClifProgram {}

impl std::fmt::Debug for ClifProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClifProgram({} kernels)", self.fns.len())
    }
}

impl Drop for ClifProgram {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: the function pointers die with `self`; nothing calls them after.
            unsafe { m.free_memory() };
        }
    }
}

impl ClifProgram {
    /// Kernel `i`, in program order.
    pub fn kernel(&self, i: usize) -> Option<KernelFn> {
        self.fns.get(i).copied()
    }

    pub fn kernels(&self) -> &[KernelFn] {
        &self.fns
    }

    /// Calls kernel `index` (which must exist) on one thread's chunk.
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

fn cl(stage: &'static str) -> impl Fn(String) -> CodegenError {
    move |message| CodegenError::Cranelift { stage, message }
}

/// The host's instruction set, optimizing for speed.
fn host_isa() -> Result<OwnedTargetIsa, CodegenError> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v)
            .map_err(|e| cl("settings")(format!("{k}={v}: {e}")))
    };
    set(&mut flags, "opt_level", "speed")?;
    // The kernels are verified as kernel IR before this tier sees them; verifying every
    // CLIF function again would double the compile time.
    set(&mut flags, "enable_verifier", "false")?;
    let isa = cranelift_native::builder().map_err(|e| cl("isa")(e.to_string()))?;
    isa.finish(settings::Flags::new(flags))
        .map_err(|e| cl("isa")(e.to_string()))
}

fn new_module() -> Result<JITModule, CodegenError> {
    let mut builder = JITBuilder::with_isa(host_isa()?, default_libcall_names());
    for h in helpers::Helper::all() {
        if let Some(addr) = h.address() {
            builder.symbol(h.symbol(), addr);
        }
    }
    Ok(JITModule::new(builder))
}

/// The entry signature of every kernel: `(ptr bufs, ptr dims, i64 thread, i64 threads)`.
fn kernel_signature(module: &JITModule) -> Signature {
    let mut s = module.make_signature();
    s.params.extend([types::I64; 4].map(AbiParam::new));
    s
}

/// Builds every kernel's function in `module`, handing each to `each` with its index.
fn build(
    kernels: &[Kernel],
    module: &mut JITModule,
    mut each: impl FnMut(usize, &Kernel, &mut JITModule, &mut Context) -> Result<(), CodegenError>,
) -> Result<(), CodegenError> {
    let declared = helpers::Declared::declare(module).map_err(cl("module"))?;
    let sig = kernel_signature(module);
    let config = module.isa().frontend_config();
    let mut ctx = module.make_context();
    let mut fb = FunctionBuilderContext::new();
    for (i, k) in kernels.iter().enumerate() {
        let k = crate::kernel::tile::expand_tiles_where(k, &|t| !tile::lowers(t, k));
        ctx.func = Function::with_name_signature(UserFuncName::user(0, i as u32), sig.clone());
        let imports = declared.import(module, &mut ctx.func, &k);
        let b = FunctionBuilder::new(&mut ctx.func, &mut fb);
        translate::Translator::new(&k, b, &imports)?.finish(config)?;
        each(i, &k, module, &mut ctx)?;
        module.clear_context(&mut ctx);
    }
    Ok(())
}

/// The CLIF of every kernel, as each function is handed to the code generator.
pub fn emit_clif(kernels: &[Kernel]) -> Result<String, CodegenError> {
    let mut module = new_module()?;
    let mut out = String::new();
    build(kernels, &mut module, |i, k, module, ctx| {
        let _ = writeln!(out, "; kernel {i}: {}", k.name);
        let text = ctx.func.display().to_string();
        let _ = writeln!(out, "{}", named(&text, &super::body::symbol(i, k), module));
        Ok(())
    })?;
    Ok(out)
}

/// `text` with the function's own name and its callees' symbols in place of Cranelift's
/// numbered names (`u0:3`), so the text reads as what is linked.
fn named(text: &str, symbol: &str, module: &JITModule) -> String {
    let decls = module.declarations();
    text.lines()
        .map(|line| {
            if let Some(rest) = line.strip_prefix("function u0:") {
                let args = rest.find('(').map_or("", |at| &rest[at..]);
                return format!("function %{symbol}{args}");
            }
            let trimmed = line.trim_start();
            let callee = trimmed.starts_with("fn") && trimmed.contains(" = ");
            match line.find("u0:") {
                Some(at) if callee => {
                    let digits: String = line[at + 3..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    let name = digits
                        .parse::<u32>()
                        .ok()
                        .and_then(|n| decls.get_function_decl(FuncId::from_u32(n)).name.clone());
                    match name {
                        Some(name) => {
                            format!("{}%{name}{}", &line[..at], &line[at + 3 + digits.len()..])
                        }
                        None => line.to_string(),
                    }
                }
                _ => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every kernel compiled for the host and loaded in this process.
pub fn compile(kernels: &[Kernel]) -> Result<ClifProgram, CodegenError> {
    let mut module = new_module()?;
    let sig = kernel_signature(&module);
    let mut ids = Vec::with_capacity(kernels.len());
    build(kernels, &mut module, |i, k, module, ctx| {
        let id = module
            .declare_function(&super::body::symbol(i, k), Linkage::Export, &sig)
            .map_err(|e| cl("module")(e.to_string()))?;
        module
            .define_function(id, ctx)
            .map_err(|e| cl("codegen")(format!("kernel `{}`: {e:?}", k.name)))?;
        ids.push(id);
        Ok(())
    })?;
    module
        .finalize_definitions()
        .map_err(|e| cl("jit")(e.to_string()))?;
    let fns = ids
        .into_iter()
        .map(|id| {
            let p = module.get_finalized_function(id);
            // SAFETY: every kernel was defined with `kernel_signature`, which is
            // `KernelFn` under the platform's C calling convention.
            unsafe { std::mem::transmute::<*const u8, KernelFn>(p) }
        })
        .collect();
    Ok(ClifProgram {
        module: Some(module),
        fns,
    })
}
