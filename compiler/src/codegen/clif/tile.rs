//! The matmul tiles the Cranelift tier lowers itself, with 128-bit SIMD, when their operands
//! are f32 or bf16 (others, f16 or f8, are expanded into their loops first: `lowers`):
//! - rows in groups of one (`lanes == 1`): one `f32x4` accumulator per (row, column) over
//!   the reduction, four elements a step (bf16 widened by a zero-extending load and a
//!   shift), then the elements that remain one by one, and each accumulator's lanes summed
//!   pairwise;
//! - tokens in lanes (`lanes > 1`, rows packed `[k/2][lanes][2]`): for each row group and
//!   pair of lanes, one `f32x4` accumulator per column holds (lane, k even), (lane, k odd)
//!   for the two lanes; each step loads the four packed values and multiplies them by the
//!   column's pair `[b(k), b(k+1), b(k), b(k+1)]`; the even and odd sums are added at the end.
//!
//! The additions are reassociated, as a tile allows (`kernel/tile.rs`). The order depends
//! only on the tile's bounds, so every thread count gives the same bits.

use super::translate::Translator;
use crate::codegen::CodegenError;
use crate::kernel::{Elem, Expr, Kernel, Tile, TileOut, Ty};
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::Variable;

/// Elements of a reduction step: one `f32x4`.
const STEP: i64 = 4;

/// Whether this tier lowers `t` of kernel `k` itself (else it is expanded into loops).
pub(super) fn lowers(t: &Tile, k: &Kernel) -> bool {
    let simd = |r: &crate::kernel::TileRef| {
        k.bufs
            .get(r.buf.0 as usize)
            .is_some_and(|b| matches!(b.elem, Elem::F32 | Elem::Bf16))
    };
    let shape = match (t.lanes, &t.start, &t.end, &t.out) {
        (1, _, _, _) => true,
        (l, Expr::I64(a), Expr::I64(b), TileOut::Store { .. }) => {
            l % 2 == 0 && a % 2 == 0 && b % 2 == 0 && a <= b
        }
        _ => false,
    };
    shape && t.rows.iter().chain(&t.cols).all(simd)
}

/// Memory of a vector load: in bounds, not necessarily 16-byte aligned.
fn unaligned() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

impl Translator<'_, '_> {
    /// Four elements `[p, p + 4)` of a row or column as `f32x4`.
    fn load4(&mut self, p: Value, elem: Elem) -> Value {
        match elem {
            Elem::Bf16 => {
                let wide = self.b.ins().uload16x4(unaligned(), p, 0);
                let bits = self.b.ins().ishl_imm_s(wide, 16);
                self.b
                    .ins()
                    .bitcast(types::F32X4, MemFlagsData::new(), bits)
            }
            _ => self.b.ins().load(types::F32X4, unaligned(), p, 0),
        }
    }

    /// One element at `p`, widened to f32.
    fn load1(&mut self, p: Value, elem: Elem) -> Value {
        match elem {
            Elem::Bf16 => {
                let h = self.b.ins().uload16(types::I32, unaligned(), p, 0);
                let bits = self.b.ins().ishl_imm_s(h, 16);
                self.b.ins().bitcast(types::F32, MemFlagsData::new(), bits)
            }
            _ => self.b.ins().load(types::F32, unaligned(), p, 0),
        }
    }

    /// Every row's and column's start address and element type.
    #[allow(clippy::type_complexity)]
    fn operands(
        &mut self,
        t: &Tile,
    ) -> Result<(Vec<(Value, Elem)>, Vec<(Value, Elem)>), CodegenError> {
        let rows = t
            .rows
            .iter()
            .map(|r| self.operand(r))
            .collect::<Result<_, _>>()?;
        let cols = t
            .cols
            .iter()
            .map(|c| self.operand(c))
            .collect::<Result<_, _>>()?;
        Ok((rows, cols))
    }

    /// The address of element 0 of a row or column, and its element type.
    fn operand(&mut self, r: &crate::kernel::TileRef) -> Result<(Value, Elem), CodegenError> {
        let (base, elem, _) = self.buf(r.buf)?;
        let i = self.typed(&r.base, Ty::I64, "a tile base")?;
        let off = self.b.ins().imul_imm_s(i, elem.bytes() as i64);
        Ok((self.b.ins().iadd(base, off), elem))
    }

    /// `for v in lo..hi step step { body(v) }` over a fresh variable.
    fn range(
        &mut self,
        lo: Value,
        hi: Value,
        step: i64,
        body: &mut dyn FnMut(&mut Self, Value) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        let v = self.b.declare_var(types::I64);
        self.loop_on(v, lo, hi, step, body)
    }

    /// One step of a dot-product tile at element `k`: `width` (4 or 1) elements of every
    /// row and column, each product added to its accumulator in `accs` (row-major).
    fn dot_step(
        &mut self,
        rows: &[(Value, Elem)],
        cols: &[(Value, Elem)],
        accs: &[Variable],
        k: Value,
        width: i64,
    ) {
        let n = cols.len();
        let at = |t: &mut Self, (p, e): (Value, Elem)| {
            let off = t.b.ins().imul_imm_s(k, e.bytes() as i64);
            let a = t.b.ins().iadd(p, off);
            if width == STEP {
                t.load4(a, e)
            } else {
                t.load1(a, e)
            }
        };
        let xs: Vec<Value> = rows.iter().map(|&r| at(self, r)).collect();
        for (c, &col) in cols.iter().enumerate() {
            let w = at(self, col);
            for (r, &x) in xs.iter().enumerate() {
                let acc = accs[r * n + c];
                let prod = self.b.ins().fmul(x, w);
                let cur = self.b.use_var(acc);
                let next = self.b.ins().fadd(cur, prod);
                self.b.def_var(acc, next);
            }
        }
    }

    /// `[b(k), b(k + 1), b(k), b(k + 1)]` of the column at `p` (element `k`).
    fn pair4(&mut self, p: Value, elem: Elem, odd_mask: Value) -> Value {
        match elem {
            Elem::Bf16 => {
                let word = self.b.ins().load(types::I32, unaligned(), p, 0);
                let all = self.b.ins().splat(types::I32X4, word);
                let even = self.b.ins().ishl_imm_s(all, 16);
                let high = self.b.ins().iconst(types::I32, 0xffff_0000u32 as i64);
                let high = self.b.ins().splat(types::I32X4, high);
                let odd = self.b.ins().band(all, high);
                let bits = self.b.ins().bitselect(odd_mask, even, odd);
                self.b
                    .ins()
                    .bitcast(types::F32X4, MemFlagsData::new(), bits)
            }
            _ => {
                let b0 = self.b.ins().load(types::F32, unaligned(), p, 0);
                let b1 = self.b.ins().load(types::F32, unaligned(), p, 4);
                let v = self.b.ins().splat(types::F32X4, b0);
                let v = self.b.ins().insertlane(v, b1, 1);
                self.b.ins().insertlane(v, b1, 3)
            }
        }
    }

    /// A tokens-in-lanes tile (see the module docs).
    fn lanes_tile(&mut self, t: &Tile) -> Result<(), CodegenError> {
        let (Expr::I64(start), Expr::I64(end), TileOut::Store { buf, bases }) =
            (&t.start, &t.end, &t.out)
        else {
            return Err(self.err("a lanes tile without constant bounds and stores"));
        };
        let lanes = i64::from(t.lanes);
        let (rows, cols) = self.operands(t)?;
        let n = cols.len();
        if bases.len() != rows.len() * n {
            return Err(self.err("a lanes tile whose stores do not match its rows and columns"));
        }
        let bases: Vec<Value> = bases
            .iter()
            .map(|e| self.typed(e, Ty::I64, "a tile store index"))
            .collect::<Result<_, _>>()?;
        // Lanes 0 and 2 of a pair vector take the even element of the column.
        let ones = self.b.ins().iconst(types::I32, -1);
        let zero32 = self.b.ins().iconst(types::I32, 0);
        let mask = self.b.ins().splat(types::I32X4, ones);
        let mask = self.b.ins().insertlane(mask, zero32, 1);
        let odd_mask = self.b.ins().insertlane(mask, zero32, 3);
        let zero = self.b.ins().f32const(0.0);
        let zero4 = self.b.ins().splat(types::F32X4, zero);
        let (p0, p1) = (start / 2, end / 2);
        for (g, &(row, relem)) in rows.iter().enumerate() {
            let q0 = self.b.ins().iconst(types::I64, 0);
            let q1 = self.b.ins().iconst(types::I64, lanes / 2);
            let cols = cols.clone();
            let bases = bases[g * n..(g + 1) * n].to_vec();
            self.range(q0, q1, 1, &mut |tr, q| {
                let accs: Vec<Variable> = (0..n)
                    .map(|_| {
                        let v = tr.b.declare_var(types::F32X4);
                        tr.b.def_var(v, zero4);
                        v
                    })
                    .collect();
                let lo = tr.b.ins().iconst(types::I64, p0);
                let hi = tr.b.ins().iconst(types::I64, p1);
                tr.range(lo, hi, 1, &mut |tr, kp| {
                    // Elements kp * 2 * lanes + 4q .. + 4 of the row group.
                    let e = tr.b.ins().imul_imm_s(kp, 2 * lanes);
                    let q4 = tr.b.ins().imul_imm_s(q, 4);
                    let e = tr.b.ins().iadd(e, q4);
                    let off = tr.b.ins().imul_imm_s(e, relem.bytes() as i64);
                    let a = tr.b.ins().iadd(row, off);
                    let x = tr.load4(a, relem);
                    for (c, &(col, celem)) in cols.iter().enumerate() {
                        let off = tr.b.ins().imul_imm_s(kp, 2 * celem.bytes() as i64);
                        let a = tr.b.ins().iadd(col, off);
                        let w = tr.pair4(a, celem, odd_mask);
                        let prod = tr.b.ins().fmul(x, w);
                        let cur = tr.b.use_var(accs[c]);
                        let next = tr.b.ins().fadd(cur, prod);
                        tr.b.def_var(accs[c], next);
                    }
                    Ok(())
                })?;
                let lane = tr.b.ins().imul_imm_s(q, 2);
                for (c, &acc) in accs.iter().enumerate() {
                    let v = tr.b.use_var(acc);
                    let l: Vec<Value> = (0..4u8).map(|i| tr.b.ins().extractlane(v, i)).collect();
                    let s0 = tr.b.ins().fadd(l[0], l[1]);
                    let s1 = tr.b.ins().fadd(l[2], l[3]);
                    let i0 = tr.b.ins().iadd(bases[c], lane);
                    tr.store_at(*buf, i0, s0)?;
                    let i1 = tr.b.ins().iadd_imm_s(i0, 1);
                    tr.store_at(*buf, i1, s1)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    pub(super) fn tile(&mut self, t: &Tile) -> Result<(), CodegenError> {
        if !lowers(t, self.k) {
            return Err(self.err("a tile this tier does not lower was not expanded"));
        }
        if t.lanes > 1 {
            return self.lanes_tile(t);
        }
        let start = self.typed(&t.start, Ty::I64, "a tile start")?;
        let end = self.typed(&t.end, Ty::I64, "a tile end")?;
        let (rows, cols) = self.operands(t)?;
        let (m, n) = (rows.len(), cols.len());

        // Vector accumulators and the loop counter, as variables across the loops' blocks.
        let zero = self.b.ins().f32const(0.0);
        let zero4 = self.b.ins().splat(types::F32X4, zero);
        let accs: Vec<Variable> = (0..m * n)
            .map(|_| {
                let v = self.b.declare_var(types::F32X4);
                self.b.def_var(v, zero4);
                v
            })
            .collect();
        let span = self.b.ins().isub(end, start);
        let zero_i = self.b.ins().iconst(types::I64, 0);
        let span = self.b.ins().smax(span, zero_i);
        let whole = self.b.ins().band_imm_s(span, !(STEP - 1));
        let vend = self.b.ins().iadd(start, whole);
        // Four elements a step up to `vend`, then the pairwise sums, then one by one.
        self.range(start, vend, STEP, &mut |t, k| {
            t.dot_step(&rows, &cols, &accs, k, STEP);
            Ok(())
        })?;
        let sums: Vec<Variable> = accs
            .iter()
            .map(|&acc| {
                let v = self.b.use_var(acc);
                let l: Vec<Value> = (0..4u8).map(|i| self.b.ins().extractlane(v, i)).collect();
                let a = self.b.ins().fadd(l[0], l[1]);
                let b = self.b.ins().fadd(l[2], l[3]);
                let s = self.b.ins().fadd(a, b);
                let var = self.b.declare_var(types::F32);
                self.b.def_var(var, s);
                var
            })
            .collect();
        self.range(vend, end, 1, &mut |t, k| {
            t.dot_step(&rows, &cols, &sums, k, 1);
            Ok(())
        })?;

        match &t.out {
            TileOut::Sums(vars) => {
                if vars.len() != m * n {
                    return Err(self.err(format!("a tile of {} sums for {m} x {n}", vars.len())));
                }
                for (&v, &s) in vars.iter().zip(&sums) {
                    let (var, ty) = self.var(v)?;
                    if ty != Ty::F32 {
                        return Err(self.err("a tile sum that is not f32"));
                    }
                    let x = self.b.use_var(s);
                    self.b.def_var(var, x);
                }
            }
            TileOut::Store { buf, bases } => {
                if bases.len() != m * n {
                    return Err(self.err(format!("a tile of {} stores for {m} x {n}", bases.len())));
                }
                for (base, &s) in bases.iter().zip(&sums) {
                    let i = self.typed(base, Ty::I64, "a tile store index")?;
                    let x = self.b.use_var(s);
                    self.store_at(*buf, i, x)?;
                }
            }
        }
        Ok(())
    }
}
