//! How one kernel maps onto the GPU: thread mode or warp mode, the block size, which
//! vector loops a warp shares and their reductions, and the launch shape.
//!
//! - **Thread mode**: one thread per iteration of the parallel loop (a grid-stride loop,
//!   so any grid is correct); everything else runs serially in that thread, and scratch is
//!   local memory. Chosen when no vector loop can be shared by a warp.
//! - **Warp mode**: one warp per iteration of the parallel loop. The lanes run the
//!   serial code alike ("redundantly": same values in every lane) and split each
//!   *distributable* vector loop among themselves, lane `l` taking iterations `l, l+32,
//!   ...`: consecutive lanes touch consecutive elements, so loads coalesce. Reductions
//!   into locals are combined with butterfly shuffles. Scratch is a per-warp slice of
//!   shared memory, so what one lane writes the others can read after a warp barrier.
//!   A store in redundant code is done by lane 0 alone (between barriers when the kernel
//!   also reads that buffer).
//!
//! A vector loop is distributable when every assignment inside it to a local declared
//! outside it is a reduction `acc = acc ⊕ e` (⊕ one of `+ - * min max`, `e` free of `acc`)
//! and the accumulator is read nowhere else in the loop. The kernel IR's `Vector` contract
//! (independent iterations; accumulations may be reassociated) makes the split legal.
//!
//! **Invariant:** loops are numbered in pre-order, the order the translation visits them.

use crate::kernel::{Access, BinOp, DimVar, Expr, Kernel, LoopKind, Stmt, Ty, VarId};
use std::collections::{BTreeMap, BTreeSet};

use super::device::WARP;

/// Static shared memory a kernel may use without opting in to more (48 KiB on every GPU).
pub const MAX_SHARED_BYTES: u64 = 48 * 1024;
/// Warps per block in warp mode when shared memory allows.
pub const WARPS_PER_BLOCK: u32 = 4;
/// Threads per block in thread mode.
pub const THREADS_PER_BLOCK: u32 = 128;
/// Local memory a thread may have (PTX's limit is 512 KiB).
pub const MAX_LOCAL_BYTES: u64 = 512 * 1024;

/// How the kernel's work maps to threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Thread,
    Warp,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Thread => "thread",
            Mode::Warp => "warp",
        }
    }
}

/// How partial results of a distributed vector loop combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedOp {
    Add,
    Mul,
    Max,
    Min,
}

/// The iteration count of the parallel loop as a function of `seq` and `past`, when the
/// loop is at the top of the kernel and its bounds depend on nothing else.
#[derive(Debug, Clone, PartialEq)]
pub struct Trips {
    pub start: Expr,
    pub end: Expr,
    pub step: u64,
}

impl Trips {
    /// The number of iterations at these sizes, or `None` when a bound cannot be
    /// evaluated (it overflows or divides by zero).
    pub fn count(&self, seq: i64, past: i64) -> Option<u64> {
        let lo = eval_dims(&self.start, seq, past)?;
        let hi = eval_dims(&self.end, seq, past)?;
        let span = hi.checked_sub(lo)?.max(0) as u64;
        Some(span.div_ceil(self.step.max(1)))
    }
}

/// Evaluates an integer expression of constants, `seq` and `past`.
pub fn eval_dims(e: &Expr, seq: i64, past: i64) -> Option<i64> {
    match e {
        Expr::I64(x) => Some(*x),
        Expr::Dim(DimVar::Seq) => Some(seq),
        Expr::Dim(DimVar::Past) => Some(past),
        Expr::Bin(op, a, b) => {
            let (a, b) = (eval_dims(a, seq, past)?, eval_dims(b, seq, past)?);
            match op {
                BinOp::Add => a.checked_add(b),
                BinOp::Sub => a.checked_sub(b),
                BinOp::Mul => a.checked_mul(b),
                BinOp::Div => a.checked_div(b),
                BinOp::Rem => a.checked_rem(b),
                BinOp::Min => Some(a.min(b)),
                BinOp::Max => Some(a.max(b)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The launch of a kernel: `block` threads per block and a grid of
/// `ceil(trips / per_block)` blocks (one block when the kernel has no parallel loop, a
/// fixed `DEFAULT_BLOCKS` when the trip count is not known before the launch).
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchShape {
    pub mode: Mode,
    pub block: u32,
    /// Parallel iterations one block runs at once: threads (thread mode) or warps.
    pub per_block: u32,
    pub shared_bytes: u64,
    /// `None` with `parallel`: unknown before the launch.
    pub trips: Option<Trips>,
    /// Whether the kernel has a parallel loop at all.
    pub parallel: bool,
}

/// Blocks launched when the parallel trip count is not known on the host.
pub const DEFAULT_BLOCKS: u32 = 1024;

impl LaunchShape {
    /// Blocks in the grid at these sizes (at least 1).
    pub fn grid(&self, seq: i64, past: i64) -> u32 {
        if !self.parallel {
            return 1;
        }
        match self.trips.as_ref().and_then(|t| t.count(seq, past)) {
            Some(n) => n
                .div_ceil(self.per_block.max(1) as u64)
                .clamp(1, i32::MAX as u64) as u32,
            None => DEFAULT_BLOCKS,
        }
    }
}

/// The plan of one kernel; what the translation and the manifest read.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelPlan {
    pub mode: Mode,
    pub warps_per_block: u32,
    /// Loop number (pre-order) → the reductions of each distributed vector loop.
    pub distributed: BTreeMap<usize, Vec<(VarId, RedOp)>>,
    pub launch: LaunchShape,
}

/// Plans `k`. Fails only when its scratch cannot fit in local memory.
pub fn plan(k: &Kernel) -> Result<KernelPlan, String> {
    let mut distributed = BTreeMap::new();
    let mut counter = 0usize;
    find_distributable(k, &k.body, &mut counter, &mut distributed);

    let scratch: u64 = k
        .bufs
        .iter()
        .map(|b| match b.access {
            // Each array 16-byte aligned.
            Access::Scratch { len } => (len.max(1) * b.elem.bytes() as u64).div_ceil(16) * 16,
            _ => 0,
        })
        .sum();
    let parallel = find_parallel(&k.body);
    let has_parallel = parallel.is_some() || contains_parallel(&k.body);
    let warp_ok = !distributed.is_empty() && scratch <= MAX_SHARED_BYTES;
    let (mode, warps_per_block) = if warp_ok {
        let fit = MAX_SHARED_BYTES.checked_div(scratch).unwrap_or(u64::MAX);
        let wpb = if has_parallel {
            fit.clamp(1, WARPS_PER_BLOCK as u64) as u32
        } else {
            1
        };
        (Mode::Warp, wpb)
    } else {
        if scratch > MAX_LOCAL_BYTES {
            return Err(format!(
                "{scratch} bytes of scratch exceed the {MAX_LOCAL_BYTES} bytes of local memory \
                 a GPU thread may have"
            ));
        }
        distributed.clear();
        (Mode::Thread, 1)
    };
    let (block, per_block, shared_bytes) = match mode {
        Mode::Warp => (
            WARP * warps_per_block,
            warps_per_block,
            scratch * warps_per_block as u64,
        ),
        // Without a parallel loop every thread would run the whole kernel: one suffices.
        Mode::Thread if has_parallel => (THREADS_PER_BLOCK, THREADS_PER_BLOCK, 0),
        Mode::Thread => (1, 1, 0),
    };
    Ok(KernelPlan {
        mode,
        warps_per_block,
        distributed,
        launch: LaunchShape {
            mode,
            block,
            per_block,
            shared_bytes,
            trips: parallel,
            parallel: has_parallel,
        },
    })
}

/// The parallel loop's bounds when it is a top-level statement with bounds in `seq`,
/// `past` and constants.
fn find_parallel(body: &[Stmt]) -> Option<Trips> {
    body.iter().find_map(|s| match s {
        Stmt::Loop {
            start,
            end,
            step,
            kind: LoopKind::Parallel,
            ..
        } if closed(start) && closed(end) => Some(Trips {
            start: start.clone(),
            end: end.clone(),
            step: *step,
        }),
        _ => None,
    })
}

fn closed(e: &Expr) -> bool {
    match e {
        Expr::I64(_) | Expr::Dim(_) => true,
        Expr::Bin(_, a, b) => closed(a) && closed(b),
        _ => false,
    }
}

fn contains_parallel(body: &[Stmt]) -> bool {
    body.iter().any(|s| match s {
        Stmt::Loop { kind, body, .. } => *kind == LoopKind::Parallel || contains_parallel(body),
        Stmt::If { then, els, .. } => contains_parallel(then) || contains_parallel(els),
        _ => false,
    })
}

/// Numbers the loops of `body` in pre-order, recording the vector loops that can be split
/// over a warp (not descending into them: inside, each lane runs its iterations alone).
fn find_distributable(
    k: &Kernel,
    body: &[Stmt],
    counter: &mut usize,
    out: &mut BTreeMap<usize, Vec<(VarId, RedOp)>>,
) {
    for s in body {
        match s {
            Stmt::Loop {
                kind, body: inner, ..
            } => {
                let n = *counter;
                *counter += 1;
                if let LoopKind::Vector(_) = kind {
                    if let Some(reds) = reductions(k, inner) {
                        out.insert(n, reds);
                        *counter += count_loops(inner);
                        continue;
                    }
                }
                find_distributable(k, inner, counter, out);
            }
            Stmt::If { then, els, .. } => {
                find_distributable(k, then, counter, out);
                find_distributable(k, els, counter, out);
            }
            _ => {}
        }
    }
}

fn count_loops(body: &[Stmt]) -> usize {
    body.iter()
        .map(|s| match s {
            Stmt::Loop { body, .. } => 1 + count_loops(body),
            Stmt::If { then, els, .. } => count_loops(then) + count_loops(els),
            _ => 0,
        })
        .sum()
}

/// The reductions of a vector loop body if it is distributable.
fn reductions(k: &Kernel, body: &[Stmt]) -> Option<Vec<(VarId, RedOp)>> {
    let mut inner = BTreeSet::new();
    declared(body, &mut inner);
    let mut reds: BTreeMap<VarId, RedOp> = BTreeMap::new();
    if !collect_sets(body, &inner, &mut reds) {
        return None;
    }
    for &v in reds.keys() {
        let ty = k.vars.get(v.0 as usize)?.ty;
        if ty == Ty::Bool {
            return None;
        }
        // The accumulator may appear only as the left operand of its own update.
        if reads_outside_update(body, v) {
            return None;
        }
    }
    if contains_parallel(body) {
        return None;
    }
    Some(reds.into_iter().collect())
}

/// Variables declared (by `let`, `local` or as a loop variable) inside `body`.
fn declared(body: &[Stmt], out: &mut BTreeSet<VarId>) {
    for s in body {
        match s {
            Stmt::Let { var, .. } | Stmt::Local { var, .. } => {
                out.insert(*var);
            }
            Stmt::Loop { var, body, .. } => {
                out.insert(*var);
                declared(body, out);
            }
            Stmt::If { then, els, .. } => {
                declared(then, out);
                declared(els, out);
            }
            _ => {}
        }
    }
}

/// Checks every `set` of an outer variable is a reduction; false if one is not.
fn collect_sets(body: &[Stmt], inner: &BTreeSet<VarId>, reds: &mut BTreeMap<VarId, RedOp>) -> bool {
    for s in body {
        match s {
            Stmt::Set { var, value } if !inner.contains(var) => {
                let Some(op) = reduction_op(*var, value) else {
                    return false;
                };
                if reds.insert(*var, op).is_some_and(|prev| prev != op) {
                    return false;
                }
            }
            Stmt::Loop { body, .. } if !collect_sets(body, inner, reds) => return false,
            Stmt::If { then, els, .. }
                if !collect_sets(then, inner, reds) || !collect_sets(els, inner, reds) =>
            {
                return false
            }
            _ => {}
        }
    }
    true
}

/// `acc ⊕ e` (or `e ⊕ acc` for commutative ⊕) with `e` free of `acc`.
fn reduction_op(acc: VarId, value: &Expr) -> Option<RedOp> {
    let Expr::Bin(op, a, b) = value else {
        return None;
    };
    let red = match op {
        BinOp::Add | BinOp::Sub => RedOp::Add,
        BinOp::Mul => RedOp::Mul,
        BinOp::Max => RedOp::Max,
        BinOp::Min => RedOp::Min,
        _ => return None,
    };
    let is_acc = |e: &Expr| matches!(e, Expr::Var(v) if *v == acc);
    if is_acc(a) && !mentions(b, acc) {
        return Some(red);
    }
    if *op != BinOp::Sub && is_acc(b) && !mentions(a, acc) {
        return Some(red);
    }
    None
}

fn mentions(e: &Expr, v: VarId) -> bool {
    match e {
        Expr::Var(x) => *x == v,
        Expr::Load { index, .. } => mentions(index, v),
        Expr::Un(_, a) => mentions(a, v),
        Expr::Bin(_, a, b) => mentions(a, v) || mentions(b, v),
        Expr::Select(c, a, b) => mentions(c, v) || mentions(a, v) || mentions(b, v),
        Expr::F32(_) | Expr::I64(_) | Expr::Bool(_) | Expr::Dim(_) => false,
    }
}

/// Whether `v` is read anywhere in `body` except as the accumulator operand of a `set v`.
fn reads_outside_update(body: &[Stmt], v: VarId) -> bool {
    body.iter().any(|s| match s {
        Stmt::Let { value, .. } => mentions(value, v),
        Stmt::Local { init, .. } => mentions(init, v),
        Stmt::Set { var, value } if *var == v => match value {
            // `reduction_op` accepted it: the other operand is free of `v`.
            Expr::Bin(_, _, _) => false,
            other => mentions(other, v),
        },
        Stmt::Set { value, .. } => mentions(value, v),
        Stmt::Store { index, value, .. } => mentions(index, v) || mentions(value, v),
        Stmt::Loop {
            start, end, body, ..
        } => mentions(start, v) || mentions(end, v) || reads_outside_update(body, v),
        Stmt::If { cond, then, els } => {
            mentions(cond, v) || reads_outside_update(then, v) || reads_outside_update(els, v)
        }
    })
}
