//! The matmul tiles (`Stmt::Tile`) the CPU target lowers itself, read from the tile's
//! stated layout rather than recognised from statement shapes:
//! - tokens in lanes (`lanes.rs`): a tile of 16 lanes of bf16 pairs against bf16 columns,
//!   sums stored, becomes one `<16 x float>` register per (group, column) updated by
//!   `vdpbf16ps` with a broadcast weight pair (two FMAs over widened halves without
//!   AVX512-BF16);
//! - dot products (`dot.rs`): a tile of bf16 rows and columns on a CPU with `vdpbf16ps`,
//!   or a tile of f32 rows and columns with one row or one column (at least four dot
//!   products sharing an operand), runs its reduction on `<16 x float>` accumulators
//!   summed by one butterfly, the remainder in a scalar loop.
//!
//! Every other tile is expanded into its plain loops before emission
//! (`kernel::tile::expand_tiles_where` with [`lowers`]), which LLVM vectorizes.

mod dot;
mod lanes;

use crate::codegen::body::Emitter;
use crate::codegen::CodegenError;
use crate::kernel::{Elem, Kernel, Tile, TileOut};

/// How the CPU target lowers a tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Lanes,
    Dot(Elem),
}

/// The element type every operand of `t` has, if they agree.
fn operand_elem(t: &Tile, k: &Kernel) -> Option<Elem> {
    let elem = |b: crate::kernel::BufId| k.bufs.get(b.0 as usize).map(|kb| kb.elem);
    let first = elem(t.rows.first()?.buf)?;
    t.rows
        .iter()
        .chain(&t.cols)
        .all(|r| elem(r.buf) == Some(first))
        .then_some(first)
}

fn plan(t: &Tile, k: &Kernel, bf16_dot: bool) -> Option<Plan> {
    let elem = operand_elem(t, k)?;
    match (&t.out, t.lanes) {
        (TileOut::Store { buf, .. }, 16) => {
            let f32_out = k.bufs.get(buf.0 as usize).map(|b| b.elem) == Some(Elem::F32);
            (elem == Elem::Bf16 && f32_out).then_some(Plan::Lanes)
        }
        (TileOut::Sums(_), 1) => match elem {
            Elem::Bf16 if bf16_dot => Some(Plan::Dot(Elem::Bf16)),
            Elem::F32 if (t.m() == 1 || t.n() == 1) && t.m() * t.n() >= 4 => {
                Some(Plan::Dot(Elem::F32))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Whether the CPU target lowers `t` (of kernel `k`) itself; `bf16_dot`: the CPU has
/// `vdpbf16ps`.
pub(super) fn lowers(t: &Tile, k: &Kernel, bf16_dot: bool) -> bool {
    plan(t, k, bf16_dot).is_some()
}

/// Lowers a tile that [`lowers`] accepts.
pub(super) fn lower_tile(
    e: &mut Emitter<'_, '_>,
    t: &Tile,
    bf16_dot: bool,
) -> Result<(), CodegenError> {
    match plan(t, e.k, bf16_dot) {
        Some(Plan::Lanes) => lanes::lane_tile(e, t, bf16_dot),
        Some(Plan::Dot(elem)) => dot::dot_tile(e, t, elem),
        None => Err(e.err("a tile the CPU target does not lower reached it unexpanded".into())),
    }
}
