//! The register tile of the float matmul schedules (all but tokens in lanes, whose
//! outer-product tile is its own), the epilogue of every schedule, and the plain
//! row-tiles prefill schedule.
//!
//! A tile is `rows × tn` outputs (times the parts a column reduces together: gate and up
//! of a gated epilogue): one f32 accumulator each, all updated in one loop over the
//! reduction so every loaded activation feeds `tn` columns and every loaded weight
//! `rows` rows, the accumulators staying in registers. [`Gen::accumulate`] is the one
//! place that emits that reduction; [`Gen::store_out`] the epilogue of one output (bias,
//! activation or gate, residual, store).

use super::super::gen::lp;
use super::super::{ix, KernelError};
use super::{Gen, Lin};
use crate::ir::Epilogue;
use crate::kernel::build::{self, bin, f, i, load, select};
use crate::kernel::{
    Access, BinOp, BufId, Elem, Expr, LoopKind, Stmt, Tile, TileOut, TileRef, Ty, VarId,
};

/// A slice `[start, end)` of a matmul's reduction computed by one pass of its tiles;
/// `first` and `last` (`Bool`) say whether it is the first or the last slice.
pub(super) struct KChunk {
    pub start: Expr,
    pub end: Expr,
    pub first: Expr,
    pub last: Expr,
}

/// The `(weight, bias)` buffers of the parts one tile reduces together.
pub(super) type Parts = [(BufId, Option<BufId>)];

impl Gen {
    /// Prefill, plain row tiles: parallel over blocks of `matmul_cols` columns; inside,
    /// tiles of `tile.rows` token rows × `tn` columns, then the rows left over one at a
    /// time. With a norm prologue each group of rows is first normalised into scratch;
    /// with bf16 activations over bf16 weights (where a target takes this schedule for
    /// them) it is rounded into bf16 scratch, normalised or not.
    pub(super) fn linear_gemm(&mut self, lin: &Lin, m: Expr, tn: i64) -> Result<(), KernelError> {
        let (tm, cols) = (self.schedule.tile.rows, self.schedule.matmul_cols);
        let cb = self.var("cb", Ty::I64);
        let mut block = Vec::new();
        let (st, c0) = self.bind("c0", Ty::I64, ix::mul(build::var(cb), i(cols)));
        block.push(st);
        let (st, c1) = self.bind(
            "c1",
            Ty::I64,
            ix::min(ix::add(c0.clone(), i(cols)), i(lin.ncols)),
        );
        block.push(st);
        let (st, mmain) = self.bind("mmain", Ty::I64, ix::mul(ix::div(m.clone(), i(tm)), i(tm)));
        block.push(st);
        let kc = lin.k_const();
        let bf16 = self.opts.bf16_activations && self.bf16_weights(lin) && kc > 0;
        let xs = (lin.op.norm.is_some() || bf16).then(|| {
            let elem = if bf16 { Elem::Bf16 } else { Elem::F32 };
            self.k.buf(
                "xs",
                elem,
                Access::Scratch {
                    len: tm as u64 * kc,
                },
            )
        });
        for (rows, lo, hi) in [(tm, i(0), mmain.clone()), (1, mmain, m)] {
            let t0 = self.var("t0", Ty::I64);
            let mut group = Vec::new();
            let mut row_at = Vec::new();
            for rr in 0..rows {
                let t = ix::add(build::var(t0), i(rr));
                let xbase = ix::mul(t.clone(), lin.k.clone());
                match xs {
                    Some(xs) => {
                        let at = ix::mul(i(rr), lin.k.clone());
                        match lin.op.norm {
                            Some(_) => group.extend(self.norm_row(lin, xbase, xs, at.clone())),
                            None => group.push(self.copy_row(lin, xbase, xs, at.clone())),
                        }
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
        let nblocks = (lin.ncols + cols - 1) / cols;
        self.push(lp(cb, i(0), i(nblocks), LoopKind::Parallel, block));
        Ok(())
    }

    /// Output columns `c..c + tn` of token rows `rows` (`(offset of the row in src, token)`),
    /// with the part, bias, epilogue and residual of each column.
    pub(super) fn tile(
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
    pub(super) fn by_part(
        &mut self,
        lin: &Lin,
        c: &Expr,
        mut body: impl FnMut(&mut Self, &Expr, &Parts) -> Vec<Stmt>,
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
        parts: &Parts,
        chunk: Option<&KChunk>,
    ) -> Vec<Stmt> {
        let (k0, k1) = match chunk {
            Some(ch) => (ch.start.clone(), ch.end.clone()),
            None => (i(0), lin.k.clone()),
        };
        let xs: Vec<(BufId, Expr)> = rows.iter().map(|(base, _)| (src, base.clone())).collect();
        let ws: Vec<Vec<(BufId, Expr)>> = (0..tn)
            .map(|j| {
                let wrow = ix::add(o.clone(), i(j));
                let base = ix::mul(wrow, lin.k.clone());
                parts.iter().map(|(w, _)| (*w, base.clone())).collect()
            })
            .collect();
        let (mut out, accs) = self.accumulate(&xs, &ws, (k0, k1));
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

    /// The reduction of a register tile: `xs.len()` rows × `ws.len()` columns (each
    /// column `ws[j]` the parts reduced together), `k` over `k0..k1`, as one explicit
    /// tile (`Stmt::Tile`, see `kernel::tile`): row `r` reads `xs[r].0[xs[r].1 + kk]` and
    /// part `p` of column `j` reads `ws[j][p].0[ws[j][p].1 + kk]`, and every
    /// (row, column, part) gets a new f32 sum, which later statements read (and the
    /// chunked reduction assigns). Each target lowers the tile in its own way. Returns
    /// the statement and the sums as `[row][column][part]`.
    pub(super) fn accumulate(
        &mut self,
        xs: &[(BufId, Expr)],
        ws: &[Vec<(BufId, Expr)>],
        (k0, k1): (Expr, Expr),
    ) -> (Vec<Stmt>, Vec<Vec<Vec<VarId>>>) {
        let cols: Vec<TileRef> = ws
            .iter()
            .flatten()
            .map(|(buf, base)| TileRef {
                buf: *buf,
                base: base.clone(),
            })
            .collect();
        let mut accs: Vec<Vec<Vec<VarId>>> = vec![vec![Vec::new(); ws.len()]; xs.len()];
        let mut sums = Vec::with_capacity(xs.len() * cols.len());
        for row in accs.iter_mut() {
            for (j, col) in ws.iter().enumerate() {
                for _ in col {
                    let acc = self.var("acc", Ty::F32);
                    sums.push(acc);
                    row[j].push(acc);
                }
            }
        }
        let tile = Tile {
            start: k0,
            end: k1,
            lanes: 1,
            rows: xs
                .iter()
                .map(|(buf, base)| TileRef {
                    buf: *buf,
                    base: base.clone(),
                })
                .collect(),
            cols,
            out: TileOut::Sums(sums),
        };
        (vec![Stmt::Tile(Box::new(tile))], accs)
    }

    /// The epilogue of output `(t, c + j)` from its accumulators `accs` (one per part;
    /// weight row `o + j` of each): bias, activation or gate, residual, then the store.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn store_out(
        &mut self,
        lin: &Lin,
        t: &Expr,
        c: &Expr,
        o: &Expr,
        j: i64,
        accs: &[VarId],
        parts: &Parts,
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
}
