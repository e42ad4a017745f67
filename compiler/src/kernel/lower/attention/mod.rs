//! Attention kernels (`Op::Attention`, `Op::FlashAttention`) and, in `norm_rope.rs`, the
//! fused QK-norm + RoPE + KV-cache append (`Op::NormRope`); see `mod.rs` of `lower` for
//! the buffer convention.
//!
//! Attention runs one online softmax per (query row, head) pair over the visible key range
//! only, a block of `BLOCK` keys at a time, like the interpreter's `flash_attention` (but
//! accumulating in f32). Pairs are tiled — a few rows times the heads of one GQA group —
//! so every key and value row loaded serves the whole tile; the tiles are the parallel
//! axis. MLA's absorbed form over the latent cache is a parameter of the same generator (a
//! query prologue and an output epilogue per pair), not a second kernel. The block size,
//! the tile and the vector widths here are the attention algorithm's own constants (the
//! block is the interpreter's), not the target's schedule.

mod norm_rope;

pub(super) use norm_rope::{norm_rope, norm_rope_in_place};

use super::gen::{and, eq, exp, ge, konst, lt, max, min, rem, sigmoid, tanh};
use super::gen::{invalid, Gen, NodeLowering};
use super::ix::dim_seq_first as dim;
use super::KernelError;
use crate::ir::{AttnOp, Dim, NodeId, Op, Type};
use crate::kernel::build::{add, div, f, i, load, mul, select, sub, var};
use crate::kernel::{BufId, Elem, Expr, Kernel, LoopKind, Stmt, Tile, TileOut, TileRef, Ty, VarId};

/// The kernel of an `Attention` or `FlashAttention` node.
pub(super) fn kernel(cx: &NodeLowering) -> Result<Kernel, KernelError> {
    match &cx.node().op {
        Op::Attention(a) => attention(cx, *a, false),
        Op::FlashAttention(fa) => attention(cx, fa.attn, fa.gate),
        op => Err(KernelError::Unsupported {
            node: cx.id.0,
            op: crate::ir::op_text(op),
        }),
    }
}

/// Keys per block of the online softmax (the interpreter's block size).
const BLOCK: u64 = 16;

/// The most negative finite f32: the running maximum before any logit is seen. It keeps
/// infinities out of the kernels (`exp(MIN - m)` is 0 for every finite logit `m`).
const NO_MAX: f32 = f32::MIN;

/// The shape of a rank-3 operand as (dim 0, const dim 1, const dim 2).
pub(super) fn rank3(id: NodeId, t: &Type, what: &str) -> Result<(Dim, u64, u64), KernelError> {
    match t.shape.as_slice() {
        [a, b, c] => Ok((
            *a,
            konst(id, *b, &format!("{what} dim 1"))?,
            konst(id, *c, &format!("{what} dim 2"))?,
        )),
        _ => Err(invalid(id, format!("{what} must have rank 3, found {t}"))),
    }
}

/// Query (row, head) pairs per tile at most: they share every key and value row that the
/// tile loads, and each keeps one running dot product per key in a vector register.
const PAIRS: u64 = 8;

/// The vector width hint of the loops over the head dim.
const LANES: u32 = 16;

/// Everything the tile generator needs to know about one attention node.
#[derive(Clone, Copy)]
struct Att {
    at: AttnOp,
    /// Query rows (`s`), keys (`t`), heads, kv heads, q/k width, key row width.
    s: Dim,
    t: Dim,
    h: u64,
    kvh: u64,
    d: u64,
    dk: u64,
    /// The accumulator's width (values, or MLA's latent) and the output's.
    dacc: u64,
    dv: u64,
    /// The query heads of one GQA group in a tile.
    hg: u64,
    qb: BufId,
    kb: BufId,
    vb: BufId,
    pb: BufId,
    sinks: Option<BufId>,
    gate: Option<BufId>,
    out: BufId,
    acc: BufId,
    sc: BufId,
    /// Half a block: the block maximum is taken by halving (see `softmax_block`).
    half: BufId,
    qlat: Option<BufId>,
}

/// One query pair of a tile: the expressions its loops use.
#[derive(Clone)]
struct Pair {
    /// Index of the pair in the tile (its slice of the scratch buffers).
    slot: i64,
    /// Index of its row in the tile (its visible key range).
    row_slot: usize,
    head: Expr,
    qbase: Expr,
    m: VarId,
    l: VarId,
    /// MLA: the index of the first row of this head's part of `kv_b.weight`.
    wbase: Option<Expr>,
}

/// `start` plus the products `terms` as two chains of additions (`start + t0 + t2 + ...`
/// and `t1 + t3 + ...`) joined at the end: inside a vector loop each addition of a product
/// may fuse into one FMA, and two chains halve the wait on FMA latency.
fn fma_chains(start: Expr, terms: Vec<Expr>) -> Expr {
    let mut even = start;
    let mut odd: Option<Expr> = None;
    for (n, t) in terms.into_iter().enumerate() {
        if n % 2 == 0 {
            even = add(even, t);
        } else {
            odd = Some(match odd {
                Some(o) => add(o, t),
                None => t,
            });
        }
    }
    match odd {
        Some(o) => add(even, o),
        None => even,
    }
}

/// `Op::Attention` (`gate` false, result `[s, H, dv]`) and `Op::FlashAttention` (result
/// `[s, H * dv]`, the same memory layout). Operands: q, k, v, positions, [sinks], [gate].
///
/// With `at.mla` (MLA's latent cache, see `ir::MlaAttn`) the operands are q `[s, H, nope +
/// rope]`, the latent rows kv `[t, 1, rank + rope]`, `w = kv_b.weight [H * (nope + v),
/// rank]`, positions, [sinks], [gate], and each query pair gains a prologue and an
/// epilogue: the absorbed query `q_lat = q_nope · W_UK_h` goes into a scratch of `rank`,
/// logits are `q_lat · c_j + q_rope · k_rope_j`, the accumulator sums the latent rows `c_j`
/// (`rank` wide), and the output is `W_UV_h · acc / l` (`v` wide). No key or value of any
/// head is ever formed.
///
/// The parallel axis is tiles of query pairs: `rb` consecutive rows times `hg` heads of
/// one GQA group (`rb * hg <= PAIRS`), so every key and value row a tile loads serves all
/// of its pairs. A tile walks the union of its rows' visible key ranges a block of `BLOCK`
/// keys at a time (no block above the causal diagonal or outside a window is visited):
/// the logits of a block are dot products vectorised over the head dim, one running sum
/// per pair sharing each key element (a form the LLVM target runs as one vector
/// accumulator per pair and one combined lane reduction); each pair's online softmax
/// masks, takes the block maximum by halving and exponentiates in vector loops over the
/// block; and the values are summed per pair in a vector loop over the accumulator with
/// the block's keys unrolled into two chains of multiply-adds. Row
/// tiles are numbered from both ends alternately, so contiguous chunks of tiles carry
/// equal causal work. With fewer than `rb` query rows (decode) the tile is one row.
fn attention(cx: &NodeLowering, at: AttnOp, gated: bool) -> Result<Kernel, KernelError> {
    let id = cx.id;
    let mut names = match at.mla {
        Some(_) => vec!["q", "kv", "w_kv_b", "positions"],
        None => vec!["q", "k", "v", "positions"],
    };
    if at.sinks {
        names.push("sinks");
    }
    if gated {
        names.push("gate");
    }
    let (mut g, ins) = Gen::with_operands(cx, &names)?;
    let (qb, kb, vb, pb) = (ins[0].0, ins[1].0, ins[2].0, ins[3].0);
    let sinks = at.sinks.then(|| ins[4].0);
    let gate = gated.then(|| ins[4 + at.sinks as usize].0);
    let (s, h, d) = rank3(id, &ins[0].1, "q")?;
    let (t, kvh, dk) = rank3(id, &ins[1].1, "k")?;
    let misfit = || {
        invalid(
            id,
            format!(
                "attention shapes do not fit: q {}, k {}, v {}",
                ins[0].1, ins[1].1, ins[2].1
            ),
        )
    };
    // `dacc`: the accumulator's width (values, or MLA's latent); `dv`: the output's.
    let (dacc, dv) = match at.mla {
        Some(m) => {
            let fits = kvh == 1
                && d >= m.nope
                && dk >= m.rank
                && d - m.nope == dk - m.rank
                && m.rank > 0
                && m.v > 0;
            if !fits {
                return Err(misfit());
            }
            (m.rank, m.v)
        }
        None => {
            let (_, kvh2, dv) = rank3(id, &ins[2].1, "v")?;
            if dk != d || kvh2 != kvh || kvh == 0 || h % kvh != 0 {
                return Err(misfit());
            }
            (dv, dv)
        }
    };
    let group = h / kvh;
    let out = g.out;
    // The heads of a tile: the largest divisor of the group that fits; the rest of the
    // pairs are rows.
    let hg = (1..=group.clamp(1, PAIRS))
        .rev()
        .find(|x| group % x == 0)
        .unwrap_or(1);
    let rb = (PAIRS / hg).max(1);
    let pairs = rb * hg;
    let acc = g.scratch("acc", Elem::F32, pairs * dacc);
    let sc = g.scratch("scores", Elem::F32, pairs * BLOCK);
    let half = g.scratch("half", Elem::F32, BLOCK / 2);
    let qlat = at
        .mla
        .map(|m| g.scratch("q_lat", Elem::F32, pairs * m.rank));
    let a = Att {
        at,
        s,
        t,
        h,
        kvh,
        d,
        dk,
        dacc,
        dv,
        hg,
        qb,
        kb,
        vb,
        pb,
        sinks,
        gate,
        out,
        acc,
        sc,
        half,
        qlat,
    };
    // Tiles per row tile: one per (kv head, subgroup of its query heads).
    let units = kvh * (group / hg);
    let row_tiles = |rb: u64| div(add(dim(s), i(rb as i64 - 1)), i(rb as i64));
    let tiled = (rb > 1).then(|| g.let_("tiled", Ty::Bool, ge(dim(s), i(rb as i64))));
    let n_row_tiles = match tiled.clone() {
        Some(c) => select(c, row_tiles(rb), dim(s)),
        None => dim(s),
    };
    let n = mul(n_row_tiles, i(units as i64));
    g.for_("tile", i(0), n, 1, LoopKind::Parallel, |g, tile| {
        let rt = g.let_("rt", Ty::I64, div(tile.clone(), i(units as i64)));
        let u = g.let_("u", Ty::I64, rem(tile, i(units as i64)));
        let sub_groups = i((group / hg) as i64);
        let kv = g.let_("kv", Ty::I64, div(u.clone(), sub_groups.clone()));
        let h0 = g.let_(
            "h0",
            Ty::I64,
            add(
                mul(kv.clone(), i(group as i64)),
                mul(rem(u, sub_groups), i(hg as i64)),
            ),
        );
        match tiled {
            Some(c) => g.if_(
                c,
                |g| a.tile(g, rb, &rt, &row_tiles(rb), &kv, &h0),
                |g| a.tile(g, 1, &rt, &dim(s), &kv, &h0),
            ),
            None => a.tile(g, 1, &rt, &dim(s), &kv, &h0),
        }
    });
    Ok(g.finish())
}

impl Att {
    /// One tile of `rb` rows times `hg` heads from `h0` (kv head `kv`): row tile `rt` of
    /// `nrt`, counted from both ends alternately.
    fn tile(&self, g: &mut Gen, rb: u64, rt: &Expr, nrt: &Expr, kv: &Expr, h0: &Expr) {
        let a = *self;
        let (hh, dd) = (i(a.h as i64), i(a.d as i64));
        let half = div(rt.clone(), i(2));
        let rt = g.let_(
            "rt_z",
            Ty::I64,
            select(
                eq(rem(rt.clone(), i(2)), i(0)),
                half.clone(),
                sub(sub(nrt.clone(), i(1)), half),
            ),
        );
        let r0 = g.let_("r0", Ty::I64, mul(rt, i(rb as i64)));
        // Each row's visible keys are one contiguous range [lo, hi): every mask is an
        // interval. A last tile past the end repeats the last row (same values, same
        // thread), so no row needs a guard.
        let mut rows = Vec::new();
        for ri in 0..rb {
            let row = g.let_(
                "row",
                Ty::I64,
                min(add(r0.clone(), i(ri as i64)), sub(dim(a.s), i(1))),
            );
            let p = g.let_("p", Ty::I64, load(a.pb, row.clone()));
            let mut lo = i(0);
            let mut hi = dim(a.t);
            if a.at.causal {
                hi = min(hi, add(p.clone(), i(1)));
            }
            if let Some(w) = a.at.window {
                lo = max(lo, sub(add(p.clone(), i(1)), i(w as i64)));
            }
            if let Some(c) = a.at.chunk {
                let c = i(c as i64);
                let start = g.let_("chunk", Ty::I64, mul(div(p, c.clone()), c.clone()));
                lo = max(lo, start.clone());
                hi = min(hi, add(start, c));
            }
            let lo = g.let_("lo", Ty::I64, lo);
            let hi = g.let_("hi", Ty::I64, hi);
            rows.push((row, lo, hi));
        }
        let lo_all = rows.iter().map(|r| r.1.clone()).reduce(min).unwrap_or(i(0));
        let hi_all = rows.iter().map(|r| r.2.clone()).reduce(max).unwrap_or(i(0));
        let lo_all = g.let_("lo_tile", Ty::I64, lo_all);
        let hi_all = g.let_("hi_tile", Ty::I64, hi_all);

        let mut ps = Vec::new();
        for (ri, (row, _, _)) in rows.iter().enumerate() {
            for hj in 0..a.hg {
                let slot = (ri as u64 * a.hg + hj) as i64;
                let head = g.let_("head", Ty::I64, add(h0.clone(), i(hj as i64)));
                let qbase = g.let_(
                    "qbase",
                    Ty::I64,
                    mul(add(mul(row.clone(), hh.clone()), head.clone()), dd.clone()),
                );
                // A sink is one more logit with no value row: it starts the running sums.
                let (m0, l0) = match a.sinks {
                    Some(sb) => (load(sb, head.clone()), f(1.0)),
                    None => (f(NO_MAX), f(0.0)),
                };
                let m = g.local("m", Ty::F32, m0);
                let l = g.local("l", Ty::F32, l0);
                let abase = i(slot * a.dacc as i64);
                g.for_(
                    "c",
                    i(0),
                    i(a.dacc as i64),
                    1,
                    LoopKind::Vector(8),
                    |g, c| {
                        g.store(a.acc, add(abase, c), f(0.0));
                    },
                );
                let wbase = a.mla_query(g, slot, &head, &qbase);
                ps.push(Pair {
                    slot,
                    row_slot: ri,
                    head,
                    qbase,
                    m,
                    l,
                    wbase,
                });
            }
        }

        g.for_(
            "jb",
            lo_all,
            hi_all.clone(),
            BLOCK,
            LoopKind::Serial,
            |g, jb| {
                let je = g.let_(
                    "je",
                    Ty::I64,
                    min(add(jb.clone(), i(BLOCK as i64)), hi_all.clone()),
                );
                a.logits(g, &ps, kv, &jb, &je);
                // The value rows of the block; keys past the end read the last visible
                // row with a weight of 0, so the value loop has a constant trip count.
                let last = sub(hi_all.clone(), i(1));
                let vrows: Vec<Expr> = (0..BLOCK)
                    .map(|jj| {
                        let j = min(add(jb.clone(), i(jj as i64)), last.clone());
                        g.let_("vrow", Ty::I64, a.vbase_of(kv, j))
                    })
                    .collect();
                for p in &ps {
                    let (_, lo, hi) = &rows[p.row_slot];
                    a.softmax_block(g, p, &jb, lo, hi);
                    a.accumulate(g, p, &vrows);
                }
            },
        );
        for p in &ps {
            a.output(g, p, &rows[p.row_slot].0);
        }
    }

    /// Where key row `j` starts in `kb`.
    fn kbase_of(&self, kv: &Expr, j: Expr) -> Expr {
        match self.at.mla {
            Some(_) => mul(j, i(self.dk as i64)),
            None => mul(
                add(mul(j, i(self.kvh as i64)), kv.clone()),
                i(self.d as i64),
            ),
        }
    }

    /// The buffer of the value rows (MLA: the latent rows of `kb`).
    fn vbuf(&self) -> BufId {
        match self.at.mla {
            Some(_) => self.kb,
            None => self.vb,
        }
    }

    /// Where value row `j` starts in `vbuf()`.
    fn vbase_of(&self, kv: &Expr, j: Expr) -> Expr {
        match self.at.mla {
            Some(_) => mul(j, i(self.dk as i64)),
            None => mul(
                add(mul(j, i(self.kvh as i64)), kv.clone()),
                i(self.dv as i64),
            ),
        }
    }

    /// MLA: the absorbed query `q_lat = q_nope · W_UK_h` of pair `slot` (a sum of W_UK's
    /// rows weighted by q_nope, so the weight is read row by row, decoded block by block
    /// where it is stored as blocks); returns the index of the head's first row of
    /// `kv_b.weight`.
    fn mla_query(&self, g: &mut Gen, slot: i64, head: &Expr, qbase: &Expr) -> Option<Expr> {
        let (ml, qlat) = self.at.mla.zip(self.qlat)?;
        let wbase = g.let_(
            "wbase",
            Ty::I64,
            mul(head.clone(), i((ml.nope + ml.v) as i64)),
        );
        let rk = i(ml.rank as i64);
        let qoff = i(slot * ml.rank as i64);
        g.for_("c", i(0), rk.clone(), 1, LoopKind::Vector(8), |g, c| {
            g.store(qlat, add(qoff.clone(), c), f(0.0));
        });
        let vb = self.vb;
        let qb = self.qb;
        let block = g.block_of(vb);
        g.range("n", i(ml.nope as i64), |g, n| {
            let qn = g.let_("qn", Ty::F32, load(qb, add(qbase.clone(), n.clone())));
            let row = add(wbase.clone(), n);
            let Some(fmt) = block else {
                let wrow = g.let_("wrow", Ty::I64, mul(row, rk.clone()));
                g.for_("c", i(0), rk.clone(), 1, LoopKind::Vector(8), |g, c| {
                    let at = add(qoff.clone(), c.clone());
                    let upd = add(load(qlat, at.clone()), mul(qn, load(vb, add(wrow, c))));
                    g.store(qlat, at, upd);
                });
                return;
            };
            let row = g.let_("row", Ty::I64, row);
            g.decode_row_blocks(fmt, ml.rank, vb, row, &mut |_, c, value| {
                let at = add(qoff.clone(), c);
                vec![Stmt::Store {
                    buf: qlat,
                    index: at.clone(),
                    value: add(load(qlat, at), mul(qn.clone(), value)),
                }]
            });
        });
        Some(wbase)
    }

    /// The scaled logits of keys `jb..je` for every pair into its scores slice: each key
    /// element is loaded once for all pairs.
    fn logits(&self, g: &mut Gen, ps: &[Pair], kv: &Expr, jb: &Expr, je: &Expr) {
        let a = *self;
        g.for_("j", jb.clone(), je.clone(), 1, LoopKind::Serial, |g, j| {
            let kbase = g.let_("kbase", Ty::I64, a.kbase_of(kv, j.clone()));
            // Dot products of `len` key elements from `koff` with each pair's query, one
            // explicit tile: the key row is loaded once for every pair, and each target
            // runs the reduction its own way (a CPU as one vector accumulator per pair).
            let dots = |g: &mut Gen, len: u64, koff: u64, q: &dyn Fn(&Pair) -> (BufId, Expr)| {
                let sums: Vec<VarId> = ps.iter().map(|_| g.var("dot", Ty::F32)).collect();
                let tile = Tile {
                    start: i(0),
                    end: i(len as i64),
                    lanes: 1,
                    rows: ps
                        .iter()
                        .map(|p| {
                            let (buf, base) = q(p);
                            TileRef { buf, base }
                        })
                        .collect(),
                    cols: vec![TileRef {
                        buf: a.kb,
                        base: add(kbase.clone(), i(koff as i64)),
                    }],
                    out: TileOut::Sums(sums.clone()),
                };
                g.push(Stmt::Tile(Box::new(tile)));
                sums
            };
            let sums: Vec<Expr> = match (a.at.mla, a.qlat) {
                (Some(ml), Some(qlat)) => {
                    let lat = dots(g, ml.rank, 0, &|p| (qlat, i(p.slot * ml.rank as i64)));
                    let rope = a.d - ml.nope;
                    if rope > 0 {
                        let r = dots(g, rope, ml.rank, &|p| {
                            (a.qb, add(p.qbase.clone(), i(ml.nope as i64)))
                        });
                        lat.iter()
                            .zip(&r)
                            .map(|(x, y)| add(var(*x), var(*y)))
                            .collect()
                    } else {
                        lat.iter().map(|x| var(*x)).collect()
                    }
                }
                _ => dots(g, a.d, 0, &|p| (a.qb, p.qbase.clone()))
                    .iter()
                    .map(|x| var(*x))
                    .collect(),
            };
            let jj = g.let_("jj", Ty::I64, sub(j, jb.clone()));
            for (p, dot) in ps.iter().zip(sums) {
                let at = add(i(p.slot * BLOCK as i64), jj.clone());
                g.store(a.sc, at, mul(dot, f(a.at.scale as f32)));
            }
        });
    }

    /// Pair `p`'s online softmax over the block at `jb`: softcap and mask the logits, take
    /// their maximum, rescale the running sums, and replace the logits by their weights
    /// (0 for keys outside `[lo, hi)`), all in vector loops over the block.
    fn softmax_block(&self, g: &mut Gen, p: &Pair, jb: &Expr, lo: &Expr, hi: &Expr) {
        let a = *self;
        let base = i(p.slot * BLOCK as i64);
        let visible = |jj: &Expr| {
            let j = add(jb.clone(), jj.clone());
            and(ge(j.clone(), lo.clone()), lt(j, hi.clone()))
        };
        g.for_(
            "jj",
            i(0),
            i(BLOCK as i64),
            1,
            LoopKind::Vector(LANES),
            |g, jj| {
                let at = add(base.clone(), jj.clone());
                let mut x = load(a.sc, at.clone());
                if let Some(cap) = a.at.softcap {
                    let cap = f(cap as f32);
                    x = mul(cap.clone(), tanh(div(x, cap)));
                }
                g.store(a.sc, at, select(visible(&jj), x, f(NO_MAX)));
            },
        );
        // The block maximum by halving, each step an elementwise vector max: a running
        // `max` reduction would stay scalar (targets vectorize a max reduction only when
        // they may ignore NaNs).
        let mut w = BLOCK / 2;
        g.for_("jj", i(0), i(w as i64), 1, LoopKind::Vector(8), |g, jj| {
            let lo = load(a.sc, add(base.clone(), jj.clone()));
            let hi = load(a.sc, add(base.clone(), add(jj.clone(), i(w as i64))));
            g.store(a.half, jj, max(lo, hi));
        });
        while w > 2 {
            w /= 2;
            let lanes = LoopKind::Vector(w as u32);
            g.for_("jj", i(0), i(w as i64), 1, lanes, |g, jj| {
                let hi = load(a.half, add(jj.clone(), i(w as i64)));
                g.store(a.half, jj.clone(), max(load(a.half, jj), hi));
            });
        }
        let bm = (1..w).fold(load(a.half, i(0)), |m, k| max(m, load(a.half, i(k as i64))));
        let new_m = g.let_("new_m", Ty::F32, max(var(p.m), bm));
        let corr = g.let_("corr", Ty::F32, exp(sub(var(p.m), new_m.clone())));
        let sum = g.local("sum", Ty::F32, f(0.0));
        g.for_(
            "jj",
            i(0),
            i(BLOCK as i64),
            1,
            LoopKind::Vector(LANES),
            |g, jj| {
                let at = add(base.clone(), jj.clone());
                let e = exp(sub(load(a.sc, at.clone()), new_m.clone()));
                let e = g.let_("e", Ty::F32, select(visible(&jj), e, f(0.0)));
                g.store(a.sc, at, e.clone());
                g.set(sum, add(var(sum), e));
            },
        );
        g.set(p.l, add(mul(var(p.l), corr.clone()), var(sum)));
        g.set(p.m, new_m);
        // The running maximum rarely moves after the first blocks: skip the rescale then.
        let abase = i(p.slot * a.dacc as i64);
        g.if_(
            lt(corr.clone(), f(1.0)),
            |g| {
                g.for_(
                    "c",
                    i(0),
                    i(a.dacc as i64),
                    1,
                    LoopKind::Vector(LANES),
                    |g, c| {
                        let at = add(abase, c);
                        g.store(a.acc, at.clone(), mul(load(a.acc, at), corr));
                    },
                );
            },
            |_| {},
        );
    }

    /// Pair `p`'s accumulator plus its weighted value rows of the block, one vector loop
    /// with the block's rows unrolled (their weights held across it).
    fn accumulate(&self, g: &mut Gen, p: &Pair, vrows: &[Expr]) {
        let a = *self;
        let base = p.slot * BLOCK as i64;
        let weights: Vec<Expr> = (0..vrows.len())
            .map(|jj| g.let_("w", Ty::F32, load(a.sc, i(base + jj as i64))))
            .collect();
        let abase = i(p.slot * a.dacc as i64);
        let vbuf = a.vbuf();
        g.for_(
            "c",
            i(0),
            i(a.dacc as i64),
            1,
            LoopKind::Vector(LANES),
            |g, c| {
                let terms = weights
                    .iter()
                    .zip(vrows)
                    .map(|(w, r)| mul(w.clone(), load(vbuf, add(r.clone(), c.clone()))))
                    .collect();
                let at = add(abase, c);
                g.store(a.acc, at.clone(), fma_chains(load(a.acc, at), terms));
            },
        );
    }

    /// Pair `p`'s output row: the accumulator over the softmax denominator, through MLA's
    /// up-projection and the output gate where present.
    fn output(&self, g: &mut Gen, p: &Pair, row: &Expr) {
        let a = *self;
        // No visible key and no sink leaves l = 0 and acc = 0: the row is zero.
        let den = g.let_(
            "den",
            Ty::F32,
            select(eq(var(p.l), f(0.0)), f(1.0), var(p.l)),
        );
        let obase = g.let_(
            "obase",
            Ty::I64,
            mul(
                add(mul(row.clone(), i(a.h as i64)), p.head.clone()),
                i(a.dv as i64),
            ),
        );
        let abase = i(p.slot * a.dacc as i64);
        match (a.at.mla, &p.wbase) {
            // MLA: each output is a row of W_UV_h dotted with the latent accumulator.
            (Some(ml), Some(wbase)) => g.range("o", i(a.dv as i64), |g, o| {
                let row = g.let_(
                    "vrow",
                    Ty::I64,
                    add(wbase.clone(), add(o.clone(), i(ml.nope as i64))),
                );
                let lat = |c: Expr| load(a.acc, add(abase.clone(), c));
                let y = g.row_dot("up", ml.rank, &lat, a.vb, row);
                let at_o = add(obase, o);
                let mut y = div(y, den);
                if let Some(gb) = a.gate {
                    y = mul(y, sigmoid(load(gb, at_o.clone())));
                }
                g.store(a.out, at_o, y);
            }),
            _ => g.for_("c", i(0), i(a.dv as i64), 1, LoopKind::Vector(8), |g, c| {
                let o = add(obase, c.clone());
                let mut y = div(load(a.acc, add(abase, c)), den);
                if let Some(gb) = a.gate {
                    y = mul(y, sigmoid(load(gb, o.clone())));
                }
                g.store(a.out, o, y);
            }),
        }
    }
}
