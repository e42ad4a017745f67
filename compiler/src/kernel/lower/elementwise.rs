//! Elementwise kernels: unary and binary ops with numpy broadcasting, `expand`, the fused
//! elementwise programs of `fuse_elementwise`, and GPT-OSS's clamped SwiGLU; also the
//! activation math (`unary_expr`, `clamped_swiglu_expr`) that matmul epilogues and the MoE
//! experts share. Arithmetic follows `interp::{kernels, fused}` operation by operation;
//! where the interpreter uses f64 (GELU's erf, softcap) the kernels use f32, which the
//! differential tests bound.
//!
//! Shape: parallel over rows (all axes but the last), a vector loop over the last axis.

use super::gen::{lp, sigmoid, Gen, NodeLowering};
use super::{ix, KernelError};
use crate::ir::{BinaryOp, Dim, ElementwiseOp, Instr, Op, UnaryOp};
use crate::kernel::build::{self, bin, f, i, load, select, un};
use crate::kernel::{BinOp, Expr, Kernel, LoopKind, Stmt, Ty, UnOp};

/// The kernels of `Unary`, `Binary`, `Expand`, `ClampedSwiglu` and `Elementwise` nodes.
pub(super) fn kernel(cx: &NodeLowering) -> Result<Kernel, KernelError> {
    let roles: &[&str] = match &cx.node().op {
        Op::Unary(_) | Op::Expand { .. } => &["in0"],
        Op::Binary(_) => &["in0", "in1"],
        Op::ClampedSwiglu { .. } => &["gate", "up"],
        _ => &[],
    };
    if !roles.is_empty() {
        cx.expect_operands(roles)?;
    }
    let mut g = Gen::new(cx, roles)?;
    match &cx.node().op {
        Op::Unary(u) => {
            let u = *u;
            g.broadcast(&[0], |g, v| g.unary(u, v[0].clone()))
        }
        Op::Binary(b) => {
            let op = binary(*b);
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
        op => Err(KernelError::Unsupported {
            node: cx.id.0,
            op: crate::ir::op_text(op),
        }),
    }?;
    Ok(g.finish())
}

fn binary(b: BinaryOp) -> BinOp {
    match b {
        BinaryOp::Add => BinOp::Add,
        BinaryOp::Mul => BinOp::Mul,
    }
}

impl Gen {
    /// `act(x)` for a unary op, as statements binding intermediates and the result.
    pub(super) fn unary(&mut self, u: UnaryOp, x: Expr) -> (Vec<Stmt>, Expr) {
        unary_expr(&mut self.k, u, x)
    }

    pub(super) fn clamped_swiglu(
        &mut self,
        alpha: f64,
        limit: f64,
        g: Expr,
        u: Expr,
    ) -> (Vec<Stmt>, Expr) {
        clamped_swiglu_expr(&mut self.k, alpha, limit, g, u)
    }

    /// A loop over every element of the result: parallel over rows (all axes but the
    /// last), vector over the last axis. Operands `which` are read with numpy broadcasting
    /// and bound to variables that `body` combines into the stored value.
    pub(super) fn broadcast(
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
        row_stmts.push(lp(
            j,
            i(0),
            ix::dim(last),
            LoopKind::Vector(self.schedule.vector),
            inner,
        ));
        self.push(lp(
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
                        (Some(x), Some(y)) => (Vec::new(), bin(binary(b), x, y)),
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
