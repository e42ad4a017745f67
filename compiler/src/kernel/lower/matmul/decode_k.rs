//! The block decoder's 256-element super-blocks: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and
//! IQ4_XS (see `decode.rs` for the contract). Each binds its 8 or 16 sub-block scales
//! once per block, then runs vector loops over the quant bytes that hand out two or
//! four elements per iteration, each element with its sub-block's scale.

use super::super::gen::lp;
use super::super::ix;
use super::decode::{bind, bit_and, bit_or, iq4_value, shl, shr, sign_extend_byte, to_f};
use super::decode::{Block, Emit};
use crate::kernel::build::{self, i};
use crate::kernel::{Expr, Kernel, LoopKind, Stmt, Ty};

/// Q2_K: 16 sub-blocks of 16, each with a 4-bit scale and min in one byte (bytes
/// 0..16), `x = d * sc * q - dmin * m` for 2-bit quants. Each half of 128 elements
/// reads its 32 quant bytes four times, two bits at a time.
pub(super) fn q2_k(k: &mut Kernel, b: &Block, emit: &mut Emit<'_>) -> Vec<Stmt> {
    let mut st = Vec::new();
    let d = bind(k, &mut st, "d", Ty::F32, b.half(80));
    let dmin = bind(k, &mut st, "dmin", Ty::F32, b.half(82));
    let mut dl = Vec::new();
    let mut ml = Vec::new();
    for s in 0..16 {
        let sc = b.byte(i(s));
        let scale = build::mul(d.clone(), to_f(bit_and(sc.clone(), 15)));
        dl.push(bind(k, &mut st, "dl", Ty::F32, scale));
        let min = build::mul(dmin.clone(), to_f(shr(sc, 4)));
        ml.push(bind(k, &mut st, "ml", Ty::F32, min));
    }
    // The vector loop covers 16 elements of one scale in each of the four bit pairs.
    for h in 0..2i64 {
        for is in 0..2i64 {
            let l = k.var("l", Ty::I64);
            let ll = ix::add(build::var(l), i(16 * is));
            let mut body = Vec::new();
            let a = bind(
                k,
                &mut body,
                "a",
                Ty::I64,
                b.byte(ix::add(ll.clone(), i(16 + 32 * h))),
            );
            for s in 0..4i64 {
                let q = bit_and(shr(a.clone(), 2 * s), 3);
                let j = (8 * h + 2 * s + is) as usize;
                let value = build::sub(build::mul(dl[j].clone(), to_f(q)), ml[j].clone());
                let e = ix::add(ll.clone(), i(128 * h + 32 * s));
                body.extend(emit(k, e, value));
            }
            st.push(lp(l, i(0), i(16), LoopKind::Vector(b.vector), body));
        }
    }
    st
}

/// Q3_K: Q2_K's two low bits (bytes 32..96) and a high bit, bit `e / 32` of byte
/// `e % 32`, whose absence subtracts 4; 16 signed 6-bit scales packed in bytes
/// 96..108; `x = d * (sc - 32) * q`.
pub(super) fn q3_k(k: &mut Kernel, b: &Block, emit: &mut Emit<'_>) -> Vec<Stmt> {
    let mut st = Vec::new();
    let d = bind(k, &mut st, "d", Ty::F32, b.half(108));
    // Scale `j`: a nibble of byte `96 + j % 8` (its high one for `j >= 8`) and two bits
    // of byte `104 + j % 4`.
    let dl: Vec<Expr> = (0..16)
        .map(|j| {
            let low = bit_and(shr(b.byte(i(96 + j % 8)), 4 * (j / 8)), 15);
            let high = bit_and(shr(b.byte(i(104 + j % 4)), 2 * (j / 4)), 3);
            let sc = ix::sub(bit_or(low, shl(high, 4)), i(32));
            bind(k, &mut st, "dl", Ty::F32, build::mul(d.clone(), to_f(sc)))
        })
        .collect();
    for h in 0..2i64 {
        for is in 0..2i64 {
            let l = k.var("l", Ty::I64);
            let ll = ix::add(build::var(l), i(16 * is));
            let mut body = Vec::new();
            let a = bind(
                k,
                &mut body,
                "a",
                Ty::I64,
                b.byte(ix::add(ll.clone(), i(32 + 32 * h))),
            );
            let hm = bind(k, &mut body, "hm", Ty::I64, b.byte(ll.clone()));
            for s in 0..4i64 {
                let low = bit_and(shr(a.clone(), 2 * s), 3);
                let high = bit_and(shr(hm.clone(), 4 * h + s), 1);
                let q = ix::sub(bit_or(low, shl(high, 2)), i(4));
                let j = (8 * h + 2 * s + is) as usize;
                let e = ix::add(ll.clone(), i(128 * h + 32 * s));
                body.extend(emit(k, e, build::mul(dl[j].clone(), to_f(q))));
            }
            st.push(lp(l, i(0), i(16), LoopKind::Vector(b.vector), body));
        }
    }
    st
}

/// Q4_K or, `fifth_bit`, Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins packed in
/// 12 bytes, `x = d * sc * q - dmin * m`.
pub(super) fn q4_k(k: &mut Kernel, b: &Block, fifth_bit: bool, emit: &mut Emit<'_>) -> Vec<Stmt> {
    let mut st = Vec::new();
    let d = bind(k, &mut st, "d", Ty::F32, b.half(0));
    let dmin = bind(k, &mut st, "dmin", Ty::F32, b.half(2));
    // The 6-bit scale and min of each of the 8 sub-blocks, from 12 packed bytes.
    let s = |j: i64| b.byte(i(4 + j));
    let mut d1 = Vec::new();
    let mut m1 = Vec::new();
    for sub in 0..8 {
        let (sc, mn) = if sub < 4 {
            (bit_and(s(sub), 63), bit_and(s(sub + 4), 63))
        } else {
            (
                bit_or(bit_and(s(sub + 4), 15), shl(shr(s(sub - 4), 6), 4)),
                bit_or(shr(s(sub + 4), 4), shl(shr(s(sub), 6), 4)),
            )
        };
        d1.push(bind(
            k,
            &mut st,
            "d1",
            Ty::F32,
            build::mul(d.clone(), to_f(sc)),
        ));
        m1.push(bind(
            k,
            &mut st,
            "m1",
            Ty::F32,
            build::mul(dmin.clone(), to_f(mn)),
        ));
    }
    let (qh, qs) = if fifth_bit {
        (Some(16), 48)
    } else {
        (None, 16)
    };
    // Sub-blocks 2g and 2g+1 share 32 bytes of quants: low nibbles, then high.
    for g in 0..4i64 {
        let l = k.var("l", Ty::I64);
        let mut body = Vec::new();
        let q = bind(
            k,
            &mut body,
            "q",
            Ty::I64,
            b.byte(ix::add(build::var(l), i(qs + 32 * g))),
        );
        let h = qh.map(|at| {
            bind(
                k,
                &mut body,
                "h",
                Ty::I64,
                b.byte(ix::add(build::var(l), i(at))),
            )
        });
        for hi in 0..2i64 {
            let sub = (2 * g + hi) as usize;
            let nib = if hi == 0 {
                bit_and(q.clone(), 15)
            } else {
                shr(q.clone(), 4)
            };
            let v = match &h {
                Some(h) => bit_or(nib, shl(bit_and(shr(h.clone(), sub as i64), 1), 4)),
                None => nib,
            };
            let value = build::sub(build::mul(d1[sub].clone(), to_f(v)), m1[sub].clone());
            let e = ix::add(build::var(l), i(64 * g + 32 * hi));
            body.extend(emit(k, e, value));
        }
        st.push(lp(l, i(0), i(32), LoopKind::Vector(b.vector), body));
    }
    st
}

/// Q6_K: 16 sub-blocks of 16 with signed 8-bit scales, 6-bit quants (low nibbles in
/// bytes 0..128, two high bits each in 128..192) less 32, `x = d * sc * q`.
pub(super) fn q6_k(k: &mut Kernel, b: &Block, emit: &mut Emit<'_>) -> Vec<Stmt> {
    let mut st = Vec::new();
    let d = bind(k, &mut st, "d", Ty::F32, b.half(208));
    let d1: Vec<Expr> = (0..16)
        .map(|s| {
            let sc = to_f(sign_extend_byte(b.byte(i(192 + s))));
            bind(k, &mut st, "d1", Ty::F32, build::mul(d.clone(), sc))
        })
        .collect();
    // Each half of 128 elements: 64 bytes of low nibbles, 32 bytes of high bits;
    // the vector loop covers 16 elements of one scale in each quarter.
    for h in 0..2i64 {
        for is in 0..2i64 {
            let l = k.var("l", Ty::I64);
            let ll = ix::add(build::var(l), i(16 * is));
            let mut body = Vec::new();
            let a = bind(
                k,
                &mut body,
                "a",
                Ty::I64,
                b.byte(ix::add(ll.clone(), i(64 * h))),
            );
            let bb = bind(
                k,
                &mut body,
                "b",
                Ty::I64,
                b.byte(ix::add(ll.clone(), i(64 * h + 32))),
            );
            let hb = bind(
                k,
                &mut body,
                "hb",
                Ty::I64,
                b.byte(ix::add(ll.clone(), i(128 + 32 * h))),
            );
            let quarters = [
                (bit_and(a.clone(), 15), 0),
                (bit_and(bb.clone(), 15), 1),
                (shr(a, 4), 2),
                (shr(bb, 4), 3),
            ];
            for (low, qn) in quarters {
                let high = bit_and(shr(hb.clone(), 2 * qn), 3);
                let q = ix::sub(bit_or(low, shl(high, 4)), i(32));
                let scale = d1[(8 * h + 2 * qn + is) as usize].clone();
                let e = ix::add(ll.clone(), i(128 * h + 32 * qn));
                body.extend(emit(k, e, build::mul(scale, to_f(q))));
            }
            st.push(lp(l, i(0), i(16), LoopKind::Vector(b.vector), body));
        }
    }
    st
}

/// IQ4_XS: 8 sub-blocks of 32 with signed 6-bit scales (a nibble of bytes 4..8 and two
/// bits of the 16-bit word at byte 2, less 32), IQ4_NL's table indexed by nibbles
/// (bytes 8..136, 16 a sub-block: low nibbles first), `x = d * (sc - 32) * table[q]`.
pub(super) fn iq4_xs(k: &mut Kernel, b: &Block, emit: &mut Emit<'_>) -> Vec<Stmt> {
    let mut st = Vec::new();
    let d = bind(k, &mut st, "d", Ty::F32, b.half(0));
    let sh = bind(
        k,
        &mut st,
        "sh",
        Ty::I64,
        bit_or(b.byte(i(2)), shl(b.byte(i(3)), 8)),
    );
    let dl: Vec<Expr> = (0..8)
        .map(|j| {
            let low = bit_and(shr(b.byte(i(4 + j / 2)), 4 * (j % 2)), 15);
            let high = bit_and(shr(sh.clone(), 2 * j), 3);
            let sc = ix::sub(bit_or(low, shl(high, 4)), i(32));
            bind(k, &mut st, "dl", Ty::F32, build::mul(d.clone(), to_f(sc)))
        })
        .collect();
    // Sub-blocks 2g and 2g+1: the vector loop reads a byte of each, four elements.
    for g in 0..4i64 {
        let l = k.var("l", Ty::I64);
        let mut body = Vec::new();
        for half in 0..2i64 {
            let j = 2 * g + half;
            let q = bind(
                k,
                &mut body,
                "q",
                Ty::I64,
                b.byte(ix::add(build::var(l), i(8 + 16 * j))),
            );
            for (hi, nib) in [(0, bit_and(q.clone(), 15)), (1, shr(q, 4))] {
                let v = iq4_value(k, &mut body, nib);
                let e = ix::add(build::var(l), i(32 * j + 16 * hi));
                let value = build::mul(dl[j as usize].clone(), to_f(v));
                body.extend(emit(k, e, value));
            }
        }
        st.push(lp(l, i(0), i(16), LoopKind::Vector(b.vector), body));
    }
    st
}
