//! LLVM code generation of hand-built kernels: the module verifier, differential runs
//! against plain Rust references (reductions, a parallel matmul on two OS threads,
//! bf16/f16 bit patterns, index loads, select/if, scratch, math, shared-operand dot
//! products, short vector loops), determinism, IR snapshots for fixed CPUs, object files
//! and the disk cache. `llvm_kernels.rs` holds the runs against the kernel interpreter.

use archc_compiler::codegen::llvm::{
    compile_kernels_with, emit_llvm_ir, emit_object, CacheSettings, CodegenError, CompiledProgram,
    Options, Origin, Target,
};
use archc_compiler::kernel::build::*;
use archc_compiler::kernel::{Access, BufId, Elem, Kernel, Stmt};
use std::path::Path;

mod common;
use common::*;

// ---------------------------------------------------------------- differential tests

#[test]
fn row_sum_vector_reduction_matches_reference() {
    let rows = 7usize;
    let prog = jit(&[row_sum()]);
    let mut x = values(rows * 1000, 1, 0.0, 1.0);
    let mut out = vec![0f32; rows];
    let bufs = [ptr(&mut x), ptr(&mut out)];
    unsafe { prog.call(0, &bufs, [rows as i64, 0], 0, 1) };
    for r in 0..rows {
        let want: f64 = x[r * 1000..(r + 1) * 1000].iter().map(|&v| v as f64).sum();
        assert_close(out[r], want as f32, 1e-6, &format!("row {r}"));
    }
}

#[test]
fn reductions_vectorize_for_fixed_x86_cpu() {
    let ir = emit_llvm_ir(&[row_sum()], &Target::x86_64(), true).expect("emit");
    assert!(
        ir.contains("fadd reassoc contract <"),
        "the Vector(8) reduction did not become a vector fadd:\n{ir}"
    );
}

fn run_matmul(
    prog: &CompiledProgram,
    seq: usize,
    a: &mut [f32],
    w: &mut [u16],
    odim: usize,
    threads: i64,
) -> Vec<f32> {
    let mut c = vec![f32::NAN; seq * odim];
    let bufs = [ptr(a), ptr(w), ptr(&mut c)];
    // The pointers are shared read-only by every thread; each writes its own chunk of `c`.
    struct Shared([*mut u8; 3]);
    unsafe impl Sync for Shared {}
    let shared = Shared(bufs);
    std::thread::scope(|s| {
        for t in 0..threads {
            let shared = &shared;
            s.spawn(move || unsafe { prog.call(0, &shared.0, [seq as i64, 0], t, threads) });
        }
    });
    c
}

#[test]
fn parallel_bf16_matmul_on_one_and_two_threads() {
    let (seq, kdim, odim) = (3usize, 67usize, 37usize);
    let prog = jit(&[matmul_bf16(kdim as i64, odim as i64)]);
    let mut a = values(seq * kdim, 2, -1.0, 1.0);
    let mut w: Vec<u16> = values(odim * kdim, 3, -0.5, 0.5)
        .into_iter()
        .map(f32_to_bf16)
        .collect();
    let one = run_matmul(&prog, seq, &mut a, &mut w, odim, 1);
    let two = run_matmul(&prog, seq, &mut a, &mut w, odim, 2);
    let five = run_matmul(&prog, seq, &mut a, &mut w, odim, 5);
    assert_eq!(
        one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        two.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "1 vs 2 threads"
    );
    assert_eq!(
        one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        five.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "1 vs 5 threads"
    );
    for m in 0..seq {
        for o in 0..odim {
            let terms: Vec<f64> = (0..kdim)
                .map(|k| a[m * kdim + k] as f64 * bf16_to_f32(w[o * kdim + k]) as f64)
                .collect();
            let want: f64 = terms.iter().sum();
            let scale: f64 = terms.iter().map(|t| t.abs()).sum();
            let got = one[m * odim + o] as f64;
            assert!(
                (got - want).abs() <= 1e-6 * scale,
                "c[{m},{o}] = {got}, want {want} (scale {scale})"
            );
        }
    }
}

#[test]
fn bf16_loads_are_exact_for_every_bit_pattern() {
    let prog = jit(&[convert("bf16_to_f32", Elem::Bf16, Elem::F32)]);
    let mut src: Vec<u16> = (0..=u16::MAX).collect();
    let mut dst = vec![0f32; src.len()];
    unsafe {
        prog.call(
            0,
            &[ptr(&mut src), ptr(&mut dst)],
            [src.len() as i64, 0],
            0,
            1,
        )
    };
    for (s, d) in src.iter().zip(&dst) {
        assert_eq!(d.to_bits(), (*s as u32) << 16, "bf16 {s:#06x}");
    }
}

#[test]
fn bf16_stores_round_to_nearest_even_and_keep_nan() {
    let prog = jit(&[convert("f32_to_bf16", Elem::F32, Elem::Bf16)]);
    let cases: [(u32, u16); 12] = [
        (0x3f80_0000, 0x3f80), // 1.0
        (0x3f80_8000, 0x3f80), // tie, even stays
        (0x3f81_8000, 0x3f82), // tie, odd rounds up
        (0x3f80_8001, 0x3f81), // above the tie
        (0x3f80_7fff, 0x3f80), // below the tie
        (0x8000_0000, 0x8000), // -0.0
        (0x7f7f_ffff, 0x7f80), // max finite rounds to inf
        (0xff80_0000, 0xff80), // -inf
        (0x7fc0_0001, 0x7fc0), // quiet NaN with low payload stays NaN
        (0x7f80_0001, 0x7fc0), // signalling NaN becomes quiet, not inf
        (0xff80_0001, 0xffc0), // negative NaN keeps its sign
        (0x0000_8000, 0x0000), // denormal tie to even zero
    ];
    let mut src: Vec<f32> = cases.iter().map(|c| f32::from_bits(c.0)).collect();
    src.extend(values(4096, 4, -1e6, 1e6));
    let mut dst = vec![0u16; src.len()];
    unsafe {
        prog.call(
            0,
            &[ptr(&mut src), ptr(&mut dst)],
            [src.len() as i64, 0],
            0,
            1,
        )
    };
    for (n, (bits, want)) in cases.iter().enumerate() {
        assert_eq!(dst[n], *want, "f32 {bits:#010x} → bf16");
    }
    for (s, d) in src.iter().zip(&dst) {
        assert_eq!(*d, f32_to_bf16(*s), "f32 {:#010x}", s.to_bits());
    }
}

#[test]
fn f16_loads_are_exact_and_stores_round_to_nearest_even() {
    let prog = jit(&[
        convert("f16_to_f32", Elem::F16, Elem::F32),
        convert("f32_to_f16", Elem::F32, Elem::F16),
    ]);
    let mut src: Vec<u16> = (0..=u16::MAX).collect();
    let mut wide = vec![0f32; src.len()];
    let n = src.len() as i64;
    unsafe { prog.call(0, &[ptr(&mut src), ptr(&mut wide)], [n, 0], 0, 1) };
    for (s, d) in src.iter().zip(&wide) {
        let want = f16_to_f32(*s);
        if want.is_nan() {
            assert!(d.is_nan(), "f16 {s:#06x} → {d}");
        } else {
            assert_eq!(d.to_bits(), want.to_bits(), "f16 {s:#06x}");
        }
    }
    // Every f16 survives the round trip, NaNs as NaNs.
    let mut back = vec![0u16; src.len()];
    unsafe { prog.call(1, &[ptr(&mut wide), ptr(&mut back)], [n, 0], 0, 1) };
    for (s, b) in src.iter().zip(&back) {
        if f16_to_f32(*s).is_nan() {
            assert!(
                b & 0x7c00 == 0x7c00 && b & 0x3ff != 0,
                "NaN {s:#06x} → {b:#06x}"
            );
        } else {
            assert_eq!(s, b, "round trip of {s:#06x}");
        }
    }
    let cases: [(f32, u16); 7] = [
        (1.0, 0x3c00),
        (-2.0, 0xc000),
        (65504.0, 0x7bff),
        (65520.0, 0x7c00), // the tie above max finite rounds to inf
        (0.1, 0x2e66),
        (6e-8, 0x0001),
        (1e-8, 0x0000),
    ];
    let mut src: Vec<f32> = cases.iter().map(|c| c.0).collect();
    let mut dst = vec![0u16; src.len()];
    unsafe {
        prog.call(
            1,
            &[ptr(&mut src), ptr(&mut dst)],
            [src.len() as i64, 0],
            0,
            1,
        )
    };
    for (n, (x, want)) in cases.iter().enumerate() {
        assert_eq!(dst[n], *want, "f32 {x:e} → f16");
    }
}

#[test]
fn i32_index_loads_sign_extend() {
    let prog = jit(&[gather()]);
    let mut table: Vec<f32> = (0..16).map(|v| v as f32 * 1.5).collect();
    let mut idx: Vec<i32> = vec![-4, -1, 0, 7, 11, -3];
    let mut out = vec![0f32; idx.len()];
    let n = idx.len() as i64;
    unsafe {
        prog.call(
            0,
            &[ptr(&mut table), ptr(&mut idx), ptr(&mut out)],
            [n, 0],
            0,
            1,
        )
    };
    let want: Vec<f32> = idx.iter().map(|&v| table[(v + 4) as usize]).collect();
    assert_eq!(out, want);
}

#[test]
fn select_if_and_integer_division() {
    let prog = jit(&[select_if()]);
    let mut x = vec![-2.0f32, -0.0, 0.0, 0.5, 3.0, -7.25, f32::NAN, 1e30, -1e-30];
    let mut d: Vec<i32> = vec![1, 2, 3, 0, 5, -4, 7, 0, 17];
    let n = x.len();
    let (mut a, mut b, mut q) = (vec![9f32; n], vec![9f32; n], vec![9i32; 2 * n]);
    let bufs = [
        ptr(&mut x),
        ptr(&mut d),
        ptr(&mut a),
        ptr(&mut b),
        ptr(&mut q),
    ];
    unsafe { prog.call(0, &bufs, [n as i64, 0], 0, 1) };
    for k in 0..n {
        let v = x[k];
        let relu = if v > 0.0 { v } else { 0.0 };
        assert_eq!(a[k].to_bits(), relu.to_bits(), "select at {k}");
        let want_b = if v < 0.0 { -1.0 } else { v * 2.0 };
        assert!(
            b[k].to_bits() == want_b.to_bits() || (b[k].is_nan() && want_b.is_nan()),
            "if at {k}: {} vs {want_b}",
            b[k]
        );
        let (qd, qr) = if d[k] == 0 {
            (0, 0)
        } else {
            (17 / d[k], 17 % d[k])
        };
        assert_eq!(
            (q[2 * k], q[2 * k + 1]),
            (qd, qr),
            "17 / {} and 17 % {}",
            d[k],
            d[k]
        );
    }
}

#[test]
fn scratch_on_stack_and_heap() {
    // 64 f32 on the stack; 100 000 f32 (400 KB) from the heap; a bf16 scratch rounds.
    let kernels = [
        reverse_rows("rev_stack", 64, Elem::F32),
        reverse_rows("rev_heap", 100_000, Elem::F32),
        reverse_rows("rev_bf16", 16, Elem::Bf16),
    ];
    let prog = jit(&kernels);
    let rows = 5usize;
    let mut x = values(rows * 16, 5, -3.0, 3.0);
    for (kn, round) in [(0, false), (1, false), (2, true)] {
        for threads in [1i64, 2] {
            let mut out = vec![0f32; rows * 16];
            for t in 0..threads {
                unsafe {
                    prog.call(
                        kn,
                        &[ptr(&mut x), ptr(&mut out)],
                        [rows as i64, 0],
                        t,
                        threads,
                    )
                };
            }
            for r in 0..rows {
                for j in 0..16 {
                    let v = x[r * 16 + 15 - j];
                    let want = if round {
                        bf16_to_f32(f32_to_bf16(v))
                    } else {
                        v
                    };
                    assert_eq!(out[r * 16 + j], want, "kernel {kn}, row {r}, col {j}");
                }
            }
        }
    }
}

#[test]
fn math_functions_match_f32_std() {
    let (k, names) = math();
    let prog = jit(&[k]);
    let n = 4099usize;
    let mut x = values(n, 6, -8.0, 8.0);
    let mut y = values(n, 7, -3.0, 3.0);
    x[0] = 0.0;
    x[1] = -0.0;
    x[2] = f32::NAN;
    y[3] = f32::NAN;
    let mut out = vec![0f32; names.len() * n];
    unsafe {
        prog.call(
            0,
            &[ptr(&mut x), ptr(&mut y), ptr(&mut out)],
            [n as i64, 0],
            0,
            1,
        )
    };
    for (o, name) in names.iter().enumerate() {
        for e in 0..n {
            let want = math_ref(name, x[e], y[e]);
            let got = out[o * n + e];
            // sin and cos near their zeros: compare to the argument's scale.
            if matches!(*name, "sin" | "cos") && want.abs() < 1e-3 {
                assert!(
                    (got - want).abs() <= 1e-6,
                    "{name}({}) = {got}, want {want}",
                    x[e]
                );
            } else {
                assert_close(got, want, 1e-6, &format!("{name}({}, {})", x[e], y[e]));
            }
        }
    }
}

// ---------------------------------------------------------------- errors

#[test]
fn type_errors_are_errors_not_panics() {
    let mut k = Kernel::new("bad");
    let x = k.buf("x", Elem::F32, Access::Read);
    let o = k.buf("o", Elem::F32, Access::Write);
    k.body = vec![Stmt::Store {
        buf: o,
        index: i(0),
        value: add(load(x, i(0)), i(1)),
    }];
    let err = compile_kernels_with(&[k.clone()], &Target::host(), &Options::no_cache())
        .expect_err("f32 + i64 must be rejected");
    assert!(matches!(err, CodegenError::Kernel { .. }), "{err:?}");
    let mut k2 = Kernel::new("store_to_read");
    let x = k2.buf("x", Elem::F32, Access::Read);
    k2.body = vec![Stmt::Store {
        buf: x,
        index: i(0),
        value: f(1.0),
    }];
    let mut k3 = Kernel::new("bad_buf");
    k3.body = vec![Stmt::Store {
        buf: BufId(3),
        index: i(0),
        value: f(1.0),
    }];
    let text = [k, k2, k3]
        .iter()
        .map(
            |k| match emit_llvm_ir(std::slice::from_ref(k), &Target::x86_64(), false) {
                Ok(_) => panic!("kernel `{}` was accepted", k.name),
                Err(e) => e.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("\n");
    check_snapshot("errors", &text);
}

#[test]
fn aarch64_cannot_be_jitted_on_x86_but_emits_objects() {
    let target = Target::aarch64();
    if !target.runs_here() {
        let err = compile_kernels_with(&[row_sum()], &target, &Options::no_cache())
            .expect_err("foreign target");
        assert!(matches!(err, CodegenError::Target { .. }), "{err:?}");
    }
    let obj = emit_object(&[row_sum(), matmul_bf16(64, 8)], &target).expect("aarch64 object");
    assert_eq!(&obj[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([obj[18], obj[19]]),
        183,
        "e_machine is EM_AARCH64"
    );
    let ir = emit_llvm_ir(&[row_sum()], &target, true).expect("aarch64 ir");
    assert!(ir.contains("target triple = \"aarch64-unknown-linux-gnu\""));
}

#[test]
fn x86_object_is_elf_and_exports_kernels() {
    let obj = emit_object(&[row_sum(), gather()], &Target::x86_64()).expect("object");
    assert_eq!(&obj[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([obj[18], obj[19]]),
        62,
        "e_machine is EM_X86_64"
    );
    let has = |s: &str| obj.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(has("archc_k0_row_sum") && has("archc_k1_gather"));
}

// ---------------------------------------------------------------- determinism, snapshots

fn all_kernels() -> Vec<Kernel> {
    vec![
        row_sum(),
        matmul_bf16(64, 32),
        convert("f32_to_bf16", Elem::F32, Elem::Bf16),
        convert("f16_to_f32", Elem::F16, Elem::F32),
        gather(),
        select_if(),
        reverse_rows("rev_heap", 100_000, Elem::F32),
        math().0,
    ]
}

#[test]
fn output_is_deterministic() {
    let ks = all_kernels();
    for target in [Target::x86_64(), Target::aarch64()] {
        for optimized in [false, true] {
            let a = emit_llvm_ir(&ks, &target, optimized).expect("emit");
            let b = emit_llvm_ir(&ks, &target, optimized).expect("emit");
            assert_eq!(a, b, "{} optimized={optimized}", target.triple);
        }
        let a = emit_object(&ks, &target).expect("object");
        let b = emit_object(&ks, &target).expect("object");
        assert!(a == b, "object bytes differ for {}", target.triple);
    }
}

fn check_snapshot(name: &str, text: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/llvm");
    insta::with_settings!({snapshot_path => dir, prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!(name, text)
    });
}

/// The IR of one kernel without the module header lines that name the LLVM build.
fn ir_body(ir: &str) -> String {
    ir.lines()
        .filter(|l| !l.starts_with("; ModuleID") && !l.starts_with("source_filename"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn llvm_ir_snapshots_x86_64() {
    let t = Target::x86_64();
    for k in [
        row_sum(),
        convert("f32_to_bf16", Elem::F32, Elem::Bf16),
        select_if(),
        reverse_rows("rev_stack", 64, Elem::F32),
    ] {
        let ir = emit_llvm_ir(std::slice::from_ref(&k), &t, false).expect("emit");
        check_snapshot(&format!("{}.unopt", k.name), &ir_body(&ir));
    }
    // The row length from `past`, so the optimized loop is not fully unrolled.
    let ir = emit_llvm_ir(&[row_sum_n(past())], &t, true).expect("emit");
    check_snapshot("row_sum.opt", &ir_body(&ir));
}

#[test]
fn llvm_modules_verify_for_all_targets() {
    // `emit_llvm_ir` runs the module verifier; every kernel here must pass it on every
    // target, before and after optimization.
    let ks = all_kernels();
    for target in [Target::host(), Target::x86_64(), Target::aarch64()] {
        for optimized in [false, true] {
            if let Err(e) = emit_llvm_ir(&ks, &target, optimized) {
                panic!("{} optimized={optimized}: {e}", target.triple);
            }
        }
    }
}

// ---------------------------------------------------------------- cache

#[test]
fn cache_settings_from_environment() {
    let get = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    let dir = |vars| CacheSettings::from_vars(get(vars)).dir;
    assert_eq!(dir(&[("HOME", "/h")]), Some("/h/.cache/archc".into()));
    assert_eq!(
        dir(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]),
        Some("/x/archc".into())
    );
    assert_eq!(
        dir(&[
            ("HOME", "/h"),
            ("XDG_CACHE_HOME", "/x"),
            ("ARCHC_CACHE_DIR", "/c")
        ]),
        Some("/c".into())
    );
    assert_eq!(
        dir(&[("ARCHC_CACHE_DIR", "/c"), ("ARCHC_NO_CACHE", "1")]),
        None
    );
    assert_eq!(
        dir(&[("ARCHC_CACHE_DIR", "/c"), ("ARCHC_NO_CACHE", "0")]),
        Some("/c".into())
    );
}

#[test]
fn second_compile_loads_from_the_cache() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        cache: Some(tmp.path().to_path_buf()),
        cc: None,
    };
    let ks = [row_sum(), gather()];
    let run = |p: &CompiledProgram| {
        let mut x = values(2000, 8, 0.0, 1.0);
        let mut out = vec![0f32; 2];
        unsafe { p.call(0, &[ptr(&mut x), ptr(&mut out)], [2, 0], 0, 1) };
        out
    };
    let first = compile_kernels_with(&ks, &Target::host(), &opts).expect("first");
    assert_eq!(first.origin(), Origin::Built, "{:?}", first.warnings());
    let second = compile_kernels_with(&ks, &Target::host(), &opts).expect("second");
    assert_eq!(second.origin(), Origin::Cache);
    assert!(second.warnings().is_empty());
    assert_eq!(run(&first), run(&second));
    // Another kernel list is another entry.
    let other = compile_kernels_with(&ks[..1], &Target::host(), &opts).expect("other");
    assert_eq!(other.origin(), Origin::Built);

    // A damaged library is detected, removed and rebuilt, with a warning.
    let key = archc_compiler::codegen::llvm::cache_key(&ks, &Target::host());
    let so = tmp.path().join(format!("{key}.so"));
    // Replaced, not truncated in place: the loaded copy stays mapped in this process.
    let bytes = std::fs::read(&so).expect("cached library");
    let damaged = tmp.path().join("damaged");
    std::fs::write(&damaged, &bytes[..bytes.len() / 2]).expect("write");
    std::fs::rename(&damaged, &so).expect("replace");
    let third = compile_kernels_with(&ks, &Target::host(), &opts).expect("third");
    assert_eq!(third.origin(), Origin::Built);
    assert_eq!(third.warnings().len(), 1, "{:?}", third.warnings());
    assert!(third.warnings()[0].contains("does not match its manifest"));
    assert_eq!(run(&third), run(&first));

    // A FIFO planted where the manifest goes would block a reader forever: it is refused
    // as not a regular file, removed, and the entry rebuilt.
    let man = tmp.path().join(format!("{key}.manifest"));
    std::fs::remove_file(&man).expect("remove manifest");
    let made = std::process::Command::new("mkfifo").arg(&man).status();
    if made.is_ok_and(|s| s.success()) {
        let fourth = compile_kernels_with(&ks, &Target::host(), &opts).expect("fourth");
        assert_eq!(fourth.origin(), Origin::Built);
        assert!(
            fourth.warnings()[0].contains("not a regular file"),
            "{:?}",
            fourth.warnings()
        );
        assert!(std::fs::metadata(&man).expect("manifest").is_file());
        assert_eq!(run(&fourth), run(&first));
    }
}

#[test]
fn missing_c_compiler_falls_back_to_the_jit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        cache: Some(tmp.path().join("nested")),
        cc: Some("/nonexistent/bin/cc".into()),
    };
    let p = compile_kernels_with(&[row_sum()], &Target::host(), &opts).expect("compile");
    assert_eq!(p.origin(), Origin::Jit);
    assert_eq!(p.warnings().len(), 1);
    assert!(
        p.warnings()[0].contains("cannot run the C compiler"),
        "{:?}",
        p.warnings()
    );
    let mut x = vec![1f32; 1000];
    let mut out = [0f32];
    unsafe { p.call(0, &[ptr(&mut x), ptr(&mut out)], [1, 0], 0, 1) };
    assert_eq!(out[0], 1000.0);
}
