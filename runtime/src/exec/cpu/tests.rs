//! The executor on a hand-built three-kernel program whose kernels are plain Rust: the
//! memory plan (parameters, inputs, aliases, arena), the KV-cache swap and the cache grown
//! in place, decode against prefill, thread counts, and errors.

use super::*;
use crate::weights::{decode_f32, Dtype};
use archc_compiler::interp::RandomWeights;
use archc_compiler::ir::{Dim, KvPart};
use archc_compiler::kernel::{
    Access, Buffer, BufferKind, Elem, KBuf, Kernel, Launch, LoopKind, Stmt,
};

const H: usize = 4;
const V: usize = 5;

fn kb(name: &str, elem: Elem, access: Access) -> KBuf {
    KBuf {
        name: name.into(),
        elem,
        access,
    }
}

fn kernel(name: &str, bufs: Vec<KBuf>, parallel: bool) -> Kernel {
    // The body only tells the executor whether the kernel has a parallel loop; the
    // `Fake` kernels below do the work.
    let body = if parallel {
        vec![Stmt::Loop {
            var: archc_compiler::kernel::VarId(0),
            start: archc_compiler::kernel::Expr::I64(0),
            end: archc_compiler::kernel::Expr::I64(0),
            step: 1,
            kind: LoopKind::Parallel,
            body: Vec::new(),
        }]
    } else {
        Vec::new()
    };
    Kernel {
        name: name.into(),
        bufs,
        vars: Vec::new(),
        body,
    }
}

fn buffer(name: &str, elem: Elem, shape: Vec<Dim>, kind: BufferKind) -> Buffer {
    Buffer {
        name: name.into(),
        elem,
        shape,
        kind,
    }
}

/// x = embed[token] + position; cache' = cache ++ x; logits[s, v] = embed[v] · Σ cache'[..=past+s].
fn program() -> Program {
    use Access::*;
    let f = Elem::F32;
    let h = Dim::c(H as u64);
    let buffers = vec![
        buffer(
            "@embed.tokens",
            f,
            vec![Dim::c(V as u64), h],
            BufferKind::Param,
        ),
        buffer(
            "tokens",
            Elem::I32,
            vec![Dim::SEQ],
            BufferKind::Input(Io::Tokens),
        ),
        buffer(
            "positions",
            Elem::I32,
            vec![Dim::SEQ],
            BufferKind::Input(Io::Positions),
        ),
        buffer(
            "cache.0.k",
            f,
            vec![Dim::PAST, Dim::c(1), h],
            BufferKind::Input(Io::kv(0, KvPart::K)),
        ),
        buffer(
            "cache.0.k",
            f,
            vec![Dim::PAST.plus(Dim::SEQ), Dim::c(1), h],
            BufferKind::Output(Io::kv(0, KvPart::K)),
        ),
        buffer("%x", f, vec![Dim::SEQ, h], BufferKind::Temp),
        buffer(
            "%xflat",
            f,
            vec![Dim {
                konst: 0,
                seq: H as u64,
                past: 0,
            }],
            BufferKind::Alias { of: 5 },
        ),
        buffer(
            "logits",
            f,
            vec![Dim::SEQ, Dim::c(V as u64)],
            BufferKind::Output(Io::Logits),
        ),
    ];
    let kernels = vec![
        kernel(
            "gather",
            vec![
                kb("e", f, Read),
                kb("t", Elem::I32, Read),
                kb("p", Elem::I32, Read),
                kb("x", f, Write),
            ],
            true,
        ),
        kernel(
            "append",
            vec![kb("c", f, Read), kb("x", f, Read), kb("o", f, Write)],
            false,
        ),
        kernel(
            "score",
            vec![
                kb("e", f, Read),
                kb("c", f, Read),
                kb("scratch", f, Scratch { len: 8 }),
                kb("l", f, Write),
            ],
            true,
        ),
    ];
    let launches = vec![
        Launch {
            kernel: 0,
            bufs: vec![Some(0), Some(1), Some(2), Some(5)],
        },
        Launch {
            kernel: 1,
            bufs: vec![Some(3), Some(6), Some(4)],
        },
        Launch {
            kernel: 2,
            bufs: vec![Some(0), Some(4), None, Some(7)],
        },
    ];
    Program {
        name: "toy".into(),
        buffers,
        kernels,
        launches,
    }
}

/// The toy kernels in Rust, splitting their parallel axis (rows) like compiled code would.
struct Fake;

unsafe fn f32s<'a>(p: *mut u8, bytes: usize) -> &'a mut [f32] {
    assert_eq!(p as usize % 4, 0, "f32 buffer misaligned");
    // SAFETY: the executor hands out `bytes` valid bytes at `p`.
    unsafe { std::slice::from_raw_parts_mut(p.cast::<f32>(), bytes / 4) }
}

fn chunk(n: usize, thread: usize, threads: usize) -> std::ops::Range<usize> {
    let per = n.div_ceil(threads);
    (thread * per).min(n)..((thread + 1) * per).min(n)
}

impl Kernels for Fake {
    fn tier(&self) -> &'static str {
        "fake"
    }

    unsafe fn run(&self, kernel: usize, c: &Call<'_>) -> Result<(), ExecError> {
        let (seq, past) = (c.dims[0] as usize, c.dims[1] as usize);
        // SAFETY: per the `Kernels` contract; the rows each thread writes are disjoint.
        unsafe {
            match kernel {
                0 => {
                    let e = f32s(c.bufs[0], c.lens[0]);
                    let t = std::slice::from_raw_parts(c.bufs[1].cast::<i32>(), c.lens[1] / 4);
                    let p = std::slice::from_raw_parts(c.bufs[2].cast::<i32>(), c.lens[2] / 4);
                    let x = f32s(c.bufs[3], c.lens[3]);
                    for s in chunk(seq, c.thread, c.threads) {
                        for h in 0..H {
                            x[s * H + h] = e[t[s] as usize * H + h] + p[s] as f32;
                        }
                    }
                }
                1 => {
                    let cin = f32s(c.bufs[0], c.lens[0]);
                    let x = f32s(c.bufs[1], c.lens[1]);
                    let out = f32s(c.bufs[2], c.lens[2]);
                    out[..past * H].copy_from_slice(&cin[..past * H]);
                    out[past * H..].copy_from_slice(x);
                }
                2 => {
                    if !c.bufs[2].is_null() || c.lens[2] != 0 {
                        return Err(ExecError::Program("scratch parameter got a buffer".into()));
                    }
                    let e = f32s(c.bufs[0], c.lens[0]);
                    let cache = f32s(c.bufs[1], c.lens[1]);
                    let l = f32s(c.bufs[3], c.lens[3]);
                    for s in chunk(seq, c.thread, c.threads) {
                        for v in 0..V {
                            let mut acc = 0.0;
                            for r in 0..=past + s {
                                for h in 0..H {
                                    acc += e[v * H + h] * cache[r * H + h];
                                }
                            }
                            l[s * V + v] = acc;
                        }
                    }
                }
                _ => return Err(ExecError::Program(format!("no kernel {kernel}"))),
            }
        }
        Ok(())
    }
}

fn weights() -> RandomWeights {
    let mut w = RandomWeights::default();
    let e: Vec<f32> = (0..V * H).map(|i| (i as f32 * 0.37).sin()).collect();
    w.insert("embed.tokens", vec![V, H], &e);
    w
}

/// What the toy program computes, directly.
fn expected(w: &RandomWeights, tokens: &[u32]) -> Vec<f32> {
    let view = w.get("embed.tokens").expect("inserted");
    let e = decode_f32(Dtype::F32, view.bytes).expect("f32");
    let mut sum = [0.0f32; H];
    let mut out = Vec::new();
    for (pos, &t) in tokens.iter().enumerate() {
        for h in 0..H {
            sum[h] += e[t as usize * H + h] + pos as f32;
        }
        for v in 0..V {
            out.push((0..H).map(|h| e[v * H + h] * sum[h]).sum::<f32>());
        }
    }
    out
}

fn model(w: &RandomWeights, threads: usize) -> CpuModel<'_> {
    CpuModel::new(
        (program(), Box::new(Fake)),
        (program(), Box::new(Fake)),
        w,
        V,
        threads,
    )
    .expect("the toy program loads")
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + y.abs()))
}

#[test]
fn prefill_then_decode_matches_the_direct_computation() {
    let w = weights();
    let tokens = [1u32, 3, 2, 4, 0, 4, 4];
    for threads in [1, 2, 3] {
        let mut m = model(&w, threads);
        let mut cache = m.new_cache();
        let mut got = m
            .run(Phase::Prefill, &mut cache, &tokens[..3])
            .expect("prefill");
        for &t in &tokens[3..] {
            got.extend(m.run(Phase::Decode, &mut cache, &[t]).expect("decode"));
        }
        assert_eq!(cache.past(), tokens.len());
        assert!(close(&got, &expected(&w, &tokens)), "threads {threads}");
        assert_eq!(
            m.param_stats().zero_copy,
            1,
            "f32 weights are used in place"
        );
        // The same cache memory serves the next sequence.
        cache.clear();
        let again = m.run(Phase::Prefill, &mut cache, &tokens).expect("prefill");
        assert!(
            close(&again, &expected(&w, &tokens)),
            "threads {threads}, after clear"
        );
    }
}

#[test]
fn a_failed_call_leaves_the_cache_usable() {
    let w = weights();
    let mut m = model(&w, 2);
    let mut cache = m.new_cache();
    m.run(Phase::Prefill, &mut cache, &[1, 2]).expect("prefill");
    let err = m
        .run(Phase::Decode, &mut cache, &[V as u32])
        .expect_err("token outside the vocabulary");
    assert_eq!(
        err.to_string(),
        "token 0 is id 5, outside the vocabulary of 5"
    );
    let err = m
        .run(Phase::Decode, &mut cache, &[1, 2])
        .expect_err("decode of two tokens");
    assert_eq!(err.to_string(), "decode takes one token, got 2");
    assert_eq!(cache.past(), 2);
    let got = m.run(Phase::Decode, &mut cache, &[3]).expect("decode");
    assert!(close(&got, &expected(&w, &[1, 2, 3])[2 * V..]));
}

#[test]
fn converted_parameters_are_counted() {
    let w = weights();
    let mut p = program();
    p.buffers[0].elem = Elem::Bf16;
    for k in [0, 2] {
        p.kernels[k].bufs[0].elem = Elem::Bf16;
    }
    let m =
        CpuModel::new((p.clone(), Box::new(Fake)), (p, Box::new(Fake)), &w, V, 1).expect("loads");
    let s = m.param_stats();
    assert_eq!(
        (s.zero_copy, s.converted, s.converted_bytes),
        (0, 1, V * H * 2)
    );
}

#[test]
fn inconsistent_programs_are_refused() {
    let w = weights();
    let check = |edit: &dyn Fn(&mut Program), want: &str| {
        let mut p = program();
        edit(&mut p);
        let err = CpuModel::new((p, Box::new(Fake)), (program(), Box::new(Fake)), &w, V, 1)
            .expect_err("refused");
        assert_eq!(err.to_string(), want);
    };
    check(
        &|p| p.kernels[1].bufs[0].access = Access::Write,
        "prefill program: program contract: launch 1 (kernel `append`): parameter 0 (`c`) writes `cache.0.k`, which is read-only",
    );
    check(
        &|p| p.launches[0].bufs.pop().map(drop).unwrap_or(()),
        "prefill program: program contract: launch 0 (kernel `gather`): binds 3 buffers, the kernel takes 4",
    );
    check(
        &|p| p.kernels[0].bufs[1].elem = Elem::F32,
        "prefill program: program contract: launch 0 (kernel `gather`): parameter 1 (`t`) is f32, bound to `tokens` of i32",
    );
    check(
        &|p| p.buffers[0].name = "@embed.missing".into(),
        "prefill program: parameter `embed.missing`: not bound to a checkpoint tensor",
    );
    check(
        &|p| p.buffers[6].kind = BufferKind::Alias { of: 6 },
        "prefill program: program contract: buffer `%xflat`: its alias chain is broken or a cycle",
    );
    check(
        &|p| p.launches[2].bufs[2] = Some(5),
        "prefill program: program contract: launch 2 (kernel `score`): a buffer is bound to scratch parameter 2 (`scratch`)",
    );
}

#[test]
fn narrowing_rounds_to_nearest_even() {
    assert_eq!(f32_to_bf16(1.0), 0x3f80);
    // 1 + 2^-8 is halfway between two bf16 values: ties to the even one (1.0).
    assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
    assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
    assert_eq!(f32_to_bf16(-2.5), 0xc020);
    assert!(crate::weights::bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    for x in [
        0.0f32,
        1.0,
        -2.0,
        65504.0,
        6.1035156e-5,
        5.9604645e-8,
        0.333_333_34,
        1e-3,
    ] {
        let back = crate::weights::f16_to_f32(f32_to_f16(x));
        assert!((back - x).abs() <= x.abs() * 1e-3 + 6e-8, "{x} -> {back}");
    }
    assert_eq!(f32_to_f16(1e6), 0x7c00);
    assert_eq!(f32_to_f16(-1.0), 0xbc00);
    assert_eq!(f32_to_f16(1.0 + 1.0 / 2048.0), 0x3c00, "a tie goes to even");
}

/// The toy program with its cache grown in place (`BufferKind::Append`).
fn program_in_place() -> Program {
    let mut p = program();
    p.buffers[4].kind = BufferKind::Append { to: 3 };
    p
}

/// `Fake`, except that the append kernel requires the grown cache to be the input's own
/// memory and writes only the new rows (the contract of `BufferKind::Append`).
struct FakeInPlace;

impl Kernels for FakeInPlace {
    fn tier(&self) -> &'static str {
        "fake"
    }

    unsafe fn run(&self, kernel: usize, c: &Call<'_>) -> Result<(), ExecError> {
        if kernel != 1 {
            // SAFETY: forwarded under the same contract.
            return unsafe { Fake.run(kernel, c) };
        }
        let past = c.dims[1] as usize;
        if c.bufs[0] != c.bufs[2] || c.lens[0] != past * H * 4 {
            return Err(ExecError::Program(
                "the grown cache is not the input's memory".into(),
            ));
        }
        // SAFETY: per the `Kernels` contract; only the new rows are written.
        unsafe {
            let x = f32s(c.bufs[1], c.lens[1]);
            let out = f32s(c.bufs[2], c.lens[2]);
            out[past * H..].copy_from_slice(x);
        }
        Ok(())
    }
}

#[test]
fn the_cache_grows_in_place_and_decode_reuses_memory() {
    let w = weights();
    let tokens = [1u32, 3, 2, 4, 0, 4, 4, 1, 2, 3, 0, 1];
    for threads in [1, 2] {
        let mut m = CpuModel::new(
            (program_in_place(), Box::new(FakeInPlace)),
            (program_in_place(), Box::new(FakeInPlace)),
            &w,
            V,
            threads,
        )
        .expect("the in-place toy program loads");
        let mut cache = m.new_cache();
        let mut logits = Vec::new();
        m.run_into(Phase::Prefill, &mut cache, &tokens[..8], &mut logits)
            .expect("prefill");
        let mut got = logits.clone();
        let at = logits.as_ptr();
        // An eighth of spare room after 8 rows holds the 9th: no reallocation.
        let kv = cache.entries[&Io::kv(0, KvPart::K)].current.as_ptr();
        m.run_into(Phase::Decode, &mut cache, &tokens[8..9], &mut logits)
            .expect("decode");
        assert_eq!(cache.entries[&Io::kv(0, KvPart::K)].current.as_ptr(), kv);
        assert_eq!(logits.as_ptr(), at, "the logits vector is reused");
        got.extend_from_slice(&logits);
        // Later steps grow the cache, keeping the old rows.
        for &t in &tokens[9..] {
            m.run_into(Phase::Decode, &mut cache, &[t], &mut logits)
                .expect("decode");
            got.extend_from_slice(&logits);
        }
        assert_eq!(cache.past(), tokens.len());
        assert!(close(&got, &expected(&w, &tokens)), "threads {threads}");
        assert!(cache.entries[&Io::kv(0, KvPart::K)]
            .spare
            .as_slice()
            .is_empty());
    }
}
