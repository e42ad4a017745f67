//! Matmul kernels: `Op::MatMul` and the fused `Op::Linear` (norm prologue, weight parts
//! side by side or gate and up of a gated epilogue, biases, activation, residual). This
//! file reads the node into a [`Lin`] and picks the schedule; the schedules live in
//! their own files:
//!
//! - `matvec.rs`: one token row (decode), parallel over groups of output columns;
//! - `tiles.rs`: the register tile of the matvec, row-tiles and row-blocked schedules and
//!   of the quantised prefill (its reduction emitted by one function, `accumulate`), the
//!   epilogue every schedule shares, and the plain row-tiles prefill schedule;
//! - `blocked.rs`: prefill in blocks of token rows prepared once per thread (CPU);
//! - `lanes.rs`: prefill with tokens in vector lanes over bf16 weights (CPU), an
//!   outer-product tile with a reduction of its own;
//! - `quant.rs`: weights stored as GGML blocks, decoded inside the kernel.
//!
//! **The choice.** A weight part stored as blocks takes the quantised schedule. Otherwise
//! one token row takes the matvec; more rows take [`Schedule::matmul`] where the matmul
//! admits it, else the automatic choice: tokens in lanes with bf16 activations over bf16
//! weights (an even reduction whose tiles fit the parts), row blocks with bf16
//! activations over bf16 weights otherwise, plain row tiles for everything else. The
//! row-blocked schedules need [`Schedule::row_blocks`] (per-thread scratch outside the
//! parallel loop, which suits CPU cores, not GPU threads) and a constant reduction width.
//! `KernelOptions::bf16_activations` never touches a matmul whose weights are not all
//! bf16: rounding activations buys nothing without a bf16 dot product.
//!
//! Arithmetic: each output is `sum_k x[t, k] * w[o, k]` accumulated in f32, then bias,
//! activation or gate, residual, as `interp::fused` orders them; only the summation order
//! differs between schedules.

mod blocked;
pub(super) mod decode;
mod decode_k;
mod lanes;
mod matvec;
mod quant;
mod tiles;

use super::gen::{lp, Gen, NodeLowering};
use super::schedule::MatmulSchedule;
use super::{ix, KernelError};
use crate::ir::{Epilogue, LinearOp, Mode, Op};
use crate::kernel::build::{self, i, load};
use crate::kernel::{BufId, Elem, Expr, Kernel, LoopKind, Stmt, Ty};

/// The kernel of a `MatMul` (operands x, w) or `Linear` node.
pub(super) fn kernel(cx: &NodeLowering) -> Result<Kernel, KernelError> {
    let (roles, op) = match &cx.node().op {
        Op::MatMul => {
            let roles = vec!["x".to_string(), "w".to_string()];
            cx.expect_operands(&roles)?;
            let op = LinearOp {
                norm: None,
                bias: vec![false],
                epilogue: Epilogue::None,
                residual: false,
            };
            (roles, op)
        }
        Op::Linear(l) => (linear_roles(l), l.clone()),
        op => {
            return Err(KernelError::Unsupported {
                node: cx.id.0,
                op: crate::ir::op_text(op),
            })
        }
    };
    let mut g = Gen::new(cx, &roles)?;
    let lin = g.lin(&op)?;
    if lin.wbufs.iter().any(|w| g.block_of(*w).is_some()) {
        // A prefill decodes each quantised weight row once per call into a tile.
        g.quant_linear(&lin, cx.graph.mode == Mode::Prefill)?;
    } else {
        g.linear(&lin)?;
    }
    Ok(g.finish())
}

/// The operand roles of a linear: x, [norm_w], [norm_b], w0.., b.. (parts with a bias),
/// [residual].
fn linear_roles(l: &LinearOp) -> Vec<String> {
    let mut v = vec!["x".to_string()];
    if let Some(n) = l.norm {
        if n.weight {
            v.push("norm_w".into());
        }
        if n.bias {
            v.push("norm_b".into());
        }
    }
    for p in 0..l.parts() {
        v.push(format!("w{p}"));
    }
    for (p, has) in l.bias.iter().enumerate() {
        if *has {
            v.push(format!("b{p}"));
        }
    }
    if l.residual {
        v.push("residual".into());
    }
    v
}

/// What the schedules of a linear kernel need to know.
pub(super) struct Lin {
    pub op: LinearOp,
    /// The reduction width, and the token rows.
    pub k: Expr,
    pub m: Expr,
    /// Output columns (one part's width with a gated epilogue, else all parts side by
    /// side), and each part's width.
    pub ncols: i64,
    pub widths: Vec<i64>,
    /// The gate part of a gated epilogue.
    pub gated: Option<usize>,
    pub wbufs: Vec<BufId>,
    pub bbufs: Vec<Option<BufId>>,
    pub res: Option<BufId>,
    pub norm_w: Option<BufId>,
    pub norm_b: Option<BufId>,
}

impl Lin {
    /// `k` as a constant (0 when symbolic; checked where a schedule needs scratch).
    pub fn k_const(&self) -> u64 {
        match self.k {
            Expr::I64(v) => v as u64,
            _ => 0,
        }
    }

    /// Whether every weight part's width is a multiple of `n`, so that a tile of `n`
    /// columns never straddles two parts.
    pub fn fits(&self, n: i64) -> bool {
        self.widths.iter().all(|w| w % n == 0)
    }

    /// Columns per tile: the most of `max`, `max / 2`, ... 2 that fits the parts (at most
    /// half of `max` with a gated epilogue, whose tiles hold two parts), else 1.
    pub fn tile_cols(&self, max: i64) -> i64 {
        let mut n = max;
        while n >= 2 {
            if self.fits(n) && (self.gated.is_none() || 2 * n <= max) {
                return n;
            }
            n /= 2;
        }
        1
    }
}

impl Gen {
    /// The linear's operands and shapes, checked.
    fn lin(&self, op: &LinearOp) -> Result<Lin, KernelError> {
        let l = op.layout();
        if self.ins.len() != l.arity || op.parts() == 0 {
            return Err(self.invalid(format!(
                "linear expects {} operands, found {}",
                l.arity,
                self.ins.len()
            )));
        }
        let x = self.shape(0, 1)?;
        let r = x.len();
        let kd = x[r - 1];
        let mut widths = Vec::new();
        for p in 0..op.parts() {
            let w = self.shape(l.weights + p, 2)?;
            let n = w[0]
                .as_const()
                .ok_or_else(|| self.invalid("a weight with a symbolic width"))?;
            if w.len() != 2 || w[1] != kd {
                return Err(self.invalid(format!("weight part {p} does not fit x's width {kd}")));
            }
            widths.push(n as i64);
        }
        let gated = match op.epilogue {
            Epilogue::Glu { gate, .. } | Epilogue::ClampedGlu { gate, .. } => Some(gate),
            _ => None,
        };
        if gated.is_some() && (widths.len() != 2 || widths[0] != widths[1]) {
            return Err(self.invalid("a gated epilogue needs two parts of equal width"));
        }
        if gated.is_some_and(|g| g > 1) {
            return Err(self.invalid("gated epilogue names a third part"));
        }
        if op.norm.is_some() && kd.as_const().is_none() {
            return Err(self.invalid("a norm prologue over a symbolic width"));
        }
        let ncols: i64 = if gated.is_some() {
            widths[0]
        } else {
            widths.iter().sum()
        };
        let mut bbufs: Vec<Option<BufId>> = Vec::new();
        let mut next = l.biases;
        for has in &op.bias {
            if *has {
                bbufs.push(Some(self.ins[next].buf));
                next += 1;
            } else {
                bbufs.push(None);
            }
        }
        Ok(Lin {
            op: op.clone(),
            k: ix::dim(kd),
            m: ix::prod(&x[..r - 1]),
            ncols,
            widths,
            gated,
            wbufs: (0..op.parts())
                .map(|p| self.ins[l.weights + p].buf)
                .collect(),
            bbufs,
            res: l.residual.map(|j| self.ins[j].buf),
            norm_w: l.norm_weight.map(|j| self.ins[j].buf),
            norm_b: l.norm_bias.map(|j| self.ins[j].buf),
        })
    }

    /// Whether every weight part of `lin` is stored as bf16.
    fn bf16_weights(&self, lin: &Lin) -> bool {
        lin.wbufs
            .iter()
            .all(|w| self.elem_of(*w) == Some(Elem::Bf16))
    }

    /// A float linear in the schedule its shape, weights, options and the target's
    /// schedule call for (see the module docs).
    fn linear(&mut self, lin: &Lin) -> Result<(), KernelError> {
        let s = self.schedule;
        if lin.m == i(1) {
            return self.linear_matvec(lin, lin.tile_cols(s.matvec_cols));
        }
        let tn = lin.tile_cols(s.tile.cols);
        // Rounding activations to bf16 is a numerics option that only bf16 weights take.
        let bf16 = self.opts.bf16_activations && self.bf16_weights(lin);
        let kc = lin.k_const();
        let nc = match lin.gated {
            Some(_) => s.lanes.cols / 2,
            None => s.lanes.cols,
        };
        let blocked = s.row_blocks && kc > 0;
        let lanes = blocked
            && bf16
            && kc % 2 == 0
            && (lin.fits(nc) || lin.wbufs.len() == 1 || lin.gated.is_some());
        let auto = if lanes {
            MatmulSchedule::Lanes
        } else if blocked && bf16 {
            MatmulSchedule::RowBlocked
        } else {
            MatmulSchedule::RowTiles
        };
        let choice = match s.matmul {
            MatmulSchedule::Lanes if lanes => MatmulSchedule::Lanes,
            MatmulSchedule::RowBlocked if blocked => MatmulSchedule::RowBlocked,
            MatmulSchedule::RowTiles => MatmulSchedule::RowTiles,
            _ => auto,
        };
        let m = lin.m.clone();
        match choice {
            MatmulSchedule::Lanes => self.linear_gemm_lanes(lin, m, nc, tn),
            MatmulSchedule::RowBlocked => {
                let xs = if bf16 { Elem::Bf16 } else { Elem::F32 };
                self.linear_gemm_blocked(lin, m, tn, xs)
            }
            _ => self.linear_gemm(lin, m, tn),
        }
    }

    /// `x[base..base + k]` normalised by the linear's norm prologue into `xs[at..at + k]`.
    fn norm_row(&mut self, lin: &Lin, base: Expr, xs: BufId, at: Expr) -> Vec<Stmt> {
        self.lin_norm_row_to(lin, base, xs, &|kk| ix::add(at.clone(), kk))
    }

    /// `x[base..base + k]` normalised by the linear's norm prologue, element `kk` into
    /// `xs[dst(kk)]` (nothing without a prologue).
    fn lin_norm_row_to(
        &mut self,
        lin: &Lin,
        base: Expr,
        xs: BufId,
        dst: &dyn Fn(Expr) -> Expr,
    ) -> Vec<Stmt> {
        let Some(n) = lin.op.norm else {
            return Vec::new();
        };
        let src = (self.ins[0].buf, base);
        let wb = (lin.norm_w, lin.norm_b);
        self.norm_row_to(&n, src, lin.k.clone(), wb, (xs, dst))
    }

    /// `x[base..base + k]` into `xs[at..at + k]` (narrowed to `xs`'s element type).
    fn copy_row(&mut self, lin: &Lin, base: Expr, xs: BufId, at: Expr) -> Stmt {
        self.copy_row_to(lin, base, xs, &|kk| ix::add(at.clone(), kk))
    }

    /// `x[base..base + k]`, element `kk` into `xs[dst(kk)]`.
    fn copy_row_to(
        &mut self,
        lin: &Lin,
        base: Expr,
        xs: BufId,
        dst: &dyn Fn(Expr) -> Expr,
    ) -> Stmt {
        let xb = self.ins[0].buf;
        let kk = self.var("kk", Ty::I64);
        lp(
            kk,
            i(0),
            lin.k.clone(),
            LoopKind::Vector(self.schedule.vector),
            vec![Stmt::Store {
                buf: xs,
                index: dst(build::var(kk)),
                value: load(xb, ix::add(base, build::var(kk))),
            }],
        )
    }
}
