//! The explicit matmul tile of the kernel IR (`Stmt::Tile`), as tinygrad's WMMA and
//! Triton's `dot` keep a matrix multiply an op of its own until a target lowers it: a
//! block of dot products over one reduction, with the layout of its operands stated, so
//! that each code generator picks its own instructions (the CPU target: a `vdpbf16ps`
//! outer-product tile or dot-product tiles; the GPU target: warp reductions) without
//! recognising statement shapes.
//!
//! **Meaning.** Rows come in `rows.len()` groups of `lanes` (a group of one when `lanes`
//! is 1); columns are `cols`. For every row `r = (g, l)` and column `c`, the tile computes
//! `sum(r, c) = Σ_{k in start..end} A(g, l, k) · B(c, k)` in f32 (each load widened as a
//! load is), where
//! - `B(c, k) = cols[c].buf[cols[c].base + k]`;
//! - `A(g, l, k) = rows[g].buf[rows[g].base + k]` when `lanes == 1`;
//! - `A(g, l, k) = rows[g].buf[rows[g].base + (k / 2) * 2 * lanes + 2 * l + k % 2]` when
//!   `lanes > 1`: `lanes` rows interleaved in pairs, so one vector load holds element pair
//!   `k / 2` of every lane (the tokens-in-lanes layout). `start` and `end` are then even
//!   constants.
//!
//! The order of the additions is unspecified (a target may reassociate them and contract
//! a product and its addition into one FMA), as in a `Vector` loop. The sums go to
//! [`TileOut::Sums`] (`lanes == 1`): one new f32 `local` per (row, column), row-major,
//! which later statements read and may assign; or [`TileOut::Store`]: the sum of row
//! `(g, l)` and column `c` stored at `buf[bases[g * cols.len() + c] + l]`.

use super::build::{add, i, load, mul, var};
use super::{BinOp, BufId, Expr, Kernel, LoopKind, Stmt, Ty, VarId};

/// A buffer and the index of element 0 of one row (or row group) or column.
#[derive(Debug, Clone, PartialEq)]
pub struct TileRef {
    pub buf: BufId,
    pub base: Expr,
}

/// Where a tile's sums go.
#[derive(Debug, Clone, PartialEq)]
pub enum TileOut {
    /// One new f32 `local` per (row, column), row-major; `lanes == 1` only.
    Sums(Vec<VarId>),
    /// The sum of row `(g, l)` and column `c` stored at `buf[bases[g * n + c] + l]`.
    Store { buf: BufId, bases: Vec<Expr> },
}

/// See the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    pub start: Expr,
    pub end: Expr,
    pub lanes: u32,
    pub rows: Vec<TileRef>,
    pub cols: Vec<TileRef>,
    pub out: TileOut,
}

/// The widest row group a tile may have.
pub const MAX_LANES: u32 = 64;

impl Tile {
    /// Rows in all: groups times lanes.
    pub fn m(&self) -> usize {
        self.rows.len() * self.lanes as usize
    }

    pub fn n(&self) -> usize {
        self.cols.len()
    }

    /// Index of element `k` of lane `l` of row group `g` (see the module docs).
    pub fn row_index(&self, g: usize, l: Expr, k: Expr) -> Expr {
        let base = self.rows[g].base.clone();
        if self.lanes == 1 {
            return add(base, k);
        }
        let pair = mul(div(k.clone(), i(2)), i(2 * self.lanes as i64));
        add(add(base, pair), add(mul(l, i(2)), rem(k, i(2))))
    }

    /// Index of element `k` of column `c`.
    pub fn col_index(&self, c: usize, k: Expr) -> Expr {
        add(self.cols[c].base.clone(), k)
    }

    /// The tile as plain statements that compute the same sums (in the order a scalar
    /// loop would add them): what a target without a lowering of its own emits, and the
    /// form the GPU target distributes over a warp. New loop and load variables are added
    /// to `k`'s table; the sums keep their variables.
    ///
    /// `lanes == 1`: the sums declared as zero locals, then a `vector(16)` loop over the
    /// reduction loading each row and each column once per iteration and adding every
    /// product to its sum. `lanes > 1` (always `TileOut::Store`): a `vector(lanes)` loop
    /// over the lanes whose every iteration runs the reduction in pairs into zero locals
    /// and stores them.
    pub fn expand(&self, k: &mut Kernel) -> Vec<Stmt> {
        if self.lanes == 1 {
            self.expand_rows(k)
        } else {
            self.expand_lanes(k)
        }
    }

    fn expand_rows(&self, k: &mut Kernel) -> Vec<Stmt> {
        let (m, n) = (self.m(), self.n());
        let sums: Vec<VarId> = match &self.out {
            TileOut::Sums(v) => v.clone(),
            TileOut::Store { .. } => (0..m * n).map(|_| k.var("acc", Ty::F32)).collect(),
        };
        let mut out: Vec<Stmt> = sums
            .iter()
            .map(|&v| Stmt::Local {
                var: v,
                init: Expr::F32(0.0),
            })
            .collect();
        let kk = k.var("kk", Ty::I64);
        let mut body = Vec::new();
        let mut xs = Vec::with_capacity(m);
        for r in 0..m {
            let x = k.var("xv", Ty::F32);
            body.push(Stmt::Let {
                var: x,
                value: load(self.rows[r].buf, self.row_index(r, i(0), var(kk))),
            });
            xs.push(x);
        }
        for c in 0..n {
            let w = k.var("wv", Ty::F32);
            body.push(Stmt::Let {
                var: w,
                value: load(self.cols[c].buf, self.col_index(c, var(kk))),
            });
            for (r, &x) in xs.iter().enumerate() {
                let s = sums[r * n + c];
                body.push(Stmt::Set {
                    var: s,
                    value: add(var(s), mul(var(x), var(w))),
                });
            }
        }
        out.push(Stmt::Loop {
            var: kk,
            start: self.start.clone(),
            end: self.end.clone(),
            step: 1,
            kind: LoopKind::Vector(16),
            body,
        });
        if let TileOut::Store { buf, bases } = &self.out {
            for (j, &s) in sums.iter().enumerate() {
                out.push(Stmt::Store {
                    buf: *buf,
                    index: bases[j].clone(),
                    value: var(s),
                });
            }
        }
        out
    }

    fn expand_lanes(&self, k: &mut Kernel) -> Vec<Stmt> {
        let (groups, n) = (self.rows.len(), self.n());
        let l = k.var("l", Ty::I64);
        let kp = k.var("kp", Ty::I64);
        let sums: Vec<VarId> = (0..groups * n).map(|_| k.var("acc", Ty::F32)).collect();
        let mut lane: Vec<Stmt> = sums
            .iter()
            .map(|&v| Stmt::Local {
                var: v,
                init: Expr::F32(0.0),
            })
            .collect();
        let mut inner = Vec::new();
        let mut xs = Vec::with_capacity(groups);
        for g in 0..groups {
            let at = self.row_index(g, var(l), mul(var(kp), i(2)));
            let (a, b) = (k.var("xa", Ty::F32), k.var("xb", Ty::F32));
            inner.push(Stmt::Let {
                var: a,
                value: load(self.rows[g].buf, at.clone()),
            });
            inner.push(Stmt::Let {
                var: b,
                value: load(self.rows[g].buf, add(at, i(1))),
            });
            xs.push((a, b));
        }
        for c in 0..n {
            let at = self.col_index(c, mul(var(kp), i(2)));
            let (wa, wb) = (k.var("wa", Ty::F32), k.var("wb", Ty::F32));
            inner.push(Stmt::Let {
                var: wa,
                value: load(self.cols[c].buf, at.clone()),
            });
            inner.push(Stmt::Let {
                var: wb,
                value: load(self.cols[c].buf, add(at, i(1))),
            });
            for (g, &(xa, xb)) in xs.iter().enumerate() {
                let s = sums[g * n + c];
                inner.push(Stmt::Set {
                    var: s,
                    value: add(var(s), add(mul(var(xa), var(wa)), mul(var(xb), var(wb)))),
                });
            }
        }
        lane.push(Stmt::Loop {
            var: kp,
            start: div(self.start.clone(), i(2)),
            end: div(self.end.clone(), i(2)),
            step: 1,
            kind: LoopKind::Serial,
            body: inner,
        });
        if let TileOut::Store { buf, bases } = &self.out {
            for (j, &s) in sums.iter().enumerate() {
                lane.push(Stmt::Store {
                    buf: *buf,
                    index: add(bases[j].clone(), var(l)),
                    value: var(s),
                });
            }
        }
        vec![Stmt::Loop {
            var: l,
            start: i(0),
            end: i(self.lanes as i64),
            step: 1,
            kind: LoopKind::Vector(self.lanes),
            body: lane,
        }]
    }
}

/// `a / b`, folded when both are constants (tile bounds usually are).
fn div(a: Expr, b: Expr) -> Expr {
    match (&a, &b) {
        (Expr::I64(x), Expr::I64(y)) if *y != 0 => Expr::I64(x / y),
        _ => super::build::bin(BinOp::Div, a, b),
    }
}

fn rem(a: Expr, b: Expr) -> Expr {
    super::build::bin(BinOp::Rem, a, b)
}

/// `k` with every tile replaced by its [`Tile::expand`]ed statements, for targets that
/// lower tiles as plain loops.
pub fn expand_tiles(k: &Kernel) -> Kernel {
    expand_tiles_where(k, &|_| true)
}

/// `k` with the tiles `expand` picks replaced by their expansion; the others stay, for
/// a target that lowers some tiles itself and the rest as loops.
pub fn expand_tiles_where(k: &Kernel, expand: &dyn Fn(&Tile) -> bool) -> Kernel {
    let mut out = k.clone();
    let body = std::mem::take(&mut out.body);
    out.body = expand_block(body, &mut out, expand);
    out
}

fn expand_block(body: Vec<Stmt>, k: &mut Kernel, pick: &dyn Fn(&Tile) -> bool) -> Vec<Stmt> {
    let mut out = Vec::with_capacity(body.len());
    for s in body {
        match s {
            Stmt::Tile(t) if pick(&t) => out.extend(t.expand(k)),
            Stmt::Loop {
                var,
                start,
                end,
                step,
                kind,
                body,
            } => out.push(Stmt::Loop {
                var,
                start,
                end,
                step,
                kind,
                body: expand_block(body, k, pick),
            }),
            Stmt::If { cond, then, els } => out.push(Stmt::If {
                cond,
                then: expand_block(then, k, pick),
                els: expand_block(els, k, pick),
            }),
            other => out.push(other),
        }
    }
    out
}

/// Whether a body holds a tile anywhere.
pub fn has_tiles(body: &[Stmt]) -> bool {
    body.iter().any(|s| match s {
        Stmt::Tile(_) => true,
        Stmt::Loop { body, .. } => has_tiles(body),
        Stmt::If { then, els, .. } => has_tiles(then) || has_tiles(els),
        _ => false,
    })
}
