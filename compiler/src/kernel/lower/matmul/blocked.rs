//! The row-blocked prefill matmul (a CPU schedule, [`MatmulSchedule::RowBlocked`]): token
//! rows in blocks, each block prepared once per thread into its own scratch (normalised
//! by the prologue, rounded to bf16 with bf16 activations over bf16 weights) outside the
//! parallel loop over column blocks, which then runs register tiles over the block. A
//! block of rows and one of weight rows stay in cache while the tiles pass over them, and
//! long reductions go in chunks so that a tile's operand rows stay in L1. The frame (row
//! blocks around a parallel loop over column blocks) is shared with `lanes.rs`.
//!
//! [`MatmulSchedule::RowBlocked`]: super::super::schedule::MatmulSchedule::RowBlocked

use super::super::gen::lp;
use super::super::{ix, KernelError};
use super::tiles::KChunk;
use super::{Gen, Lin};
use crate::kernel::build::{self, bin, i};
use crate::kernel::{Access, BinOp, BufId, Elem, Expr, LoopKind, Stmt, Ty};

impl Gen {
    /// Prefill in row blocks: the token rows go in blocks of `block_rows`; every thread
    /// first writes the block's rows (normalised by the prologue, if any) into its scratch
    /// of element type `xs_elem` (bf16 with bf16 activations, else f32), once per row
    /// rather than once per column block, then the parallel loop over column blocks runs
    /// `tile.rows × tn` tiles over the block. With bf16 scratch and bf16 weights the
    /// tiles' `k` loops read two bf16 operands, the form code generators turn into bf16
    /// dot products.
    pub(super) fn linear_gemm_blocked(
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
                len: self.schedule.block_rows as u64 * kc,
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
    /// `block_rows`, `[rb, r1)`, each first prepared by `rows(self, rb, r1)` (on every
    /// thread, into its own scratch), then a parallel loop over blocks of `matmul_cols` of the
    /// `ncols` output columns, `[c0, c1)`, running `tiles(self, (rb, r1), (c0, c1))`.
    pub(super) fn row_blocks(
        &mut self,
        m: Expr,
        ncols: i64,
        rows: impl FnOnce(&mut Self, &Expr, &Expr) -> Vec<Stmt>,
        tiles: impl FnOnce(&mut Self, (&Expr, &Expr), (&Expr, &Expr)) -> Vec<Stmt>,
    ) {
        let (block_rows, cols) = (self.schedule.block_rows, self.schedule.matmul_cols);
        let rb = self.var("rb", Ty::I64);
        let mut outer = Vec::new();
        let (st, r1) = self.bind(
            "r1",
            Ty::I64,
            ix::min(ix::add(build::var(rb), i(block_rows)), m.clone()),
        );
        outer.push(st);
        outer.extend(rows(self, &build::var(rb), &r1));
        let cb = self.var("cb", Ty::I64);
        let mut block = Vec::new();
        let (st, c0) = self.bind("c0", Ty::I64, ix::mul(build::var(cb), i(cols)));
        block.push(st);
        let (st, c1) = self.bind(
            "c1",
            Ty::I64,
            ix::min(ix::add(c0.clone(), i(cols)), i(ncols)),
        );
        block.push(st);
        block.extend(tiles(self, (&build::var(rb), &r1), (&c0, &c1)));
        let nblocks = (ncols + cols - 1) / cols;
        outer.push(lp(cb, i(0), i(nblocks), LoopKind::Parallel, block));
        self.push(Stmt::Loop {
            var: rb,
            start: i(0),
            end: m,
            step: block_rows as u64,
            kind: LoopKind::Serial,
            body: outer,
        });
    }

    /// The rows `[rb, r1)` of [`Self::linear_gemm_blocked`], normalised by the prologue
    /// if any, into `xs` row by row.
    pub(super) fn blocked_rows(&mut self, lin: &Lin, xs: BufId, rb: &Expr, r1: &Expr) -> Stmt {
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

    /// The `tile.rows × tn` tiles of [`Self::linear_gemm_blocked`] over rows `[rb, r1)` (in `xs`
    /// from row `rb`) and columns `[c0, c1)`.
    pub(super) fn blocked_tiles(
        &mut self,
        lin: &Lin,
        xs: BufId,
        (rb, r1): (&Expr, &Expr),
        (c0, c1): (&Expr, &Expr),
        tn: i64,
    ) -> Vec<Stmt> {
        let tm = self.schedule.tile.rows;
        let (kc_above, kc) = (self.schedule.k_chunks.above, self.schedule.k_chunks.len);
        let kw = lin.k_const();
        let mut block = Vec::new();
        let (st, rmain) = self.bind(
            "rmain",
            Ty::I64,
            ix::add(
                rb.clone(),
                ix::mul(ix::div(ix::sub(r1.clone(), rb.clone()), i(tm)), i(tm)),
            ),
        );
        block.push(st);
        // A long reduction (one weight part, no gate) goes in chunks of `kc`, so that a
        // tile's operand rows stay in L1 while the column loop passes over them.
        let nchunks = if lin.gated.is_none() && lin.wbufs.len() == 1 && kw > kc_above {
            (kw as i64 + kc - 1) / kc
        } else {
            1
        };
        let chv = (nchunks > 1).then(|| self.var("ch", Ty::I64));
        let chunk = chv.map(|chv| KChunk {
            start: ix::mul(build::var(chv), i(kc)),
            end: ix::min(
                ix::add(ix::mul(build::var(chv), i(kc)), i(kc)),
                lin.k.clone(),
            ),
            first: bin(BinOp::Eq, build::var(chv), i(0)),
            last: bin(BinOp::Eq, build::var(chv), i(nchunks - 1)),
        });
        let mut rows_loops = Vec::new();
        for (rows, lo, hi) in [(tm, rb.clone(), rmain.clone()), (1, rmain, r1.clone())] {
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
            if let Some(out) = self.k.bufs.get_mut(self.out.0 as usize) {
                out.access = Access::ReadWrite;
            }
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
}
