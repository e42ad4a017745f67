//! The kernel IR's byte buffers and bit operations (`u8` loads, `<<`, `>>`, `&`, `|`,
//! `f16bits`): exact semantics in the reference interpreter, the same bits from LLVM
//! code, PTX translation, the text form, and the verifier's and interpreter's refusals.

use archc_compiler::codegen::llvm::{compile_kernels_with, Options, Target};
use archc_compiler::kernel::build::*;
use archc_compiler::kernel::interp::{f16_to_f32, run_kernel, KBufData};
use archc_compiler::kernel::verify::verify_kernel;
use archc_compiler::kernel::{Access, BinOp, Elem, Kernel, LoopKind, Stmt, Ty, UnOp};

/// For every pair of bytes `p = (bytes[2i], bytes[2i+1])`:
/// `ints[2i] = ((lo << 3) | (hi >> 2)) & 0x3ff`, `ints[2i+1] = (lo << 56) >> 56` (the
/// signed byte), `halves[i] = f16bits(lo | hi << 8)`; `bytes_out[i] = lo + 300` (a store
/// keeps the low 8 bits).
fn bits_kernel() -> Kernel {
    let mut k = Kernel::new("bits");
    let bytes = k.buf("bytes", Elem::U8, Access::Read);
    let ints = k.buf("ints", Elem::I32, Access::Write);
    let halves = k.buf("halves", Elem::F32, Access::Write);
    let bytes_out = k.buf("bytes_out", Elem::U8, Access::Write);
    let p = k.var("p", Ty::I64);
    let lo = k.var("lo", Ty::I64);
    let hi = k.var("hi", Ty::I64);
    let pv = var(p);
    let b = |op, a, c| bin(op, a, c);
    k.body = vec![Stmt::Loop {
        var: p,
        start: i(0),
        end: seq(),
        step: 1,
        kind: LoopKind::Parallel,
        body: vec![
            Stmt::Let {
                var: lo,
                value: load(bytes, mul(pv.clone(), i(2))),
            },
            Stmt::Let {
                var: hi,
                value: load(bytes, add(mul(pv.clone(), i(2)), i(1))),
            },
            Stmt::Store {
                buf: ints,
                index: mul(pv.clone(), i(2)),
                value: b(
                    BinOp::BitAnd,
                    b(
                        BinOp::BitOr,
                        b(BinOp::Shl, var(lo), i(3)),
                        b(BinOp::Shr, var(hi), i(2)),
                    ),
                    i(0x3ff),
                ),
            },
            Stmt::Store {
                buf: ints,
                index: add(mul(pv.clone(), i(2)), i(1)),
                value: b(BinOp::Shr, b(BinOp::Shl, var(lo), i(56)), i(56)),
            },
            Stmt::Store {
                buf: halves,
                index: pv.clone(),
                value: un(
                    UnOp::F16Bits,
                    b(BinOp::BitOr, var(lo), b(BinOp::Shl, var(hi), i(8))),
                ),
            },
            Stmt::Store {
                buf: bytes_out,
                index: pv,
                value: add(var(lo), i(300)),
            },
        ],
    }];
    k
}

/// Every 16-bit pattern once, as little-endian byte pairs.
fn all_pairs() -> Vec<u8> {
    (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect()
}

fn expected(bytes: &[u8]) -> (Vec<i32>, Vec<f32>, Vec<u8>) {
    let mut ints = Vec::new();
    let mut halves = Vec::new();
    let mut out = Vec::new();
    for p in bytes.chunks_exact(2) {
        let (lo, hi) = (i32::from(p[0]), i32::from(p[1]));
        ints.push(((lo << 3) | (hi >> 2)) & 0x3ff);
        ints.push(i32::from(p[0] as i8));
        halves.push(f16_to_f32(u16::from_le_bytes([p[0], p[1]])));
        out.push((lo + 300) as u8);
    }
    (ints, halves, out)
}

/// Equal bits, except that a NaN only needs to be a NaN: hardware conversions quieten
/// signalling NaNs, so their payload is not part of the definition.
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

#[test]
fn interpreter_and_llvm_agree_with_the_definition_on_every_half() {
    let k = bits_kernel();
    verify_kernel(&k).expect("verifies");
    let bytes = all_pairs();
    let n = bytes.len() / 2;
    let (want_ints, want_halves, want_out) = expected(&bytes);

    let mut ints = vec![0i32; 2 * n];
    let mut halves = vec![0f32; n];
    let mut out = vec![0u8; n];
    for t in 0..3 {
        run_kernel(
            &k,
            &mut [
                KBufData::U8Ro(&bytes),
                KBufData::I32(&mut ints),
                KBufData::F32(&mut halves),
                KBufData::U8(&mut out),
            ],
            n as i64,
            0,
            t,
            3,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(ints, want_ints);
    assert!(same_bits(&halves, &want_halves), "interpreter f16bits");
    assert_eq!(out, want_out);

    let prog = compile_kernels_with(
        std::slice::from_ref(&k),
        &Target::host(),
        &Options::no_cache(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut bytes_in = bytes.clone();
    let mut ints = vec![0i32; 2 * n];
    let mut halves = vec![0f32; n];
    let mut out = vec![0u8; n];
    let ptrs = [
        bytes_in.as_mut_ptr(),
        ints.as_mut_ptr().cast::<u8>(),
        halves.as_mut_ptr().cast::<u8>(),
        out.as_mut_ptr(),
    ];
    for t in 0..2 {
        // SAFETY: every buffer holds the elements the kernel touches for seq = n.
        unsafe { prog.call(0, &ptrs, [n as i64, 0], t, 2) };
    }
    assert_eq!(ints, want_ints);
    assert!(same_bits(&halves, &want_halves), "compiled f16bits");
    assert_eq!(out, want_out);
}

#[test]
fn text_form_shows_bytes_and_bit_operations() {
    let text = bits_kernel().to_string();
    for line in [
        "kernel bits(bytes: u8 read, ints: i32 write, halves: f32 write, bytes_out: u8 write) {",
        "    ints[p_0 * 2] = ((lo_1 << 3) | (hi_2 >> 2)) & 1023",
        "    ints[(p_0 * 2) + 1] = (lo_1 << 56) >> 56",
        "    halves[p_0] = f16bits(lo_1 | (hi_2 << 8))",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}

#[test]
fn bit_operations_take_integers_only() {
    let mut k = Kernel::new("bad");
    let out = k.buf("out", Elem::F32, Access::Write);
    k.body = vec![Stmt::Store {
        buf: out,
        index: i(0),
        value: un(UnOp::F16Bits, f(1.0)),
    }];
    let e = verify_kernel(&k).expect_err("f16bits of f32");
    assert_eq!(
        e.to_string(),
        "kernel `bad`: `f16bits(1.0)`: `f16bits` does not apply to f32"
    );
    k.body = vec![Stmt::Store {
        buf: out,
        index: i(0),
        value: bin(BinOp::BitAnd, f(1.0), f(2.0)),
    }];
    let e = verify_kernel(&k).expect_err("f32 & f32");
    assert_eq!(
        e.to_string(),
        "kernel `bad`: `1.0 & 2.0`: `&` does not apply to f32"
    );
}

#[test]
fn a_shift_outside_0_to_63_is_an_interpreter_error() {
    let mut k = Kernel::new("shift");
    let out = k.buf("out", Elem::I32, Access::Write);
    let s = k.var("s", Ty::I64);
    k.body = vec![
        Stmt::Let {
            var: s,
            value: seq(),
        },
        Stmt::Store {
            buf: out,
            index: i(0),
            value: bin(BinOp::Shl, i(1), var(s)),
        },
    ];
    let mut o = [0i32];
    run_kernel(&k, &mut [KBufData::I32(&mut o)], 63, 0, 0, 1).expect("63 is fine");
    let e = run_kernel(&k, &mut [KBufData::I32(&mut o)], 64, 0, 0, 1).expect_err("64");
    assert_eq!(
        e.to_string(),
        "kernel `shift`: `1 << s_0`: shift by 64 bits, outside 0..64"
    );
}

#[test]
fn byte_buffers_and_bit_operations_translate_to_ptx() {
    use archc_compiler::codegen::ptx::{emit_kernels, Sm};
    for sm in [Sm::Sm80, Sm::Sm90] {
        let ks = emit_kernels(&[bits_kernel()], sm).unwrap_or_else(|e| panic!("{e}"));
        let ptx = &ks[0].ptx;
        // The half is widened by the hardware conversion; bytes load as u8.
        for needle in ["cvt.f32.f16", "ld.global.nc.u8", "shl.b64"] {
            assert!(ptx.contains(needle), "no `{needle}` in:\n{ptx}");
        }
    }
}
