//! LLVM code generation of hand-built kernels: the module verifier, differential runs
//! against plain Rust references (reductions, a parallel matmul on two OS threads,
//! bf16/f16 bit patterns, index loads, select/if, scratch, math, shared-operand dot
//! products, short vector loops), determinism, IR snapshots for fixed CPUs, object files
//! and the disk cache; tokens-in-lanes tiles without the bf16 dot instruction on CPUs
//! that lack it; and the layout rule of the code generators (the CPU and GPU
//! targets share `codegen/body` and never import each other).

use archc_compiler::codegen::llvm::{
    compile_kernels_with, emit_llvm_ir, emit_object, CacheSettings, CodegenError, CompiledProgram,
    Options, Origin, Target,
};
use archc_compiler::kernel::build::*;
use archc_compiler::kernel::{Access, BinOp, BufId, Elem, Kernel, LoopKind, Stmt, Ty, UnOp};
use std::path::Path;

// ---------------------------------------------------------------- kernels

/// `out[r] = sum_j x[r*n + j]` with the row loop parallel and the sum in a Vector(8) loop.
fn row_sum() -> Kernel {
    row_sum_n(i(1000))
}

fn row_sum_n(n: archc_compiler::kernel::Expr) -> Kernel {
    let mut k = Kernel::new("row_sum");
    let x = k.buf("x", Elem::F32, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let r = k.var("r", Ty::I64);
    let j = k.var("j", Ty::I64);
    let acc = k.var("acc", Ty::F32);
    k.body = vec![Stmt::Loop {
        var: r,
        start: i(0),
        end: seq(),
        step: 1,
        kind: LoopKind::Parallel,
        body: vec![
            Stmt::Local {
                var: acc,
                init: f(0.0),
            },
            Stmt::Loop {
                var: j,
                start: i(0),
                end: n.clone(),
                step: 1,
                kind: LoopKind::Vector(8),
                body: vec![Stmt::Set {
                    var: acc,
                    value: add(var(acc), load(x, add(mul(var(r), n.clone()), var(j)))),
                }],
            },
            Stmt::Store {
                buf: out,
                index: var(r),
                value: var(acc),
            },
        ],
    }];
    k
}

/// `c[m, o] = sum_k a[m, k] * w[o, k]` (torch Linear layout) with bf16 weights, the
/// output-feature loop parallel, the dot product in a Vector(16) loop, unrolled rows.
fn matmul_bf16(kdim: i64, odim: i64) -> Kernel {
    let mut k = Kernel::new("matmul_bf16");
    let a = k.buf("a", Elem::F32, Access::Read);
    let w = k.buf("w", Elem::Bf16, Access::Read);
    let c = k.buf("c", Elem::F32, Access::Write);
    let o = k.var("o", Ty::I64);
    let m = k.var("m", Ty::I64);
    let kk = k.var("k", Ty::I64);
    let acc = k.var("acc", Ty::F32);
    k.body = vec![Stmt::Loop {
        var: o,
        start: i(0),
        end: i(odim),
        step: 1,
        kind: LoopKind::Parallel,
        body: vec![Stmt::Loop {
            var: m,
            start: i(0),
            end: seq(),
            step: 1,
            kind: LoopKind::Unroll(2),
            body: vec![
                Stmt::Local {
                    var: acc,
                    init: f(0.0),
                },
                Stmt::Loop {
                    var: kk,
                    start: i(0),
                    end: i(kdim),
                    step: 1,
                    kind: LoopKind::Vector(16),
                    body: vec![Stmt::Set {
                        var: acc,
                        value: add(
                            var(acc),
                            mul(
                                load(a, add(mul(var(m), i(kdim)), var(kk))),
                                load(w, add(mul(var(o), i(kdim)), var(kk))),
                            ),
                        ),
                    }],
                },
                Stmt::Store {
                    buf: c,
                    index: add(mul(var(m), i(odim)), var(o)),
                    value: var(acc),
                },
            ],
        }],
    }];
    k
}

/// Element-wise copy `dst[i] = src[i]` for `seq` elements: exercises widening and narrowing.
fn convert(name: &str, from: Elem, to: Elem) -> Kernel {
    let mut k = Kernel::new(name);
    let src = k.buf("src", from, Access::Read);
    let dst = k.buf("dst", to, Access::Write);
    let ix = k.var("i", Ty::I64);
    k.body = vec![Stmt::Loop {
        var: ix,
        start: i(0),
        end: seq(),
        step: 1,
        kind: LoopKind::Serial,
        body: vec![Stmt::Store {
            buf: dst,
            index: var(ix),
            value: load(src, var(ix)),
        }],
    }];
    k
}

/// `out[i] = table[idx[i] + 4]` with i32 indices (negative ones must sign-extend).
fn gather() -> Kernel {
    let mut k = Kernel::new("gather");
    let table = k.buf("table", Elem::F32, Access::Read);
    let idx = k.buf("idx", Elem::I32, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let ix = k.var("i", Ty::I64);
    k.body = vec![Stmt::Loop {
        var: ix,
        start: i(0),
        end: seq(),
        step: 1,
        kind: LoopKind::Serial,
        body: vec![Stmt::Store {
            buf: out,
            index: var(ix),
            value: load(table, add(load(idx, var(ix)), i(4))),
        }],
    }];
    k
}

/// Per element: `relu` by select into `a`, a sign branch by `if` into `b`, and integer
/// division and remainder (by zero gives 0) into the i32 buffer `q`.
fn select_if() -> Kernel {
    let mut k = Kernel::new("select_if");
    let x = k.buf("x", Elem::F32, Access::Read);
    let d = k.buf("d", Elem::I32, Access::Read);
    let a = k.buf("a", Elem::F32, Access::Write);
    let b = k.buf("b", Elem::F32, Access::Write);
    let q = k.buf("q", Elem::I32, Access::Write);
    let ix = k.var("i", Ty::I64);
    let v = k.var("v", Ty::F32);
    k.body = vec![Stmt::Loop {
        var: ix,
        start: i(0),
        end: seq(),
        step: 1,
        kind: LoopKind::Vector(4),
        body: vec![
            Stmt::Let {
                var: v,
                value: load(x, var(ix)),
            },
            Stmt::Store {
                buf: a,
                index: var(ix),
                value: select(bin(BinOp::Gt, var(v), f(0.0)), var(v), f(0.0)),
            },
            Stmt::If {
                cond: bin(BinOp::Lt, var(v), f(0.0)),
                then: vec![Stmt::Store {
                    buf: b,
                    index: var(ix),
                    value: f(-1.0),
                }],
                els: vec![Stmt::Store {
                    buf: b,
                    index: var(ix),
                    value: mul(var(v), f(2.0)),
                }],
            },
            Stmt::Store {
                buf: q,
                index: mul(var(ix), i(2)),
                value: div(i(17), load(d, var(ix))),
            },
            Stmt::Store {
                buf: q,
                index: add(mul(var(ix), i(2)), i(1)),
                value: bin(BinOp::Rem, i(17), load(d, var(ix))),
            },
        ],
    }];
    k
}

/// Reverses each row of 16 through a scratch buffer of `scratch_len` elements (the
/// row goes to scratch offset `scratch_len - 16`, so a large scratch is really used).
fn reverse_rows(name: &str, scratch_len: u64, elem: Elem) -> Kernel {
    let mut k = Kernel::new(name);
    let x = k.buf("x", Elem::F32, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let s = k.buf("tmp", elem, Access::Scratch { len: scratch_len });
    let r = k.var("r", Ty::I64);
    let j = k.var("j", Ty::I64);
    let j2 = k.var("j", Ty::I64);
    let base = i(scratch_len as i64 - 16);
    k.body = vec![Stmt::Loop {
        var: r,
        start: i(0),
        end: seq(),
        step: 1,
        kind: LoopKind::Parallel,
        body: vec![
            Stmt::Loop {
                var: j,
                start: i(0),
                end: i(16),
                step: 1,
                kind: LoopKind::Serial,
                body: vec![Stmt::Store {
                    buf: s,
                    index: add(base.clone(), var(j)),
                    value: load(x, add(mul(var(r), i(16)), var(j))),
                }],
            },
            Stmt::Loop {
                var: j2,
                start: i(0),
                end: i(16),
                step: 1,
                kind: LoopKind::Serial,
                body: vec![Stmt::Store {
                    buf: out,
                    index: add(mul(var(r), i(16)), var(j2)),
                    value: load(s, add(base.clone(), sub(i(15), var(j2)))),
                }],
            },
        ],
    }];
    k
}

/// The unary and binary math ops applied to each element of `x` (and `y` for binary
/// ones); `out` is laid out `[op][seq]`.
fn math() -> (Kernel, Vec<&'static str>) {
    let mut k = Kernel::new("math");
    let x = k.buf("x", Elem::F32, Access::Read);
    let y = k.buf("y", Elem::F32, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let ix = k.var("i", Ty::I64);
    let lx = || load(x, var(ix));
    let ly = || load(y, var(ix));
    let ops: Vec<(&str, _)> = vec![
        ("exp", un(UnOp::Exp, lx())),
        ("log", un(UnOp::Log, un(UnOp::Abs, lx()))),
        ("tanh", un(UnOp::Tanh, lx())),
        ("sin", un(UnOp::Sin, lx())),
        ("cos", un(UnOp::Cos, lx())),
        ("sqrt", un(UnOp::Sqrt, un(UnOp::Abs, lx()))),
        ("floor", un(UnOp::Floor, lx())),
        ("neg", un(UnOp::Neg, lx())),
        ("pow", bin(BinOp::Pow, un(UnOp::Abs, lx()), ly())),
        ("min", bin(BinOp::Min, lx(), ly())),
        ("max", bin(BinOp::Max, lx(), ly())),
        ("div", div(lx(), ly())),
        (
            "to_i64_and_back",
            un(UnOp::ToF32, un(UnOp::ToI64, mul(lx(), f(10.0)))),
        ),
    ];
    let names = ops.iter().map(|(n, _)| *n).collect();
    let mut body = Vec::new();
    for (n, (_, e)) in ops.into_iter().enumerate() {
        body.push(Stmt::Store {
            buf: out,
            index: add(mul(i(n as i64), seq()), var(ix)),
            value: e,
        });
    }
    k.body = vec![Stmt::Loop {
        var: ix,
        start: i(0),
        end: seq(),
        step: 1,
        kind: LoopKind::Vector(8),
        body,
    }];
    (k, names)
}

fn math_ref(op: &str, x: f32, y: f32) -> f32 {
    match op {
        "exp" => x.exp(),
        "log" => x.abs().ln(),
        "tanh" => x.tanh(),
        "sin" => x.sin(),
        "cos" => x.cos(),
        "sqrt" => x.abs().sqrt(),
        "floor" => x.floor(),
        "neg" => -x,
        "pow" => x.abs().powf(y),
        "min" => x.min(y),
        "max" => x.max(y),
        "div" => x / y,
        "to_i64_and_back" => ((x * 10.0) as i64) as f32,
        other => panic!("no reference for {other}"),
    }
}

// ---------------------------------------------------------------- running

fn jit(kernels: &[Kernel]) -> CompiledProgram {
    match compile_kernels_with(kernels, &Target::host(), &Options::no_cache()) {
        Ok(p) => p,
        Err(e) => panic!("compile failed: {e}"),
    }
}

/// Deterministic pseudo-random values in `[lo, hi)`.
fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

fn ptr<T>(v: &mut [T]) -> *mut u8 {
    v.as_mut_ptr().cast()
}

fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// The reference f32 → bf16 rounding: nearest even, NaN kept quiet with its sign.
fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// The reference f16 → f32 conversion (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = (h >> 10) & 0x1f;
    let man = (h & 0x3ff) as f32;
    match exp {
        0 => sign * man * 2f32.powi(-24),
        31 if man == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + man / 1024.0) * 2f32.powi(e as i32 - 15),
    }
}

fn assert_close(got: f32, want: f32, rel: f32, what: &str) {
    let ok = if want.is_nan() {
        got.is_nan()
    } else if want.is_infinite() {
        got == want
    } else {
        (got - want).abs() <= rel * want.abs().max(1e-30) || (got - want).abs() <= 1e-37
    };
    assert!(ok, "{what}: got {got:e}, want {want:e} (rel tol {rel:e})");
}

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

// ---------------------------------------------------------------- against the kernel interpreter

use archc_compiler::kernel::interp::{run_kernel, KBufData, KData};

/// Runs `k` in the kernel interpreter and compiled, each as `threads` sequential chunk
/// calls on copies of `bufs` (`None` for scratch parameters), and compares every buffer:
/// bit for bit when `rel` is 0, else within `rel` relative.
fn check_against_interpreter(
    prog: &CompiledProgram,
    index: usize,
    k: &Kernel,
    bufs: &[Option<KData>],
    seq: i64,
    threads: i64,
    rel: f32,
) {
    let mut want: Vec<Option<KData>> = bufs.to_vec();
    for t in 0..threads {
        let mut views: Vec<KBufData> = want
            .iter_mut()
            .map(|b| b.as_mut().map_or(KBufData::Unbound, |d| d.view()))
            .collect();
        if let Err(e) = run_kernel(k, &mut views, seq, 0, t, threads) {
            panic!("interpreter: {e}");
        }
    }
    let mut got: Vec<Option<KData>> = bufs.to_vec();
    let ptrs: Vec<*mut u8> = got
        .iter_mut()
        .map(|b| match b {
            None => std::ptr::null_mut(),
            Some(KData::F32(v)) => ptr(v),
            Some(KData::Bf16(v)) | Some(KData::F16(v)) => ptr(v),
            Some(KData::I32(v)) => ptr(v),
            Some(KData::U8(v)) | Some(KData::F8(v)) => ptr(v),
        })
        .collect();
    for t in 0..threads {
        unsafe { prog.call(index, &ptrs, [seq, 0], t, threads) };
    }
    for (p, (w, g)) in want.iter().zip(&got).enumerate() {
        let (Some(w), Some(g)) = (w, g) else { continue };
        let (w, g) = (w.to_f32(), g.to_f32());
        for (e, (a, b)) in w.iter().zip(&g).enumerate() {
            let what = format!("kernel `{}` buffer {p} element {e}", k.name);
            if rel == 0.0 {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{what}: interpreter {a:e}, compiled {b:e}"
                );
            } else {
                assert_close(*b, *a, rel, &what);
            }
        }
    }
}

fn bf16s(v: Vec<f32>) -> KData {
    KData::Bf16(v.into_iter().map(f32_to_bf16).collect())
}

#[test]
fn compiled_kernels_match_the_kernel_interpreter() {
    let (mathk, names) = math();
    let ks = vec![
        row_sum(),
        matmul_bf16(67, 37),
        convert("f32_to_bf16", Elem::F32, Elem::Bf16),
        convert("f32_to_f16", Elem::F32, Elem::F16),
        convert("f16_to_f32", Elem::F16, Elem::F32),
        gather(),
        select_if(),
        reverse_rows("rev_heap", 100_000, Elem::F32),
        mathk,
    ];
    let prog = jit(&ks);
    let poison = |n: usize| Some(KData::F32(vec![f32::NAN; n]));
    let f32s = |n: usize, seed: u64| Some(KData::F32(values(n, seed, -2.0, 2.0)));
    for threads in [1i64, 2, 3] {
        let run = |i: usize, bufs: &[Option<KData>], seq: usize, rel: f32| {
            check_against_interpreter(&prog, i, &ks[i], bufs, seq as i64, threads, rel)
        };
        // Sums may be reassociated in Vector loops: relative, with positive terms.
        run(
            0,
            &[Some(KData::F32(values(5000, 10, 0.0, 1.0))), poison(5)],
            5,
            1e-6,
        );
        run(
            1,
            &[
                Some(KData::F32(values(3 * 67, 11, 0.0, 1.0))),
                Some(bf16s(values(37 * 67, 12, 0.0, 1.0))),
                poison(3 * 37),
            ],
            3,
            1e-6,
        );
        run(
            2,
            &[f32s(999, 13), Some(KData::Bf16(vec![0; 999]))],
            999,
            0.0,
        );
        run(
            3,
            &[
                Some(KData::F32(values(999, 14, -70000.0, 70000.0))),
                Some(KData::F16(vec![0; 999])),
            ],
            999,
            0.0,
        );
        run(
            4,
            &[Some(KData::F16((0..=u16::MAX).collect())), poison(65536)],
            65536,
            0.0,
        );
        run(
            5,
            &[
                f32s(16, 15),
                Some(KData::I32(vec![-4, 11, 0, -1, 5])),
                poison(5),
            ],
            5,
            0.0,
        );
        let d: Vec<i32> = (0..64)
            .map(|v| (v % 7) - 3)
            .map(|v| if v == 0 { 5 } else { v })
            .collect();
        run(
            6,
            &[
                f32s(64, 16),
                Some(KData::I32(d)),
                poison(64),
                poison(64),
                Some(KData::I32(vec![0; 128])),
            ],
            64,
            0.0,
        );
        run(7, &[f32s(7 * 16, 17), poison(7 * 16), None], 7, 0.0);
        let n = 1000;
        run(
            8,
            &[
                f32s(n, 18),
                Some(KData::F32(values(n, 19, -3.0, 3.0))),
                poison(names.len() * n),
            ],
            n,
            1e-6,
        );
    }
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

/// `out[r*ROWS + o] = sum_j w[(r*ROWS + o)*n + j] * x[j]`: `ROWS` dot products sharing
/// the `x` load in one Vector(16) loop (the form the f32 dot plan runs as one vector
/// accumulator each, with one butterfly at the end), row blocks parallel.
fn rows_dot(n: i64) -> Kernel {
    const ROWS: i64 = 6;
    let mut k = Kernel::new("rows_dot");
    let x = k.buf("x", Elem::F32, Access::Read);
    let w = k.buf("w", Elem::F32, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let r = k.var("r", Ty::I64);
    let j = k.var("j", Ty::I64);
    let xv = k.var("xv", Ty::F32);
    let accs: Vec<_> = (0..ROWS).map(|_| k.var("acc", Ty::F32)).collect();
    let wvs: Vec<_> = (0..ROWS).map(|_| k.var("wv", Ty::F32)).collect();
    let row = |o: i64| add(mul(var(r), i(ROWS)), i(o));
    let mut inner = vec![Stmt::Let {
        var: xv,
        value: load(x, var(j)),
    }];
    for (o, (&acc, &wv)) in accs.iter().zip(&wvs).enumerate() {
        inner.push(Stmt::Let {
            var: wv,
            value: load(w, add(mul(row(o as i64), i(n)), var(j))),
        });
        inner.push(Stmt::Set {
            var: acc,
            value: add(var(acc), mul(var(wv), var(xv))),
        });
    }
    let mut body: Vec<Stmt> = accs
        .iter()
        .map(|&acc| Stmt::Local {
            var: acc,
            init: f(0.0),
        })
        .collect();
    body.push(Stmt::Loop {
        var: j,
        start: i(0),
        end: i(n),
        step: 1,
        kind: LoopKind::Vector(16),
        body: inner,
    });
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

// ---------------------------------------------------------------- layout of the code generators

/// The paths in `dir` (a folder of `compiler/src/codegen`) that its Rust code names, out
/// of `forbidden`, as `file:line: path`; comments are skipped.
fn imports_of(dir: &str, forbidden: &[&str]) -> Vec<String> {
    fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("the source folder is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|x| x == "rs") {
                files.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/codegen");
    let mut files = Vec::new();
    walk(&root.join(dir), &mut files);
    files.sort();
    assert!(!files.is_empty(), "no sources in codegen/{dir}");
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a source file is readable");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for path in forbidden {
                if line.contains(path) {
                    let rel = file.strip_prefix(&root).unwrap_or(&file).display();
                    found.push(format!("codegen/{rel}:{}: {path}", n + 1));
                }
            }
        }
    }
    found
}

#[test]
fn code_generators_are_siblings_that_share_only_the_body_emitter() {
    let cpu = imports_of("llvm", &["codegen::ptx", "super::ptx", "super::super::ptx"]);
    assert!(
        cpu.is_empty(),
        "the CPU target imports the GPU target:\n{cpu:#?}"
    );
    let gpu = imports_of(
        "ptx",
        &["codegen::llvm", "super::llvm", "super::super::llvm"],
    );
    assert!(
        gpu.is_empty(),
        "the GPU target imports the CPU target:\n{gpu:#?}"
    );
    let targets = ["codegen::llvm", "codegen::ptx", "super::llvm", "super::ptx"];
    let body = imports_of("body", &targets);
    assert!(
        body.is_empty(),
        "the body emitter imports a target:\n{body:#?}"
    );
}

/// The tokens-in-lanes tiles of a bf16-activation prefill: a CPU without AVX512-BF16
/// (x86-64-v4, an aarch64) gets the FMA form, and its module, optimized or not, names no
/// x86 bf16 intrinsic.
#[test]
fn lanes_tiles_name_no_bf16_intrinsic_where_the_cpu_lacks_it() {
    use archc_compiler::kernel::lower::{program_opts, KernelOptions};
    use archc_compiler::{passes, testing, Mode};
    let mut spec = testing::llama(testing::swiglu(48));
    spec.dtype = archc_spec::DType::Bf16;
    let graph = archc_compiler::lower(&spec, Mode::Prefill).expect("lower");
    let opts = KernelOptions {
        bf16_activations: true,
        ..KernelOptions::default()
    };
    let program = program_opts(&passes::optimize(&graph), &opts).expect("program");
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
