//! Kernel IR: the reference interpreter on hand-built kernels (reductions, a parallel
//! matmul split over threads, bf16/f16 narrowing bit patterns, gathers, scratch memory, a
//! whole program with aliases) and the verifier's messages, one case per rule.

use archc_compiler::ir::Dim;
use archc_compiler::kernel::build::*;
use archc_compiler::kernel::interp::{run_kernel, run_program, KBufData, KData};
use archc_compiler::kernel::verify::{verify_kernel, verify_program};
use archc_compiler::kernel::*;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

fn snapshot(name: &str, text: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/kernel_ir");
    insta::with_settings!({
        snapshot_path => dir,
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, text);
    });
}

/// Runs `k` as every thread of `threads` in turn, as the runtime's pool would.
fn run_all(k: &Kernel, bufs: &mut [KBufData], seq: i64, threads: i64) {
    for t in 0..threads {
        if let Err(e) = run_kernel(k, bufs, seq, 0, t, threads) {
            panic!("{e}");
        }
    }
}

fn set(v: VarId, e: Expr) -> Stmt {
    Stmt::Set { var: v, value: e }
}

fn store(buf: BufId, index: Expr, value: Expr) -> Stmt {
    Stmt::Store { buf, index, value }
}

fn for_(var: VarId, start: Expr, end: Expr, kind: LoopKind, body: Vec<Stmt>) -> Stmt {
    Stmt::Loop {
        var,
        start,
        end,
        step: 1,
        kind,
        body,
    }
}

/// `out[0] = sum_i x[i] * y[i]` over `seq` elements, as a vectorised reduction.
fn dot_kernel() -> Kernel {
    let mut k = Kernel::new("dot");
    let x = k.buf("x", Elem::F32, Access::Read);
    let y = k.buf("y", Elem::F32, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let acc = k.var("acc", Ty::F32);
    let vi = k.var("i", Ty::I64);
    k.body = vec![
        Stmt::Local {
            var: acc,
            init: f(0.0),
        },
        for_(
            vi,
            i(0),
            seq(),
            LoopKind::Vector(4),
            vec![set(
                acc,
                add(var(acc), mul(load(x, var(vi)), load(y, var(vi)))),
            )],
        ),
        store(out, i(0), var(acc)),
    ];
    k
}

#[test]
fn dot_product_reduction() {
    let k = dot_kernel();
    verify_kernel(&k).unwrap();
    let x: Vec<f32> = (0..10).map(|v| v as f32 * 0.5 - 1.0).collect();
    let y: Vec<f32> = (0..10).map(|v| 1.0 / (v as f32 + 1.0)).collect();
    let mut out = [f32::NAN];
    run_all(
        &k,
        &mut [
            KBufData::F32Ro(&x),
            KBufData::F32Ro(&y),
            KBufData::F32(&mut out),
        ],
        10,
        1,
    );
    // In order and in f32, as the interpreter promises.
    let want = x.iter().zip(&y).fold(0.0f32, |a, (p, q)| a + p * q);
    assert_eq!(out[0].to_bits(), want.to_bits());
    snapshot("dot", &k.to_string());
}

/// `c[m, n] = sum_k a[m, k] * w[n, k]` with `w` in bf16, parallel over `n`.
fn matmul_kernel(n: i64, kk: i64) -> Kernel {
    let mut k = Kernel::new("matmul");
    let a = k.buf("a", Elem::F32, Access::Read);
    let w = k.buf("w", Elem::Bf16, Access::Read);
    let c = k.buf("c", Elem::F32, Access::Write);
    let vn = k.var("n", Ty::I64);
    let vm = k.var("m", Ty::I64);
    let acc = k.var("acc", Ty::F32);
    let vk = k.var("k", Ty::I64);
    k.body = vec![for_(
        vn,
        i(0),
        i(n),
        LoopKind::Parallel,
        vec![for_(
            vm,
            i(0),
            seq(),
            LoopKind::Serial,
            vec![
                Stmt::Local {
                    var: acc,
                    init: f(0.0),
                },
                for_(
                    vk,
                    i(0),
                    i(kk),
                    LoopKind::Vector(8),
                    vec![set(
                        acc,
                        add(
                            var(acc),
                            mul(
                                load(a, add(mul(var(vm), i(kk)), var(vk))),
                                load(w, add(mul(var(vn), i(kk)), var(vk))),
                            ),
                        ),
                    )],
                ),
                store(c, add(mul(var(vm), i(n)), var(vn)), var(acc)),
            ],
        )],
    )];
    k
}

#[test]
fn matmul_parallel_threads_agree() {
    let (m, n, kk) = (3usize, 7usize, 5usize);
    let k = matmul_kernel(n as i64, kk as i64);
    verify_kernel(&k).unwrap();
    let a: Vec<f32> = (0..m * kk).map(|v| (v as f32 * 0.37).sin()).collect();
    let w: Vec<u16> = (0..n * kk)
        .map(|v| archc_compiler::kernel::interp::f32_to_bf16((v as f32 * 0.11).cos()))
        .collect();
    let mut want = vec![0.0f32; m * n];
    for mi in 0..m {
        for ni in 0..n {
            let mut acc = 0.0f32;
            for ki in 0..kk {
                acc += a[mi * kk + ki] * f32::from_bits(u32::from(w[ni * kk + ki]) << 16);
            }
            want[mi * n + ni] = acc;
        }
    }
    for threads in [1, 2, 3, 8] {
        let mut c = vec![f32::NAN; m * n];
        run_all(
            &k,
            &mut [
                KBufData::F32Ro(&a),
                KBufData::Bf16Ro(&w),
                KBufData::F32(&mut c),
            ],
            m as i64,
            threads,
        );
        let (got, exp): (Vec<u32>, Vec<u32>) = (
            c.iter().map(|x| x.to_bits()).collect(),
            want.iter().map(|x| x.to_bits()).collect(),
        );
        assert_eq!(got, exp, "threads={threads}");
    }
    snapshot("matmul", &k.to_string());
}

/// Which thread runs which iteration of `parallel for i in 2..12 step 3` (4 iterations).
#[test]
fn parallel_chunks() {
    let mut k = Kernel::new("mark");
    let out = k.buf("out", Elem::I32, Access::Write);
    let v = k.var("i", Ty::I64);
    k.body = vec![Stmt::Loop {
        var: v,
        start: i(2),
        end: i(12),
        step: 3,
        kind: LoopKind::Parallel,
        body: vec![store(out, var(v), i(1))],
    }];
    let mut text = String::new();
    for threads in [1, 2, 3, 5] {
        write!(text, "threads={threads}:").unwrap();
        for t in 0..threads {
            let mut o = vec![0i32; 12];
            run_kernel(&k, &mut [KBufData::I32(&mut o)], 1, 0, t, threads).unwrap();
            let ran: Vec<String> = (0..12)
                .filter(|&j| o[j] == 1)
                .map(|j| j.to_string())
                .collect();
            write!(text, " t{t}=[{}]", ran.join(",")).unwrap();
        }
        text.push('\n');
    }
    snapshot("parallel_chunks", &text);
}

/// `out[i] = x[i]` from an `src` buffer to a `dst` buffer over `seq` elements.
fn copy_kernel(src: Elem, dst: Elem) -> Kernel {
    let mut k = Kernel::new(format!("copy_{}_{}", src.as_str(), dst.as_str()));
    let x = k.buf("x", src, Access::Read);
    let out = k.buf("out", dst, Access::Write);
    let v = k.var("i", Ty::I64);
    k.body = vec![for_(
        v,
        i(0),
        seq(),
        LoopKind::Serial,
        vec![store(out, var(v), load(x, var(v)))],
    )];
    k
}

/// Narrows f32 values to bf16 or f16 through a kernel and lists the bits.
fn narrow(dst: Elem, cases: &[(&str, f32)]) -> String {
    let k = copy_kernel(Elem::F32, dst);
    let x: Vec<f32> = cases.iter().map(|c| c.1).collect();
    let mut out = vec![0u16; x.len()];
    let view = match dst {
        Elem::Bf16 => KBufData::Bf16(&mut out),
        _ => KBufData::F16(&mut out),
    };
    run_all(&k, &mut [KBufData::F32Ro(&x), view], x.len() as i64, 1);
    let mut text = String::new();
    for ((name, v), bits) in cases.iter().zip(&out) {
        writeln!(text, "{name:<34} {:#010x} -> {bits:#06x}", v.to_bits()).unwrap();
    }
    // Widening gives back exactly the narrowed value.
    let back = copy_kernel(dst, Elem::F32);
    let mut wide = vec![0.0f32; out.len()];
    let src = match dst {
        Elem::Bf16 => KBufData::Bf16Ro(&out),
        _ => KBufData::F16Ro(&out),
    };
    run_all(
        &back,
        &mut [src, KBufData::F32(&mut wide)],
        x.len() as i64,
        1,
    );
    for (bits, w) in out.iter().zip(&wide) {
        let direct = match dst {
            Elem::Bf16 => archc_compiler::kernel::interp::bf16_to_f32(*bits),
            _ => archc_compiler::kernel::interp::f16_to_f32(*bits),
        };
        assert_eq!(w.to_bits(), direct.to_bits());
    }
    writeln!(text, "widened back: {wide:?}").unwrap();
    text
}

#[test]
fn bf16_narrowing_and_widening() {
    let p = |e: i32| 2f32.powi(e);
    let text = narrow(
        Elem::Bf16,
        &[
            ("1", 1.0),
            ("1 + 2^-8 (tie, down to even)", 1.0 + p(-8)),
            ("1 + 3*2^-8 (tie, up to even)", 1.0 + 3.0 * p(-8)),
            ("1 + 2^-8 + 2^-20 (above tie)", 1.0 + p(-8) + p(-20)),
            ("-2.5", -2.5),
            ("-0", -0.0),
            ("f32::MAX (rounds to inf)", f32::MAX),
            ("-inf", f32::NEG_INFINITY),
            ("NaN", f32::NAN),
            ("signalling NaN, low payload", f32::from_bits(0x7f80_0001)),
            ("-NaN", f32::from_bits(0xffc0_0000)),
            ("smallest subnormal", f32::from_bits(1)),
        ],
    );
    snapshot("bf16", &text);
}

#[test]
fn f16_narrowing_and_widening() {
    let p = |e: i32| 2f32.powi(e);
    let text = narrow(
        Elem::F16,
        &[
            ("1", 1.0),
            ("1 + 2^-11 (tie, down to even)", 1.0 + p(-11)),
            ("1 + 3*2^-11 (tie, up to even)", 1.0 + 3.0 * p(-11)),
            ("65504 (max)", 65504.0),
            ("65519 (rounds to max)", 65519.0),
            ("65520 (tie, to inf)", 65520.0),
            ("2^-14 (min normal)", p(-14)),
            ("2^-24 (min subnormal)", p(-24)),
            ("2^-25 (tie, to zero)", p(-25)),
            ("3*2^-25 (tie, up to 2)", 3.0 * p(-25)),
            ("1023.5*2^-24 (carry to normal)", 1023.5 * p(-24)),
            ("2^-26 (underflow)", p(-26)),
            ("-0", -0.0),
            ("-inf", f32::NEG_INFINITY),
            ("NaN", f32::NAN),
            ("signalling NaN, low payload", f32::from_bits(0x7f80_0001)),
        ],
    );
    snapshot("f16", &text);
}

/// `out[s, h] = table[tokens[s], h]`, then `next[s] = tokens[s] + 1` stored to i32.
#[test]
fn i32_gather() {
    let h = 3i64;
    let mut k = Kernel::new("embed");
    let tokens = k.buf("tokens", Elem::I32, Access::Read);
    let table = k.buf("table", Elem::F32, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let next = k.buf("next", Elem::I32, Access::Write);
    let s = k.var("s", Ty::I64);
    let t = k.var("t", Ty::I64);
    let j = k.var("j", Ty::I64);
    k.body = vec![for_(
        s,
        i(0),
        seq(),
        LoopKind::Parallel,
        vec![
            Stmt::Let {
                var: t,
                value: load(tokens, var(s)),
            },
            for_(
                j,
                i(0),
                i(h),
                LoopKind::Serial,
                vec![store(
                    out,
                    add(mul(var(s), i(h)), var(j)),
                    load(table, add(mul(var(t), i(h)), var(j))),
                )],
            ),
            store(next, var(s), add(var(t), i(1))),
        ],
    )];
    verify_kernel(&k).unwrap();
    let toks = [2i32, 0, 3, 2];
    let tab: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let mut o = vec![0.0f32; 12];
    let mut nx = vec![0i32; 4];
    run_all(
        &k,
        &mut [
            KBufData::I32Ro(&toks),
            KBufData::F32Ro(&tab),
            KBufData::F32(&mut o),
            KBufData::I32(&mut nx),
        ],
        4,
        2,
    );
    assert_eq!(
        o,
        [6.0, 7.0, 8.0, 0.0, 1.0, 2.0, 9.0, 10.0, 11.0, 6.0, 7.0, 8.0]
    );
    assert_eq!(nx, [3, 1, 4, 3]);

    // A token id past the table is an error naming the kernel, buffer and index.
    let bad = [2i32, 4, 0, 0];
    let e = run_kernel(
        &k,
        &mut [
            KBufData::I32Ro(&bad),
            KBufData::F32Ro(&tab),
            KBufData::F32(&mut o),
            KBufData::I32(&mut nx),
        ],
        4,
        0,
        0,
        1,
    )
    .unwrap_err();
    snapshot("gather", &format!("{k}\nerror: {e}\n"));
}

/// Select, if/else, integer division and remainder, and conversions.
#[test]
fn select_and_if() {
    let mut k = Kernel::new("branches");
    let x = k.buf("x", Elem::F32, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let cls = k.buf("cls", Elem::I32, Access::Write);
    let v = k.var("i", Ty::I64);
    let xv = k.var("x", Ty::F32);
    k.body = vec![for_(
        v,
        i(0),
        seq(),
        LoopKind::Serial,
        vec![
            Stmt::Let {
                var: xv,
                value: load(x, var(v)),
            },
            // ReLU without a branch, plus i / 2 as f32.
            store(
                out,
                var(v),
                add(
                    select(bin(BinOp::Gt, var(xv), f(0.0)), var(xv), f(0.0)),
                    un(UnOp::ToF32, div(var(v), i(2))),
                ),
            ),
            Stmt::If {
                cond: bin(
                    BinOp::And,
                    bin(BinOp::Ge, var(xv), f(-1.0)),
                    bin(BinOp::Le, var(xv), f(1.0)),
                ),
                then: vec![store(cls, var(v), bin(BinOp::Rem, var(v), i(3)))],
                els: vec![store(cls, var(v), un(UnOp::ToI64, var(xv)))],
            },
        ],
    )];
    verify_kernel(&k).unwrap();
    let xs = [-2.5f32, -0.5, 0.0, 0.75, 3.9, -7.2];
    let mut o = vec![0.0f32; 6];
    let mut c = vec![0i32; 6];
    run_all(
        &k,
        &mut [
            KBufData::F32Ro(&xs),
            KBufData::F32(&mut o),
            KBufData::I32(&mut c),
        ],
        6,
        1,
    );
    assert_eq!(o, [0.0, 0.0, 1.0, 1.75, 5.9, 2.0]);
    assert_eq!(c, [-2, 1, 2, 0, 3, -7]);
    snapshot("branches", &k.to_string());
}

/// Integer division by zero and stores into read-only memory are errors, not panics.
#[test]
fn runtime_errors() {
    let mut text = String::new();

    let mut k = Kernel::new("divide");
    let out = k.buf("out", Elem::I32, Access::Write);
    k.body = vec![store(out, i(0), bin(BinOp::Rem, i(7), sub(seq(), i(1))))];
    let mut o = [0i32];
    let e = run_kernel(&k, &mut [KBufData::I32(&mut o)], 1, 0, 0, 1).unwrap_err();
    writeln!(text, "{e}").unwrap();

    let ro = [0i32];
    let e = run_kernel(&k, &mut [KBufData::I32Ro(&ro)], 2, 0, 0, 1).unwrap_err();
    writeln!(text, "{e}").unwrap();

    let mut wrong = [0.0f32];
    let e = run_kernel(&k, &mut [KBufData::F32(&mut wrong)], 2, 0, 0, 1).unwrap_err();
    writeln!(text, "{e}").unwrap();

    let e = run_kernel(&k, &mut [KBufData::I32(&mut o)], 2, 0, 2, 2).unwrap_err();
    writeln!(text, "{e}").unwrap();

    // The unused arm of a select is still evaluated, as code without branches does.
    let mut k = Kernel::new("guarded");
    let x = k.buf("x", Elem::F32, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    k.body = vec![store(
        out,
        i(0),
        select(bin(BinOp::Lt, seq(), i(2)), load(x, i(0)), load(x, seq())),
    )];
    let xs = [1.0f32, 2.0];
    let mut o = [0.0f32];
    let e = run_kernel(
        &k,
        &mut [KBufData::F32Ro(&xs), KBufData::F32(&mut o)],
        2,
        0,
        0,
        1,
    )
    .unwrap_err();
    writeln!(text, "{e}").unwrap();
    snapshot("runtime_errors", &text);
}

/// A row softmax that stages exponentials in a scratch buffer, parallel over rows.
#[test]
fn scratch_buffers() {
    let n = 4i64;
    let mut k = Kernel::new("softmax");
    let x = k.buf("x", Elem::F32, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let tmp = k.buf("tmp", Elem::F32, Access::Scratch { len: n as u64 });
    let r = k.var("r", Ty::I64);
    let sum = k.var("sum", Ty::F32);
    let j = k.var("j", Ty::I64);
    let e = k.var("e", Ty::F32);
    let j2 = k.var("j", Ty::I64);
    k.body = vec![for_(
        r,
        i(0),
        seq(),
        LoopKind::Parallel,
        vec![
            Stmt::Local {
                var: sum,
                init: f(0.0),
            },
            for_(
                j,
                i(0),
                i(n),
                LoopKind::Serial,
                vec![
                    Stmt::Let {
                        var: e,
                        value: un(UnOp::Exp, load(x, add(mul(var(r), i(n)), var(j)))),
                    },
                    store(tmp, var(j), var(e)),
                    set(sum, add(var(sum), var(e))),
                ],
            ),
            for_(
                j2,
                i(0),
                i(n),
                LoopKind::Vector(4),
                vec![store(
                    out,
                    add(mul(var(r), i(n)), var(j2)),
                    div(load(tmp, var(j2)), var(sum)),
                )],
            ),
        ],
    )];
    verify_kernel(&k).unwrap();
    let xs: Vec<f32> = (0..12).map(|v| (v as f32 * 0.7).sin()).collect();
    let mut want = vec![0.0f32; 12];
    for row in 0..3 {
        let ex: Vec<f32> = (0..4).map(|c| xs[row * 4 + c].exp()).collect();
        let s = ex.iter().fold(0.0f32, |a, b| a + b);
        for c in 0..4 {
            want[row * 4 + c] = ex[c] / s;
        }
    }
    for threads in [1, 2, 3] {
        let mut o = vec![f32::NAN; 12];
        run_all(
            &k,
            &mut [
                KBufData::F32Ro(&xs),
                KBufData::F32(&mut o),
                KBufData::Unbound,
            ],
            3,
            threads,
        );
        assert_eq!(o, want, "threads={threads}");
    }
    snapshot("softmax", &k.to_string());
}

/// A two-launch program: gather embeddings (i32 tokens, bf16 table) into a `[seq, 4]`
/// temporary, then scale it through a flat alias into the output.
fn small_program() -> Program {
    let h = 4u64;
    let mut gather = Kernel::new("gather");
    let tok = gather.buf("tokens", Elem::I32, Access::Read);
    let tab = gather.buf("@embed.tokens", Elem::Bf16, Access::Read);
    let dst = gather.buf("%1", Elem::F32, Access::Write);
    let s = gather.var("s", Ty::I64);
    let j = gather.var("j", Ty::I64);
    gather.body = vec![for_(
        s,
        i(0),
        seq(),
        LoopKind::Parallel,
        vec![for_(
            j,
            i(0),
            i(h as i64),
            LoopKind::Serial,
            vec![store(
                dst,
                add(mul(var(s), i(h as i64)), var(j)),
                load(tab, add(mul(load(tok, var(s)), i(h as i64)), var(j))),
            )],
        )],
    )];
    let mut scale = Kernel::new("scale");
    let src = scale.buf("%2", Elem::F32, Access::Read);
    let out = scale.buf("logits", Elem::F32, Access::Write);
    let v = scale.var("i", Ty::I64);
    scale.body = vec![for_(
        v,
        i(0),
        mul(seq(), i(h as i64)),
        LoopKind::Parallel,
        vec![store(out, var(v), mul(load(src, var(v)), f(2.0)))],
    )];
    Program {
        name: "tiny".to_string(),
        buffers: vec![
            Buffer {
                name: "tokens".to_string(),
                elem: Elem::I32,
                shape: vec![Dim::SEQ],
                kind: BufferKind::Input(archc_compiler::ir::Io::Tokens),
            },
            Buffer {
                name: "@embed.tokens".to_string(),
                elem: Elem::Bf16,
                shape: vec![Dim::c(5), Dim::c(h)],
                kind: BufferKind::Param,
            },
            Buffer {
                name: "%1".to_string(),
                elem: Elem::F32,
                shape: vec![Dim::SEQ, Dim::c(h)],
                kind: BufferKind::Temp,
            },
            Buffer {
                name: "%2".to_string(),
                elem: Elem::F32,
                shape: vec![Dim {
                    konst: 0,
                    seq: h,
                    past: 0,
                }],
                kind: BufferKind::Alias { of: 2 },
            },
            Buffer {
                name: "logits".to_string(),
                elem: Elem::F32,
                shape: vec![Dim::SEQ, Dim::c(h)],
                kind: BufferKind::Output(archc_compiler::ir::Io::Logits),
            },
        ],
        kernels: vec![gather, scale],
        launches: vec![
            Launch {
                kernel: 0,
                bufs: vec![Some(0), Some(1), Some(2)],
            },
            Launch {
                kernel: 1,
                bufs: vec![Some(3), Some(4)],
            },
        ],
    }
}

#[test]
fn program_with_alias() {
    let p = small_program();
    verify_program(&p).unwrap();
    let tokens = [4i32, 1, 1];
    let table: Vec<u16> = (0..20)
        .map(|v| archc_compiler::kernel::interp::f32_to_bf16(v as f32 * 0.25))
        .collect();
    let mut results = Vec::new();
    for threads in [1, 2] {
        let mut inputs = BTreeMap::new();
        inputs.insert("tokens".to_string(), KBufData::I32Ro(&tokens));
        inputs.insert("@embed.tokens".to_string(), KBufData::Bf16Ro(&table));
        let out = run_program(&p, inputs, 3, 0, threads).unwrap();
        assert_eq!(out.keys().collect::<Vec<_>>(), ["logits"]);
        results.push(out["logits"].clone());
    }
    assert_eq!(results[0], results[1]);
    let want: Vec<f32> = [4, 1, 1]
        .iter()
        .flat_map(|t| (0..4).map(move |j| (t * 4 + j) as f32 * 0.25 * 2.0))
        .collect();
    assert_eq!(results[0], KData::F32(want));

    // Missing and mis-sized inputs are errors.
    let mut text = String::new();
    let mut inputs = BTreeMap::new();
    inputs.insert("tokens".to_string(), KBufData::I32Ro(&tokens));
    writeln!(text, "{}", run_program(&p, inputs, 3, 0, 1).unwrap_err()).unwrap();
    let mut inputs = BTreeMap::new();
    inputs.insert("tokens".to_string(), KBufData::I32Ro(&tokens));
    inputs.insert("@embed.tokens".to_string(), KBufData::Bf16Ro(&table));
    writeln!(text, "{}", run_program(&p, inputs, 2, 0, 1).unwrap_err()).unwrap();
    let bad = [5i32, 0, 0];
    let mut inputs = BTreeMap::new();
    inputs.insert("tokens".to_string(), KBufData::I32Ro(&bad));
    inputs.insert("@embed.tokens".to_string(), KBufData::Bf16Ro(&table));
    writeln!(text, "{}", run_program(&p, inputs, 3, 0, 2).unwrap_err()).unwrap();
    snapshot("program", &format!("{p}\n{text}"));
}

/// A valid kernel that the negative cases below break one rule at a time.
fn base_kernel() -> Kernel {
    let mut k = Kernel::new("base");
    let x = k.buf("x", Elem::F32, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let acc = k.var("acc", Ty::F32);
    let v = k.var("i", Ty::I64);
    let w = k.var("w", Ty::F32);
    k.body = vec![for_(
        v,
        i(0),
        seq(),
        LoopKind::Parallel,
        vec![
            Stmt::Local {
                var: acc,
                init: f(0.0),
            },
            Stmt::Let {
                var: w,
                value: load(x, var(v)),
            },
            set(acc, add(var(acc), var(w))),
            store(out, var(v), var(acc)),
        ],
    )];
    k
}

/// The body of the base kernel's loop, to edit.
fn inner(k: &mut Kernel) -> &mut Vec<Stmt> {
    match &mut k.body[0] {
        Stmt::Loop { body, .. } => body,
        _ => unreachable!("the base kernel starts with its loop"),
    }
}

#[test]
fn verifier_rejects_kernels() {
    verify_kernel(&base_kernel()).unwrap();
    let (x, out) = (BufId(0), BufId(1));
    let (acc, iv, w) = (VarId(0), VarId(1), VarId(2));
    type Edit = fn(&mut Kernel, BufId, BufId, VarId, VarId, VarId);
    let cases: Vec<(&str, Edit)> = vec![
        ("buffer id out of range", |k, _, _, _, iv, _| {
            inner(k).push(store(BufId(7), var(iv), f(1.0)))
        }),
        ("variable id out of range", |k, _, out, _, iv, _| {
            inner(k).push(store(out, var(iv), var(VarId(9))))
        }),
        ("operands of different types", |k, _, out, _, iv, _| {
            inner(k).push(store(out, var(iv), add(f(1.0), i(2))))
        }),
        ("comparison is bool", |k, _, out, _, iv, w| {
            inner(k).push(store(out, var(iv), bin(BinOp::Lt, var(w), f(0.0))))
        }),
        ("and on f32", |k, _, out, _, iv, w| {
            inner(k).push(store(out, var(iv), bin(BinOp::And, var(w), var(w))))
        }),
        ("rem on f32", |k, _, out, _, iv, w| {
            inner(k).push(store(out, var(iv), bin(BinOp::Rem, var(w), f(2.0))))
        }),
        ("select condition not bool", |k, _, out, _, iv, w| {
            inner(k).push(store(out, var(iv), select(var(iv), var(w), f(0.0))))
        }),
        ("select arms differ", |k, _, out, _, iv, w| {
            inner(k).push(store(out, var(iv), select(Expr::Bool(true), var(w), i(0))))
        }),
        ("load index not i64", |k, x, out, _, iv, w| {
            inner(k).push(store(out, var(iv), load(x, var(w))))
        }),
        ("unary op on wrong type", |k, _, out, _, iv, _| {
            inner(k).push(store(out, var(iv), un(UnOp::Exp, var(iv))))
        }),
        ("not on f32", |k, _, out, _, iv, w| {
            inner(k).push(store(
                out,
                var(iv),
                select(un(UnOp::Not, var(w)), f(1.0), f(0.0)),
            ))
        }),
        ("set on a let", |k, _, _, _, _, w| {
            inner(k).push(set(w, f(1.0)))
        }),
        ("set on a loop variable", |k, _, _, _, iv, _| {
            inner(k).push(set(iv, i(1)))
        }),
        ("use before definition", |k, _, out, acc, iv, _| {
            inner(k).insert(0, store(out, var(iv), var(acc)))
        }),
        ("use after its scope", |k, _, out, acc, _, _| {
            k.body.push(store(out, i(0), var(acc)))
        }),
        ("defined twice", |k, _, _, _, _, w| {
            inner(k).push(Stmt::Let {
                var: w,
                value: f(2.0),
            })
        }),
        ("let of the wrong type", |k, _, _, _, _, _| {
            let v = k.var("n", Ty::I64);
            inner(k).push(Stmt::Let {
                var: v,
                value: f(2.0),
            })
        }),
        ("loop bound not i64", |k, _, _, _, _, _| {
            let v = k.var("j", Ty::I64);
            inner(k).push(for_(v, i(0), f(4.0), LoopKind::Serial, vec![]))
        }),
        ("loop variable not i64", |k, _, _, _, _, _| {
            let v = k.var("j", Ty::F32);
            inner(k).push(for_(v, i(0), i(4), LoopKind::Serial, vec![]))
        }),
        ("step zero", |k, _, _, _, _, _| {
            let v = k.var("j", Ty::I64);
            inner(k).push(Stmt::Loop {
                var: v,
                start: i(0),
                end: i(4),
                step: 0,
                kind: LoopKind::Serial,
                body: vec![],
            })
        }),
        ("vector width zero", |k, _, _, _, _, _| {
            let v = k.var("j", Ty::I64);
            inner(k).push(for_(v, i(0), i(4), LoopKind::Vector(0), vec![]))
        }),
        ("two parallel loops", |k, _, _, _, _, _| {
            let v = k.var("j", Ty::I64);
            k.body.push(for_(v, i(0), i(4), LoopKind::Parallel, vec![]))
        }),
        ("nested parallel loops", |k, _, _, _, _, _| {
            let v = k.var("j", Ty::I64);
            inner(k).push(for_(v, i(0), i(4), LoopKind::Parallel, vec![]))
        }),
        ("store to a read buffer", |k, x, _, _, iv, _| {
            inner(k).push(store(x, var(iv), f(0.0)))
        }),
        ("load from a write buffer", |k, _, out, _, iv, _| {
            inner(k).push(store(out, var(iv), load(out, var(iv))))
        }),
        ("store of the wrong type", |k, _, out, _, iv, _| {
            inner(k).push(store(out, var(iv), i(1)))
        }),
        ("store outside the parallel loop", |k, _, out, _, _, _| {
            k.body.push(store(out, i(0), f(0.0)))
        }),
        ("if condition not bool", |k, _, _, _, iv, _| {
            inner(k).push(Stmt::If {
                cond: var(iv),
                then: vec![],
                els: vec![],
            })
        }),
    ];
    let mut text = String::new();
    for (name, edit) in cases {
        let mut k = base_kernel();
        edit(&mut k, x, out, acc, iv, w);
        match verify_kernel(&k) {
            Ok(()) => panic!("{name}: the verifier accepted\n{k}"),
            Err(e) => writeln!(text, "{name}:\n  {e}").unwrap(),
        }
    }
    snapshot("verify_kernel_errors", &text);
}

#[test]
fn verifier_rejects_programs() {
    verify_program(&small_program()).unwrap();
    type Edit = fn(&mut Program);
    let cases: Vec<(&str, Edit)> = vec![
        ("kernel index out of range", |p| p.launches[0].kernel = 5),
        ("too few bindings", |p| {
            p.launches[1].bufs.pop();
        }),
        ("missing binding for a non-scratch parameter", |p| {
            p.launches[1].bufs[0] = None
        }),
        ("binding for a scratch parameter", |p| {
            p.kernels[1].buf("tmp", Elem::F32, Access::Scratch { len: 4 });
            p.launches[1].bufs.push(Some(2));
        }),
        ("buffer index out of range", |p| {
            p.launches[1].bufs[1] = Some(40)
        }),
        ("element type mismatch", |p| p.launches[1].bufs[1] = Some(1)),
        ("alias target out of range", |p| {
            p.buffers[3].kind = BufferKind::Alias { of: 17 }
        }),
        ("alias cycle", |p| {
            p.buffers[2].kind = BufferKind::Alias { of: 3 }
        }),
        ("alias element type", |p| p.buffers[3].elem = Elem::F16),
        ("alias larger than its memory", |p| {
            p.buffers[3].shape = vec![Dim::SEQ, Dim::c(5)]
        }),
        ("duplicate kernel names", |p| {
            p.kernels[1].name = "gather".to_string()
        }),
        ("duplicate input names", |p| {
            p.buffers[1].name = "tokens".to_string()
        }),
        ("a kernel that does not verify", |p| {
            p.kernels[1].body.push(store(BufId(1), i(0), i(0)))
        }),
    ];
    let mut text = String::new();
    for (name, edit) in cases {
        let mut p = small_program();
        edit(&mut p);
        match verify_program(&p) {
            Ok(()) => panic!("{name}: the verifier accepted"),
            Err(e) => writeln!(text, "{name}:\n  {e}").unwrap(),
        }
    }
    snapshot("verify_program_errors", &text);
}
