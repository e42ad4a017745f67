//! In-memory compilation: an MCJIT execution engine that owns the optimized module, kept
//! alive next to its LLVM context for as long as the function pointers are used.

use super::{new_context, CodegenError, KernelFn};
use inkwell::context::Context;
use inkwell::execution_engine::ExecutionEngine;
use inkwell::module::Module;
use inkwell::OptimizationLevel;
use std::mem::ManuallyDrop;

/// An execution engine and the context its module lives in. The engine borrows the
/// context, so both are kept together and dropped engine-first.
pub(super) struct Jit {
    engine: ManuallyDrop<ExecutionEngine<'static>>,
    context: ManuallyDrop<Box<Context>>,
}

// SAFETY: the engine and context are only touched on creation and drop, never shared:
// the `Rc` inside the engine has no clones outside this struct, and the generated code
// the function pointers point to is immutable and thread-safe to call.
unsafe impl Send for Jit {}
unsafe impl Sync for Jit {}

impl std::fmt::Debug for Jit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Jit")
    }
}

impl Drop for Jit {
    fn drop(&mut self) {
        // SAFETY: each field is dropped exactly once, the engine (which holds the
        // module of the context) before the context.
        unsafe {
            ManuallyDrop::drop(&mut self.engine);
            ManuallyDrop::drop(&mut self.context);
        }
    }
}

impl Jit {
    /// Builds a module in a fresh context with `build`, then JIT-compiles it and looks
    /// up `symbols`. The backend takes its CPU from the functions' `target-cpu` and
    /// `target-features` attributes.
    pub(super) fn compile(
        build: impl for<'ctx> FnOnce(&'ctx Context) -> Result<Module<'ctx>, CodegenError>,
        symbols: &[String],
    ) -> Result<(Jit, Vec<KernelFn>), CodegenError> {
        let context = Box::new(new_context());
        // SAFETY: the context is boxed, so its address is stable, and `Jit` drops the
        // engine (the only holder of this reference) before the box.
        let ctx: &'static Context = unsafe { &*(context.as_ref() as *const Context) };
        let module = build(ctx)?;
        let engine = module
            .create_jit_execution_engine(OptimizationLevel::Aggressive)
            .map_err(|e| CodegenError::Llvm {
                stage: "jit",
                message: e.to_string(),
            })?;
        let jit = Jit {
            engine: ManuallyDrop::new(engine),
            context: ManuallyDrop::new(context),
        };
        let mut fns = Vec::with_capacity(symbols.len());
        for s in symbols {
            let addr = jit
                .engine
                .get_function_address(s)
                .map_err(|e| CodegenError::Llvm {
                    stage: "jit",
                    message: format!("no function `{s}` after compilation: {e:?}"),
                })?;
            if addr == 0 {
                return Err(CodegenError::Llvm {
                    stage: "jit",
                    message: format!("function `{s}` has a null address"),
                });
            }
            // SAFETY: `s` was defined with the kernel calling convention
            // `void(ptr, ptr, i64, i64)`, which is `KernelFn` under the C ABI.
            fns.push(unsafe { std::mem::transmute::<usize, KernelFn>(addr) });
        }
        Ok((jit, fns))
    }
}

#[cfg(unix)]
#[link(name = "m")]
extern "C" {
    fn expf(x: f32) -> f32;
    fn exp2f(x: f32) -> f32;
    fn logf(x: f32) -> f32;
    fn log2f(x: f32) -> f32;
    fn log10f(x: f32) -> f32;
    fn sinf(x: f32) -> f32;
    fn cosf(x: f32) -> f32;
    fn sincosf(x: f32, s: *mut f32, c: *mut f32);
    fn tanhf(x: f32) -> f32;
    fn powf(x: f32, y: f32) -> f32;
    fn floorf(x: f32) -> f32;
    fn sqrtf(x: f32) -> f32;
    fn fmaf(x: f32, y: f32, z: f32) -> f32;
    fn fminf(x: f32, y: f32) -> f32;
    fn fmaxf(x: f32, y: f32) -> f32;
    fn ldexpf(x: f32, e: i32) -> f32;
}

/// Tells the JIT's symbol resolver where the math functions are, whether they are called
/// from the IR or introduced by the backend (`llvm.exp.f32` becomes a call to `expf`, a
/// `sin` and `cos` of one value become `sincosf`), so resolution does not depend on
/// what the host binary happens to export.
pub(super) fn register_libm_symbols() {
    #[cfg(unix)]
    {
        let table: [(&std::ffi::CStr, *mut std::ffi::c_void); 16] = [
            (c"expf", expf as *mut _),
            (c"exp2f", exp2f as *mut _),
            (c"logf", logf as *mut _),
            (c"log2f", log2f as *mut _),
            (c"log10f", log10f as *mut _),
            (c"sinf", sinf as *mut _),
            (c"cosf", cosf as *mut _),
            (c"sincosf", sincosf as *mut _),
            (c"tanhf", tanhf as *mut _),
            (c"powf", powf as *mut _),
            (c"floorf", floorf as *mut _),
            (c"sqrtf", sqrtf as *mut _),
            (c"fmaf", fmaf as *mut _),
            (c"fminf", fminf as *mut _),
            (c"fmaxf", fmaxf as *mut _),
            (c"ldexpf", ldexpf as *mut _),
        ];
        for (name, addr) in table {
            // SAFETY: the names are NUL-terminated and the addresses are the C library's
            // functions, valid for the life of the process.
            unsafe { inkwell::llvm_sys::support::LLVMAddSymbol(name.as_ptr(), addr) };
        }
    }
}
