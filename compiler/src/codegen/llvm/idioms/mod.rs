//! Loops that the CPU target lowers itself (`body::Target::lower_stmt`): vector loops of
//! dot products (`dot.rs`) and tokens-in-lanes matmul tiles (`lanes.rs`), recognised by
//! their shape in the kernel IR and emitted as explicit `<16 x float>` code where LLVM's
//! vectorizer would not find it.

mod dot;
mod lanes;

use crate::codegen::body::{Emitter, Loop, Lowered};
use crate::codegen::CodegenError;
use crate::kernel::{Elem, Expr, LoopKind, Stmt, VarId};
use dot::{dot_loop, dot_plan, Dot};
use lanes::{lane_loop, lane_plan};

/// Lowers `s` if it is a unit-step vector loop of a recognised shape. `bf16_dot`: the
/// CPU has `vdpbf16ps`.
pub(super) fn lower_loop(
    e: &mut Emitter<'_, '_>,
    s: &Stmt,
    bf16_dot: bool,
) -> Result<Lowered, CodegenError> {
    let Some(lp) = Loop::of(s) else {
        return Ok(Lowered::NotMine);
    };
    if !matches!(lp.kind, LoopKind::Vector(_)) || lp.step != 1 {
        return Ok(Lowered::NotMine);
    }
    if let Some(plan) = lane_plan(lp.var, lp.start, lp.end, lp.body, e.k) {
        lane_loop(e, &plan, bf16_dot)?;
        return Ok(Lowered::Handled);
    }
    let bf16 = if bf16_dot {
        dot_plan(lp.var, lp.body, e.k, Elem::Bf16)
    } else {
        None
    };
    // Many f32 dot products against one shared row: 16 lanes at a time, one butterfly
    // at the end.
    let f32 = dot_plan(lp.var, lp.body, e.k, Elem::F32).filter(Dot::many_rows);
    if bf16.is_none() && f32.is_none() {
        return Ok(Lowered::NotMine);
    }
    // The main part runs as dot products; the ordinary loop finishes the rest.
    let mut range = e.bounds(&lp)?;
    for plan in bf16.iter().chain(&f32) {
        range.lo = dot_loop(e, plan, range.lo, range.hi)?;
    }
    e.counted_loop(&lp, range)?;
    Ok(Lowered::Handled)
}

/// Whether `e` reads any of `vars`.
fn mentions(e: &Expr, vars: &[VarId]) -> bool {
    match e {
        Expr::Var(v) => vars.contains(v),
        Expr::F32(_) | Expr::I64(_) | Expr::Bool(_) | Expr::Dim(_) => false,
        Expr::Load { index, .. } => mentions(index, vars),
        Expr::Un(_, a) => mentions(a, vars),
        Expr::Bin(_, a, b) => mentions(a, vars) || mentions(b, vars),
        Expr::Select(c, a, b) => mentions(c, vars) || mentions(a, vars) || mentions(b, vars),
    }
}
