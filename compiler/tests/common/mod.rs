//! Helpers shared by the LLVM code generation suites: compiling kernels for the host,
//! deterministic inputs, reference bf16/f16 conversions, and running a kernel both in
//! the kernel interpreter and compiled to compare every buffer.

// Each test binary compiles its own copy of this module and uses only part of it.
#![allow(dead_code)]

use archc_compiler::codegen::llvm::{compile_kernels_with, CompiledProgram, Options, Target};
use archc_compiler::kernel::build::*;
use archc_compiler::kernel::interp::{run_kernel, KBufData, KData};
use archc_compiler::kernel::{Access, BinOp, Elem, Kernel, LoopKind, Stmt, Ty, UnOp};

/// Compiled kernels a test can call: LLVM's or Cranelift's.
pub trait Callable {
    /// # Safety
    /// See `KernelFn`.
    unsafe fn call_kernel(&self, index: usize, bufs: &[*mut u8], dims: [i64; 2], t: i64, n: i64);
}

impl Callable for CompiledProgram {
    unsafe fn call_kernel(&self, index: usize, bufs: &[*mut u8], dims: [i64; 2], t: i64, n: i64) {
        unsafe { self.call(index, bufs, dims, t, n) }
    }
}

impl Callable for archc_compiler::codegen::clif::ClifProgram {
    unsafe fn call_kernel(&self, index: usize, bufs: &[*mut u8], dims: [i64; 2], t: i64, n: i64) {
        unsafe { self.call(index, bufs, dims, t, n) }
    }
}

pub fn jit(kernels: &[Kernel]) -> CompiledProgram {
    match compile_kernels_with(kernels, &Target::host(), &Options::no_cache()) {
        Ok(p) => p,
        Err(e) => panic!("compile failed: {e}"),
    }
}

/// Deterministic pseudo-random values in `[lo, hi)`.
pub fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
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

pub fn ptr<T>(v: &mut [T]) -> *mut u8 {
    v.as_mut_ptr().cast()
}

pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// The reference f32 → bf16 rounding: nearest even, NaN kept quiet with its sign.
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// The reference f16 → f32 conversion (exact).
pub fn f16_to_f32(h: u16) -> f32 {
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

pub fn assert_close(got: f32, want: f32, rel: f32, what: &str) {
    let ok = if want.is_nan() {
        got.is_nan()
    } else if want.is_infinite() {
        got == want
    } else {
        (got - want).abs() <= rel * want.abs().max(1e-30) || (got - want).abs() <= 1e-37
    };
    assert!(ok, "{what}: got {got:e}, want {want:e} (rel tol {rel:e})");
}

/// Runs `k` in the kernel interpreter and compiled, each as `threads` sequential chunk
/// calls on copies of `bufs` (`None` for scratch parameters), and compares every buffer:
/// bit for bit when `rel` is 0, else within `rel` relative.
pub fn check_against_interpreter(
    prog: &impl Callable,
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
        unsafe { prog.call_kernel(index, &ptrs, [seq, 0], t, threads) };
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

/// The kernels every code generator is checked on against the kernel interpreter: every
/// operation and element type, a heap scratch, the math functions.
pub fn standard_kernels() -> Vec<Kernel> {
    let (mathk, _) = math();
    vec![
        row_sum(),
        matmul_bf16(67, 37),
        convert("f32_to_bf16", Elem::F32, Elem::Bf16),
        convert("f32_to_f16", Elem::F32, Elem::F16),
        convert("f16_to_f32", Elem::F16, Elem::F32),
        gather(),
        select_if(),
        reverse_rows("rev_heap", 100_000, Elem::F32),
        mathk,
    ]
}

/// Runs `standard_kernels` compiled as `prog` against the interpreter on 1, 2 and 3
/// threads: the kernels whose sums a target may reassociate within `sum_rel` relative,
/// the others bit for bit.
pub fn check_standard_kernels(prog: &impl Callable, ks: &[Kernel], sum_rel: f32) {
    let (_, names) = math();
    let poison = |n: usize| Some(KData::F32(vec![f32::NAN; n]));
    let f32s = |n: usize, seed: u64| Some(KData::F32(values(n, seed, -2.0, 2.0)));
    for threads in [1i64, 2, 3] {
        let run = |i: usize, bufs: &[Option<KData>], seq: usize, rel: f32| {
            check_against_interpreter(prog, i, &ks[i], bufs, seq as i64, threads, rel)
        };
        // Sums may be reassociated in Vector loops: relative, with positive terms.
        run(
            0,
            &[Some(KData::F32(values(5000, 10, 0.0, 1.0))), poison(5)],
            5,
            sum_rel,
        );
        run(
            1,
            &[
                Some(KData::F32(values(3 * 67, 11, 0.0, 1.0))),
                Some(bf16s(values(37 * 67, 12, 0.0, 1.0))),
                poison(3 * 37),
            ],
            3,
            sum_rel,
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
            sum_rel,
        );
    }
}

pub fn bf16s(v: Vec<f32>) -> KData {
    KData::Bf16(v.into_iter().map(f32_to_bf16).collect())
}

// ---------------------------------------------------------------- kernels

/// `out[r] = sum_j x[r*n + j]` with the row loop parallel and the sum in a Vector(8) loop.
pub fn row_sum() -> Kernel {
    row_sum_n(i(1000))
}

pub fn row_sum_n(n: archc_compiler::kernel::Expr) -> Kernel {
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
pub fn matmul_bf16(kdim: i64, odim: i64) -> Kernel {
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
pub fn convert(name: &str, from: Elem, to: Elem) -> Kernel {
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
pub fn gather() -> Kernel {
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
pub fn select_if() -> Kernel {
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
pub fn reverse_rows(name: &str, scratch_len: u64, elem: Elem) -> Kernel {
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
pub fn math() -> (Kernel, Vec<&'static str>) {
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

pub fn math_ref(op: &str, x: f32, y: f32) -> f32 {
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
