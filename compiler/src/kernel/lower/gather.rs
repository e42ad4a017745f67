//! Gather kernels (`Op::Gather`: rows of a table picked by ids, the embedding lookup): a
//! float table is copied row by row, a block-quantised table is decoded row by row (bit
//! for bit the reference dequantisation, see `matmul/quant.rs`). Out-of-range ids are
//! clamped into the table: the runtime rejects them before a run, and a kernel must never
//! read outside its buffer.
//!
//! Shape: parallel over ids; a vector loop over the row (over each block's elements).

use super::gen::{lp, Gen, NodeLowering};
use super::matmul::decode::decode_block;
use super::{ix, KernelError};
use crate::kernel::build::{self, bin, i, load};
use crate::kernel::{BinOp, Expr, Kernel, LoopKind, Stmt, Ty};

/// The kernel of a `Gather` node: operands table, ids.
pub(super) fn kernel(cx: &NodeLowering) -> Result<Kernel, KernelError> {
    let roles = ["table", "ids"];
    cx.expect_operands(&roles)?;
    let mut g = Gen::new(cx, &roles)?;
    match g.ins[0].block {
        Some(_) => g.block_gather()?,
        None => g.gather()?,
    }
    Ok(g.finish())
}

impl Gen {
    fn gather(&mut self) -> Result<(), KernelError> {
        let table = self.shape(0, 1)?;
        let ids = self.shape(1, 0)?;
        let rows = ix::dim(table[0]);
        let width = ix::prod(&table[1..]);
        let (tb, idb, out) = (self.ins[0].buf, self.ins[1].buf, self.out);
        let t = self.var("t", Ty::I64);
        let j = self.var("j", Ty::I64);
        let clamped = ix::min(
            bin(BinOp::Max, load(idb, build::var(t)), i(0)),
            ix::sub(rows, i(1)),
        );
        let (st, row) = self.bind("row", Ty::I64, clamped);
        let copy = Stmt::Store {
            buf: out,
            index: ix::add(ix::mul(build::var(t), width.clone()), build::var(j)),
            value: load(tb, ix::add(ix::mul(row, width.clone()), build::var(j))),
        };
        let body = vec![
            st,
            lp(
                j,
                i(0),
                width,
                LoopKind::Vector(self.schedule.vector),
                vec![copy],
            ),
        ];
        self.push(lp(t, i(0), ix::prod(&ids), LoopKind::Parallel, body));
        Ok(())
    }

    /// Rows of a block-quantised table, decoded into the rows of `ids`.
    fn block_gather(&mut self) -> Result<(), KernelError> {
        let table = self.shape(0, 2)?;
        let ids = self.shape(1, 0)?;
        let fmt = self.ins[0]
            .block
            .ok_or_else(|| self.invalid("the gathered table is not block-quantised"))?;
        let (rows, width) = match (table[0].as_const(), table[1].as_const()) {
            (Some(r), Some(w)) if table.len() == 2 => (r as i64, w as i64),
            _ => return Err(self.invalid("a quantised table must be 2-D and constant")),
        };
        let (bl, bb) = (fmt.block_len() as i64, fmt.block_bytes() as i64);
        let nb = width / bl;
        let (tb, idb, out) = (self.ins[0].buf, self.ins[1].buf, self.out);
        let t = self.var("t", Ty::I64);
        let clamped = ix::min(
            build::bin(BinOp::Max, load(idb, build::var(t)), i(0)),
            i(rows - 1),
        );
        let (st_row, row) = self.bind("row", Ty::I64, clamped);
        let blk = self.var("blk", Ty::I64);
        let (st_base, base) = self.bind(
            "base",
            Ty::I64,
            ix::add(ix::mul(row, i(nb * bb)), ix::mul(build::var(blk), i(bb))),
        );
        let out_at = ix::add(
            ix::mul(build::var(t), i(width)),
            ix::mul(build::var(blk), i(bl)),
        );
        let mut emit = |_: &mut Kernel, e: Expr, value: Expr| {
            vec![Stmt::Store {
                buf: out,
                index: ix::add(out_at.clone(), e),
                value,
            }]
        };
        let mut per_block = vec![st_base];
        per_block.extend(decode_block(
            &mut self.k,
            self.schedule.vector,
            fmt,
            tb,
            &base,
            &mut emit,
        ));
        let body = vec![st_row, lp(blk, i(0), i(nb), LoopKind::Serial, per_block)];
        self.push(lp(t, i(0), ix::prod(&ids), LoopKind::Parallel, body));
        Ok(())
    }
}
