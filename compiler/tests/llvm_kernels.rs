//! LLVM code generation of hand-built kernels against the kernel interpreter: every
//! operation and element type, inline `exp`/`tanh` against f64, the dot-product and
//! short-loop idioms of the CPU target, and the tokens-in-lanes tiles on CPUs without
//! bf16 dot products.

mod common;

use archc_compiler::codegen::llvm::{
    compile_kernels_with, emit_llvm_ir, CompiledProgram, Options, Origin, Target,
};
use archc_compiler::kernel::build::*;
use archc_compiler::kernel::interp::KData;
use archc_compiler::kernel::{
    Access, BinOp, Elem, Kernel, LoopKind, Stmt, Tile, TileOut, TileRef, Ty, UnOp,
};
use common::*;

// ---------------------------------------------------------------- against the kernel interpreter

#[test]
fn compiled_kernels_match_the_kernel_interpreter() {
    let ks = standard_kernels();
    // Sums may be reassociated in Vector loops: relative, with positive terms.
    check_standard_kernels(&jit(&ks), &ks, 1e-6);
}

#[test]
fn cached_library_resolves_libm_and_is_shareable() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<CompiledProgram>();
    let tmp = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        cache: Some(tmp.path().to_path_buf()),
        cc: None,
    };
    let (k, names) = math();
    let p = compile_kernels_with(&[k], &Target::host(), &opts).expect("compile");
    assert_eq!(p.origin(), Origin::Built, "{:?}", p.warnings());
    let n = 64usize;
    let mut x = values(n, 20, -4.0, 4.0);
    let mut y = values(n, 21, -2.0, 2.0);
    let mut out = vec![0f32; names.len() * n];
    unsafe {
        p.call(
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
            if matches!(*name, "sin" | "cos") && want.abs() < 1e-3 {
                assert!((out[o * n + e] - want).abs() <= 1e-6);
            } else {
                assert_close(out[o * n + e], want, 1e-6, name);
            }
        }
    }
}

// ---------------------------------------------------------------- inline exp and tanh

/// `e[i] = exp(x[i])`, `t[i] = tanh(x[i])` in one Vector(16) loop.
fn exp_tanh() -> Kernel {
    let mut k = Kernel::new("exp_tanh");
    let x = k.buf("x", Elem::F32, Access::Read);
    let e = k.buf("e", Elem::F32, Access::Write);
    let t = k.buf("t", Elem::F32, Access::Write);
    let ix = k.var("i", Ty::I64);
    k.body = vec![Stmt::Loop {
        var: ix,
        start: i(0),
        end: seq(),
        step: 1,
        kind: LoopKind::Vector(16),
        body: vec![
            Stmt::Store {
                buf: e,
                index: var(ix),
                value: un(UnOp::Exp, load(x, var(ix))),
            },
            Stmt::Store {
                buf: t,
                index: var(ix),
                value: un(UnOp::Tanh, load(x, var(ix))),
            },
        ],
    }];
    k
}

/// The inline exp and tanh against f64 over a dense sweep of `[-110, 95]` and the special
/// values, within the errors their module states (exp 2e-7, tanh 4e-7 relative; subnormal
/// exp results within 1.5e-45 absolute).
#[test]
fn inline_exp_and_tanh_against_f64() {
    let prog = jit(&[exp_tanh()]);
    let mut x: Vec<f32> = (0..200_001)
        .map(|j| -110.0 + j as f32 * 0.001_025)
        .collect();
    x.extend(values(20_000, 11, -1.0, 1.0));
    x.extend(values(20_000, 12, -1e-3, 1e-3));
    x.extend([
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        88.72,
        88.73,
        -87.33,
        -103.97,
        -104.5,
        -1e30,
        1e30,
        1e-30,
        0.25,
        -0.25,
        0.249_999_98,
    ]);
    let n = x.len();
    let (mut e, mut t) = (vec![0f32; n], vec![0f32; n]);
    unsafe {
        prog.call(
            0,
            &[ptr(&mut x), ptr(&mut e), ptr(&mut t)],
            [n as i64, 0],
            0,
            1,
        )
    };
    let (mut worst_e, mut worst_t) = (0f64, 0f64);
    for j in 0..n {
        let xv = x[j] as f64;
        let (we, wt) = (xv.exp(), xv.tanh());
        if xv.is_nan() {
            assert!(e[j].is_nan() && t[j].is_nan(), "NaN in, not NaN out");
            continue;
        }
        if we > f32::MAX as f64 {
            assert_eq!(e[j], f32::INFINITY, "exp({xv}) should overflow");
        } else if we < f32::MIN_POSITIVE as f64 {
            assert!(
                (e[j] as f64 - we).abs() <= 1.5e-45,
                "exp({xv}) = {:e}, want {we:e}",
                e[j]
            );
        } else {
            let rel = (e[j] as f64 - we).abs() / we;
            worst_e = worst_e.max(rel);
            assert!(
                rel <= 2e-7,
                "exp({xv}) = {:e}, want {we:e} (rel {rel:e})",
                e[j]
            );
        }
        let rel = if wt == 0.0 {
            (t[j] as f64).abs()
        } else {
            (t[j] as f64 - wt).abs() / wt.abs()
        };
        worst_t = worst_t.max(rel);
        assert!(
            rel <= 4e-7,
            "tanh({xv}) = {:e}, want {wt:e} (rel {rel:e})",
            t[j]
        );
    }
    // The special values sit at the end, in the order listed.
    assert_eq!(e[n - 5], f32::INFINITY, "exp(1e30)");
    assert_eq!(e[n - 6], 0.0, "exp(-1e30)");
    assert_eq!(e[n - 12], 0.0, "exp(-inf)");
    assert_eq!(t[n - 5], 1.0, "tanh(1e30)");
    assert_eq!(t[n - 12], -1.0, "tanh(-inf)");
    eprintln!("max rel error: exp {worst_e:e}, tanh {worst_t:e}");
}

/// The exp of a Vector loop is vector code for a fixed AVX-512 CPU: no libm call.
#[test]
fn vector_exp_is_inline_vector_code() {
    let ir = emit_llvm_ir(&[exp_tanh()], &Target::x86_64(), true).expect("emit");
    assert!(!ir.contains("@expf"), "a call to expf remains:\n{ir}");
    assert!(!ir.contains("@tanhf"), "a call to tanhf remains:\n{ir}");
    assert!(
        ir.contains("<16 x float>"),
        "the exp/tanh loop did not vectorize:\n{ir}"
    );
}

/// `out[r*ROWS + o] = sum_j w[(r*ROWS + o)*n + j] * x[j]`: a tile of `ROWS` rows of `w`
/// and the one column `x` (dot products sharing the `x` load, which the CPU target runs
/// as one vector accumulator each with one butterfly at the end), row blocks parallel.
fn rows_dot(n: i64) -> Kernel {
    const ROWS: i64 = 6;
    let mut k = Kernel::new("rows_dot");
    let x = k.buf("x", Elem::F32, Access::Read);
    let w = k.buf("w", Elem::F32, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let r = k.var("r", Ty::I64);
    let accs: Vec<_> = (0..ROWS).map(|_| k.var("acc", Ty::F32)).collect();
    let row = |o: i64| add(mul(var(r), i(ROWS)), i(o));
    let tile = Tile {
        start: i(0),
        end: i(n),
        lanes: 1,
        rows: (0..ROWS)
            .map(|o| TileRef {
                buf: w,
                base: mul(row(o), i(n)),
            })
            .collect(),
        cols: vec![TileRef { buf: x, base: i(0) }],
        out: TileOut::Sums(accs.clone()),
    };
    let mut body = vec![Stmt::Tile(Box::new(tile))];
    for (o, &acc) in accs.iter().enumerate() {
        body.push(Stmt::Store {
            buf: out,
            index: row(o as i64),
            value: var(acc),
        });
    }
    k.body = vec![Stmt::Loop {
        var: r,
        start: i(0),
        end: seq(),
        step: 1,
        kind: LoopKind::Parallel,
        body,
    }];
    k
}

/// `out[r*16 + j] = max(a[..], b[..]) * 2 + a[..]` over a Vector(8) loop of 16 constant
/// iterations (kept a loop for the vectorizer, not unrolled first), rows parallel.
fn short_vector_loop() -> Kernel {
    let mut k = Kernel::new("short_vector_loop");
    let a = k.buf("a", Elem::F32, Access::Read);
    let b = k.buf("b", Elem::F32, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let r = k.var("r", Ty::I64);
    let j = k.var("j", Ty::I64);
    let at = add(mul(var(r), i(16)), var(j));
    let m = bin(BinOp::Max, load(a, at.clone()), load(b, at.clone()));
    k.body = vec![Stmt::Loop {
        var: r,
        start: i(0),
        end: seq(),
        step: 1,
        kind: LoopKind::Parallel,
        body: vec![Stmt::Loop {
            var: j,
            start: i(0),
            end: i(16),
            step: 1,
            kind: LoopKind::Vector(8),
            body: vec![Stmt::Store {
                buf: out,
                index: at.clone(),
                value: add(mul(m, f(2.0)), load(a, at)),
            }],
        }],
    }];
    k
}

#[test]
fn shared_operand_dots_run_as_vector_fmas_and_match() {
    let ir = emit_llvm_ir(&[rows_dot(37)], &Target::x86_64(), false).expect("emit");
    assert!(
        ir.contains("llvm.fmuladd.v16f32"),
        "the 6 dot products did not become vector FMAs:\n{ir}"
    );
    // 37 = two vectors and a remainder of 5; 3: the remainder only; 0: no iteration.
    for n in [37i64, 3, 0, 64] {
        let k = rows_dot(n);
        let prog = jit(std::slice::from_ref(&k));
        let rows = 5usize;
        let nu = n as usize;
        for threads in [1i64, 2] {
            let bufs = [
                Some(KData::F32(values(nu, 20, 0.0, 1.0))),
                Some(KData::F32(values(rows * 6 * nu, 21, 0.0, 1.0))),
                Some(KData::F32(vec![f32::NAN; rows * 6])),
            ];
            // Positive terms: reassociation and contraction stay within 1e-6.
            check_against_interpreter(&prog, 0, &k, &bufs, rows as i64, threads, 1e-6);
        }
    }
}

#[test]
fn short_constant_vector_loops_are_not_unrolled_first_and_match() {
    let k = short_vector_loop();
    let ir = emit_llvm_ir(std::slice::from_ref(&k), &Target::x86_64(), false).expect("emit");
    assert!(
        ir.contains("llvm.loop.unroll.disable"),
        "the 16-iteration Vector(8) loop lacks its no-unroll hint:\n{ir}"
    );
    let prog = jit(std::slice::from_ref(&k));
    let rows = 3usize;
    let bufs = [
        Some(KData::F32(values(rows * 16, 30, -2.0, 2.0))),
        Some(KData::F32(values(rows * 16, 31, -2.0, 2.0))),
        Some(KData::F32(vec![f32::NAN; rows * 16])),
    ];
    // `max * 2 + a` may fuse into one FMA: within one rounding of the interpreter.
    check_against_interpreter(&prog, 0, &k, &bufs, rows as i64, 1, 1e-6);
}

/// The tokens-in-lanes tiles of a bf16-activation prefill: a CPU without AVX512-BF16
/// (x86-64-v4, an aarch64) gets the FMA form, and its module, optimized or not, names no
/// x86 bf16 intrinsic.
#[test]
fn lanes_tiles_name_no_bf16_intrinsic_where_the_cpu_lacks_it() {
    use archc_compiler::kernel::lower::{program_with, KernelOptions, Lowering};
    use archc_compiler::{passes, testing, Mode};
    let mut spec = testing::llama(testing::swiglu(48));
    spec.dtype = archc_spec::DType::Bf16;
    let graph = archc_compiler::lower(&spec, Mode::Prefill).expect("lower");
    let lowering = Lowering {
        options: KernelOptions {
            bf16_activations: true,
            ..KernelOptions::default()
        },
        ..Lowering::default()
    };
    let program = program_with(&passes::optimize(&graph), &lowering).expect("program");
    let linears: Vec<Kernel> = program
        .kernels
        .iter()
        .filter(|k| k.name.starts_with("linear"))
        .cloned()
        .collect();
    assert!(!linears.is_empty(), "the prefill has linear kernels");
    for target in [Target::x86_64(), Target::aarch64()] {
        for optimized in [false, true] {
            let ir = emit_llvm_ir(&linears, &target, optimized).expect("emit");
            assert!(ir.contains("lanes.body"), "{}: no lanes loop", target.cpu);
            assert!(
                !ir.contains("dpbf16ps"),
                "{} (optimized: {optimized}) names the bf16 dot intrinsic",
                target.cpu
            );
        }
    }
}
