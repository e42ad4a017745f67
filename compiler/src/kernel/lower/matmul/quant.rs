//! Matmuls over block-quantised weights (every GGML block format of `BlockFormat`): the
//! weights stay raw bytes in memory and are decoded inside the kernel with integer bit
//! operations and `f16bits` by the block decoder (`decode.rs`, `decode_k.rs`).
//!
//! **Decoding matches the reference dequantisation bit for bit** (llama.cpp's
//! `dequantize_row_*`): scales widen from f16, each element is the same f32 multiplies
//! and at most one subtract or add, in the same order. A matmul multiplies each decoded weight
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
use super::decode::decode_block;
use super::tiles::Parts;
use super::{Gen, Lin};
use crate::kernel::build::{self, f, i, load};
use crate::kernel::{BufId, Elem, Expr, Kernel, LoopKind, Stmt, Ty, VarId};

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
