//! Prefill matmul kernels in each schedule: the LLVM code (with `vdpbf16ps` where the host
//! has it, and without it) against the kernel interpreter on the same kernels, for tokens
//! in lanes and row blocks (bf16 activations, `KernelOptions::bf16_activations`, over bf16
//! weights; row blocks forced through the `Schedule`, with and without chunked
//! reductions) and plain row tiles (f32 activations); which schedules the CPU and GPU
//! schedules pick; a hand-built bf16 dot loop against an f64 reference (with a `k` that
//! leaves a remainder), and which targets get the dot-product instruction.
//!
//! Set `ARCHC_GEMM_BENCH=1` to also print the GFLOP/s of each prefill linear of one
//! Qwen3-0.6B layer (`ARCHC_GEMM_ARCH=path.arch` for another model's shapes,
//! `ARCHC_GEMM_DECODE=1` for the decode matvecs; nothing asserts a time).

use archc_compiler::codegen::llvm::{compile_kernels_with, emit_llvm_ir, Options, Target};
use archc_compiler::kernel::build::*;
use archc_compiler::kernel::interp::{bf16_to_f32, f32_to_bf16, run_kernel, KBufData};
use archc_compiler::kernel::lower::{
    program_with, KernelOptions, Lowering, MatmulSchedule, Schedule,
};
use archc_compiler::kernel::{Access, Elem, Kernel, LoopKind, Stmt, Tile, TileOut, TileRef, Ty};
use archc_compiler::{passes, testing, Mode};

/// Deterministic pseudo-random values in `[-1, 1)`.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn host_has_bf16() -> bool {
    Target::host()
        .features
        .split(',')
        .any(|f| f == "+avx512bf16")
}

/// `out[m, o] = 0.5 + sum_k x[m, k] * w[o, k]`, both bf16: the row loop parallel, the
/// dot product a one-by-one tile, which a CPU with AVX512-BF16 runs with `vdpbf16ps`.
fn dot_kernel(kdim: i64, odim: i64) -> Kernel {
    let mut k = Kernel::new("dot_bf16");
    let x = k.buf("x", Elem::Bf16, Access::Read);
    let w = k.buf("w", Elem::Bf16, Access::Read);
    let out = k.buf("out", Elem::F32, Access::Write);
    let m = k.var("m", Ty::I64);
    let o = k.var("o", Ty::I64);
    let acc = k.var("acc", Ty::F32);
    let tile = Tile {
        start: i(0),
        end: i(kdim),
        lanes: 1,
        rows: vec![TileRef {
            buf: x,
            base: mul(var(m), i(kdim)),
        }],
        cols: vec![TileRef {
            buf: w,
            base: mul(var(o), i(kdim)),
        }],
        out: TileOut::Sums(vec![acc]),
    };
    k.body = vec![Stmt::Loop {
        var: m,
        start: i(0),
        end: seq(),
        step: 1,
        kind: LoopKind::Parallel,
        body: vec![Stmt::Loop {
            var: o,
            start: i(0),
            end: i(odim),
            step: 1,
            kind: LoopKind::Serial,
            body: vec![
                Stmt::Tile(Box::new(tile)),
                Stmt::Store {
                    buf: out,
                    index: add(mul(var(m), i(odim)), var(o)),
                    value: add(var(acc), f(0.5)),
                },
            ],
        }],
    }];
    k
}

#[test]
fn bf16_dot_loop_matches_f64_reference_with_remainder() {
    let (m, kdim, odim) = (3usize, 1000usize, 5usize);
    let prog = compile_kernels_with(
        &[dot_kernel(kdim as i64, odim as i64)],
        &Target::host(),
        &Options::no_cache(),
    )
    .expect("compile");
    let mut x: Vec<u16> = values(m * kdim, 1).into_iter().map(f32_to_bf16).collect();
    let mut w: Vec<u16> = values(odim * kdim, 2)
        .into_iter()
        .map(f32_to_bf16)
        .collect();
    let mut out = vec![0f32; m * odim];
    let bufs = [
        x.as_mut_ptr().cast(),
        w.as_mut_ptr().cast(),
        out.as_mut_ptr().cast::<u8>(),
    ];
    unsafe { prog.call(0, &bufs, [m as i64, 0], 0, 1) };
    for r in 0..m {
        for o in 0..odim {
            let want: f64 = 0.5
                + (0..kdim)
                    .map(|j| {
                        bf16_to_f32(x[r * kdim + j]) as f64 * bf16_to_f32(w[o * kdim + j]) as f64
                    })
                    .sum::<f64>();
            let got = out[r * odim + o] as f64;
            assert!(
                (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "out[{r}, {o}] = {got}, want {want}"
            );
        }
    }
}

#[test]
fn dpbf16ps_only_where_the_target_has_it() {
    let k = dot_kernel(1000, 5);
    let fixed = emit_llvm_ir(std::slice::from_ref(&k), &Target::x86_64(), true).expect("emit");
    assert!(
        !fixed.contains("dpbf16ps"),
        "x86-64-v4 has no avx512bf16 but got dpbf16ps"
    );
    let mut zen4 = Target::x86_64();
    zen4.cpu = "znver4".into();
    let ir = emit_llvm_ir(std::slice::from_ref(&k), &zen4, true).expect("emit");
    assert!(ir.contains("llvm.x86.avx512bf16.dpbf16ps.512"), "{ir}");
    let arm = emit_llvm_ir(std::slice::from_ref(&k), &Target::aarch64(), true).expect("emit");
    assert!(!arm.contains("dpbf16ps"));
    let host = emit_llvm_ir(&[k], &Target::host(), true).expect("emit");
    assert_eq!(host.contains("dpbf16ps"), host_has_bf16());
}

/// How a test lowers the linears: f32 activations (plain row tiles, the automatic choice);
/// bf16 activations over bf16 weights with plain row tiles forced (what the GPU schedule
/// takes) or the row-blocked schedule forced (its dot-product tiles are also what the
/// lanes kernel falls back to below 16 tokens); bf16 activations over bf16 weights
/// (tokens in SIMD lanes, the automatic choice).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Case {
    F32,
    RowTilesBf16,
    Blocked,
    Lanes,
}

impl Case {
    /// The spec's dtype and the lowering of this case.
    fn lowering(self) -> (archc_spec::DType, Lowering<'static>) {
        let bf16 = self != Case::F32;
        let schedule = match self {
            Case::RowTilesBf16 => Schedule::cpu().with_matmul(MatmulSchedule::RowTiles),
            Case::Blocked => Schedule::cpu().with_matmul(MatmulSchedule::RowBlocked),
            Case::F32 | Case::Lanes => Schedule::cpu(),
        };
        let dtype = match bf16 {
            true => archc_spec::DType::Bf16,
            false => archc_spec::DType::F32,
        };
        let lowering = Lowering {
            schedule,
            options: KernelOptions {
                bf16_activations: bf16,
                ..KernelOptions::default()
            },
            ..Lowering::default()
        };
        (dtype, lowering)
    }
}

/// Every linear kernel of prefill programs of 70 and 90 tokens (a whole row block, then
/// leftover rows that fill one group of 16 tokens partly, or two), and of 9 tokens (fewer
/// than a group: the row-blocked tiles the same kernel falls back to), lowered with bf16
/// activations and bf16 weights, the tokens-in-lanes schedule: LLVM against the kernel
/// interpreter on the same inputs, within 1e-5 of the output's scale (only the summation
/// order may differ), on the host (with `vdpbf16ps` where it has AVX512-BF16).
#[test]
fn bf16_activation_linears_match_the_kernel_interpreter() {
    linears_match_the_kernel_interpreter(Case::Lanes, 48, &Target::host());
}

/// The same code for a CPU without AVX512-BF16 (x86-64-v4): the bf16 pairs widen to f32
/// and go through fused multiply-adds. Runs where the host has AVX-512.
#[test]
fn bf16_lanes_without_the_bf16_dot_instruction() {
    if !Target::host().features.split(',').any(|f| f == "+avx512f") {
        eprintln!("skipped: the host has no AVX-512 to run x86-64-v4 code");
        return;
    }
    linears_match_the_kernel_interpreter(Case::Lanes, 48, &Target::x86_64());
}

/// The row-blocked schedule, forced through the `Schedule` (bf16 activations over bf16
/// weights would otherwise take tokens in lanes).
#[test]
fn bf16_activation_blocked_linears_match_the_kernel_interpreter() {
    linears_match_the_kernel_interpreter(Case::Blocked, 48, &Target::host());
}

/// Plain row tiles with bf16 activations over bf16 weights (forced on the CPU; the GPU
/// schedule's only prefill schedule): the rows rounded into bf16 scratch per tile.
#[test]
fn bf16_activation_row_tiles_match_the_kernel_interpreter() {
    linears_match_the_kernel_interpreter(Case::RowTilesBf16, 48, &Target::host());
}

/// The same with f32 activations (plain row tiles, the default schedule).
#[test]
fn f32_activation_linears_match_the_kernel_interpreter() {
    linears_match_the_kernel_interpreter(Case::F32, 48, &Target::host());
}

/// A feed-forward width above 4096 in the row-blocked schedule: the down projection's
/// reduction runs in chunks of 2048 (two whole chunks and a 64-element one), partial sums
/// through the output and the residual epilogue on the last chunk only.
#[test]
fn chunked_reduction_linears_match_the_kernel_interpreter() {
    linears_match_the_kernel_interpreter(Case::Blocked, 4160, &Target::host());
}

/// Which matmul schedule the prefill linears of a bf16 model take with bf16 activations:
/// tokens in lanes with the CPU schedule, plain row tiles with the GPU schedule (no row
/// blocks: their scratch outside the parallel loop suits cores, not GPU threads), still
/// rounding activations to bf16 scratch; a forced schedule where the linears admit it,
/// and the automatic choice where they do not (tokens in lanes over f32 weights).
#[test]
fn each_schedule_takes_its_matmul_schedule() {
    // Per linear kernel: tokens in lanes, row blocks, bf16 activation scratch.
    let shapes = |dtype, schedule: Schedule| -> Vec<(bool, bool, bool)> {
        let mut spec = testing::llama(testing::swiglu(48));
        spec.dtype = dtype;
        let graph = archc_compiler::lower(&spec, Mode::Prefill).expect("lower");
        let lowering = Lowering {
            schedule,
            options: KernelOptions {
                bf16_activations: true,
                ..KernelOptions::default()
            },
            ..Lowering::default()
        };
        let program = program_with(&passes::optimize(&graph), &lowering).expect("program");
        let shapes: Vec<(bool, bool, bool)> = program
            .kernels
            .iter()
            .filter(|k| k.name.starts_with("linear"))
            .map(|k| {
                let text = k.to_string();
                let bf16 = k
                    .bufs
                    .iter()
                    .any(|b| b.elem == Elem::Bf16 && matches!(b.access, Access::Scratch { .. }));
                (text.contains(" lanes 16 {"), text.contains("for rb_"), bf16)
            })
            .collect();
        assert!(shapes.len() >= 3, "{shapes:?}");
        shapes
    };
    let all = |v: Vec<(bool, bool, bool)>, want: (bool, bool, bool), what: &str| {
        assert!(v.iter().all(|s| *s == want), "{what}: {v:?}");
    };
    let bf16 = archc_spec::DType::Bf16;
    all(shapes(bf16, Schedule::cpu()), (true, true, true), "cpu");
    all(shapes(bf16, Schedule::gpu()), (false, false, true), "gpu");
    let forced = |m| Schedule::cpu().with_matmul(m);
    all(
        shapes(bf16, forced(MatmulSchedule::RowBlocked)),
        (false, true, true),
        "row blocks",
    );
    all(
        shapes(bf16, forced(MatmulSchedule::RowTiles)),
        (false, false, true),
        "row tiles",
    );
    // Weights that are not bf16 admit no lanes and take no bf16 activations.
    let f32 = archc_spec::DType::F32;
    all(
        shapes(f32, forced(MatmulSchedule::Lanes)),
        (false, false, false),
        "f32 weights",
    );
}

/// The tokens-in-lanes tiles become `vdpbf16ps` with a broadcast weight pair on a CPU
/// with AVX512-BF16, and no horizontal sums are left in their reduction.
#[test]
fn lanes_tiles_use_the_bf16_dot_instruction() {
    let mut spec = testing::llama(testing::swiglu(48));
    spec.dtype = archc_spec::DType::Bf16;
    let graph = archc_compiler::lower(&spec, Mode::Prefill).expect("lower");
    let fused = passes::optimize(&graph);
    let program = program_with(&fused, &Case::Lanes.lowering().1).expect("program");
    let mut zen4 = Target::x86_64();
    zen4.cpu = "znver4".into();
    for k in program
        .kernels
        .iter()
        .filter(|k| k.name.starts_with("linear"))
    {
        let text = k.to_string();
        assert!(text.contains(" lanes 16 {"), "{text}");
        let ir = emit_llvm_ir(std::slice::from_ref(k), &zen4, true).expect("emit");
        assert!(
            ir.contains("lanes.body"),
            "{}: no lanes loop in\n{ir}",
            k.name
        );
        assert!(ir.contains("llvm.x86.avx512bf16.dpbf16ps.512"), "{ir}");
        let fallback =
            emit_llvm_ir(std::slice::from_ref(k), &Target::x86_64(), true).expect("emit");
        assert!(fallback.contains("lanes.body") && !fallback.contains("dpbf16ps"));
    }
}

fn linears_match_the_kernel_interpreter(case: Case, ffn: u64, target: &Target) {
    let bf16 = case != Case::F32;
    let mut spec = testing::llama(testing::swiglu(ffn));
    let (dtype, lowering) = case.lowering();
    spec.dtype = dtype;
    let graph = archc_compiler::lower(&spec, Mode::Prefill).expect("lower");
    let fused = passes::optimize(&graph);
    let program = program_with(&fused, &lowering).expect("program");
    let mut linears: Vec<Kernel> = program
        .kernels
        .iter()
        .filter(|k| k.name.starts_with("linear"))
        .cloned()
        .collect();
    assert!(!linears.is_empty(), "no linear kernels");
    let chunked = linears
        .iter()
        .any(|k| k.to_string().contains(" in 0..3 {") && k.to_string().contains("for ch_"));
    assert_eq!(
        chunked,
        case == Case::Blocked && ffn > 4096,
        "chunked reductions"
    );
    for k in &linears {
        let lanes = k.to_string().contains(" lanes 16 {");
        assert_eq!(lanes, case == Case::Lanes, "tokens in lanes: {k}");
        // Row blocks: a serial loop over blocks of tokens around the parallel loop.
        let blocks = k.to_string().contains("for rb_");
        let blocked = matches!(case, Case::Blocked | Case::Lanes);
        assert_eq!(blocks, blocked, "row blocks: {k}");
    }
    // Weights (and every other read-only operand after the activations) as bf16, as the
    // runtime binds a bf16 checkpoint (already so for a bf16 spec).
    for k in &mut linears {
        for b in k.bufs.iter_mut().skip(1) {
            if b.access == Access::Read && b.elem == Elem::F32 {
                b.elem = Elem::Bf16;
            }
        }
        let bf16_scratch = k
            .bufs
            .iter()
            .any(|b| b.elem == Elem::Bf16 && matches!(b.access, Access::Scratch { .. }));
        assert_eq!(bf16_scratch, bf16, "{}: bf16 activation scratch", k.name);
    }
    let prog = compile_kernels_with(&linears, target, &Options::no_cache()).expect("compile");
    for seq in [9usize, 70, 90] {
        for (ki, k) in linears.iter().enumerate() {
            // Sizes from the launch that binds this kernel: every buffer's element count.
            let li = program
                .launches
                .iter()
                .position(|l| program.kernels[l.kernel].name == k.name)
                .expect("launched");
            let launch = &program.launches[li];
            let mut data: Vec<Vec<f32>> = Vec::new();
            for (j, b) in launch.bufs.iter().enumerate() {
                let n = match b {
                    Some(b) => program.buffers[*b]
                        .shape
                        .iter()
                        .map(|d| d.eval(seq, 0))
                        .product(),
                    None => 0,
                };
                data.push(values(n, 10 + j as u64));
            }
            let out_j = k
                .bufs
                .iter()
                .position(|b| matches!(b.access, Access::Write | Access::ReadWrite))
                .expect("output");
            // Interpreter.
            let mut bf: Vec<Vec<u16>> = data
                .iter()
                .map(|v| v.iter().map(|&x| f32_to_bf16(x)).collect())
                .collect();
            let mut f32s = data.clone();
            let mut views: Vec<KBufData> = Vec::new();
            for (b, (fv, bv)) in k.bufs.iter().zip(f32s.iter_mut().zip(bf.iter_mut())) {
                views.push(match (b.access, b.elem) {
                    (Access::Scratch { .. }, _) => KBufData::Unbound,
                    (_, Elem::Bf16) => KBufData::Bf16(bv),
                    _ => KBufData::F32(fv),
                });
            }
            run_kernel(k, &mut views, seq as i64, 0, 0, 1).expect("interpret");
            drop(views);
            let want = f32s[out_j].clone();
            // LLVM, two threads' chunks in turn.
            let mut f32n = data.clone();
            let mut bfn: Vec<Vec<u16>> = data
                .iter()
                .map(|v| v.iter().map(|&x| f32_to_bf16(x)).collect())
                .collect();
            let ptrs: Vec<*mut u8> = k
                .bufs
                .iter()
                .zip(f32n.iter_mut().zip(bfn.iter_mut()))
                .map(|(b, (fv, bv))| match b.elem {
                    Elem::Bf16 => bv.as_mut_ptr().cast(),
                    _ => fv.as_mut_ptr().cast(),
                })
                .collect();
            for t in 0..2 {
                unsafe { prog.call(ki, &ptrs, [seq as i64, 0], t, 2) };
            }
            let got = &f32n[out_j];
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            for (e, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * scale,
                    "{}: out[{e}] = {g}, interpreter {w} (scale {scale}, {seq} tokens)",
                    k.name
                );
            }
        }
    }
}

/// Kernel pointers shared by the benchmark's threads (each runs its own chunk).
struct Ptrs(Vec<*mut u8>);
unsafe impl Send for Ptrs {}
unsafe impl Sync for Ptrs {}

/// With `ARCHC_GEMM_BENCH=1` (`=bf16`: the bf16 kernels only): GFLOP/s of every linear kernel of one Qwen3-0.6B layer at a
/// 512-token prefill on two threads, with f32 and with bf16 activations. Without it, the
/// test only checks that the real shapes lower and compile both ways.
#[test]
fn qwen3_prefill_linears() {
    let bench = std::env::var_os("ARCHC_GEMM_BENCH").is_some();
    let default = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/qwen3-0.6b.arch");
    let path = std::env::var("ARCHC_GEMM_ARCH").unwrap_or_else(|_| default.to_string());
    let path = path.as_str();
    let src = std::fs::read_to_string(path).expect("read example");
    let mut spec = archc_spec::validate::check_source(path, &src).expect("valid example");
    spec.dtype = archc_spec::DType::Bf16;
    spec.layers = 1;
    spec.schedule.resize(1, 0);
    // `ARCHC_GEMM_DECODE=1`: the decode program's matrix-vector kernels instead (one
    // token; bf16 weights, so GFLOP/s equals the GB/s of weights read).
    let decode = std::env::var_os("ARCHC_GEMM_DECODE").is_some();
    let mode = if decode { Mode::Decode } else { Mode::Prefill };
    let graph = archc_compiler::lower(&spec, mode).expect("lower");
    let fused = passes::optimize(&graph);
    let seq = if decode { 1usize } else { 512 };
    let only_bf16 = std::env::var("ARCHC_GEMM_BENCH").is_ok_and(|v| v == "bf16");
    for bf16 in [false, true] {
        if only_bf16 && !bf16 {
            continue;
        }
        let lowering = Lowering {
            options: KernelOptions {
                bf16_activations: bf16,
                ..KernelOptions::default()
            },
            ..Lowering::default()
        };
        let program = program_with(&fused, &lowering).expect("program");
        let launches: Vec<_> = program
            .launches
            .iter()
            .filter(|l| program.kernels[l.kernel].name.starts_with("linear"))
            .collect();
        let kernels: Vec<Kernel> = launches
            .iter()
            .map(|l| program.kernels[l.kernel].clone())
            .collect();
        let prog =
            compile_kernels_with(&kernels, &Target::host(), &Options::no_cache()).expect("compile");
        if !bench {
            continue;
        }
        if std::env::var_os("ARCHC_GEMM_PRINT").is_some() {
            for k in &kernels {
                eprintln!("{k}");
            }
        }
        for (ki, l) in launches.iter().enumerate() {
            let mut mem: Vec<Vec<u32>> = Vec::new();
            let mut flops = 0f64;
            for (j, b) in l.bufs.iter().enumerate() {
                let Some(b) = b else {
                    mem.push(Vec::new());
                    continue;
                };
                let buf = &program.buffers[*b];
                let n: usize = buf.shape.iter().map(|d| d.eval(seq, 0)).product();
                if buf.kind == archc_compiler::kernel::BufferKind::Param && buf.shape.len() == 2 {
                    flops += 2.0 * seq as f64 * n as f64;
                }
                let v = values(n, 100 + j as u64);
                let words: Vec<u32> = match buf.elem {
                    Elem::Bf16 => v
                        .chunks(2)
                        .map(|c| {
                            f32_to_bf16(c[0]) as u32
                                | (c.get(1).map_or(0, |&x| f32_to_bf16(x)) as u32) << 16
                        })
                        .collect(),
                    _ => v.iter().map(|x| (x * 0.1).to_bits()).collect(),
                };
                mem.push(words);
            }
            let ptrs = Ptrs(mem.iter_mut().map(|m| m.as_mut_ptr().cast()).collect());
            let run = || {
                std::thread::scope(|s| {
                    for t in 0..2 {
                        let (ptrs, prog) = (&ptrs, &prog);
                        s.spawn(move || unsafe { prog.call(ki, &ptrs.0, [seq as i64, 0], t, 2) });
                    }
                })
            };
            run();
            // The fastest of several runs: the machine may be shared.
            let mut secs = f64::INFINITY;
            for _ in 0..8 {
                let t0 = std::time::Instant::now();
                run();
                secs = secs.min(t0.elapsed().as_secs_f64());
            }
            eprintln!(
                "bf16_activations={bf16} {:<28} {:8.2} ms {:7.1} GFLOP/s",
                kernels[ki].name,
                secs * 1e3,
                flops / secs / 1e9
            );
        }
    }
}

/// The prefill logits of `spec` (bf16 weights) for 70 tokens, through the kernel
/// interpreter, lowered with `opts`.
fn interp_logits(spec: &archc_spec::Spec, options: KernelOptions) -> Vec<f32> {
    use archc_compiler::kernel::interp::run_program;
    use archc_compiler::kernel::BufferKind;
    use std::collections::BTreeMap;
    let seq = 70usize;
    let graph = archc_compiler::lower(spec, Mode::Prefill).expect("lower");
    let lowering = Lowering {
        options,
        ..Lowering::default()
    };
    let program = program_with(&passes::optimize(&graph), &lowering).expect("program");
    enum Mem {
        F(Vec<f32>),
        B(Vec<u16>),
        I(Vec<i32>),
    }
    let mut mems: BTreeMap<String, Mem> = BTreeMap::new();
    for (j, b) in program.buffers.iter().enumerate() {
        if !matches!(b.kind, BufferKind::Param | BufferKind::Input(_)) {
            continue;
        }
        let n: usize = b.shape.iter().map(|d| d.eval(seq, 0)).product();
        let v = values(n, 1000 + j as u64);
        let mem = match (b.elem, b.name.as_str()) {
            (Elem::I32, "tokens") => Mem::I((0..n as i32).map(|t| (t * 7) % 50).collect()),
            (Elem::I32, _) => Mem::I((0..n as i32).collect()),
            (Elem::Bf16, _) => Mem::B(v.into_iter().map(f32_to_bf16).collect()),
            _ => Mem::F(v),
        };
        mems.insert(b.name.clone(), mem);
    }
    let inputs: BTreeMap<String, KBufData> = mems
        .iter_mut()
        .map(|(name, m)| {
            let d = match m {
                Mem::F(v) => KBufData::F32Ro(v),
                Mem::B(v) => KBufData::Bf16Ro(v),
                Mem::I(v) => KBufData::I32Ro(v),
            };
            (name.clone(), d)
        })
        .collect();
    let out = run_program(&program, inputs, seq as i64, 0, 1).expect("run");
    out.get("logits").expect("logits").to_f32()
}

/// Whole tiny models with bf16 weights: logits with bf16 activations against f32
/// activations, in units of the f32 logits' standard deviation. Rounding activations to
/// bf16 (8 significant bits) moves logits by 4e-3 to 8e-3 std on average (5e-2 to 8e-2 at
/// most) on these models with uniform random weights; the bounds are three times that. A
/// wrong tile or row offset would move most logits by about one std.
#[test]
fn bf16_activation_logits_stay_close_to_f32_activations() {
    let models = [
        ("llama", testing::llama(testing::swiglu(48))),
        (
            "gpt2",
            testing::gpt2(testing::mlp(
                48,
                archc_spec::Activation::GeluTanh,
                false,
                true,
            )),
        ),
    ];
    for (name, mut spec) in models {
        spec.dtype = archc_spec::DType::Bf16;
        let f32s = interp_logits(&spec, KernelOptions::default());
        let bf16 = interp_logits(
            &spec,
            KernelOptions {
                bf16_activations: true,
                ..KernelOptions::default()
            },
        );
        assert_eq!(f32s.len(), bf16.len());
        let n = f32s.len() as f64;
        let mean = f32s.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (f32s.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        let diffs: Vec<f64> = f32s
            .iter()
            .zip(&bf16)
            .map(|(a, b)| (*a as f64 - *b as f64).abs() / std)
            .collect();
        let max = diffs.iter().fold(0f64, |m, d| m.max(*d));
        let avg = diffs.iter().sum::<f64>() / n;
        eprintln!(
            "{name}: bf16 activations move logits by {avg:.2e} std on average, {max:.2e} at most"
        );
        assert!(
            avg <= 0.03 && max <= 0.25,
            "{name}: mean {avg:e} std, max {max:e} std"
        );
    }
}
