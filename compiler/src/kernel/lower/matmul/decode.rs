//! The block decoder: one GGML block as kernel IR, each element's f32 value handed to
//! the statements that consume it. The quantised matmuls and the block gather share it.
//! This file holds the dispatch, the bit helpers and the 32-element formats (Q4_0, Q4_1,
//! Q5_0, Q5_1, Q8_0, IQ4_NL, MXFP4, FP8); `decode_k.rs` holds the 256-element super-blocks.
//!
//! **Decoding matches the reference dequantisation bit for bit** (llama.cpp's
//! `dequantize_row_*`, `runtime::quant`): scales widen from f16, integer scales and
//! quants are exact in f32, and each element is the same f32 multiplies and at most one
//! subtract or add, in the same order.

use super::super::format::BlockFormat;
use super::super::gen::lp;
use super::super::ix;
use super::decode_k;
use crate::kernel::build::{self, i, load, un};
use crate::kernel::{BinOp, BufId, Expr, Kernel, LoopKind, Stmt, Ty, UnOp};

/// What receives each decoded element: `(kernel, element index in the block, value)`
/// gives the statements that consume it.
pub(super) type Emit<'e> = dyn FnMut(&mut Kernel, Expr, Expr) -> Vec<Stmt> + 'e;

/// Where one block is: buffer `w` from byte `base` (an `I64` expression), decoded by
/// vector loops of width hint `vector`.
pub(super) struct Block<'a> {
    pub w: BufId,
    pub base: &'a Expr,
    pub vector: u32,
}

impl Block<'_> {
    /// Byte `off` of the block, as an `I64` in 0..=255.
    pub fn byte(&self, off: Expr) -> Expr {
        load(self.w, ix::add(self.base.clone(), off))
    }

    /// The little-endian f32 at byte `at`.
    pub fn single(&self, at: i64) -> Expr {
        let word = (0..4)
            .map(|n| shl(self.byte(i(at + n)), 8 * n))
            .reduce(bit_or)
            .unwrap_or(i(0));
        un(UnOp::F32Bits, word)
    }

    /// The little-endian f16 at byte `at`, widened to f32.
    pub fn half(&self, at: i64) -> Expr {
        un(
            UnOp::F16Bits,
            bit_or(self.byte(i(at)), shl(self.byte(i(at + 1)), 8)),
        )
    }
}

/// `let name: ty = value` appended to `st`; the variable as an expression.
pub(super) fn bind(k: &mut Kernel, st: &mut Vec<Stmt>, name: &str, ty: Ty, value: Expr) -> Expr {
    let v = k.var(name, ty);
    st.push(Stmt::Let { var: v, value });
    build::var(v)
}

pub(super) fn to_f(e: Expr) -> Expr {
    un(UnOp::ToF32, e)
}

pub(super) fn bit_and(a: Expr, m: i64) -> Expr {
    build::bin(BinOp::BitAnd, a, i(m))
}

/// `a >> n` for a constant `n` (nothing for 0).
pub(super) fn shr(a: Expr, n: i64) -> Expr {
    if n == 0 {
        a
    } else {
        build::bin(BinOp::Shr, a, i(n))
    }
}

/// `a << n` for a constant `n` (nothing for 0).
pub(super) fn shl(a: Expr, n: i64) -> Expr {
    if n == 0 {
        a
    } else {
        build::bin(BinOp::Shl, a, i(n))
    }
}

pub(super) fn bit_or(a: Expr, b: Expr) -> Expr {
    build::bin(BinOp::BitOr, a, b)
}

/// A byte (0..=255) as a signed byte (-128..=127): shift it to the top and back.
pub(super) fn sign_extend_byte(b: Expr) -> Expr {
    shr(shl(b, 56), 56)
}

/// IQ4_NL's 16 values, which a 4-bit quant indexes (IQ4_XS shares them).
const IQ4_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Eight of the values as the bytes of one `i64`, value `j` in byte `j`.
const fn pack_bytes(values: &[i8]) -> i64 {
    let mut packed = 0u64;
    let mut j = 0;
    while j < 8 {
        packed |= (values[j] as u8 as u64) << (8 * j);
        j += 1;
    }
    packed as i64
}

/// MXFP4's 16 values: the e2m1 values doubled (GGML's `kvalues_mxfp4`), so that the
/// block's scale is `2^(e - 128)`, half of E8M0's `2^(e - 127)`.
const MXFP4_VALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// A 16-entry table of signed bytes as two `i64` constants, entries 0..8 and 8..16.
const fn pack_table(values: &[i8; 16]) -> (i64, i64) {
    let (low, high) = values.split_at(8);
    (pack_bytes(low), pack_bytes(high))
}

const IQ4_TABLE: (i64, i64) = pack_table(&IQ4_VALUES);
const MXFP4_TABLE: (i64, i64) = pack_table(&MXFP4_VALUES);

/// `IQ4_VALUES[nib]` (as an `I64`) for a nibble `nib`; see [`table_value`].
pub(super) fn iq4_value(k: &mut Kernel, st: &mut Vec<Stmt>, nib: Expr) -> Expr {
    table_value(k, st, IQ4_TABLE, nib)
}

/// `table[nib]` (as an `I64`) for a nibble `nib` of a packed 16-entry table, without a
/// table in memory: the nibble's top bit picks one of the two `i64` constants, its low
/// three bits the byte, which is sign-extended.
fn table_value(k: &mut Kernel, st: &mut Vec<Stmt>, (low, high): (i64, i64), nib: Expr) -> Expr {
    let n = bind(k, st, "n", Ty::I64, nib);
    let word = build::select(build::bin(BinOp::Lt, n.clone(), i(8)), i(low), i(high));
    let at = shl(bit_and(n, 7), 3);
    sign_extend_byte(bit_and(build::bin(BinOp::Shr, word, at), 255))
}

/// Decodes one block of `fmt` starting at byte `base` of `w` (an `I64` variable). Every
/// element's value goes to `emit(kernel, element index in the block, value)`, which
/// returns the statements consuming it. Per-block scales are bound once, then vector
/// loops (width hint `vector`) over the quants each hand out two or four elements per
/// iteration.
pub(in crate::kernel::lower) fn decode_block(
    k: &mut Kernel,
    vector: u32,
    fmt: BlockFormat,
    w: BufId,
    base: &Expr,
    emit: &mut Emit<'_>,
) -> Vec<Stmt> {
    let b = Block { w, base, vector };
    match fmt {
        BlockFormat::Q4_0 | BlockFormat::Q4_1 => q4(k, &b, fmt == BlockFormat::Q4_1, emit),
        BlockFormat::Q5_0 | BlockFormat::Q5_1 => q5(k, &b, fmt == BlockFormat::Q5_1, emit),
        BlockFormat::Q8_0 => q8_0(k, &b, emit),
        BlockFormat::Iq4Nl => iq4_nl(k, &b, emit),
        BlockFormat::Q2K => decode_k::q2_k(k, &b, emit),
        BlockFormat::Q3K => decode_k::q3_k(k, &b, emit),
        BlockFormat::Q4K | BlockFormat::Q5K => decode_k::q4_k(k, &b, fmt == BlockFormat::Q5K, emit),
        BlockFormat::Q6K => decode_k::q6_k(k, &b, emit),
        BlockFormat::Iq4Xs => decode_k::iq4_xs(k, &b, emit),
        BlockFormat::Mxfp4 => mxfp4(k, &b, emit),
        BlockFormat::F8E4m3 => fp8(k, &b, emit),
    }
}

/// Q4_0 (`x = (q - 8) * d`) or, `with_min`, Q4_1 (`x = d * q + m`): element `j` is the
/// low nibble of byte `j`, element `j + 16` its high nibble.
fn q4(k: &mut Kernel, b: &Block, with_min: bool, emit: &mut Emit<'_>) -> Vec<Stmt> {
    let mut st = Vec::new();
    let d = bind(k, &mut st, "d", Ty::F32, b.half(0));
    let m = with_min.then(|| bind(k, &mut st, "m", Ty::F32, b.half(2)));
    let qs = if m.is_some() { 4 } else { 2 };
    let mut value = |_: &mut Kernel, _: &mut Vec<Stmt>, _: &Expr, nib: Expr| match &m {
        Some(m) => build::add(build::mul(d.clone(), to_f(nib)), m.clone()),
        None => build::mul(to_f(ix::sub(nib, i(8))), d.clone()),
    };
    nibbles(k, b, st, qs, &mut value, emit)
}

/// Q5_0 (`x = (q - 16) * d`) or, `with_min`, Q5_1 (`x = d * q + m`): Q4_0's nibbles
/// with a fifth bit, bit `e` of the little-endian 32-bit word before the nibbles.
fn q5(k: &mut Kernel, b: &Block, with_min: bool, emit: &mut Emit<'_>) -> Vec<Stmt> {
    let mut st = Vec::new();
    let d = bind(k, &mut st, "d", Ty::F32, b.half(0));
    let m = with_min.then(|| bind(k, &mut st, "m", Ty::F32, b.half(2)));
    let qh_at = if m.is_some() { 4 } else { 2 };
    let word = (0..4)
        .map(|n| shl(b.byte(i(qh_at + n)), 8 * n))
        .reduce(bit_or)
        .unwrap_or(i(0));
    let qh = bind(k, &mut st, "qh", Ty::I64, word);
    let mut value = |_: &mut Kernel, _: &mut Vec<Stmt>, e: &Expr, nib: Expr| {
        let fifth = bit_and(build::bin(BinOp::Shr, qh.clone(), e.clone()), 1);
        let v = bit_or(nib, shl(fifth, 4));
        match &m {
            Some(m) => build::add(build::mul(d.clone(), to_f(v)), m.clone()),
            None => build::mul(to_f(ix::sub(v, i(16))), d.clone()),
        }
    };
    nibbles(k, b, st, qh_at + 4, &mut value, emit)
}

/// Q8_0: `x = q * d` for 32 signed bytes.
fn q8_0(k: &mut Kernel, b: &Block, emit: &mut Emit<'_>) -> Vec<Stmt> {
    let mut st = Vec::new();
    let d = bind(k, &mut st, "d", Ty::F32, b.half(0));
    let j = k.var("j", Ty::I64);
    let q = sign_extend_byte(b.byte(ix::add(build::var(j), i(2))));
    let body = emit(k, build::var(j), build::mul(to_f(q), d));
    st.push(lp(j, i(0), i(32), LoopKind::Vector(b.vector), body));
    st
}

/// IQ4_NL: Q4_0's nibbles index the table; `x = d * table[q]`.
fn iq4_nl(k: &mut Kernel, b: &Block, emit: &mut Emit<'_>) -> Vec<Stmt> {
    let mut st = Vec::new();
    let d = bind(k, &mut st, "d", Ty::F32, b.half(0));
    nibbles(k, b, st, 2, &mut scaled_table(d, IQ4_TABLE), emit)
}

/// MXFP4: the E8M0 byte `e` gives `d = 2^(e - 128)` (built as f32 bits: a subnormal for
/// `e < 2`), Q4_0's nibbles index the doubled e2m1 values; `x = d * table[q]`.
fn mxfp4(k: &mut Kernel, b: &Block, emit: &mut Emit<'_>) -> Vec<Stmt> {
    let mut st = Vec::new();
    let e = bind(k, &mut st, "e", Ty::I64, b.byte(i(0)));
    let bits = build::select(
        build::bin(BinOp::Lt, e.clone(), i(2)),
        // Both arms are computed: shift by `e & 1`, which is `e` where this one is chosen.
        build::bin(BinOp::Shl, i(0x0020_0000), bit_and(e.clone(), 1)),
        shl(ix::sub(e, i(1)), 23),
    );
    let d = bind(k, &mut st, "d", Ty::F32, un(UnOp::F32Bits, bits));
    nibbles(k, b, st, 1, &mut scaled_table(d, MXFP4_TABLE), emit)
}

/// How [`nibbles`] makes an element's value: `(kernel, body, element, nibble)`.
type NibbleValue<'v> = dyn FnMut(&mut Kernel, &mut Vec<Stmt>, &Expr, Expr) -> Expr + 'v;

/// The 16 bytes of nibbles from byte `qs` (element `j` in the low nibble of byte `j`,
/// `j + 16` in its high one) after the statements `st`: `value(kernel, body, element,
/// nibble)` makes each element's value (binding what it needs in `body`), which goes to
/// `emit`. Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL and MXFP4 share it.
fn nibbles(
    k: &mut Kernel,
    b: &Block,
    mut st: Vec<Stmt>,
    qs: i64,
    value: &mut NibbleValue<'_>,
    emit: &mut Emit<'_>,
) -> Vec<Stmt> {
    let j = k.var("j", Ty::I64);
    let mut body = Vec::new();
    let q = bind(
        k,
        &mut body,
        "q",
        Ty::I64,
        b.byte(ix::add(build::var(j), i(qs))),
    );
    for (e, nib) in [
        (build::var(j), bit_and(q.clone(), 15)),
        (ix::add(build::var(j), i(16)), shr(q.clone(), 4)),
    ] {
        let v = value(k, &mut body, &e, nib);
        body.extend(emit(k, e, v));
    }
    st.push(lp(j, i(0), i(16), LoopKind::Vector(b.vector), body));
    st
}

/// `d * table[nib]`, the value of IQ4_NL's and MXFP4's nibbles.
fn scaled_table(
    d: Expr,
    table: (i64, i64),
) -> impl FnMut(&mut Kernel, &mut Vec<Stmt>, &Expr, Expr) -> Expr {
    move |k, body, _, nib| build::mul(d.clone(), to_f(table_value(k, body, table, nib)))
}

/// FP8 (e4m3fn) with an f32 block scale `s`: an e4m3 byte `seeeemmm` moved into an f16's
/// bits as `s00eeeemmm0000000` is the same number times 2^-8 (f16's exponent bias is 15,
/// e4m3's 7; subnormals line up too), so `x = f16(bits) * (s * 256)`, which rounds as
/// `e4m3(q) * s` does (scaling by 2^8 is exact; binding refuses scales near f32's range
/// and the NaN codes).
fn fp8(k: &mut Kernel, b: &Block, emit: &mut Emit<'_>) -> Vec<Stmt> {
    let mut st = Vec::new();
    let s = bind(
        k,
        &mut st,
        "s",
        Ty::F32,
        build::mul(b.single(0), build::f(256.0)),
    );
    let j = k.var("j", Ty::I64);
    let mut body = Vec::new();
    let q = bind(
        k,
        &mut body,
        "q",
        Ty::I64,
        b.byte(ix::add(build::var(j), i(4))),
    );
    let bits = bit_or(shl(bit_and(q.clone(), 0x7f), 7), shl(bit_and(q, 0x80), 8));
    let value = build::mul(un(UnOp::F16Bits, bits), s);
    body.extend(emit(k, build::var(j), value));
    st.push(lp(j, i(0), i(32), LoopKind::Vector(b.vector), body));
    st
}
