//! RoPE kernels (`Op::Rope`, pairs rotated by the interpreter's frequency table, dims past
//! the rotated ones passed through) and the attention temperature of Llama 4's NoPE layers
//! (`Op::AttnTemperature`, one scale per position).
//!
//! Shape: parallel over tokens; the cos and sin of every frequency at a token's position
//! are computed once into scratch and shared by all heads.

use super::gen::{lp, Gen, NodeLowering};
use super::{ix, KernelError};
use crate::ir::{Op, RopeOp};
use crate::kernel::build::{self, f, i, load, un};
use crate::kernel::{Access, Elem, Expr, Kernel, LoopKind, Stmt, Ty, UnOp};
use archc_spec::Pairing;

/// The kernels of `Rope` (operands x, positions) and `AttnTemperature` (positions) nodes.
pub(super) fn kernel(cx: &NodeLowering) -> Result<Kernel, KernelError> {
    match &cx.node().op {
        Op::Rope(r) => {
            let roles = ["x", "positions"];
            cx.expect_operands(&roles)?;
            let mut g = Gen::new(cx, &roles)?;
            g.rope(r)?;
            Ok(g.finish())
        }
        Op::AttnTemperature {
            floor_scale,
            attn_scale,
        } => {
            let roles = ["positions"];
            cx.expect_operands(&roles)?;
            let mut g = Gen::new(cx, &roles)?;
            g.temperature(*floor_scale, *attn_scale)?;
            Ok(g.finish())
        }
        op => Err(KernelError::Unsupported {
            node: cx.id.0,
            op: crate::ir::op_text(op),
        }),
    }
}

impl Gen {
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
            self.push(Stmt::Store {
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
            LoopKind::Vector(self.schedule.vector),
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
            LoopKind::Vector(self.schedule.vector),
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
                LoopKind::Vector(self.schedule.vector),
                vec![Stmt::Store {
                    buf: out,
                    index: at.clone(),
                    value: load(xb, at),
                }],
            ));
        }
        body.push(lp(head, i(0), h, LoopKind::Serial, per_head));
        self.push(lp(t, i(0), ix::dim(x[0]), LoopKind::Parallel, body));
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
        self.push(lp(t, i(0), ix::prod(&pos), LoopKind::Parallel, body));
        Ok(())
    }
}
