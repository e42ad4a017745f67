//! f8 (e4m3fn) weight buffers in the kernel IR: every one of the 256 bit patterns widens to
//! the same f32 in the reference interpreter and in LLVM-compiled code, equal to a decode
//! written here from the format's definition; the text form names f8; stores into f8 are
//! refused by the verifier, the interpreter and the LLVM translation; PTX translates it.

use archc_compiler::codegen::llvm::{compile_kernels_with, Options, Target};
use archc_compiler::kernel::build::*;
use archc_compiler::kernel::interp::{f8e4m3_to_f32, run_kernel, KBufData};
use archc_compiler::kernel::verify::verify_kernel;
use archc_compiler::kernel::{Access, Elem, Kernel, LoopKind, Stmt, Ty};

/// `out[p] = w[p]` for `p in 0..seq`: one widening load per element.
fn widen_kernel() -> Kernel {
    let mut k = Kernel::new("widen");
    let w = k.buf("w", Elem::F8, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let p = k.var("p", Ty::I64);
    k.body = vec![Stmt::Loop {
        var: p,
        start: i(0),
        end: seq(),
        step: 1,
        kind: LoopKind::Parallel,
        body: vec![Stmt::Store {
            buf: out,
            index: var(p),
            value: load(w, var(p)),
        }],
    }];
    k
}

/// The e4m3fn definition, computed in f64 from the fields: `(-1)^s * 2^(e-7) * (1 + m/8)`
/// for `e > 0`, `(-1)^s * 2^-6 * m/8` for `e == 0`, NaN for `e == 15, m == 7`.
fn reference(b: u8) -> f32 {
    let s = if b & 0x80 != 0 { -1.0f64 } else { 1.0 };
    let e = i32::from((b >> 3) & 0xf);
    let m = f64::from(b & 7);
    if e == 15 && m == 7.0 {
        return f32::NAN;
    }
    let v = if e == 0 {
        s * 2f64.powi(-6) * (m / 8.0)
    } else {
        s * 2f64.powi(e - 7) * (1.0 + m / 8.0)
    };
    v as f32
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn assert_same(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (b, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            same(*g, *w),
            "{what}: f8 {b:#04x} decodes to {g:e} ({:#010x}), expected {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

#[test]
fn the_reference_decode_has_the_formats_landmarks() {
    // Largest finite, smallest normal, smallest subnormal, signed zero, both NaNs.
    assert_eq!(reference(0x7e), 448.0);
    assert_eq!(reference(0x08), 2f32.powi(-6));
    assert_eq!(reference(0x01), 2f32.powi(-9));
    assert_eq!(reference(0x38), 1.0);
    assert_eq!(reference(0x80).to_bits(), (-0.0f32).to_bits());
    assert!(reference(0x7f).is_nan() && reference(0xff).is_nan());
    assert_eq!((0..=255u8).filter(|&b| reference(b).is_nan()).count(), 2);
}

#[test]
fn interpreter_and_llvm_decode_every_f8_pattern_exactly() {
    let k = widen_kernel();
    verify_kernel(&k).expect("verifies");
    let bytes: Vec<u8> = (0..=255).collect();
    let n = bytes.len();
    let want: Vec<f32> = bytes.iter().map(|&b| reference(b)).collect();

    let direct: Vec<f32> = bytes.iter().map(|&b| f8e4m3_to_f32(b)).collect();
    assert_same(&direct, &want, "f8e4m3_to_f32");

    let mut out = vec![0f32; n];
    for t in 0..3 {
        run_kernel(
            &k,
            &mut [KBufData::F8Ro(&bytes), KBufData::F32(&mut out)],
            n as i64,
            0,
            t,
            3,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_same(&out, &want, "interpreter");
    // The NaNs keep their sign, as a widening conversion does.
    assert!(out[0x7f].is_sign_positive() && out[0xff].is_sign_negative());

    let prog = compile_kernels_with(
        std::slice::from_ref(&k),
        &Target::host(),
        &Options::no_cache(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut bytes_in = bytes.clone();
    let mut out = vec![0f32; n];
    let ptrs = [bytes_in.as_mut_ptr(), out.as_mut_ptr().cast::<u8>()];
    for t in 0..2 {
        // SAFETY: both buffers hold the `n` elements the kernel touches for seq = n.
        unsafe { prog.call(0, &ptrs, [n as i64, 0], t, 2) };
    }
    assert_same(&out, &want, "compiled");
    assert!(out[0x7f].is_sign_positive() && out[0xff].is_sign_negative());
}

#[test]
fn text_form_names_f8() {
    let text = widen_kernel().to_string();
    let line = "kernel widen(w: f8 read, out: f32 write) {";
    assert!(text.contains(line), "missing `{line}` in:\n{text}");
}

/// A kernel that stores into an f8 buffer of the given access.
fn store_kernel(access: Access) -> Kernel {
    let mut k = Kernel::new("bad");
    let w = k.buf("w", Elem::F8, access);
    let p = k.var("p", Ty::I64);
    k.body = vec![Stmt::Loop {
        var: p,
        start: i(0),
        end: seq(),
        step: 1,
        kind: LoopKind::Parallel,
        body: vec![Stmt::Store {
            buf: w,
            index: var(p),
            value: f(1.0),
        }],
    }];
    k
}

#[test]
fn a_store_into_f8_is_refused() {
    for access in [Access::Write, Access::ReadWrite] {
        let k = store_kernel(access);
        let e = verify_kernel(&k).expect_err("store into f8");
        assert_eq!(
            e.to_string(),
            "kernel `bad`: `w[p_0] = 1.0`: buffer `w` is f8, which is read-only (weights); \
             kernels cannot store f8"
        );
        // The interpreter verifies first, so it refuses the same kernel.
        let mut mem = [0u8; 4];
        let e = run_kernel(&k, &mut [KBufData::F8(&mut mem)], 4, 0, 0, 1).expect_err("run");
        assert!(e.to_string().contains("f8"), "{e}");
        assert_eq!(mem, [0; 4], "nothing was stored");
        // The LLVM translation refuses it too, should an unverified kernel reach it.
        let Err(e) = compile_kernels_with(
            std::slice::from_ref(&k),
            &Target::host(),
            &Options::no_cache(),
        ) else {
            panic!("codegen compiled a store into f8");
        };
        assert!(e.to_string().contains("f8"), "{e}");
    }
}

#[test]
fn f8_loads_translate_to_ptx() {
    use archc_compiler::codegen::ptx::{emit_kernels, Sm};
    for sm in [Sm::Sm80, Sm::Sm90] {
        let ks = emit_kernels(&[widen_kernel()], sm).unwrap_or_else(|e| panic!("{e}"));
        let ptx = &ks[0].ptx;
        // The byte is read as such and widened in registers.
        for needle in ["ld.global.nc.u8", "selp.b32"] {
            assert!(ptx.contains(needle), "no `{needle}` in:\n{ptx}");
        }
    }
}
