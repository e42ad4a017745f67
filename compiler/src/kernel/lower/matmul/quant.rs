//! Matmuls over block-quantised weights (GGML's Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K): the
//! weights stay raw bytes in memory and are decoded inside the kernel with integer bit
//! operations and `f16bits`; also the block decoder itself, which the block gather shares.
//!
//! **Decoding matches the reference dequantisation bit for bit** (llama.cpp's
//! `dequantize_row_*`): scales widen from f16, each element is one f32 multiply and at
//! most one subtract or add, in the same order. A matmul multiplies each decoded weight
//! with its activation and accumulates in f32, so it differs from an f32 matmul over the
//! dequantised weights only in summation order.
//!
//! Shapes: parallel over blocks of `matmul_cols` output columns, then token rows, then
//! columns, with one dot product per weight part and the float tiles' epilogue.
//! **Decode** (matrix-vector): each dot product decodes the quantised row block by block,
//! vector loops inside a block adding element `e` of every block into a per-thread
//! scratch `lanes[e]` (no reduction inside the short block loops), summed once at the
//! end; each quantised row is streamed once. **Prefill** (matrix-matrix): the column
//! block's quantised rows are first decoded into a per-thread f32 `tile` (bit-exact
//! dequantised values), then every token row takes dense dot products with the tile (the
//! float tiles' reduction, one row × one column), so each weight is decoded once per call.
//! Weight parts stored as floats next to quantised ones are read where they are.

use super::super::format::BlockFormat;
use super::super::gen::lp;
use super::super::{ix, KernelError};
use super::tiles::Parts;
use super::{Gen, Lin};
use crate::kernel::build::{self, f, i, load, un};
use crate::kernel::{BinOp, BufId, Elem, Expr, Kernel, LoopKind, Stmt, Ty, UnOp, VarId};

fn bit_and(a: Expr, m: i64) -> Expr {
    build::bin(BinOp::BitAnd, a, i(m))
}

fn shr(a: Expr, n: i64) -> Expr {
    if n == 0 {
        a
    } else {
        build::bin(BinOp::Shr, a, i(n))
    }
}

fn shl(a: Expr, n: i64) -> Expr {
    if n == 0 {
        a
    } else {
        build::bin(BinOp::Shl, a, i(n))
    }
}

fn bit_or(a: Expr, b: Expr) -> Expr {
    build::bin(BinOp::BitOr, a, b)
}

/// A byte (0..=255) as a signed byte (-128..=127): shift it to the top and back.
fn sign_extend_byte(b: Expr) -> Expr {
    shr(shl(b, 56), 56)
}

/// Decodes one block of `fmt` starting at byte `base` of `w` (an `I64` variable). Every
/// element's value goes to `emit(kernel, element index in the block, value)`, which
/// returns the statements consuming it. Per-block scales are bound once, then vector
/// loops (width hint `vector`) over the quants each hand out two or four elements per
/// iteration.
pub(in crate::kernel::lower) fn decode_block(
    k: &mut Kernel,
    vector: u32,
    fmt: BlockFormat,
    w: BufId,
    base: &Expr,
    emit: &mut dyn FnMut(&mut Kernel, Expr, Expr) -> Vec<Stmt>,
) -> Vec<Stmt> {
    let byte = |off: Expr| load(w, ix::add(base.clone(), off));
    let half = |at: i64| un(UnOp::F16Bits, bit_or(byte(i(at)), shl(byte(i(at + 1)), 8)));
    let mut st = Vec::new();
    let bind = |k: &mut Kernel, st: &mut Vec<Stmt>, name: &str, ty: Ty, value: Expr| {
        let v = k.var(name, ty);
        st.push(Stmt::Let { var: v, value });
        build::var(v)
    };
    let to_f = |e: Expr| un(UnOp::ToF32, e);
    match fmt {
        BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
            let d = bind(k, &mut st, "d", Ty::F32, half(0));
            let m = (fmt == BlockFormat::Q4_1).then(|| bind(k, &mut st, "m", Ty::F32, half(2)));
            let qs = if m.is_some() { 4 } else { 2 };
            let j = k.var("j", Ty::I64);
            let mut body = Vec::new();
            let q = bind(
                k,
                &mut body,
                "q",
                Ty::I64,
                byte(ix::add(build::var(j), i(qs))),
            );
            for (e, nib) in [
                (build::var(j), bit_and(q.clone(), 15)),
                (ix::add(build::var(j), i(16)), shr(q.clone(), 4)),
            ] {
                let value = match &m {
                    Some(m) => build::add(build::mul(d.clone(), to_f(nib)), m.clone()),
                    None => build::mul(to_f(ix::sub(nib, i(8))), d.clone()),
                };
                body.extend(emit(k, e, value));
            }
            st.push(lp(j, i(0), i(16), LoopKind::Vector(vector), body));
        }
        BlockFormat::Q8_0 => {
            let d = bind(k, &mut st, "d", Ty::F32, half(0));
            let j = k.var("j", Ty::I64);
            let q = sign_extend_byte(byte(ix::add(build::var(j), i(2))));
            let body = emit(k, build::var(j), build::mul(to_f(q), d));
            st.push(lp(j, i(0), i(32), LoopKind::Vector(vector), body));
        }
        BlockFormat::Q4K | BlockFormat::Q5K => {
            let d = bind(k, &mut st, "d", Ty::F32, half(0));
            let dmin = bind(k, &mut st, "dmin", Ty::F32, half(2));
            // The 6-bit scale and min of each of the 8 sub-blocks, from 12 packed bytes.
            let s = |j: i64| byte(i(4 + j));
            let mut d1 = Vec::new();
            let mut m1 = Vec::new();
            for sub in 0..8 {
                let (sc, mn) = if sub < 4 {
                    (bit_and(s(sub), 63), bit_and(s(sub + 4), 63))
                } else {
                    (
                        bit_or(bit_and(s(sub + 4), 15), shl(shr(s(sub - 4), 6), 4)),
                        bit_or(shr(s(sub + 4), 4), shl(shr(s(sub), 6), 4)),
                    )
                };
                d1.push(bind(
                    k,
                    &mut st,
                    "d1",
                    Ty::F32,
                    build::mul(d.clone(), to_f(sc)),
                ));
                m1.push(bind(
                    k,
                    &mut st,
                    "m1",
                    Ty::F32,
                    build::mul(dmin.clone(), to_f(mn)),
                ));
            }
            let (qh, qs) = if fmt == BlockFormat::Q5K {
                (Some(16), 48)
            } else {
                (None, 16)
            };
            // Sub-blocks 2g and 2g+1 share 32 bytes of quants: low nibbles, then high.
            for g in 0..4i64 {
                let l = k.var("l", Ty::I64);
                let mut body = Vec::new();
                let q = bind(
                    k,
                    &mut body,
                    "q",
                    Ty::I64,
                    byte(ix::add(build::var(l), i(qs + 32 * g))),
                );
                let h = qh.map(|at| {
                    bind(
                        k,
                        &mut body,
                        "h",
                        Ty::I64,
                        byte(ix::add(build::var(l), i(at))),
                    )
                });
                for hi in 0..2i64 {
                    let sub = (2 * g + hi) as usize;
                    let nib = if hi == 0 {
                        bit_and(q.clone(), 15)
                    } else {
                        shr(q.clone(), 4)
                    };
                    let v = match &h {
                        Some(h) => bit_or(nib, shl(bit_and(shr(h.clone(), sub as i64), 1), 4)),
                        None => nib,
                    };
                    let value = build::sub(build::mul(d1[sub].clone(), to_f(v)), m1[sub].clone());
                    let e = ix::add(build::var(l), i(64 * g + 32 * hi));
                    body.extend(emit(k, e, value));
                }
                st.push(lp(l, i(0), i(32), LoopKind::Vector(vector), body));
            }
        }
        BlockFormat::Q6K => {
            let d = bind(k, &mut st, "d", Ty::F32, half(208));
            let d1: Vec<Expr> = (0..16)
                .map(|s| {
                    let sc = to_f(sign_extend_byte(byte(i(192 + s))));
                    bind(k, &mut st, "d1", Ty::F32, build::mul(d.clone(), sc))
                })
                .collect();
            // Each half of 128 elements: 64 bytes of low nibbles, 32 bytes of high bits;
            // the vector loop covers 16 elements of one scale in each quarter.
            for h in 0..2i64 {
                for is in 0..2i64 {
                    let l = k.var("l", Ty::I64);
                    let ll = ix::add(build::var(l), i(16 * is));
                    let mut body = Vec::new();
                    let a = bind(
                        k,
                        &mut body,
                        "a",
                        Ty::I64,
                        byte(ix::add(ll.clone(), i(64 * h))),
                    );
                    let b = bind(
                        k,
                        &mut body,
                        "b",
                        Ty::I64,
                        byte(ix::add(ll.clone(), i(64 * h + 32))),
                    );
                    let hb = bind(
                        k,
                        &mut body,
                        "hb",
                        Ty::I64,
                        byte(ix::add(ll.clone(), i(128 + 32 * h))),
                    );
                    let quarters = [
                        (bit_and(a.clone(), 15), 0),
                        (bit_and(b.clone(), 15), 1),
                        (shr(a, 4), 2),
                        (shr(b, 4), 3),
                    ];
                    for (low, qn) in quarters {
                        let high = bit_and(shr(hb.clone(), 2 * qn), 3);
                        let q = ix::sub(bit_or(low, shl(high, 4)), i(32));
                        let scale = d1[(8 * h + 2 * qn + is) as usize].clone();
                        let e = ix::add(ll.clone(), i(128 * h + 32 * qn));
                        body.extend(emit(k, e, build::mul(scale, to_f(q))));
                    }
                    st.push(lp(l, i(0), i(16), LoopKind::Vector(vector), body));
                }
            }
        }
    }
    st
}

impl Gen {
    /// A linear whose weight parts include block-quantised ones (see the module docs);
    /// `prefill` decodes each column block's quantised rows once into a tile.
    pub(super) fn quant_linear(&mut self, lin: &Lin, prefill: bool) -> Result<(), KernelError> {
        let Expr::I64(k) = lin.k else {
            return Err(self.invalid("a matmul over a symbolic width"));
        };
        for (p, w) in lin.wbufs.iter().enumerate() {
            if let Some(fmt) = self.block_of(*w) {
                if k % fmt.block_len() as i64 != 0 {
                    return Err(self.invalid(format!(
                        "weight part {p}: width {k} is not whole {}-element blocks",
                        fmt.block_len()
                    )));
                }
            }
        }
        let cols = self.schedule.matmul_cols;
        let cb = self.var("cb", Ty::I64);
        let t = self.var("t", Ty::I64);
        let c = self.var("c", Ty::I64);
        let mut block = Vec::new();
        let (st, c0) = self.bind("c0", Ty::I64, ix::mul(build::var(cb), i(cols)));
        block.push(st);
        let (st, c1) = self.bind(
            "c1",
            Ty::I64,
            ix::min(ix::add(c0.clone(), i(cols)), i(lin.ncols)),
        );
        block.push(st);

        // Prefill: decode the block's quantised rows once into `tile` (a slot of `cols`
        // rows per part a column reduces), then every token row reads them as dense rows.
        let tile = prefill.then(|| {
            let slots = if lin.gated.is_some() { 2 } else { 1 };
            self.scratch("tile", Elem::F32, (slots * cols * k) as u64)
        });
        let slot_at = |slot: usize, col: Expr, c0: &Expr| {
            ix::mul(
                ix::add(i(slot as i64 * cols), ix::sub(col, c0.clone())),
                i(k),
            )
        };
        if let Some(tb) = tile {
            let cf = self.var("c", Ty::I64);
            let fill = self.by_part(lin, &build::var(cf), |g, o, parts| {
                let mut st = Vec::new();
                for (slot, (w, _)) in parts.iter().enumerate() {
                    let at = slot_at(slot, build::var(cf), &c0);
                    st.extend(g.decode_row(*w, o.clone(), (tb, at), k));
                }
                st
            });
            block.push(lp(cf, c0.clone(), c1.clone(), LoopKind::Serial, fill));
        }

        let mut row = Vec::new();
        let (st, xbase) = self.bind("xbase", Ty::I64, ix::mul(build::var(t), i(k)));
        row.push(st);
        let (src, base) = match lin.op.norm {
            Some(_) => {
                let xs = self.scratch("xs", Elem::F32, k as u64);
                row.extend(self.norm_row(lin, xbase, xs, i(0)));
                (xs, i(0))
            }
            None => (self.ins[0].buf, xbase),
        };
        let mut lanes = None;
        let col = self.by_part(lin, &build::var(c), |g, o, parts: &Parts| {
            let mut st = Vec::new();
            let mut accs = Vec::new();
            for (slot, (w, _)) in parts.iter().enumerate() {
                let decoded = tile
                    .filter(|_| g.block_of(*w).is_some())
                    .map(|tb| (tb, slot_at(slot, build::var(c), &c0)));
                let (dot, acc) = g.quant_dot(*w, o, (src, &base), k, decoded, &mut lanes);
                st.extend(dot);
                accs.push(acc);
            }
            st.extend(g.store_out(lin, &build::var(t), &build::var(c), o, 0, &accs, parts));
            st
        });
        row.push(lp(c, c0, c1, LoopKind::Serial, col));
        block.push(lp(t, i(0), lin.m.clone(), LoopKind::Serial, row));
        let nblocks = (lin.ncols + cols - 1) / cols;
        self.push(lp(cb, i(0), i(nblocks), LoopKind::Parallel, block));
        Ok(())
    }

    /// `sum_k x[xbase + k] * w[o, k]` for weight `w`: read from `decoded` (its row already
    /// decoded into a tile, at that offset), decoded block by block when `w` is
    /// quantised (partial sums in the scratch `lanes`, made on first use), or a dense dot
    /// product. Returns the statements and the accumulator.
    fn quant_dot(
        &mut self,
        w: BufId,
        o: &Expr,
        (x, xbase): (BufId, &Expr),
        k: i64,
        decoded: Option<(BufId, Expr)>,
        lanes: &mut Option<BufId>,
    ) -> (Vec<Stmt>, VarId) {
        let wrow = match (decoded, self.block_of(w)) {
            (Some(at), _) => at,
            (None, None) => (w, ix::mul(o.clone(), i(k))),
            (None, Some(fmt)) => return self.block_dot(w, fmt, o, (x, xbase), k, lanes),
        };
        let (st, accs) = self.accumulate(&[(x, xbase.clone())], &[vec![wrow]], (i(0), i(k)));
        (st, accs[0][0][0])
    }

    /// [`Self::quant_dot`] of a row of `w` decoded from blocks of `fmt` as it streams.
    fn block_dot(
        &mut self,
        w: BufId,
        fmt: BlockFormat,
        o: &Expr,
        (x, xbase): (BufId, &Expr),
        k: i64,
        lanes: &mut Option<BufId>,
    ) -> (Vec<Stmt>, VarId) {
        let vector = self.schedule.vector;
        let acc = self.var("acc", Ty::F32);
        let mut st = vec![Stmt::Local {
            var: acc,
            init: f(0.0),
        }];
        let (bl, bb) = (fmt.block_len() as i64, fmt.block_bytes() as i64);
        let nb = k / bl;
        let blk = self.var("blk", Ty::I64);
        let (st_base, base) = self.bind(
            "base",
            Ty::I64,
            ix::mul(ix::add(ix::mul(o.clone(), i(nb)), build::var(blk)), i(bb)),
        );
        let (st_xb, xb) = self.bind(
            "xb",
            Ty::I64,
            ix::add(xbase.clone(), ix::mul(build::var(blk), i(bl))),
        );
        // Element `e` of every block adds into `lanes[e]`, so the vector loops inside a
        // block carry no reduction; the lanes are summed once at the end.
        let lanes = match *lanes {
            Some(b) => b,
            None => {
                let len = BlockFormat::ALL.iter().map(|f| f.block_len()).max();
                let b = self.scratch("lanes", Elem::F32, len.unwrap_or(256));
                *lanes = Some(b);
                b
            }
        };
        let e0 = self.var("e", Ty::I64);
        st.push(lp(
            e0,
            i(0),
            i(bl),
            LoopKind::Vector(vector),
            vec![Stmt::Store {
                buf: lanes,
                index: build::var(e0),
                value: f(0.0),
            }],
        ));
        let mut emit = |_: &mut Kernel, e: Expr, value: Expr| {
            vec![Stmt::Store {
                buf: lanes,
                index: e.clone(),
                value: build::add(
                    load(lanes, e.clone()),
                    build::mul(load(x, ix::add(xb.clone(), e)), value),
                ),
            }]
        };
        let mut per_block = vec![st_base, st_xb];
        per_block.extend(decode_block(&mut self.k, vector, fmt, w, &base, &mut emit));
        st.push(lp(blk, i(0), i(nb), LoopKind::Serial, per_block));
        let e1 = self.var("e", Ty::I64);
        st.push(lp(
            e1,
            i(0),
            i(bl),
            LoopKind::Vector(vector),
            vec![Stmt::Set {
                var: acc,
                value: build::add(build::var(acc), load(lanes, build::var(e1))),
            }],
        ));
        (st, acc)
    }

    /// Statements decoding row `row` of weight `w` (width `k`) into `dst[at..at + k]`;
    /// nothing when `w` is not quantised (its rows are read where they are).
    fn decode_row(&mut self, w: BufId, row: Expr, (dst, at): (BufId, Expr), k: i64) -> Vec<Stmt> {
        let Some(fmt) = self.block_of(w) else {
            return Vec::new();
        };
        let (bl, bb) = (fmt.block_len() as i64, fmt.block_bytes() as i64);
        let nb = k / bl;
        let blk = self.var("blk", Ty::I64);
        let (st_base, base) = self.bind(
            "base",
            Ty::I64,
            ix::mul(ix::add(ix::mul(row, i(nb)), build::var(blk)), i(bb)),
        );
        let (st_ob, ob) = self.bind("ob", Ty::I64, ix::add(at, ix::mul(build::var(blk), i(bl))));
        let mut emit = |_: &mut Kernel, e: Expr, value: Expr| {
            vec![Stmt::Store {
                buf: dst,
                index: ix::add(ob.clone(), e),
                value,
            }]
        };
        let mut per_block = vec![st_base, st_ob];
        let vector = self.schedule.vector;
        per_block.extend(decode_block(&mut self.k, vector, fmt, w, &base, &mut emit));
        vec![lp(blk, i(0), i(nb), LoopKind::Serial, per_block)]
    }
}
