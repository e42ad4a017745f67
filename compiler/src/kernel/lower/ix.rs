//! Index arithmetic with constant folding, shared by the kernel generators so that
//! concrete shapes print as plain numbers (`t * 2048 + j`, not `t * (2048 * 1) + j`).

use crate::ir::Dim;
use crate::kernel::build;
use crate::kernel::{BinOp, Expr};

fn konst(e: &Expr) -> Option<i64> {
    match e {
        Expr::I64(v) => Some(*v),
        _ => None,
    }
}

pub fn add(a: Expr, b: Expr) -> Expr {
    match (konst(&a), konst(&b)) {
        (Some(x), Some(y)) => Expr::I64(x + y),
        (Some(0), _) => b,
        (_, Some(0)) => a,
        _ => build::add(a, b),
    }
}

pub fn sub(a: Expr, b: Expr) -> Expr {
    match (konst(&a), konst(&b)) {
        (Some(x), Some(y)) => Expr::I64(x - y),
        (_, Some(0)) => a,
        _ => build::sub(a, b),
    }
}

pub fn mul(a: Expr, b: Expr) -> Expr {
    match (konst(&a), konst(&b)) {
        (Some(x), Some(y)) => Expr::I64(x * y),
        (Some(0), _) | (_, Some(0)) => Expr::I64(0),
        (Some(1), _) => b,
        (_, Some(1)) => a,
        _ => build::mul(a, b),
    }
}

pub fn div(a: Expr, b: Expr) -> Expr {
    match (konst(&a), konst(&b)) {
        (Some(x), Some(y)) if y != 0 => Expr::I64(x / y),
        (_, Some(1)) => a,
        _ => build::div(a, b),
    }
}

pub fn rem(a: Expr, b: Expr) -> Expr {
    match (konst(&a), konst(&b)) {
        (Some(x), Some(y)) if y != 0 => Expr::I64(x % y),
        (_, Some(1)) => Expr::I64(0),
        _ => build::bin(BinOp::Rem, a, b),
    }
}

pub fn min(a: Expr, b: Expr) -> Expr {
    match (konst(&a), konst(&b)) {
        (Some(x), Some(y)) => Expr::I64(x.min(y)),
        _ => build::bin(BinOp::Min, a, b),
    }
}

/// A dimension as an `I64` expression: `konst + seq * a + past * b`.
pub fn dim(d: Dim) -> Expr {
    let seq = mul(build::seq(), Expr::I64(d.seq as i64));
    let past = mul(build::past(), Expr::I64(d.past as i64));
    add(add(past, seq), Expr::I64(d.konst as i64))
}

/// The same value as [`dim`], written `seq + past + konst` with coefficients first
/// (`2 * seq`): the form the attention, norm+RoPE and MoE kernels have always printed,
/// kept so that their kernel text (and names) stay stable.
pub fn dim_seq_first(d: Dim) -> Expr {
    let mut e: Option<Expr> = None;
    let mut term = |t: Expr| {
        e = Some(match e.take() {
            Some(acc) => build::add(acc, t),
            None => t,
        });
    };
    if d.seq != 0 {
        term(if d.seq == 1 {
            build::seq()
        } else {
            build::mul(build::i(d.seq as i64), build::seq())
        });
    }
    if d.past != 0 {
        term(if d.past == 1 {
            build::past()
        } else {
            build::mul(build::i(d.past as i64), build::past())
        });
    }
    if d.konst != 0 {
        term(build::i(d.konst as i64));
    }
    e.unwrap_or(build::i(0))
}

/// The product of some dimensions (1 for none).
pub fn prod(dims: &[Dim]) -> Expr {
    dims.iter().fold(Expr::I64(1), |acc, d| mul(acc, dim(*d)))
}
