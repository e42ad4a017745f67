//! Kernel generators for basic ops (see `mod.rs` for the buffer convention): gathers,
//! matmuls and fused linears, elementwise ops with broadcasting, norms, layout ops
//! (slice, expand, concat, sum), RoPE and the attention temperature.
//!
//! Shapes: matmul-like kernels make the output-feature axis the parallel loop (in blocks
//! of `COLS` columns, so each thread streams its own weight rows), loop over token rows
//! inside it and reduce over `k` in a `vector(16)` loop into an f32 local; with
//! `KernelOptions::bf16_activations`, prefill matmuls instead loop over blocks of token
//! rows outside the parallel loop, rounding each block into bf16 scratch once (see
//! `linear_gemm_blocked`). Elementwise and layout kernels are parallel over rows with a
//! vector loop over the last axis; norms reduce per row. Arithmetic follows `interp::{kernels, fused}` operation by operation;
//! where the interpreter uses f64 (norm statistics, GELU's erf, softcap) the kernels use
//! f32, which the differential tests bound.

use super::{ix, KernelError, KernelOptions};
use crate::ir::{
    BinaryOp, Dim, ElementwiseOp, Epilogue, Graph, Instr, LinearOp, NodeId, NormKind, NormOp, Op,
    RopeOp, UnaryOp, Value,
};
use crate::kernel::build::{self, f, i, load, select, un};
use crate::kernel::{Access, BinOp, BufId, Elem, Expr, Kernel, LoopKind, Stmt, Ty, UnOp, VarId};
use archc_spec::Pairing;

/// Output columns per parallel iteration of a matmul.
const COLS: i64 = 64;
/// Reductions longer than this (in elements) are split into chunks of `KC` in the
/// row-blocked prefill matmul: a 4-row × 4-column bf16 tile then reads 4 × 4 KiB of
/// activations and 4 × 4 KiB of weights per chunk, which stay in a 48 KiB L1.
const KC_MAX: u64 = 4096;
const KC: i64 = 2048;

/// A slice `[start, end)` of a matmul's reduction computed by one pass of its tiles;
/// `first` and `last` (`Bool`) say whether it is the first or the last slice.
struct KChunk {
    start: Expr,
    end: Expr,
    first: Expr,
    last: Expr,
}
/// Token rows per block of the row-blocked prefill matmuls (both schedules).
const BLOCK_ROWS: i64 = 64;
/// Tokens per group in the tokens-in-lanes matmul: the lanes of one f32 vector.
const LANES: i64 = 16;
/// Below this many token rows the tokens-in-lanes matmul takes the dot-product tiles: a
/// group of `LANES` would be mostly padding.
const LANES_MIN_ROWS: i64 = 16;

/// Where a tile of the tokens-in-lanes matmul sits: the scratch of packed activations
/// and of the tile's sums, its first group of 16 tokens and how many groups, its columns,
/// and the token block `[rb, r1)`.
struct LaneTile {
    xs: BufId,
    ct: BufId,
    g0: Expr,
    nx: i64,
    nc: i64,
    rb: Expr,
    r1: Expr,
}

/// The vector width hint of inner loops.
const VEC: u32 = 16;

pub(super) fn kernel(
    graph: &Graph,
    id: NodeId,
    name: &str,
    opts: &KernelOptions,
) -> Result<Kernel, KernelError> {
    let node = graph.node(id);
    let roles: Vec<String> = match &node.op {
        Op::Gather => names(&["table", "ids"]),
        Op::MatMul => names(&["x", "w"]),
        Op::Linear(l) => linear_roles(l),
        Op::Rope(_) => names(&["x", "positions"]),
        Op::AttnTemperature { .. } => names(&["positions"]),
        Op::ClampedSwiglu { .. } => names(&["gate", "up"]),
        Op::Concat { .. } => names(&["a", "b"]),
        Op::Norm(n) => {
            let mut v = names(&["x"]);
            if n.weight {
                v.push("weight".into());
            }
            if n.bias {
                v.push("bias".into());
            }
            v
        }
        _ => (0..node.inputs.len()).map(|j| format!("in{j}")).collect(),
    };
    let arity = match &node.op {
        Op::Unary(_) | Op::Expand { .. } | Op::Slice { .. } | Op::Sum { .. } => Some(1),
        Op::AttnTemperature { .. } => Some(1),
        Op::Gather | Op::MatMul | Op::Binary(_) | Op::ClampedSwiglu { .. } => Some(2),
        Op::Concat { .. } | Op::Rope(_) => Some(2),
        _ => None,
    };
    if let Some(n) = arity.filter(|&n| n != node.inputs.len()) {
        return Err(KernelError::Invalid {
            node: id.0,
            message: format!(
                "`{}` takes {n} operands, found {}",
                crate::ir::op_text(&node.op),
                node.inputs.len()
            ),
        });
    }
    let mut g = Gen::new(graph, id, name, &roles)?;
    g.opts = *opts;
    match &node.op {
        Op::Gather => g.gather(),
        Op::MatMul => g.linear(&LinearOp {
            norm: None,
            bias: vec![false],
            epilogue: Epilogue::None,
            residual: false,
        }),
        Op::Linear(l) => g.linear(l),
        Op::Unary(u) => {
            let u = *u;
            g.broadcast(&[0], |g, v| g.unary(u, v[0].clone()))
        }
        Op::Binary(b) => {
            let op = match b {
                BinaryOp::Add => BinOp::Add,
                BinaryOp::Mul => BinOp::Mul,
            };
            g.broadcast(&[0, 1], |_, v| {
                (Vec::new(), build::bin(op, v[0].clone(), v[1].clone()))
            })
        }
        Op::Expand { .. } => g.broadcast(&[0], |_, v| (Vec::new(), v[0].clone())),
        Op::ClampedSwiglu { alpha, limit } => {
            let (alpha, limit) = (*alpha, *limit);
            g.broadcast(&[0, 1], |g, v| {
                g.clamped_swiglu(alpha, limit, v[0].clone(), v[1].clone())
            })
        }
        Op::Elementwise(e) => g.elementwise(e),
        Op::Norm(n) => g.norm(n),
        Op::Slice { axis, start, end } => g.slice(*axis, *start, *end),
        Op::Concat { axis } => g.concat(*axis),
        Op::Sum { axis } => g.sum(*axis),
        Op::Rope(r) => g.rope(r),
        Op::AttnTemperature {
            floor_scale,
            attn_scale,
        } => g.temperature(*floor_scale, *attn_scale),
        _ => {
            return Err(KernelError::Unsupported {
                node: id.0,
                op: crate::ir::op_text(&node.op),
            })
        }
    }?;
    Ok(g.k)
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn linear_roles(l: &LinearOp) -> Vec<String> {
    let mut v = names(&["x"]);
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

/// A kernel that copies `shape` elements of `elem` from its first buffer to its second.
pub(super) fn copy_kernel(elem: Elem, shape: &[Dim]) -> Kernel {
    let mut k = Kernel::new("copy");
    let src = k.buf("src", elem, Access::Read);
    let dst = k.buf("dst", elem, Access::Write);
    let n = ix::prod(shape);
    let v = k.var("i", Ty::I64);
    k.body = vec![Stmt::Loop {
        var: v,
        start: i(0),
        end: n,
        step: 1,
        kind: LoopKind::Parallel,
        body: vec![Stmt::Store {
            buf: dst,
            index: build::var(v),
            value: load(src, build::var(v)),
        }],
    }];
    k
}

/// The f32 value of an integer count (a constant when it is one).
fn count_f32(n: Expr) -> Expr {
    match n {
        Expr::I64(c) => f(c as f32),
        e => un(UnOp::ToF32, e),
    }
}

fn lp(var: VarId, start: Expr, end: Expr, kind: LoopKind, body: Vec<Stmt>) -> Stmt {
    Stmt::Loop {
        var,
        start,
        end,
        step: 1,
        kind,
        body,
    }
}

fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
    build::bin(op, a, b)
}

/// What the tiles of a linear kernel need to know.
struct Lin {
    op: LinearOp,
    k: Expr,
    ncols: i64,
    widths: Vec<i64>,
    /// The gate part of a gated epilogue.
    gated: Option<usize>,
    wbufs: Vec<BufId>,
    bbufs: Vec<Option<BufId>>,
    res: Option<BufId>,
    norm_w: Option<BufId>,
    norm_b: Option<BufId>,
}

impl Lin {
    /// `k` as a constant (checked by `linear` when a norm prologue needs scratch).
    fn k_const(&self) -> u64 {
        match self.k {
            Expr::I64(v) => v as u64,
            _ => 0,
        }
    }
}

/// One operand of the node: its kernel buffer and shape.
struct Operand {
    buf: BufId,
    shape: Vec<Dim>,
}

/// A kernel under construction for one node.
struct Gen {
    k: Kernel,
    node: u32,
    ins: Vec<Operand>,
    out: BufId,
    out_shape: Vec<Dim>,
    opts: KernelOptions,
}

impl Gen {
    fn new(graph: &Graph, id: NodeId, name: &str, roles: &[String]) -> Result<Gen, KernelError> {
        let node = graph.node(id);
        let mut k = Kernel::new(name);
        let mut ins = Vec::new();
        for (j, v) in node.inputs.iter().enumerate() {
            let ty = graph.value_type(*v).ok_or_else(|| KernelError::Invalid {
                node: id.0,
                message: format!("operand {j} does not exist"),
            })?;
            let what = match v {
                Value::Param(p) => format!("parameter @{}", graph.param(*p).name),
                Value::Node(n) => format!("value %{}", n.0),
            };
            let e = super::elem(ty.dtype, id.0, &what)?;
            let role = roles.get(j).cloned().unwrap_or_else(|| format!("in{j}"));
            let buf = k.buf(role, e, Access::Read);
            ins.push(Operand {
                buf,
                shape: ty.shape,
            });
        }
        let e = super::elem(node.ty.dtype, id.0, "result")?;
        let out = k.buf("out", e, Access::Write);
        Ok(Gen {
            k,
            node: id.0,
            ins,
            out,
            out_shape: node.ty.shape.clone(),
            opts: KernelOptions::default(),
        })
    }

    fn invalid(&self, message: impl Into<String>) -> KernelError {
        KernelError::Invalid {
            node: self.node,
            message: message.into(),
        }
    }

    fn var(&mut self, name: &str, ty: Ty) -> VarId {
        self.k.var(name, ty)
    }

    /// `let name = value` as a fresh variable; returns the statement and the variable.
    fn bind(&mut self, name: &str, ty: Ty, value: Expr) -> (Stmt, Expr) {
        let v = self.var(name, ty);
        (Stmt::Let { var: v, value }, build::var(v))
    }

    /// The operand's shape, checked to have at least `rank` axes.
    fn shape(&self, j: usize, rank: usize) -> Result<Vec<Dim>, KernelError> {
        let op = self
            .ins
            .get(j)
            .ok_or_else(|| self.invalid(format!("missing operand {j}")))?;
        if op.shape.len() < rank {
            return Err(self.invalid(format!(
                "operand {j} has rank {}, expected at least {rank}",
                op.shape.len()
            )));
        }
        Ok(op.shape.clone())
    }

    /// `act(x)` for a unary op, as statements binding intermediates and the result.
    fn unary(&mut self, u: UnaryOp, x: Expr) -> (Vec<Stmt>, Expr) {
        unary_expr(&mut self.k, u, x)
    }

    fn clamped_swiglu(&mut self, alpha: f64, limit: f64, g: Expr, u: Expr) -> (Vec<Stmt>, Expr) {
        clamped_swiglu_expr(&mut self.k, alpha, limit, g, u)
    }

    /// A loop over every element of the result: parallel over rows (all axes but the
    /// last), vector over the last axis. Operands `which` are read with numpy broadcasting
    /// and bound to variables that `body` combines into the stored value.
    fn broadcast(
        &mut self,
        which: &[usize],
        body: impl FnOnce(&mut Gen, &[Expr]) -> (Vec<Stmt>, Expr),
    ) -> Result<(), KernelError> {
        let mut shape = self.out_shape.clone();
        if shape.is_empty() {
            shape.push(Dim::c(1));
        }
        let r = shape.len();
        let lead = shape[..r - 1].to_vec();
        let last = shape[r - 1];
        let row = self.var("row", Ty::I64);
        let j = self.var("j", Ty::I64);
        let mut row_stmts = Vec::new();
        let mut axis_idx: Vec<Option<Expr>> = vec![None; r - 1];
        let mut inner = Vec::new();
        let mut vals = Vec::new();
        for (n, &w) in which.iter().enumerate() {
            let s = self.shape(w, 0)?;
            if s.len() > r {
                return Err(self.invalid(format!("operand {w} has more axes than the result")));
            }
            let mut full = vec![Dim::c(1); r - s.len()];
            full.extend_from_slice(&s);
            let one = Dim::c(1);
            let jpart = if full[r - 1] == one {
                i(0)
            } else {
                build::var(j)
            };
            let index = if full[..r - 1] == lead[..] {
                ix::add(ix::mul(build::var(row), ix::dim(full[r - 1])), jpart)
            } else {
                // Strides of the operand in the result's index space.
                let mut index = jpart;
                for a in 0..r - 1 {
                    if full[a] == one {
                        continue;
                    }
                    if axis_idx[a].is_none() {
                        let below = ix::prod(&lead[a + 1..]);
                        let value = ix::rem(ix::div(build::var(row), below), ix::dim(lead[a]));
                        let (st, e) = self.bind(&format!("i{a}"), Ty::I64, value);
                        row_stmts.push(st);
                        axis_idx[a] = Some(e);
                    }
                    let stride = ix::prod(&full[a + 1..]);
                    let idx = axis_idx[a].clone().unwrap_or(i(0));
                    index = ix::add(ix::mul(idx, stride), index);
                }
                index
            };
            let buf = self.ins[w].buf;
            let (st, e) = self.bind(&format!("a{n}"), Ty::F32, load(buf, index));
            inner.push(st);
            vals.push(e);
        }
        let (stmts, value) = body(self, &vals);
        inner.extend(stmts);
        inner.push(Stmt::Store {
            buf: self.out,
            index: ix::add(ix::mul(build::var(row), ix::dim(last)), build::var(j)),
            value,
        });
        row_stmts.push(lp(j, i(0), ix::dim(last), LoopKind::Vector(VEC), inner));
        self.k.body.push(lp(
            row,
            i(0),
            ix::prod(&lead),
            LoopKind::Parallel,
            row_stmts,
        ));
        Ok(())
    }

    fn elementwise(&mut self, e: &ElementwiseOp) -> Result<(), KernelError> {
        let all: Vec<usize> = (0..e.operands as usize).collect();
        if all.len() != self.ins.len() || e.program.is_empty() {
            return Err(self.invalid("elementwise operand count or program is malformed"));
        }
        let program = e.program.clone();
        let node = self.node;
        let mut bad = None;
        self.broadcast(&all, |g, vals| {
            let mut regs: Vec<Expr> = vals.to_vec();
            let mut stmts = Vec::new();
            for ins in &program {
                let get = |r: u32| regs.get(r as usize).cloned();
                let (st, value) = match *ins {
                    Instr::Unary(u, a) => match get(a) {
                        Some(a) => g.unary(u, a),
                        None => {
                            bad = Some(a);
                            break;
                        }
                    },
                    Instr::Binary(b, x, y) => match (get(x), get(y)) {
                        (Some(x), Some(y)) => {
                            let op = match b {
                                BinaryOp::Add => BinOp::Add,
                                BinaryOp::Mul => BinOp::Mul,
                            };
                            (Vec::new(), bin(op, x, y))
                        }
                        _ => {
                            bad = Some(x.max(y));
                            break;
                        }
                    },
                    Instr::ClampedSwiglu {
                        alpha,
                        limit,
                        gate,
                        up,
                    } => match (get(gate), get(up)) {
                        (Some(x), Some(y)) => g.clamped_swiglu(alpha, limit, x, y),
                        _ => {
                            bad = Some(gate.max(up));
                            break;
                        }
                    },
                };
                stmts.extend(st);
                let (st, v) = g.bind(&format!("r{}", regs.len()), Ty::F32, value);
                stmts.push(st);
                regs.push(v);
            }
            let last = regs.pop().unwrap_or(f(0.0));
            (stmts, last)
        })?;
        match bad {
            Some(r) => Err(KernelError::Invalid {
                node,
                message: format!("elementwise register ${r} is read before it is written"),
            }),
            None => Ok(()),
        }
    }

    fn gather(&mut self) -> Result<(), KernelError> {
        let table = self.shape(0, 1)?;
        let ids = self.shape(1, 0)?;
        let rows = ix::dim(table[0]);
        let width = ix::prod(&table[1..]);
        let (tb, idb, out) = (self.ins[0].buf, self.ins[1].buf, self.out);
        let t = self.var("t", Ty::I64);
        let j = self.var("j", Ty::I64);
        // Out-of-range ids are clamped into the table: the runtime rejects them before a
        // run, and a kernel must never read outside its buffer.
        let clamped = ix::min(
            bin(BinOp::Max, load(idb, build::var(t)), i(0)),
            ix::sub(rows, i(1)),
        );
        let (st, row) = self.bind("row", Ty::I64, clamped);
        let copy = Stmt::Store {
            buf: out,
            index: ix::add(ix::mul(build::var(t), width.clone()), build::var(j)),
            value: load(tb, ix::add(ix::mul(row, width.clone()), build::var(j))),
        };
        let body = vec![st, lp(j, i(0), width, LoopKind::Vector(VEC), vec![copy])];
        self.k
            .body
            .push(lp(t, i(0), ix::prod(&ids), LoopKind::Parallel, body));
        Ok(())
    }

    /// Per-row norm statistics of `src[base..base + k]`: statements, then `(mean, inv)`
    /// where `mean` is `None` for RMSNorm.
    fn norm_stats(
        &mut self,
        n: &NormOp,
        src: BufId,
        base: Expr,
        k: Expr,
    ) -> (Vec<Stmt>, Option<Expr>, Expr) {
        let mut out = Vec::new();
        let kf = count_f32(k.clone());
        let eps = f(n.eps as f32);
        let mean = match n.kind {
            NormKind::Rms => None,
            NormKind::Layer => {
                let sum = self.var("sum", Ty::F32);
                let kk = self.var("kk", Ty::I64);
                out.push(Stmt::Local {
                    var: sum,
                    init: f(0.0),
                });
                out.push(lp(
                    kk,
                    i(0),
                    k.clone(),
                    LoopKind::Vector(VEC),
                    vec![Stmt::Set {
                        var: sum,
                        value: build::add(
                            build::var(sum),
                            load(src, ix::add(base.clone(), build::var(kk))),
                        ),
                    }],
                ));
                let (st, m) = self.bind("mean", Ty::F32, build::div(build::var(sum), kf.clone()));
                out.push(st);
                Some(m)
            }
        };
        let sq = self.var("sq", Ty::F32);
        let kk = self.var("kk", Ty::I64);
        let x = load(src, ix::add(base, build::var(kk)));
        let (dst, d) = match &mean {
            Some(m) => self.bind("d", Ty::F32, build::sub(x, m.clone())),
            None => self.bind("d", Ty::F32, x),
        };
        out.push(Stmt::Local {
            var: sq,
            init: f(0.0),
        });
        out.push(lp(
            kk,
            i(0),
            k,
            LoopKind::Vector(VEC),
            vec![
                dst,
                Stmt::Set {
                    var: sq,
                    value: build::add(build::var(sq), build::mul(d.clone(), d)),
                },
            ],
        ));
        let inv = build::div(
            f(1.0),
            un(UnOp::Sqrt, build::add(build::div(build::var(sq), kf), eps)),
        );
        let (st, inv) = self.bind("inv", Ty::F32, inv);
        out.push(st);
        (out, mean, inv)
    }

    /// `((x - mean) * inv) * w + b` for element `kk` of a row, as the interpreter orders it;
    /// `(mean, inv)` come from `norm_stats`, then the weight and bias buffers.
    fn norm_apply(
        n: &NormOp,
        x: Expr,
        (mean, inv): (&Option<Expr>, &Expr),
        (w, b): (Option<BufId>, Option<BufId>),
        kk: Expr,
    ) -> Expr {
        let centered = match mean {
            Some(m) => build::sub(x, m.clone()),
            None => x,
        };
        let mut y = build::mul(centered, inv.clone());
        if let Some(w) = w {
            let wv = load(w, kk.clone());
            let wv = if n.plus_one {
                build::add(f(1.0), wv)
            } else {
                wv
            };
            y = build::mul(y, wv);
        }
        if let Some(b) = b {
            y = build::add(y, load(b, kk));
        }
        y
    }

    fn norm(&mut self, n: &NormOp) -> Result<(), KernelError> {
        let x = self.shape(0, 1)?;
        let r = x.len();
        let k = ix::dim(x[r - 1]);
        let rows = ix::prod(&x[..r - 1]);
        let xb = self.ins[0].buf;
        let w = n.weight.then(|| self.ins.get(1).map(|o| o.buf)).flatten();
        let b = n
            .bias
            .then(|| self.ins.get(1 + n.weight as usize).map(|o| o.buf))
            .flatten();
        if n.weight && w.is_none() || n.bias && b.is_none() {
            return Err(self.invalid("norm weight or bias operand missing"));
        }
        let t = self.var("t", Ty::I64);
        let (base_st, base) = self.bind("base", Ty::I64, ix::mul(build::var(t), k.clone()));
        let (mut body, mean, inv) = self.norm_stats(n, xb, base.clone(), k.clone());
        body.insert(0, base_st);
        let kk = self.var("kk", Ty::I64);
        let at = ix::add(base, build::var(kk));
        let y = Self::norm_apply(
            n,
            load(xb, at.clone()),
            (&mean, &inv),
            (w, b),
            build::var(kk),
        );
        body.push(lp(
            kk,
            i(0),
            k,
            LoopKind::Vector(VEC),
            vec![Stmt::Store {
                buf: self.out,
                index: at,
                value: y,
            }],
        ));
        self.k
            .body
            .push(lp(t, i(0), rows, LoopKind::Parallel, body));
        Ok(())
    }

    /// A matmul with its norm prologue, parts, biases, epilogue and residual (`LinearOp`).
    ///
    /// The schedule follows the shape. With one token row (decode) it is a matrix-vector
    /// product: the norm prologue runs once per thread into scratch, then the parallel loop
    /// walks groups of output rows (contiguous halves per thread), each group reducing
    /// `k` with one accumulator per output so the weight streams run side by side. With
    /// many token rows (prefill) it is a register-blocked GEMM: parallel over blocks of
    /// `COLS` columns, tiles of `TM` tokens × `tn` columns whose accumulators stay in
    /// registers across the whole `k` loop, so every loaded weight vector feeds `TM`
    /// FMAs and every activation vector `tn`.
    fn linear(&mut self, op: &LinearOp) -> Result<(), KernelError> {
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
        let k = ix::dim(kd);
        let m = ix::prod(&x[..r - 1]);
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
        let lin = Lin {
            op: op.clone(),
            k: k.clone(),
            ncols,
            widths: widths.clone(),
            gated,
            wbufs: (0..op.parts())
                .map(|p| self.ins[l.weights + p].buf)
                .collect(),
            bbufs,
            res: l.residual.map(|j| self.ins[j].buf),
            norm_w: l.norm_weight.map(|j| self.ins[j].buf),
            norm_b: l.norm_bias.map(|j| self.ins[j].buf),
        };
        if op.norm.is_some() && kd.as_const().is_none() {
            return Err(self.invalid("a norm prologue over a symbolic width"));
        }
        // Columns per tile: a divisor of every part's width, so a tile never straddles parts.
        let fits = |n: i64| widths.iter().all(|w| w % n == 0);
        if m == i(1) {
            let tn = [8, 4, 2]
                .into_iter()
                .find(|&n| fits(n) && (gated.is_none() || n <= 4))
                .unwrap_or(1);
            self.linear_matvec(&lin, tn)
        } else {
            let tn = [4, 2]
                .into_iter()
                .find(|&n| fits(n) && (gated.is_none() || n <= 2))
                .unwrap_or(1);
            // The row-blocked schedule keeps its scratch outside the parallel loop (a
            // block of rows per thread), which suits CPU cores, not GPU threads; only
            // the bf16 option, which CPUs ask for, uses it.
            let bf16_weights = lin
                .wbufs
                .iter()
                .all(|w| self.k.bufs[w.0 as usize].elem == Elem::Bf16);
            // Tokens in lanes: accumulators per (2 groups × columns × parts), 16 in all.
            let nc = if gated.is_some() { 4 } else { 8 };
            if self.opts.bf16_activations
                && bf16_weights
                && lin.k_const() > 0
                && lin.k_const() % 2 == 0
                && (fits(nc) || lin.wbufs.len() == 1 || gated.is_some())
            {
                self.linear_gemm_lanes(&lin, m, nc, tn)
            } else if self.opts.bf16_activations && bf16_weights && lin.k_const() > 0 {
                self.linear_gemm_blocked(&lin, m, tn, Elem::Bf16)
            } else {
                self.linear_gemm(&lin, m, tn)
            }
        }
    }

    /// `src[base..base + k]` normalised by the linear's norm prologue into `xs[at..at + k]`.
    fn norm_row(&mut self, lin: &Lin, base: Expr, xs: BufId, at: Expr) -> Vec<Stmt> {
        self.norm_row_to(lin, base, xs, &|kk| ix::add(at.clone(), kk))
    }

    /// `src[base..base + k]` normalised by the linear's norm prologue, element `kk` into
    /// `xs[dst(kk)]`.
    fn norm_row_to(
        &mut self,
        lin: &Lin,
        base: Expr,
        xs: BufId,
        dst: &dyn Fn(Expr) -> Expr,
    ) -> Vec<Stmt> {
        let n = match lin.op.norm {
            Some(n) => n,
            None => return Vec::new(),
        };
        let xb = self.ins[0].buf;
        let (mut out, mean, inv) = self.norm_stats(&n, xb, base.clone(), lin.k.clone());
        let kk = self.var("kk", Ty::I64);
        let y = Self::norm_apply(
            &n,
            load(xb, ix::add(base, build::var(kk))),
            (&mean, &inv),
            (lin.norm_w, lin.norm_b),
            build::var(kk),
        );
        out.push(lp(
            kk,
            i(0),
            lin.k.clone(),
            LoopKind::Vector(VEC),
            vec![Stmt::Store {
                buf: xs,
                index: dst(build::var(kk)),
                value: y,
            }],
        ));
        out
    }

    /// Prefill with bf16 activations (`xs_elem`; the schedule works for f32 too): the
    /// token rows go in blocks of `RB`; every thread first writes the block's rows
    /// (normalised by the prologue, if any) into its scratch of element type `xs_elem`,
    /// once per row rather than once per column block, then the parallel loop over column
    /// blocks runs `TM × tn` tiles over the block. A block of `RB` rows and one of `COLS` weight rows stay in cache while
    /// the tiles pass over them. With bf16 scratch and bf16 weights the tiles' `k` loops
    /// read two bf16 operands, the form code generators turn into bf16 dot products.
    fn linear_gemm_blocked(
        &mut self,
        lin: &Lin,
        m: Expr,
        tn: i64,
        xs_elem: Elem,
    ) -> Result<(), KernelError> {
        let kc = lin.k_const();
        let xs = self.k.buf(
            "xs",
            xs_elem,
            Access::Scratch {
                len: BLOCK_ROWS as u64 * kc,
            },
        );
        self.row_blocks(
            m,
            lin.ncols,
            |g, rb, r1| vec![g.blocked_rows(lin, xs, rb, r1)],
            |g, rows, cols| g.blocked_tiles(lin, xs, rows, cols, tn),
        );
        Ok(())
    }

    /// The frame of the row-blocked prefill matmuls: token rows in blocks of
    /// `BLOCK_ROWS`, `[rb, r1)`, each first prepared by `rows(self, rb, r1)` (on every
    /// thread, into its own scratch), then a parallel loop over blocks of `COLS` of the
    /// `ncols` output columns, `[c0, c1)`, running `tiles(self, (rb, r1), (c0, c1))`.
    fn row_blocks(
        &mut self,
        m: Expr,
        ncols: i64,
        rows: impl FnOnce(&mut Self, &Expr, &Expr) -> Vec<Stmt>,
        tiles: impl FnOnce(&mut Self, (&Expr, &Expr), (&Expr, &Expr)) -> Vec<Stmt>,
    ) {
        let rb = self.var("rb", Ty::I64);
        let mut outer = Vec::new();
        let (st, r1) = self.bind(
            "r1",
            Ty::I64,
            ix::min(ix::add(build::var(rb), i(BLOCK_ROWS)), m.clone()),
        );
        outer.push(st);
        outer.extend(rows(self, &build::var(rb), &r1));
        let cb = self.var("cb", Ty::I64);
        let mut block = Vec::new();
        let (st, c0) = self.bind("c0", Ty::I64, ix::mul(build::var(cb), i(COLS)));
        block.push(st);
        let (st, c1) = self.bind(
            "c1",
            Ty::I64,
            ix::min(ix::add(c0.clone(), i(COLS)), i(ncols)),
        );
        block.push(st);
        block.extend(tiles(self, (&build::var(rb), &r1), (&c0, &c1)));
        let nblocks = (ncols + COLS - 1) / COLS;
        outer.push(lp(cb, i(0), i(nblocks), LoopKind::Parallel, block));
        self.k.body.push(Stmt::Loop {
            var: rb,
            start: i(0),
            end: m,
            step: BLOCK_ROWS as u64,
            kind: LoopKind::Serial,
            body: outer,
        });
    }

    /// The rows `[rb, r1)` of [`Self::linear_gemm_blocked`], normalised by the prologue
    /// if any, into `xs` row by row.
    fn blocked_rows(&mut self, lin: &Lin, xs: BufId, rb: &Expr, r1: &Expr) -> Stmt {
        let t = self.var("t", Ty::I64);
        let xbase = ix::mul(build::var(t), lin.k.clone());
        let at = ix::mul(ix::sub(build::var(t), rb.clone()), lin.k.clone());
        let round = match lin.op.norm {
            Some(_) => self.norm_row(lin, xbase, xs, at),
            None => vec![self.copy_row(lin, xbase, xs, at)],
        };
        Stmt::Loop {
            var: t,
            start: rb.clone(),
            end: r1.clone(),
            step: 1,
            kind: LoopKind::Serial,
            body: round,
        }
    }

    /// The `TM × tn` tiles of [`Self::linear_gemm_blocked`] over rows `[rb, r1)` (in `xs`
    /// from row `rb`) and columns `[c0, c1)`.
    fn blocked_tiles(
        &mut self,
        lin: &Lin,
        xs: BufId,
        (rb, r1): (&Expr, &Expr),
        (c0, c1): (&Expr, &Expr),
        tn: i64,
    ) -> Vec<Stmt> {
        const TM: i64 = 4;
        let kc = lin.k_const();
        let mut block = Vec::new();
        let (st, rmain) = self.bind(
            "rmain",
            Ty::I64,
            ix::add(
                rb.clone(),
                ix::mul(ix::div(ix::sub(r1.clone(), rb.clone()), i(TM)), i(TM)),
            ),
        );
        block.push(st);
        // A long reduction (one weight part, no gate) goes in chunks of `KC`, so that a
        // tile's operand rows stay in L1 while the column loop passes over them.
        let nchunks = if lin.gated.is_none() && lin.wbufs.len() == 1 && kc > KC_MAX {
            (kc as i64 + KC - 1) / KC
        } else {
            1
        };
        let chv = (nchunks > 1).then(|| self.var("ch", Ty::I64));
        let chunk = chv.map(|chv| KChunk {
            start: ix::mul(build::var(chv), i(KC)),
            end: ix::min(
                ix::add(ix::mul(build::var(chv), i(KC)), i(KC)),
                lin.k.clone(),
            ),
            first: bin(BinOp::Eq, build::var(chv), i(0)),
            last: bin(BinOp::Eq, build::var(chv), i(nchunks - 1)),
        });
        let mut rows_loops = Vec::new();
        for (rows, lo, hi) in [(TM, rb.clone(), rmain.clone()), (1, rmain, r1.clone())] {
            let t0 = self.var("t0", Ty::I64);
            let row_at: Vec<(Expr, Expr)> = (0..rows)
                .map(|rr| {
                    let t = ix::add(build::var(t0), i(rr));
                    let at = ix::mul(ix::sub(t.clone(), rb.clone()), lin.k.clone());
                    (at, t)
                })
                .collect();
            let c = self.var("c", Ty::I64);
            let tile = self.tile(lin, xs, &row_at, build::var(c), tn, chunk.as_ref());
            let cols = Stmt::Loop {
                var: c,
                start: c0.clone(),
                end: c1.clone(),
                step: tn as u64,
                kind: LoopKind::Serial,
                body: tile,
            };
            rows_loops.push(Stmt::Loop {
                var: t0,
                start: lo,
                end: hi,
                step: rows as u64,
                kind: LoopKind::Serial,
                body: vec![cols],
            });
        }
        if let Some(chv) = chv {
            // Later chunks add to what earlier ones stored.
            self.k.bufs[self.out.0 as usize].access = Access::ReadWrite;
            block.push(Stmt::Loop {
                var: chv,
                start: i(0),
                end: i(nchunks),
                step: 1,
                kind: LoopKind::Serial,
                body: rows_loops,
            });
        } else {
            block.extend(rows_loops);
        }
        block
    }

    /// Prefill with bf16 activations and bf16 weights, tokens in SIMD lanes (an
    /// outer-product schedule). Token rows go in blocks of `RB`; every thread first
    /// writes the block's rows, normalised by the prologue if any and rounded to bf16,
    /// into its scratch in groups of 16 tokens laid out as `[k / 2][16][2]` (the two
    /// elements of a reduction pair side by side, token by token; rows past the end are
    /// zeros). The parallel loop over column blocks then runs tiles of `NX` groups × `nc`
    /// columns: a vector loop over the 16 tokens of a group whose every iteration runs
    /// the whole reduction with one accumulator per (group, column, part), each step a
    /// product of a token's pair with the column's weight pair (the form code generators
    /// turn into a broadcast weight pair and a bf16 dot product per accumulator, which
    /// then stays in a register for the whole reduction). The tile's sums go through a
    /// small scratch to the epilogue, token by token. Fewer than `LANES_MIN_ROWS` tokens
    /// would leave most lanes padding: the kernel then takes the dot-product tiles of
    /// [`Self::linear_gemm_blocked`] instead, chosen when it runs (one kernel for any
    /// prompt length; the blocks, scratch and parallel loop are shared).
    fn linear_gemm_lanes(
        &mut self,
        lin: &Lin,
        m: Expr,
        nc: i64,
        tn: i64,
    ) -> Result<(), KernelError> {
        const NX: i64 = 2;
        let k = lin.k_const() as i64;
        let nparts = if lin.gated.is_some() { 2 } else { 1 };
        let xs = self.k.buf(
            "xs",
            Elem::Bf16,
            Access::Scratch {
                len: (BLOCK_ROWS * k) as u64,
            },
        );
        let ct = self.k.buf(
            "ct",
            Elem::F32,
            Access::Scratch {
                len: (NX * nc * nparts * LANES) as u64,
            },
        );
        // Groups of 16 tokens in the block `[rb, r1)`, the last one padded.
        let groups = |rb: &Expr, r1: &Expr| {
            ix::div(
                ix::add(ix::sub(r1.clone(), rb.clone()), i(LANES - 1)),
                i(LANES),
            )
        };
        // Fewer than `LANES_MIN_ROWS` tokens: the dot-product tiles, rows as they are.
        let few = bin(BinOp::Lt, m.clone(), i(LANES_MIN_ROWS));
        let rows = |g: &mut Self, rb: &Expr, r1: &Expr| {
            let rows = g.blocked_rows(lin, xs, rb, r1);
            let pack = g.lanes_rows(lin, xs, rb, r1, groups(rb, r1));
            vec![Stmt::If {
                cond: few.clone(),
                then: vec![rows],
                els: vec![pack],
            }]
        };
        let tiles = |g: &mut Self, (rb, r1): (&Expr, &Expr), (c0, c1): (&Expr, &Expr)| {
            let dots = g.blocked_tiles(lin, xs, (rb, r1), (c0, c1), tn);
            let mut lanes = Vec::new();
            let (st, ng) = g.bind("ng", Ty::I64, groups(rb, r1));
            lanes.push(st);
            let (st, gmain) = g.bind("gmain", Ty::I64, ix::mul(ix::div(ng.clone(), i(NX)), i(NX)));
            lanes.push(st);
            // Columns in tiles of `nc`, then (where the width is no multiple of `nc`) one
            // at a time; a tile never straddles parts side by side, whose widths `nc`
            // divides.
            let tail = lin.ncols % nc != 0;
            let ranges = if tail {
                let (st, cmain) = g.bind(
                    "cmain",
                    Ty::I64,
                    ix::add(
                        c0.clone(),
                        ix::mul(ix::div(ix::sub(c1.clone(), c0.clone()), i(nc)), i(nc)),
                    ),
                );
                lanes.push(st);
                vec![(nc, c0.clone(), cmain.clone()), (1, cmain, c1.clone())]
            } else {
                vec![(nc, c0.clone(), c1.clone())]
            };
            for (nx, lo, hi) in [(NX, i(0), gmain.clone()), (1, gmain, ng)] {
                let g0 = g.var("g0", Ty::I64);
                let mut cols = Vec::new();
                for (ncols, start, end) in ranges.clone() {
                    let c = g.var("c", Ty::I64);
                    let geo = LaneTile {
                        xs,
                        ct,
                        g0: build::var(g0),
                        nx,
                        nc: ncols,
                        rb: rb.clone(),
                        r1: r1.clone(),
                    };
                    let tile = g.by_part(lin, &build::var(c), |g, o, parts| {
                        g.lane_tile(lin, &geo, &build::var(c), o, parts)
                    });
                    cols.push(Stmt::Loop {
                        var: c,
                        start,
                        end,
                        step: ncols as u64,
                        kind: LoopKind::Serial,
                        body: tile,
                    });
                }
                lanes.push(Stmt::Loop {
                    var: g0,
                    start: lo,
                    end: hi,
                    step: nx as u64,
                    kind: LoopKind::Serial,
                    body: cols,
                });
            }
            vec![Stmt::If {
                cond: few.clone(),
                then: dots,
                els: lanes,
            }]
        };
        self.row_blocks(m.clone(), lin.ncols, rows, tiles);
        Ok(())
    }

    /// The rows `[rb, r1)` of [`Self::linear_gemm_lanes`] into `xs` in groups of 16
    /// tokens, `ng` groups, laid out `[k / 2][16][2]` per group, the last group padded
    /// with zeros.
    fn lanes_rows(&mut self, lin: &Lin, xs: BufId, rb: &Expr, r1: &Expr, ng: Expr) -> Stmt {
        let k = lin.k_const() as i64;
        let t = self.var("t", Ty::I64);
        let dt = ix::sub(build::var(t), rb.clone());
        let (st, gbase) = self.bind(
            "gb",
            Ty::I64,
            ix::add(
                ix::mul(ix::div(dt.clone(), i(LANES)), i(LANES * k)),
                ix::mul(ix::rem(dt, i(LANES)), i(2)),
            ),
        );
        // Element `kk` of the row: pair `kk / 2`, slot `kk % 2`.
        let dst = move |kk: Expr| {
            ix::add(
                gbase.clone(),
                ix::add(
                    ix::mul(ix::div(kk.clone(), i(2)), i(2 * LANES)),
                    ix::rem(kk, i(2)),
                ),
            )
        };
        let xbase = ix::mul(build::var(t), lin.k.clone());
        let row = match lin.op.norm {
            Some(_) => self.norm_row_to(lin, xbase, xs, &dst),
            None => vec![self.copy_row_to(lin, xbase, xs, &dst)],
        };
        let kz = self.var("kk", Ty::I64);
        let zeros = lp(
            kz,
            i(0),
            lin.k.clone(),
            LoopKind::Vector(VEC),
            vec![Stmt::Store {
                buf: xs,
                index: dst(build::var(kz)),
                value: f(0.0),
            }],
        );
        Stmt::Loop {
            var: t,
            start: rb.clone(),
            end: ix::add(rb.clone(), ix::mul(ng, i(LANES))),
            step: 1,
            kind: LoopKind::Serial,
            body: vec![
                st,
                Stmt::If {
                    cond: bin(BinOp::Lt, build::var(t), r1.clone()),
                    then: row,
                    els: vec![zeros],
                },
            ],
        }
    }

    /// One tile of [`Self::linear_gemm_lanes`]: `geo.nx` groups of 16 tokens from group
    /// `geo.g0` × `geo.nc` columns from `c` (weight rows from `o` of each part).
    fn lane_tile(
        &mut self,
        lin: &Lin,
        geo: &LaneTile,
        c: &Expr,
        o: &Expr,
        parts: &[(BufId, Option<BufId>)],
    ) -> Vec<Stmt> {
        let k = lin.k_const() as i64;
        let np = parts.len() as i64;
        let l = self.var("l", Ty::I64);
        let kp = self.var("kp", Ty::I64);
        let mut lane = Vec::new();
        let mut inner = Vec::new();
        // The activations of each group: pair `kp` of token `l`.
        let mut xv = Vec::new();
        for x in 0..geo.nx {
            let at = ix::add(
                ix::add(
                    ix::mul(ix::add(geo.g0.clone(), i(x)), i(LANES * k)),
                    ix::mul(build::var(kp), i(2 * LANES)),
                ),
                ix::mul(build::var(l), i(2)),
            );
            let (st, a) = self.bind("xa", Ty::F32, load(geo.xs, at.clone()));
            inner.push(st);
            let (st, b) = self.bind("xb", Ty::F32, load(geo.xs, ix::add(at, i(1))));
            inner.push(st);
            xv.push((a, b));
        }
        // accs[x][j][p]
        let mut accs = vec![vec![Vec::new(); geo.nc as usize]; geo.nx as usize];
        for j in 0..geo.nc {
            for (p, (w, _)) in parts.iter().enumerate() {
                let at = ix::add(
                    ix::mul(ix::add(o.clone(), i(j)), lin.k.clone()),
                    ix::mul(build::var(kp), i(2)),
                );
                let (st, wa) = self.bind("wa", Ty::F32, load(*w, at.clone()));
                inner.push(st);
                let (st, wb) = self.bind("wb", Ty::F32, load(*w, ix::add(at, i(1))));
                inner.push(st);
                for (x, (xa, xb)) in xv.iter().enumerate() {
                    let acc = self.var("acc", Ty::F32);
                    lane.push(Stmt::Local {
                        var: acc,
                        init: f(0.0),
                    });
                    inner.push(Stmt::Set {
                        var: acc,
                        value: build::add(
                            build::var(acc),
                            build::add(
                                build::mul(xa.clone(), wa.clone()),
                                build::mul(xb.clone(), wb.clone()),
                            ),
                        ),
                    });
                    accs[x][j as usize]
                        .push((acc, ((x as i64 * geo.nc + j) * np + p as i64) * LANES));
                }
            }
        }
        lane.push(lp(kp, i(0), i(k / 2), LoopKind::Serial, inner));
        for acc in accs.iter().flatten().flatten() {
            lane.push(Stmt::Store {
                buf: geo.ct,
                index: ix::add(i(acc.1), build::var(l)),
                value: build::var(acc.0),
            });
        }
        let mut out = vec![lp(l, i(0), i(LANES), LoopKind::Vector(LANES as u32), lane)];
        // The epilogue, token by token (tokens past the block's end were padding).
        for (x, cols) in accs.iter().enumerate() {
            let tl = self.var("tl", Ty::I64);
            let t0 = ix::add(
                geo.rb.clone(),
                ix::mul(ix::add(geo.g0.clone(), i(x as i64)), i(LANES)),
            );
            let (st, n) = self.bind(
                "n",
                Ty::I64,
                ix::min(i(LANES), ix::sub(geo.r1.clone(), t0.clone())),
            );
            out.push(st);
            let t = ix::add(t0, build::var(tl));
            let mut each = Vec::new();
            for (j, slots) in cols.iter().enumerate() {
                let mut vals = Vec::new();
                for &(_, at) in slots {
                    let v = self.var("s", Ty::F32);
                    each.push(Stmt::Local {
                        var: v,
                        init: load(geo.ct, ix::add(i(at), build::var(tl))),
                    });
                    vals.push(v);
                }
                each.extend(self.store_out(lin, &t, c, o, j as i64, &vals, parts));
            }
            // With an activation the epilogue's math (`exp`) runs over the tokens as
            // vectors; a plain store or residual add stays scalar (the stores go down a
            // column, and gathering the residual costs more than it saves).
            let kind = match (lin.gated, lin.op.epilogue) {
                (Some(_), _) | (None, Epilogue::Act(_)) => LoopKind::Vector(LANES as u32),
                _ => LoopKind::Serial,
            };
            out.push(lp(tl, i(0), n, kind, each));
        }
        out
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
            LoopKind::Vector(VEC),
            vec![Stmt::Store {
                buf: xs,
                index: dst(build::var(kk)),
                value: load(xb, ix::add(base, build::var(kk))),
            }],
        )
    }

    /// Decode: every thread normalises the one row into scratch, then the parallel loop
    /// runs over groups of `tn` output columns. With `bf16_activations` and bf16 weights the row is
    /// rounded to bf16 scratch (after the norm, if any), so the tiles multiply bf16 pairs
    /// like the prefill's: half the instructions per weight byte, which lets a core keep
    /// more weight loads in flight.
    fn linear_matvec(&mut self, lin: &Lin, tn: i64) -> Result<(), KernelError> {
        let kc = lin.k_const();
        let bf16_weights = lin
            .wbufs
            .iter()
            .all(|w| self.k.bufs[w.0 as usize].elem == Elem::Bf16);
        let bf16 = self.opts.bf16_activations && bf16_weights && kc > 0;
        let (src, base) = match (lin.op.norm, bf16) {
            (None, false) => (self.ins[0].buf, i(0)),
            (norm, _) => {
                let elem = if bf16 { Elem::Bf16 } else { Elem::F32 };
                let xs = self.k.buf("xs", elem, Access::Scratch { len: kc });
                let st = match norm {
                    Some(_) => self.norm_row(lin, i(0), xs, i(0)),
                    None => vec![self.copy_row(lin, i(0), xs, i(0))],
                };
                self.k.body.extend(st);
                (xs, i(0))
            }
        };
        let g = self.var("g", Ty::I64);
        let (st, c) = self.bind("c", Ty::I64, ix::mul(build::var(g), i(tn)));
        let mut body = vec![st];
        body.extend(self.tile(lin, src, &[(base, i(0))], c, tn, None));
        self.k
            .body
            .push(lp(g, i(0), i(lin.ncols / tn), LoopKind::Parallel, body));
        Ok(())
    }

    /// Prefill: parallel over column blocks; inside, tiles of `TM` token rows × `tn`
    /// columns, then the rows left over one at a time.
    fn linear_gemm(&mut self, lin: &Lin, m: Expr, tn: i64) -> Result<(), KernelError> {
        const TM: i64 = 4;
        let cb = self.var("cb", Ty::I64);
        let mut block = Vec::new();
        let (st, c0) = self.bind("c0", Ty::I64, ix::mul(build::var(cb), i(COLS)));
        block.push(st);
        let (st, c1) = self.bind(
            "c1",
            Ty::I64,
            ix::min(ix::add(c0.clone(), i(COLS)), i(lin.ncols)),
        );
        block.push(st);
        let (st, mmain) = self.bind("mmain", Ty::I64, ix::mul(ix::div(m.clone(), i(TM)), i(TM)));
        block.push(st);
        let xs = lin.op.norm.map(|_| {
            let len = TM as u64 * lin.k_const();
            self.k.buf("xs", Elem::F32, Access::Scratch { len })
        });
        for (rows, lo, hi) in [(TM, i(0), mmain.clone()), (1, mmain, m)] {
            let t0 = self.var("t0", Ty::I64);
            let mut group = Vec::new();
            let mut row_at = Vec::new();
            for rr in 0..rows {
                let t = ix::add(build::var(t0), i(rr));
                let xbase = ix::mul(t.clone(), lin.k.clone());
                match xs {
                    Some(xs) => {
                        let at = ix::mul(i(rr), lin.k.clone());
                        group.extend(self.norm_row(lin, xbase, xs, at.clone()));
                        row_at.push((at, t));
                    }
                    None => row_at.push((xbase, t)),
                }
            }
            let src = xs.unwrap_or(self.ins[0].buf);
            let c = self.var("c", Ty::I64);
            let tile = self.tile(lin, src, &row_at, build::var(c), tn, None);
            group.push(Stmt::Loop {
                var: c,
                start: c0.clone(),
                end: c1.clone(),
                step: tn as u64,
                kind: LoopKind::Serial,
                body: tile,
            });
            block.push(Stmt::Loop {
                var: t0,
                start: lo,
                end: hi,
                step: rows as u64,
                kind: LoopKind::Serial,
                body: group,
            });
        }
        let nblocks = (lin.ncols + COLS - 1) / COLS;
        self.k
            .body
            .push(lp(cb, i(0), i(nblocks), LoopKind::Parallel, block));
        Ok(())
    }

    /// Output columns `c..c + tn` of token rows `rows` (`(offset of the row in src, token)`),
    /// with the part, bias, epilogue and residual of each column.
    fn tile(
        &mut self,
        lin: &Lin,
        src: BufId,
        rows: &[(Expr, Expr)],
        c: Expr,
        tn: i64,
        chunk: Option<&KChunk>,
    ) -> Vec<Stmt> {
        self.by_part(lin, &c, |g, o, parts| {
            g.tile_parts(lin, src, rows, &c, o, tn, parts, chunk)
        })
    }

    /// A tile's code from `body(self, o, parts)`: `parts` are the `(weight, bias)` pairs
    /// the tile reduces together (gate and up for a gated epilogue, else one part) and
    /// `o` their first weight row. With several parts side by side, a tile starting at
    /// output column `c` lies inside exactly one of them: a chain of `if`s picks it.
    fn by_part(
        &mut self,
        lin: &Lin,
        c: &Expr,
        mut body: impl FnMut(&mut Self, &Expr, &[(BufId, Option<BufId>)]) -> Vec<Stmt>,
    ) -> Vec<Stmt> {
        if let Some(gate) = lin.gated {
            let up = 1 - gate;
            let parts = [
                (lin.wbufs[gate], lin.bbufs[gate]),
                (lin.wbufs[up], lin.bbufs[up]),
            ];
            return body(self, c, &parts);
        }
        if lin.wbufs.len() == 1 {
            let parts = [(lin.wbufs[0], lin.bbufs[0])];
            return body(self, c, &parts);
        }
        let mut offsets = Vec::new();
        let mut off = 0;
        for w in &lin.widths {
            offsets.push(off);
            off += w;
        }
        let mut chain: Vec<Stmt> = Vec::new();
        for p in (0..lin.wbufs.len()).rev() {
            let (st, o) = self.bind("o", Ty::I64, ix::sub(c.clone(), i(offsets[p])));
            let mut arm = vec![st];
            let parts = [(lin.wbufs[p], lin.bbufs[p])];
            arm.extend(body(self, &o, &parts));
            chain = if p == lin.wbufs.len() - 1 {
                arm
            } else {
                vec![Stmt::If {
                    cond: bin(BinOp::Lt, c.clone(), i(offsets[p + 1])),
                    then: arm,
                    els: chain,
                }]
            };
        }
        chain
    }

    /// The register tile itself: one accumulator per (row, column, part), one `k` loop,
    /// then the epilogue of every output. `c` is the first output column, `o` the first
    /// weight row of the parts (which differ when parts sit side by side). With a `chunk`
    /// the `k` loop covers only that slice of the reduction: the partial sums go through
    /// the output (added to what earlier chunks stored there) and only the last chunk
    /// applies the epilogue.
    #[allow(clippy::too_many_arguments)]
    fn tile_parts(
        &mut self,
        lin: &Lin,
        src: BufId,
        rows: &[(Expr, Expr)],
        c: &Expr,
        o: &Expr,
        tn: i64,
        parts: &[(BufId, Option<BufId>)],
        chunk: Option<&KChunk>,
    ) -> Vec<Stmt> {
        let mut out = Vec::new();
        let kk = self.var("kk", Ty::I64);
        let mut inner = Vec::new();
        let mut xv = Vec::new();
        for (base, _) in rows {
            let (st, v) = self.bind(
                "xv",
                Ty::F32,
                load(src, ix::add(base.clone(), build::var(kk))),
            );
            inner.push(st);
            xv.push(v);
        }
        // accs[row][col][part]
        let mut accs: Vec<Vec<Vec<VarId>>> = vec![vec![Vec::new(); tn as usize]; rows.len()];
        for j in 0..tn {
            for (w, _) in parts {
                let wrow = ix::add(o.clone(), i(j));
                let (st, wv) = self.bind(
                    "wv",
                    Ty::F32,
                    load(*w, ix::add(ix::mul(wrow, lin.k.clone()), build::var(kk))),
                );
                inner.push(st);
                for (rr, x) in xv.iter().enumerate() {
                    let acc = self.var("acc", Ty::F32);
                    out.push(Stmt::Local {
                        var: acc,
                        init: f(0.0),
                    });
                    inner.push(Stmt::Set {
                        var: acc,
                        value: build::add(build::var(acc), build::mul(x.clone(), wv.clone())),
                    });
                    accs[rr][j as usize].push(acc);
                }
            }
        }
        let (k0, k1) = match chunk {
            Some(ch) => (ch.start.clone(), ch.end.clone()),
            None => (i(0), lin.k.clone()),
        };
        out.push(lp(kk, k0, k1, LoopKind::Vector(VEC), inner));
        // The epilogue goes to `epi`; with a chunk, the partial stores go to `partial`.
        let mut epi = Vec::new();
        let mut partial = Vec::new();
        for (rr, (_, t)) in rows.iter().enumerate() {
            for j in 0..tn {
                let col = ix::add(c.clone(), i(j));
                if let Some(ch) = chunk {
                    let at = ix::add(ix::mul(t.clone(), i(lin.ncols)), col.clone());
                    for &acc in &accs[rr][j as usize] {
                        out.push(Stmt::Set {
                            var: acc,
                            value: build::add(
                                build::var(acc),
                                select(ch.first.clone(), f(0.0), load(self.out, at.clone())),
                            ),
                        });
                        partial.push(Stmt::Store {
                            buf: self.out,
                            index: at.clone(),
                            value: build::var(acc),
                        });
                    }
                }
                let st = self.store_out(lin, t, c, o, j, &accs[rr][j as usize], parts);
                epi.extend(st);
            }
        }
        match chunk {
            Some(ch) => out.push(Stmt::If {
                cond: ch.last.clone(),
                then: epi,
                els: partial,
            }),
            None => out.extend(epi),
        }
        out
    }

    /// The epilogue of output `(t, c + j)` from its accumulators `accs` (one per part;
    /// weight row `o + j` of each): bias, activation or gate, residual, then the store.
    #[allow(clippy::too_many_arguments)]
    fn store_out(
        &mut self,
        lin: &Lin,
        t: &Expr,
        c: &Expr,
        o: &Expr,
        j: i64,
        accs: &[VarId],
        parts: &[(BufId, Option<BufId>)],
    ) -> Vec<Stmt> {
        let col = ix::add(c.clone(), i(j));
        let mut epi = Vec::new();
        let wrow = ix::add(o.clone(), i(j));
        let with_bias = |acc: VarId, b: Option<BufId>| match b {
            Some(b) => build::add(build::var(acc), load(b, wrow.clone())),
            None => build::var(acc),
        };
        let y = if lin.gated.is_some() {
            let (st, gv) = self.bind("g", Ty::F32, with_bias(accs[0], parts[0].1));
            epi.push(st);
            let (st, uv) = self.bind("u", Ty::F32, with_bias(accs[1], parts[1].1));
            epi.push(st);
            let (st, value) = match lin.op.epilogue {
                Epilogue::Glu { act, .. } => {
                    let (st, a) = self.unary(act, gv);
                    (st, build::mul(a, uv))
                }
                Epilogue::ClampedGlu { alpha, limit, .. } => {
                    self.clamped_swiglu(alpha, limit, gv, uv)
                }
                _ => (Vec::new(), f(0.0)),
            };
            epi.extend(st);
            value
        } else {
            let y = with_bias(accs[0], parts[0].1);
            match lin.op.epilogue {
                Epilogue::Act(u) => {
                    let (st, yv) = self.bind("y", Ty::F32, y);
                    epi.push(st);
                    let (st, a) = self.unary(u, yv);
                    epi.extend(st);
                    a
                }
                _ => y,
            }
        };
        let at = ix::add(ix::mul(t.clone(), i(lin.ncols)), col);
        let y = match lin.res {
            Some(rb) => build::add(y, load(rb, at.clone())),
            None => y,
        };
        epi.push(Stmt::Store {
            buf: self.out,
            index: at,
            value: y,
        });
        epi
    }

    /// `(prod(shape[..axis]), shape[axis], prod(shape[axis+1..]))` as expressions.
    fn split(&self, shape: &[Dim], axis: usize) -> Result<(Expr, Dim, Expr), KernelError> {
        if axis >= shape.len() {
            return Err(self.invalid(format!("axis {axis} out of range")));
        }
        Ok((
            ix::prod(&shape[..axis]),
            shape[axis],
            ix::prod(&shape[axis + 1..]),
        ))
    }

    /// `(o, l)` = row `r` split into an outer index and a position along an axis of `len`.
    fn outer_and_pos(&mut self, outer: &Expr, r: Expr, len: Expr) -> (Vec<Stmt>, Expr, Expr) {
        if *outer == i(1) {
            return (Vec::new(), i(0), r);
        }
        let (s1, o) = self.bind("o", Ty::I64, ix::div(r.clone(), len.clone()));
        let (s2, l) = self.bind("l", Ty::I64, ix::rem(r, len));
        (vec![s1, s2], o, l)
    }

    /// A slice is one contiguous chunk of `(end - start) * inner` elements per outer index.
    fn slice(&mut self, axis: usize, start: u64, end: u64) -> Result<(), KernelError> {
        let x = self.shape(0, 1)?;
        let (outer, len, inner) = self.split(&x, axis)?;
        let chunk = ix::mul(i((end - start) as i64), inner.clone());
        let (xb, out) = (self.ins[0].buf, self.out);
        let src = |o: Expr, j: Expr| {
            let row = ix::add(ix::mul(o, ix::dim(len)), i(start as i64));
            ix::add(ix::mul(row, inner.clone()), j)
        };
        if outer == i(1) {
            // One chunk (a slice along the first axis): spread the chunk itself.
            let j = self.var("j", Ty::I64);
            let copy = Stmt::Store {
                buf: out,
                index: build::var(j),
                value: load(xb, src(i(0), build::var(j))),
            };
            self.k
                .body
                .push(lp(j, i(0), chunk, LoopKind::Parallel, vec![copy]));
        } else {
            let o = self.var("o", Ty::I64);
            let j = self.var("j", Ty::I64);
            let copy = Stmt::Store {
                buf: out,
                index: ix::add(ix::mul(build::var(o), chunk.clone()), build::var(j)),
                value: load(xb, src(build::var(o), build::var(j))),
            };
            let inner_loop = lp(j, i(0), chunk, LoopKind::Vector(VEC), vec![copy]);
            self.k
                .body
                .push(lp(o, i(0), outer, LoopKind::Parallel, vec![inner_loop]));
        }
        Ok(())
    }

    fn concat(&mut self, axis: usize) -> Result<(), KernelError> {
        let a = self.shape(0, 1)?;
        let b = self.shape(1, 1)?;
        let (outer, la, inner) = self.split(&a, axis)?;
        let lb = b[axis];
        let (la, lb) = (ix::dim(la), ix::dim(lb));
        let lt = ix::add(la.clone(), lb.clone());
        let r = self.var("r", Ty::I64);
        let (mut body, o, l) = self.outer_and_pos(&outer, build::var(r), lt.clone());
        let (ab, bb, out) = (self.ins[0].buf, self.ins[1].buf, self.out);
        let copy = |g: &mut Gen, src: BufId, src_row: Expr| -> Vec<Stmt> {
            let j = g.var("j", Ty::I64);
            vec![lp(
                j,
                i(0),
                inner.clone(),
                LoopKind::Vector(VEC),
                vec![Stmt::Store {
                    buf: out,
                    index: ix::add(ix::mul(build::var(r), inner.clone()), build::var(j)),
                    value: load(src, ix::add(ix::mul(src_row, inner.clone()), build::var(j))),
                }],
            )]
        };
        let from_a = copy(self, ab, ix::add(ix::mul(o.clone(), la.clone()), l.clone()));
        let from_b = copy(
            self,
            bb,
            ix::add(ix::mul(o, lb), ix::sub(l.clone(), la.clone())),
        );
        body.push(Stmt::If {
            cond: bin(BinOp::Lt, l, la),
            then: from_a,
            els: from_b,
        });
        self.k
            .body
            .push(lp(r, i(0), ix::mul(outer, lt), LoopKind::Parallel, body));
        Ok(())
    }

    fn sum(&mut self, axis: usize) -> Result<(), KernelError> {
        let x = self.shape(0, 1)?;
        let (outer, len, inner) = self.split(&x, axis)?;
        let len = ix::dim(len);
        let r = self.var("r", Ty::I64);
        let (mut body, o, ii) = self.outer_and_pos(&outer, build::var(r), inner.clone());
        let acc = self.var("acc", Ty::F32);
        let l = self.var("l", Ty::I64);
        body.push(Stmt::Local {
            var: acc,
            init: f(0.0),
        });
        // Serial, in order: the interpreter sums in this order and `len` is short (top-k).
        let index = ix::add(
            ix::mul(
                ix::add(ix::mul(o, len.clone()), build::var(l)),
                inner.clone(),
            ),
            ii,
        );
        body.push(lp(
            l,
            i(0),
            len,
            LoopKind::Serial,
            vec![Stmt::Set {
                var: acc,
                value: build::add(build::var(acc), load(self.ins[0].buf, index)),
            }],
        ));
        body.push(Stmt::Store {
            buf: self.out,
            index: build::var(r),
            value: build::var(acc),
        });
        self.k
            .body
            .push(lp(r, i(0), ix::mul(outer, inner), LoopKind::Parallel, body));
        Ok(())
    }

    fn rope(&mut self, r: &RopeOp) -> Result<(), KernelError> {
        let x = self.shape(0, 3)?;
        let (h, d) = (ix::dim(x[1]), ix::dim(x[2]));
        let dims = r.dims as i64;
        let half = dims / 2;
        let (xb, pb, out) = (self.ins[0].buf, self.ins[1].buf, self.out);
        // The frequency table is a per-thread constant: filled before the parallel loop.
        let (freqs, factor) = crate::ir::rope::inv_freq(r);
        let freq = self
            .k
            .buf("freq", Elem::F32, Access::Scratch { len: half as u64 });
        let cs = self.k.buf(
            "cs",
            Elem::F32,
            Access::Scratch {
                len: 2 * half as u64,
            },
        );
        for (n, fr) in freqs.iter().enumerate() {
            self.k.body.push(Stmt::Store {
                buf: freq,
                index: i(n as i64),
                value: f(*fr as f32),
            });
        }
        let t = self.var("t", Ty::I64);
        let mut body = Vec::new();
        let (st, p) = self.bind("p", Ty::F32, un(UnOp::ToF32, load(pb, build::var(t))));
        body.push(st);
        // cos and sin of every frequency at this position, shared by all heads.
        let q = self.var("q", Ty::I64);
        let (st, ang) = self.bind("ang", Ty::F32, build::mul(load(freq, build::var(q)), p));
        let scaled = |e: Expr| {
            if factor == 1.0 {
                e
            } else {
                build::mul(e, f(factor as f32))
            }
        };
        body.push(lp(
            q,
            i(0),
            i(half),
            LoopKind::Vector(VEC),
            vec![
                st,
                Stmt::Store {
                    buf: cs,
                    index: build::var(q),
                    value: scaled(un(UnOp::Cos, ang.clone())),
                },
                Stmt::Store {
                    buf: cs,
                    index: ix::add(build::var(q), i(half)),
                    value: scaled(un(UnOp::Sin, ang)),
                },
            ],
        ));
        let head = self.var("head", Ty::I64);
        let mut per_head = Vec::new();
        let (st, base) = self.bind(
            "base",
            Ty::I64,
            ix::mul(
                ix::add(ix::mul(build::var(t), h.clone()), build::var(head)),
                d.clone(),
            ),
        );
        per_head.push(st);
        let q2 = self.var("q", Ty::I64);
        let (i1, i2) = match r.pairing {
            Pairing::Half => (build::var(q2), ix::add(build::var(q2), i(half))),
            Pairing::Interleaved => (
                ix::mul(build::var(q2), i(2)),
                ix::add(ix::mul(build::var(q2), i(2)), i(1)),
            ),
        };
        let (a1, a2) = (ix::add(base.clone(), i1), ix::add(base.clone(), i2));
        let (s1, c) = self.bind("c", Ty::F32, load(cs, build::var(q2)));
        let (s2, s) = self.bind("s", Ty::F32, load(cs, ix::add(build::var(q2), i(half))));
        let (s3, x1) = self.bind("x1", Ty::F32, load(xb, a1.clone()));
        let (s4, x2) = self.bind("x2", Ty::F32, load(xb, a2.clone()));
        per_head.push(lp(
            q2,
            i(0),
            i(half),
            LoopKind::Vector(VEC),
            vec![
                s1,
                s2,
                s3,
                s4,
                Stmt::Store {
                    buf: out,
                    index: a1,
                    value: build::sub(
                        build::mul(x1.clone(), c.clone()),
                        build::mul(x2.clone(), s.clone()),
                    ),
                },
                Stmt::Store {
                    buf: out,
                    index: a2,
                    value: build::add(build::mul(x2, c), build::mul(x1, s)),
                },
            ],
        ));
        if x[2].as_const() != Some(dims as u64) {
            // Dims past `dims` pass through unrotated.
            let jj = self.var("j", Ty::I64);
            let at = ix::add(base, build::var(jj));
            per_head.push(lp(
                jj,
                i(dims),
                d,
                LoopKind::Vector(VEC),
                vec![Stmt::Store {
                    buf: out,
                    index: at.clone(),
                    value: load(xb, at),
                }],
            ));
        }
        body.push(lp(head, i(0), h, LoopKind::Serial, per_head));
        self.k
            .body
            .push(lp(t, i(0), ix::dim(x[0]), LoopKind::Parallel, body));
        Ok(())
    }

    fn temperature(&mut self, floor_scale: f64, attn_scale: f64) -> Result<(), KernelError> {
        let pos = self.shape(0, 1)?;
        let t = self.var("t", Ty::I64);
        let p = un(UnOp::ToF32, load(self.ins[0].buf, build::var(t)));
        let (st, bucket) = self.bind(
            "bucket",
            Ty::F32,
            un(
                UnOp::Floor,
                build::div(build::add(p, f(1.0)), f(floor_scale as f32)),
            ),
        );
        let value = build::add(
            f(1.0),
            build::mul(
                f(attn_scale as f32),
                un(UnOp::Log, build::add(bucket, f(1.0))),
            ),
        );
        let body = vec![
            st,
            Stmt::Store {
                buf: self.out,
                index: build::var(t),
                value,
            },
        ];
        self.k
            .body
            .push(lp(t, i(0), ix::prod(&pos), LoopKind::Parallel, body));
        Ok(())
    }
}

/// `1 / (1 + exp(-x))`.
fn sigmoid(x: Expr) -> Expr {
    build::div(f(1.0), build::add(f(1.0), un(UnOp::Exp, un(UnOp::Neg, x))))
}

/// `u(x)` as statements binding intermediates, then the value; `x` should be a variable
/// or a constant, since it may be used more than once.
pub(super) fn unary_expr(k: &mut Kernel, u: UnaryOp, x: Expr) -> (Vec<Stmt>, Expr) {
    let mut st = Vec::new();
    let mut bind = |k: &mut Kernel, name: &str, value: Expr| {
        let v = k.var(name, Ty::F32);
        st.push(Stmt::Let { var: v, value });
        build::var(v)
    };
    let value = match u {
        UnaryOp::Gelu => {
            // erf by Abramowitz & Stegun 7.1.26, the interpreter's formula (|error| < 1.5e-7).
            let z = bind(
                k,
                "z",
                build::mul(x.clone(), f(std::f32::consts::FRAC_1_SQRT_2)),
            );
            let t = bind(
                k,
                "t",
                build::div(
                    f(1.0),
                    build::add(f(1.0), build::mul(f(0.327_591_1), un(UnOp::Abs, z.clone()))),
                ),
            );
            let mut poly = f(1.061_405_4);
            for c in [-1.453_152_1, 1.421_413_8, -0.284_496_72, 0.254_829_6] {
                poly = build::add(build::mul(poly, t.clone()), f(c));
            }
            let y = bind(
                k,
                "erf",
                build::sub(
                    f(1.0),
                    build::mul(
                        build::mul(poly, t),
                        un(UnOp::Exp, un(UnOp::Neg, build::mul(z.clone(), z.clone()))),
                    ),
                ),
            );
            let erf = select(bin(BinOp::Ge, z, f(0.0)), y.clone(), un(UnOp::Neg, y));
            build::mul(build::mul(f(0.5), x), build::add(f(1.0), erf))
        }
        UnaryOp::GeluTanh => {
            let cube = build::mul(build::mul(x.clone(), x.clone()), x.clone());
            let inner = build::mul(
                f((2.0 / std::f64::consts::PI).sqrt() as f32),
                build::add(x.clone(), build::mul(f(0.044_715), cube)),
            );
            build::mul(
                build::mul(f(0.5), x),
                build::add(f(1.0), un(UnOp::Tanh, inner)),
            )
        }
        UnaryOp::Relu => bin(BinOp::Max, x, f(0.0)),
        UnaryOp::Silu => build::mul(x.clone(), sigmoid(x)),
        UnaryOp::Sigmoid => sigmoid(x),
        UnaryOp::Scale(c) => build::mul(x, f(c as f32)),
        UnaryOp::Softcap(c) => build::mul(f(c as f32), un(UnOp::Tanh, build::div(x, f(c as f32)))),
    };
    (st, value)
}

/// GPT-OSS's `(clamp(u, ±limit) + 1) * g * sigmoid(alpha * g)` with `g = min(g, limit)`.
pub(super) fn clamped_swiglu_expr(
    k: &mut Kernel,
    alpha: f64,
    limit: f64,
    g: Expr,
    u: Expr,
) -> (Vec<Stmt>, Expr) {
    let lim = f(limit as f32);
    let gv = k.var("gc", Ty::F32);
    let uv = k.var("uc", Ty::F32);
    let st = vec![
        Stmt::Let {
            var: gv,
            value: bin(BinOp::Min, g, lim.clone()),
        },
        Stmt::Let {
            var: uv,
            value: bin(BinOp::Max, bin(BinOp::Min, u, lim), f(-(limit as f32))),
        },
    ];
    let (g, u) = (build::var(gv), build::var(uv));
    let value = build::mul(
        build::mul(build::add(u, f(1.0)), g.clone()),
        sigmoid(build::mul(f(alpha as f32), g)),
    );
    (st, value)
}
