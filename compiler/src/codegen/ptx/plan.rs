//! How one kernel maps onto the GPU: thread mode or warp mode, the block size, which
//! vector loops a warp shares and their reductions, and the launch shape.
//!
//! - **Thread mode**: one thread per iteration of the parallel loop (a grid-stride loop,
//!   so any grid is correct); everything else runs serially in that thread, and scratch is
//!   local memory. Chosen when no vector loop can be shared by a warp and the scratch
//!   is small.
//! - **Warp mode**: one warp per iteration of the parallel loop. The lanes run the
//!   serial code alike ("redundantly": same values in every lane) and split each
//!   *distributable* vector loop among themselves, lane `l` taking iterations `l, l+32,
//!   ...`: consecutive lanes touch consecutive elements, so loads coalesce. Reductions
//!   into locals are combined with butterfly shuffles. Scratch is a per-warp slice of
//!   shared (or global) memory, so what one lane writes the others can read after a warp
//!   barrier.
//!   A store in redundant code is done by lane 0 alone (between barriers when the kernel
//!   also reads that buffer).
//!
//! **Where scratch lives.** Thread mode keeps scratch in local memory only when it is
//! small (`MAX_LOCAL_SCRATCH_BYTES`); a kernel with more scratch runs in warp mode even
//! without a distributable loop (the lanes then run everything alike), so that its
//! scratch is a per-warp slice of memory every lane sees:
//! - **static shared** memory when the block's slices fit in 48 KiB;
//! - **dynamic shared** memory (`.extern .shared`, sized at the launch; the runtime opts
//!   the kernel in to more than 48 KiB) when one warp's slice fits in
//!   `MAX_DYNAMIC_SHARED_BYTES`, the opt-in limit of the smallest supported GPU;
//! - else **global** memory: a module-level `.global` array of `slots` per-warp slices,
//!   one warp per block, the grid capped at `slots` blocks (`LaunchShape::max_blocks`).
//!   Grid-stride loops make any grid correct, so the cap only bounds the memory; `slots`
//!   is the parallel loop's trip count when it is a constant, at most what
//!   `GLOBAL_SCRATCH_BUDGET` allows. The array belongs to the loaded module, so launches
//!   of one module must not overlap (the runtime runs them in order on one stream).
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
/// Scratch a thread-mode kernel keeps in local memory; more goes to warp mode.
pub const MAX_LOCAL_SCRATCH_BYTES: u64 = 4 * 1024;
/// Dynamic shared memory one block may opt in to on every supported GPU: 163 KiB on
/// sm_80 (227 KiB on sm_90; the runtime checks the device's own limit).
pub const MAX_DYNAMIC_SHARED_BYTES: u64 = 163 * 1024;
/// Global memory the per-warp scratch slices of one kernel may take in all.
pub const GLOBAL_SCRATCH_BUDGET: u64 = 256 * 1024 * 1024;
/// Per-warp slices of global scratch at most (and so blocks in the capped grid).
pub const MAX_GLOBAL_SLOTS: u64 = 1024;

/// Where a kernel's scratch arrays live (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// No scratch.
    None,
    /// Thread mode: local memory of each thread.
    Local,
    /// Warp mode: one static `.shared` array per scratch buffer.
    Shared,
    /// Warp mode: slices of the kernel's one `.extern .shared` array.
    DynamicShared,
    /// Warp mode: slices of a module-level `.global` array of `slots` warps.
    Global,
}

impl Home {
    pub fn as_str(self) -> &'static str {
        match self {
            Home::None => "none",
            Home::Local => "local",
            Home::Shared => "shared",
            Home::DynamicShared => "dynamic_shared",
            Home::Global => "global",
        }
    }
}

/// The layout of a kernel's scratch: where it lives and, for the dynamic shared and
/// global homes (one array for all buffers), each buffer's byte offset in a warp's slice.
#[derive(Debug, Clone, PartialEq)]
pub struct Scratch {
    pub home: Home,
    /// Bytes of one warp's (or thread's) scratch, every array 16-byte aligned.
    pub per_warp: u64,
    /// Scratch buffer index (in `Kernel::bufs`) → byte offset in the slice.
    pub offsets: BTreeMap<usize, u64>,
    /// Global home: the slices in the array (warps that may run at once).
    pub slots: u64,
}

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
    /// Static shared memory, declared in the PTX.
    pub shared_bytes: u64,
    /// Dynamic shared memory to pass at the launch (0 when none).
    pub dynamic_shared_bytes: u64,
    /// `None` with `parallel`: unknown before the launch.
    pub trips: Option<Trips>,
    /// Whether the kernel has a parallel loop at all.
    pub parallel: bool,
    /// The most blocks the grid may have (global scratch has a slice per block).
    pub max_blocks: Option<u32>,
}

/// Blocks launched when the parallel trip count is not known on the host.
pub const DEFAULT_BLOCKS: u32 = 1024;

impl LaunchShape {
    /// Blocks in the grid at these sizes (at least 1).
    pub fn grid(&self, seq: i64, past: i64) -> u32 {
        if !self.parallel {
            return 1;
        }
        let grid = match self.trips.as_ref().and_then(|t| t.count(seq, past)) {
            Some(n) => n
                .div_ceil(self.per_block.max(1) as u64)
                .clamp(1, i32::MAX as u64) as u32,
            None => DEFAULT_BLOCKS,
        };
        match self.max_blocks {
            Some(cap) => grid.min(cap.max(1)),
            None => grid,
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
    pub scratch: Scratch,
    pub launch: LaunchShape,
}

/// Plans `k`. Fails only when a scratch array is too large to index.
pub fn plan(k: &Kernel) -> Result<KernelPlan, String> {
    // Tiles are planned as the loops they expand to (see `emit_kernel`).
    let expanded = crate::kernel::tile::expand_tiles(k);
    let k = &expanded;
    let mut distributed = BTreeMap::new();
    let mut counter = 0usize;
    find_distributable(k, &k.body, &mut counter, &mut distributed);

    // Each array 16-byte aligned, at its offset in one warp's (or thread's) slice.
    let mut offsets = BTreeMap::new();
    let mut scratch = 0u64;
    for (i, b) in k.bufs.iter().enumerate() {
        if let Access::Scratch { len } = b.access {
            let bytes = len
                .max(1)
                .checked_mul(b.elem.bytes() as u64)
                .filter(|&n| n <= u32::MAX as u64)
                .ok_or_else(|| format!("scratch `{}` of {len} elements is too large", b.name))?;
            offsets.insert(i, scratch);
            scratch += bytes.div_ceil(16) * 16;
        }
    }
    let parallel = find_parallel(&k.body);
    let has_parallel = parallel.is_some() || contains_parallel(&k.body);
    let warp = !distributed.is_empty() || scratch > MAX_LOCAL_SCRATCH_BYTES;
    let per_block_of = |budget: u64| -> u32 {
        if has_parallel {
            budget
                .checked_div(scratch)
                .unwrap_or(u64::MAX)
                .clamp(1, WARPS_PER_BLOCK as u64) as u32
        } else {
            1
        }
    };
    let (mode, warps_per_block, home) = if !warp {
        let home = if scratch == 0 {
            Home::None
        } else {
            Home::Local
        };
        (Mode::Thread, 1, home)
    } else if scratch == 0 {
        (Mode::Warp, per_block_of(MAX_SHARED_BYTES), Home::None)
    } else if scratch <= MAX_SHARED_BYTES {
        (Mode::Warp, per_block_of(MAX_SHARED_BYTES), Home::Shared)
    } else if scratch <= MAX_DYNAMIC_SHARED_BYTES {
        (
            Mode::Warp,
            per_block_of(MAX_DYNAMIC_SHARED_BYTES),
            Home::DynamicShared,
        )
    } else {
        (Mode::Warp, 1, Home::Global)
    };
    if mode == Mode::Thread {
        distributed.clear();
    }
    // Global scratch: a slice per warp that can run; as many as the (constant) parallel
    // trip count, within the budget.
    let slots = match home {
        Home::Global => {
            let budget = (GLOBAL_SCRATCH_BUDGET / scratch).clamp(1, MAX_GLOBAL_SLOTS);
            let trips = if has_parallel {
                constant_parallel_trips(&k.body).unwrap_or(budget)
            } else {
                1
            };
            trips.clamp(1, budget)
        }
        _ => 0,
    };
    let (block, per_block) = match mode {
        Mode::Warp => (WARP * warps_per_block, warps_per_block),
        // Without a parallel loop every thread would run the whole kernel: one suffices.
        Mode::Thread if has_parallel => (THREADS_PER_BLOCK, THREADS_PER_BLOCK),
        Mode::Thread => (1, 1),
    };
    let block_scratch = scratch * warps_per_block as u64;
    let (shared_bytes, dynamic_shared_bytes) = match home {
        Home::Shared => (block_scratch, 0),
        Home::DynamicShared => (0, block_scratch),
        _ => (0, 0),
    };
    let max_blocks = (home == Home::Global).then_some(slots as u32);
    Ok(KernelPlan {
        mode,
        warps_per_block,
        distributed,
        scratch: Scratch {
            home,
            per_warp: scratch,
            offsets,
            slots,
        },
        launch: LaunchShape {
            mode,
            block,
            per_block,
            shared_bytes,
            dynamic_shared_bytes,
            trips: parallel,
            parallel: has_parallel,
            max_blocks,
        },
    })
}

/// The trip count of the first parallel loop (at any depth) when its bounds are
/// constants.
fn constant_parallel_trips(body: &[Stmt]) -> Option<u64> {
    body.iter().find_map(|s| match s {
        Stmt::Loop {
            start,
            end,
            step,
            kind,
            body,
            ..
        } => {
            if *kind == LoopKind::Parallel {
                let t = Trips {
                    start: start.clone(),
                    end: end.clone(),
                    step: *step,
                };
                // Constant: the same count at any `seq` and `past`.
                let (a, b) = (t.count(1, 0)?, t.count(4096, 4096)?);
                (a == b).then_some(a)
            } else {
                constant_parallel_trips(body)
            }
        }
        Stmt::If { then, els, .. } => {
            constant_parallel_trips(then).or_else(|| constant_parallel_trips(els))
        }
        _ => None,
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
        // Tiles are expanded into loops before a kernel is planned; one left here counts
        // as a read, which only keeps a reduction from being distributed.
        Stmt::Tile(_) => true,
    })
}
