//! The decode matmul: one token row times the weights, a matrix-vector product. The
//! weight rows are the data that moves (each read once per call), so the parallel loop
//! walks groups of output columns, each group a register tile of one row × `tn` columns
//! whose weight streams run side by side.

use super::super::gen::lp;
use super::super::{ix, KernelError};
use super::{Gen, Lin};
use crate::kernel::build::{self, i};
use crate::kernel::{Elem, LoopKind, Ty};

impl Gen {
    /// Decode: every thread normalises the one row into scratch, then the parallel loop
    /// runs over groups of `tn` output columns. With `bf16_activations` and bf16 weights
    /// the row is rounded to bf16 scratch (after the norm, if any), so the tiles multiply
    /// bf16 pairs like the prefill's: half the instructions per weight byte, which lets a
    /// core keep more weight loads in flight.
    pub(super) fn linear_matvec(&mut self, lin: &Lin, tn: i64) -> Result<(), KernelError> {
        let kc = lin.k_const();
        let bf16 = self.opts.bf16_activations && self.bf16_weights(lin) && kc > 0;
        let (src, base) = match (lin.op.norm, bf16) {
            (None, false) => (self.ins[0].buf, i(0)),
            (norm, _) => {
                let elem = if bf16 { Elem::Bf16 } else { Elem::F32 };
                let xs = self.scratch("xs", elem, kc);
                let st = match norm {
                    Some(_) => self.norm_row(lin, i(0), xs, i(0)),
                    None => vec![self.copy_row(lin, i(0), xs, i(0))],
                };
                self.extend(st);
                (xs, i(0))
            }
        };
        let g = self.var("g", Ty::I64);
        let (st, c) = self.bind("c", Ty::I64, ix::mul(build::var(g), i(tn)));
        let mut body = vec![st];
        body.extend(self.tile(lin, src, &[(base, i(0))], c, tn, None));
        self.push(lp(g, i(0), i(lin.ncols / tn), LoopKind::Parallel, body));
        Ok(())
    }
}
