//! The target-neutral emitter of kernel bodies: one `kernel::Kernel` to LLVM IR, with
//! everything that depends on the machine asked of a `Target` (the CPU's in
//! `codegen::llvm`, the GPU's in `codegen::ptx`). This module knows no instruction set.
//!
//! Every variable lives in an `alloca` (mem2reg makes SSA of it), so any use the kernel
//! IR's scoping allows is dominated by a definition. Integer arithmetic wraps; division and
//! remainder by zero yield 0 instead of trapping (the interpreter reports an error there),
//! and `f32 → i64` saturates (NaN → 0), as Rust's `as` does.
//!
//! Files by what they emit: `emitter.rs` the state of one kernel and its frame (variable
//! slots, buffer bases, the exit), `scratch.rs` scratch buffers, `stmt.rs` statements and
//! loops, `hints.rs` loop metadata, `expr.rs` expressions and the dispatch of math to the
//! target, `memory.rs` loads, stores and element conversions.

mod emitter;
mod expr;
mod hints;
mod memory;
mod scratch;
mod stmt;

pub(crate) use emitter::Emitter;
pub(crate) use hints::HintArg;
pub(crate) use scratch::Scratch;
pub(crate) use stmt::Loop;

use super::CodegenError;
use crate::kernel::{Access, Elem, Kernel, Stmt};
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::values::{BasicValueEnum, FloatValue, FunctionValue, IntValue, PointerValue};

/// What the body emitter asks of a code generation target. A target is made for one
/// kernel (it may hold that kernel's plan) and is called while the kernel is emitted,
/// always with the emitter, whose builder is where the target's code goes.
///
/// The hooks take `&self`: the emitter is the one mutable thing during emission, and a
/// target that must remember something between hooks keeps it in a `Cell`.
pub(crate) trait Target<'ctx> {
    /// Declares kernel `index` in `module`: the function the module exports, with the
    /// target's calling convention, and the function whose body the emitter fills (it may
    /// be the same one). The body function takes one pointer per buffer of
    /// `param_bufs(k)`, in order, then `seq` and `past` as `i64`, then whatever else the
    /// target passes itself.
    fn declare(
        &self,
        ctx: &'ctx Context,
        module: &Module<'ctx>,
        index: usize,
        k: &Kernel,
    ) -> Result<Declared<'ctx>, CodegenError>;

    /// Emitted first in the body's entry block, before any variable has a slot: whatever
    /// the target reads once per invocation, such as where the invocation runs (a CPU
    /// passes `thread` and `threads` as parameters; a GPU reads its grid position).
    fn prologue(&self, e: &mut Emitter<'ctx, '_>) -> Result<(), CodegenError>;

    /// The base of scratch buffer `buf` (`len` elements of `elem`), emitted in the entry
    /// block after the variables' slots. `Scratch::heap` is memory the target allocates
    /// when the kernel runs: the body then runs only if every such allocation succeeded,
    /// and `free_scratch` releases them at the end.
    fn scratch(
        &self,
        e: &mut Emitter<'ctx, '_>,
        buf: usize,
        elem: Elem,
        len: u64,
    ) -> Result<Scratch<'ctx>, CodegenError>;

    /// Releases the run-time allocations of `scratch`, after the body.
    fn free_scratch(
        &self,
        e: &mut Emitter<'ctx, '_>,
        heap: &[PointerValue<'ctx>],
    ) -> Result<(), CodegenError>;

    /// This invocation's share of a `Parallel` loop over `lo..hi` by `step`: the bounds
    /// and step of the iterations it runs (a CPU thread's chunk, a GPU's grid stride).
    fn split_parallel(
        &self,
        e: &mut Emitter<'ctx, '_>,
        range: Bounds<'ctx>,
    ) -> Result<Bounds<'ctx>, CodegenError>;

    /// `f(x)` for the math functions whose code is the target's choice.
    fn math(
        &self,
        e: &mut Emitter<'ctx, '_>,
        f: MathFn,
        x: FloatValue<'ctx>,
    ) -> Result<FloatValue<'ctx>, CodegenError>;

    /// `powf(a, b)`.
    fn pow(
        &self,
        e: &mut Emitter<'ctx, '_>,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> Result<FloatValue<'ctx>, CodegenError>;

    /// The properties of the `!llvm.loop` node of a loop the emitter lowers (vectorize
    /// and unroll hints); none means no node.
    fn loop_hints(&self, lp: &Loop<'_>) -> Vec<(&'static str, HintArg)>;

    /// Offers statement `s` to the target before the emitter lowers it: `Handled` when
    /// the target emitted it (a loop it recognises, a statement only it can lower),
    /// `NotMine` to leave it to the emitter. `first_loop` is the pre-order number of `s`
    /// if it is a loop, else of the first loop inside it; a loop reaches this hook
    /// checked (step, variable type). A target may lower part of a loop itself and the
    /// rest with `Emitter::counted_loop`.
    fn lower_stmt(
        &self,
        e: &mut Emitter<'ctx, '_>,
        s: &Stmt,
        first_loop: usize,
    ) -> Result<Lowered, CodegenError>;

    /// Stores `value` at `ptr`, in a buffer of `access`, at the builder's position.
    fn store(
        &self,
        e: &mut Emitter<'ctx, '_>,
        ptr: PointerValue<'ctx>,
        value: BasicValueEnum<'ctx>,
        access: Access,
    ) -> Result<(), CodegenError>;
}

/// The functions of a kernel that `Target::declare` made.
#[derive(Clone, Copy)]
pub(crate) struct Declared<'ctx> {
    /// The function the module exports under the kernel's symbol.
    pub entry: FunctionValue<'ctx>,
    /// The function the emitter fills.
    pub body: FunctionValue<'ctx>,
}

/// The bounds and step of a loop's iterations, as loop-variable values.
#[derive(Clone, Copy)]
pub(crate) struct Bounds<'ctx> {
    pub lo: IntValue<'ctx>,
    pub hi: IntValue<'ctx>,
    pub step: IntValue<'ctx>,
}

/// Whether a target lowered a statement itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lowered {
    Handled,
    NotMine,
}

/// The math functions of `Target::math`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MathFn {
    Exp,
    Log,
    Sin,
    Cos,
    Tanh,
}

/// Adds kernel `index` to `module`: `target` declares it, the emitter fills its body.
/// Returns the exported function.
pub(crate) fn emit_kernel<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    index: usize,
    k: &Kernel,
    target: &dyn Target<'ctx>,
) -> Result<FunctionValue<'ctx>, CodegenError> {
    let declared = target.declare(ctx, module, index, k)?;
    Emitter::new(ctx, module, k, declared.body, target)?.run()?;
    Ok(declared.entry)
}

/// The buffers of `k` that are parameters (every one but scratch), by index, in order.
pub(crate) fn param_bufs(k: &Kernel) -> Vec<usize> {
    (0..k.bufs.len())
        .filter(|&b| !matches!(k.bufs[b].access, Access::Scratch { .. }))
        .collect()
}

/// The symbol of kernel `index`: a prefix keeps it clear of C library names (a kernel
/// may well be called `exp`), and the index keeps it unique in the module.
pub(crate) fn symbol(index: usize, kernel: &Kernel) -> String {
    let name: String = kernel
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("archc_k{index}_{name}")
}

/// A context whose diagnostics do not reach stderr: optimization remarks and warnings
/// ("loop not vectorized") are expected for some kernels and would only be noise, and
/// errors surface as `CodegenError`s from the stage that failed.
pub(crate) fn new_context() -> Context {
    use inkwell::llvm_sys::core::LLVMContextSetDiagnosticHandler;
    use inkwell::llvm_sys::prelude::LLVMDiagnosticInfoRef;
    extern "C" fn ignore(_: LLVMDiagnosticInfoRef, _: *mut std::ffi::c_void) {}
    let ctx = Context::create();
    // SAFETY: the handler is a plain function that touches nothing and lives forever.
    unsafe { LLVMContextSetDiagnosticHandler(ctx.raw(), Some(ignore), std::ptr::null_mut()) };
    ctx
}
