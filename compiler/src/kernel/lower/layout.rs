//! Layout kernels that move elements without arithmetic, beyond plain row copies: `slice`
//! (one contiguous chunk per outer index), `concat` (two operands along an axis), `sum`
//! along an axis (in order, as the interpreter sums), and the `copy` of an output that
//! computes nothing (see `mod.rs`). `expand` is a broadcast (`elementwise.rs`).

use super::gen::{lp, Gen, NodeLowering};
use super::{ix, KernelError};
use crate::ir::{Dim, Op};
use crate::kernel::build::{self, bin, f, i, load};
use crate::kernel::{Access, BinOp, BufId, Elem, Expr, Kernel, LoopKind, Stmt, Ty};

/// The kernels of `Slice`, `Concat` (operands a, b) and `Sum` nodes.
pub(super) fn kernel(cx: &NodeLowering) -> Result<Kernel, KernelError> {
    let roles: &[&str] = match &cx.node().op {
        Op::Concat { .. } => &["a", "b"],
        _ => &["in0"],
    };
    cx.expect_operands(roles)?;
    let mut g = Gen::new(cx, roles)?;
    match &cx.node().op {
        Op::Slice { axis, start, end } => g.slice(*axis, *start, *end),
        Op::Concat { axis } => g.concat(*axis),
        Op::Sum { axis } => g.sum(*axis),
        op => Err(KernelError::Unsupported {
            node: cx.id.0,
            op: crate::ir::op_text(op),
        }),
    }?;
    Ok(g.finish())
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

impl Gen {
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
            self.push(lp(j, i(0), chunk, LoopKind::Parallel, vec![copy]));
        } else {
            let o = self.var("o", Ty::I64);
            let j = self.var("j", Ty::I64);
            let copy = Stmt::Store {
                buf: out,
                index: ix::add(ix::mul(build::var(o), chunk.clone()), build::var(j)),
                value: load(xb, src(build::var(o), build::var(j))),
            };
            let vector = LoopKind::Vector(self.schedule.vector);
            let inner_loop = lp(j, i(0), chunk, vector, vec![copy]);
            self.push(lp(o, i(0), outer, LoopKind::Parallel, vec![inner_loop]));
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
                LoopKind::Vector(g.schedule.vector),
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
        self.push(lp(r, i(0), ix::mul(outer, lt), LoopKind::Parallel, body));
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
        self.push(lp(r, i(0), ix::mul(outer, inner), LoopKind::Parallel, body));
        Ok(())
    }
}
