//! The tokens-in-lanes prefill matmul (a CPU schedule, [`MatmulSchedule::Lanes`]): bf16
//! activations over bf16 weights as an outer product. A block's tokens are packed in
//! groups that fill a vector's lanes, each reduction pair of a token side by side, so
//! that every step multiplies one broadcast weight pair with the pairs of all the
//! group's tokens: the form code generators turn into a bf16 dot product per accumulator
//! (`vdpbf16ps`), each accumulator a vector register for the whole reduction. The
//! parameters of the tile are [`LanesTile`].
//!
//! [`MatmulSchedule::Lanes`]: super::super::schedule::MatmulSchedule::Lanes
//! [`LanesTile`]: super::super::schedule::LanesTile

use super::super::gen::lp;
use super::super::{ix, KernelError};
use super::tiles::Parts;
use super::{Gen, Lin};
use crate::ir::Epilogue;
use crate::kernel::build::{self, bin, f, i, load};
use crate::kernel::{Access, BinOp, BufId, Elem, Expr, LoopKind, Stmt, Tile, TileOut, TileRef, Ty};

/// Where a tile of the tokens-in-lanes matmul sits: the scratch of packed activations
/// and of the tile's sums, its first group of tokens and how many groups, its columns,
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

impl Gen {
    /// Prefill with bf16 activations and bf16 weights, tokens in SIMD lanes (an
    /// outer-product schedule). Token rows go in blocks of `block_rows`; every thread
    /// first writes the block's rows, normalised by the prologue if any and rounded to
    /// bf16, into its scratch in groups of `lanes.lanes` (16) tokens laid out as
    /// `[k / 2][16][2]` (the two elements of a reduction pair side by side, token by
    /// token; rows past the end are zeros). The parallel loop over column blocks then runs
    /// tiles of `lanes.groups` groups × `nc` columns: a vector loop over the 16 tokens of
    /// a group whose every iteration runs
    /// the whole reduction with one accumulator per (group, column, part), each step a
    /// product of a token's pair with the column's weight pair (the form code generators
    /// turn into a broadcast weight pair and a bf16 dot product per accumulator, which
    /// then stays in a register for the whole reduction). The tile's sums go through a
    /// small scratch to the epilogue, token by token. Fewer than `lanes.min_rows` tokens
    /// would leave most lanes padding: the kernel then takes the dot-product tiles of
    /// [`Self::linear_gemm_blocked`] instead, chosen when it runs (one kernel for any
    /// prompt length; the blocks, scratch and parallel loop are shared).
    pub(super) fn linear_gemm_lanes(
        &mut self,
        lin: &Lin,
        m: Expr,
        nc: i64,
        tn: i64,
    ) -> Result<(), KernelError> {
        let (lw, groups_per_tile) = (self.schedule.lanes.lanes, self.schedule.lanes.groups);
        let min_rows = self.schedule.lanes.min_rows;
        let k = lin.k_const() as i64;
        let nparts = if lin.gated.is_some() { 2 } else { 1 };
        let xs = self.k.buf(
            "xs",
            Elem::Bf16,
            Access::Scratch {
                len: (self.schedule.block_rows * k) as u64,
            },
        );
        let ct = self.k.buf(
            "ct",
            Elem::F32,
            Access::Scratch {
                len: (groups_per_tile * nc * nparts * lw) as u64,
            },
        );
        // Groups of 16 tokens in the block `[rb, r1)`, the last one padded.
        let groups = |rb: &Expr, r1: &Expr| {
            ix::div(ix::add(ix::sub(r1.clone(), rb.clone()), i(lw - 1)), i(lw))
        };
        // Fewer than `lanes.min_rows` tokens: the dot-product tiles, rows as they are.
        let few = bin(BinOp::Lt, m.clone(), i(min_rows));
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
            let (st, gmain) = g.bind(
                "gmain",
                Ty::I64,
                ix::mul(ix::div(ng.clone(), i(groups_per_tile)), i(groups_per_tile)),
            );
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
            for (nx, lo, hi) in [(groups_per_tile, i(0), gmain.clone()), (1, gmain, ng)] {
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
        let lw = self.schedule.lanes.lanes;
        let k = lin.k_const() as i64;
        let t = self.var("t", Ty::I64);
        let dt = ix::sub(build::var(t), rb.clone());
        let (st, gbase) = self.bind(
            "gb",
            Ty::I64,
            ix::add(
                ix::mul(ix::div(dt.clone(), i(lw)), i(lw * k)),
                ix::mul(ix::rem(dt, i(lw)), i(2)),
            ),
        );
        // Element `kk` of the row: pair `kk / 2`, slot `kk % 2`.
        let dst = move |kk: Expr| {
            ix::add(
                gbase.clone(),
                ix::add(
                    ix::mul(ix::div(kk.clone(), i(2)), i(2 * lw)),
                    ix::rem(kk, i(2)),
                ),
            )
        };
        let xbase = ix::mul(build::var(t), lin.k.clone());
        let row = match lin.op.norm {
            Some(_) => self.lin_norm_row_to(lin, xbase, xs, &dst),
            None => vec![self.copy_row_to(lin, xbase, xs, &dst)],
        };
        let kz = self.var("kk", Ty::I64);
        let zeros = lp(
            kz,
            i(0),
            lin.k.clone(),
            LoopKind::Vector(self.schedule.vector),
            vec![Stmt::Store {
                buf: xs,
                index: dst(build::var(kz)),
                value: f(0.0),
            }],
        );
        Stmt::Loop {
            var: t,
            start: rb.clone(),
            end: ix::add(rb.clone(), ix::mul(ng, i(lw))),
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
        parts: &Parts,
    ) -> Vec<Stmt> {
        let lw = self.schedule.lanes.lanes;
        let k = lin.k_const() as i64;
        let np = parts.len() as i64;
        // One tile of `nx` groups of `lw` tokens (their pairs interleaved in `xs`) by the
        // `nc` columns of every part, its sums stored into `ct` as `[x][j][p][lane]`.
        let rows = (0..geo.nx)
            .map(|x| TileRef {
                buf: geo.xs,
                base: ix::mul(ix::add(geo.g0.clone(), i(x)), i(lw * k)),
            })
            .collect();
        let mut cols = Vec::new();
        for j in 0..geo.nc {
            for (w, _) in parts {
                cols.push(TileRef {
                    buf: *w,
                    base: ix::mul(ix::add(o.clone(), i(j)), lin.k.clone()),
                });
            }
        }
        // accs[x][j]: the `ct` offset of each part's sums.
        let mut accs = vec![vec![Vec::new(); geo.nc as usize]; geo.nx as usize];
        let mut bases = Vec::new();
        for (x, row) in accs.iter_mut().enumerate() {
            for (j, slots) in row.iter_mut().enumerate() {
                for p in 0..np {
                    let at = ((x as i64 * geo.nc + j as i64) * np + p) * lw;
                    slots.push(at);
                    bases.push(i(at));
                }
            }
        }
        let tile = Tile {
            start: i(0),
            end: i(k),
            lanes: lw as u32,
            rows,
            cols,
            out: TileOut::Store { buf: geo.ct, bases },
        };
        let mut out = vec![Stmt::Tile(Box::new(tile))];
        // The epilogue, token by token (tokens past the block's end were padding).
        for (x, cols) in accs.iter().enumerate() {
            let tl = self.var("tl", Ty::I64);
            let t0 = ix::add(
                geo.rb.clone(),
                ix::mul(ix::add(geo.g0.clone(), i(x as i64)), i(lw)),
            );
            let (st, n) = self.bind(
                "n",
                Ty::I64,
                ix::min(i(lw), ix::sub(geo.r1.clone(), t0.clone())),
            );
            out.push(st);
            let t = ix::add(t0, build::var(tl));
            let mut each = Vec::new();
            for (j, slots) in cols.iter().enumerate() {
                let mut vals = Vec::new();
                for &at in slots {
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
                (Some(_), _) | (None, Epilogue::Act(_)) => LoopKind::Vector(lw as u32),
                _ => LoopKind::Serial,
            };
            out.push(lp(tl, i(0), n, kind, each));
        }
        out
    }
}
