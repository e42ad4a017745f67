//! GPU execution through the CUDA runtime: the device probe fails cleanly without a
//! driver or device, and where a device is present, kernel programs of tiny models run
//! on it (PTX from the NVPTX backend) and match the kernel IR interpreter in prefill and
//! in a decode step after a cache; `--backend cuda` matches the graph interpreter on every
//! family fixture (tests/data/fixtures/), and its decode matches its prefill. Without a
//! device the GPU tests print that they were skipped and why; `archc logits --backend
//! cuda` then exits 2 with a message naming what is missing.
//!
//! The device-resident KV cache is checked by long decodes (the cache buffers grow
//! several times) against a prefill of the same tokens, and the decode CUDA graph by
//! running the same decode with graphs on and off (the same kernels in the same order:
//! the logits must be identical). Decode on GGUF block weights (every format) matches the
//! kernel IR interpreter on the same bytes.

#[macro_use]
mod common;

use archc_compiler::interp::{RandomWeights, WeightSource};
use archc_compiler::ir::Io;
use archc_compiler::kernel::interp::{run_program, KBufData};
use archc_compiler::kernel::lower::{program_with, BlockFormat, Lowering, ParamFormat};
use archc_compiler::kernel::{lower::program, BufferKind, Elem, Program};
use archc_compiler::passes::optimize;
use archc_compiler::{lower, testing, Mode};
use archc_runtime::exec::cpu::Logits;
use archc_runtime::exec::cpu::Phase;
use archc_runtime::exec::cuda::{probe, CudaError, CudaModel, CudaOptions, CudaProgram};
use archc_runtime::exec::{logits, Backend, Mode as ExecMode};
use archc_runtime::npy;
use common::{fixture, load, Fixture};
use std::collections::BTreeMap;

/// Largest allowed |a - b| between two fp32 computations of the same logits.
const TOLERANCE: f32 = 1e-4;

#[test]
fn probe_fails_cleanly_for_a_missing_device() {
    // No machine has this many devices: with or without a driver the answer is an error,
    // never a panic.
    let e = probe(usize::MAX).expect_err("no such device");
    assert!(
        matches!(e, CudaError::NoDriver | CudaError::NoDevice { .. }),
        "{e}"
    );
    assert!(!e.to_string().is_empty());
}

/// Device 0, or `None` after printing why the GPU tests are skipped.
fn device() -> Option<()> {
    match probe(0) {
        Ok(info) => {
            eprintln!("running on {} (sm {:?})", info.name, info.capability);
            Some(())
        }
        Err(e) => {
            eprintln!("skipped: GPU test needs a CUDA device: {e}");
            None
        }
    }
}

fn f32_bytes(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i32_bytes(xs: &[i32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Runs `p` on the kernel interpreter and on the GPU with the same inputs and compares
/// every output.
fn check(p: Program, weights: &RandomWeights, tokens: &[u32], past: usize) {
    let toks: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let pos: Vec<i32> = (past..past + tokens.len()).map(|x| x as i32).collect();
    let mut params: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut caches: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for b in &p.buffers {
        match &b.kind {
            BufferKind::Param => {
                assert_eq!(b.elem, Elem::F32, "tiny models have f32 weights");
                // Program parameter buffers are named `@tensor`; the weights are not.
                let name = b.name.strip_prefix('@').unwrap_or(&b.name);
                let w = weights.get(name).expect("random weights cover the graph");
                params.insert(b.name.clone(), to_f32(w.bytes));
            }
            BufferKind::Input(io) if io.is_carried() => {
                let n: usize = b.shape.iter().map(|d| d.eval(tokens.len(), past)).product();
                let v = (0..n).map(|i| ((i % 17) as f32 - 8.0) / 16.0).collect();
                caches.insert(b.name.clone(), v);
            }
            _ => {}
        }
    }
    // The reference: the kernel IR interpreter on one thread.
    let mut inputs: BTreeMap<String, KBufData> = BTreeMap::new();
    for (name, v) in &params {
        inputs.insert(name.clone(), KBufData::F32Ro(v));
    }
    for (name, v) in &caches {
        inputs.insert(name.clone(), KBufData::F32Ro(v));
    }
    inputs.insert("tokens".into(), KBufData::I32Ro(&toks));
    inputs.insert("positions".into(), KBufData::I32Ro(&pos));
    let want = run_program(&p, inputs, tokens.len() as i64, past as i64, 1)
        .unwrap_or_else(|e| panic!("{}: kernel interpreter: {e}", p.name));

    let param_bytes: BTreeMap<String, Vec<u8>> = params
        .iter()
        .map(|(k, v)| (k.clone(), f32_bytes(v)))
        .collect();
    let param_refs: BTreeMap<String, &[u8]> = param_bytes
        .iter()
        .map(|(k, v)| (k.clone(), v.as_slice()))
        .collect();
    let mut input_bytes: BTreeMap<String, Vec<u8>> = caches
        .iter()
        .map(|(k, v)| (k.clone(), f32_bytes(v)))
        .collect();
    input_bytes.insert("tokens".into(), i32_bytes(&toks));
    input_bytes.insert("positions".into(), i32_bytes(&pos));
    let input_refs: BTreeMap<String, &[u8]> = input_bytes
        .iter()
        .map(|(k, v)| (k.clone(), v.as_slice()))
        .collect();
    let name = p.name.clone();
    let gpu = CudaProgram::new(p, 0, &param_refs).unwrap_or_else(|e| panic!("{name}: {e}"));
    let got = gpu
        .run(&input_refs, tokens.len(), past)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    for (out, w) in &want {
        let w = w.to_f32();
        let g = to_f32(
            got.get(out)
                .unwrap_or_else(|| panic!("{name}: no output `{out}`")),
        );
        assert_eq!(w.len(), g.len(), "{name}: `{out}` length");
        let scale = testing::max_abs(&w).max(1.0);
        let diff = testing::max_abs_diff(&w, &g);
        eprintln!("{name} `{out}`: max abs diff {diff:e} (scale {scale})");
        assert!(diff <= 1e-4 * scale, "{name}: `{out}` differs by {diff}");
    }
}

#[test]
fn tiny_llama_on_the_gpu_matches_the_kernel_interpreter() {
    let Some(()) = device() else { return };
    let spec = testing::llama(testing::swiglu(100));
    let prefill = lower(&spec, Mode::Prefill).expect("lowers");
    let decode = lower(&spec, Mode::Decode).expect("lowers");
    let weights = RandomWeights::for_graphs(&[&prefill, &decode], 7);
    let tokens = &testing::PROMPT[..9];
    check(
        program(&optimize(&prefill)).expect("kernels"),
        &weights,
        tokens,
        0,
    );
    check(
        program(&optimize(&decode)).expect("kernels"),
        &weights,
        &tokens[..1],
        8,
    );
}

/// `--backend cuda` against the graph interpreter, and its decode against its prefill.
fn check_fixture(case: &str) {
    let Some(()) = device() else { return };
    let Fixture {
        dir,
        spec,
        tokens,
        vocab,
        ..
    } = fixture(case);
    let weights = load(case, &spec, &dir);
    let reference = logits(&spec, &weights, &tokens, ExecMode::Prefill, Backend::Interp)
        .unwrap_or_else(|e| panic!("{case}: graph interpreter failed: {e}"));
    let ours = logits(&spec, &weights, &tokens, ExecMode::Prefill, Backend::Cuda)
        .unwrap_or_else(|e| panic!("{case}: --backend cuda prefill failed: {e}"));
    common::check(
        case,
        "cuda prefill vs graph interpreter",
        &ours,
        &reference,
        vocab,
        TOLERANCE,
    );
    let decoded = logits(&spec, &weights, &tokens, ExecMode::Decode, Backend::Cuda)
        .unwrap_or_else(|e| panic!("{case}: --backend cuda decode failed: {e}"));
    common::check(
        case,
        "cuda decode vs cuda prefill",
        &decoded,
        &ours,
        vocab,
        TOLERANCE,
    );

    // A prefill of all but the last token, then one decode step on the same cache: the
    // step must see exactly the cache the prefill left.
    let model = CudaModel::from_spec(&spec, &weights, 0)
        .unwrap_or_else(|e| panic!("{case}: cannot load the model: {e}"));
    let mut cache = model.new_cache();
    let (head, last) = tokens.split_at(tokens.len() - 1);
    model
        .run(Phase::Prefill, &mut cache, head)
        .unwrap_or_else(|e| panic!("{case}: prefill of the head failed: {e}"));
    assert_eq!(
        cache.past(),
        head.len(),
        "{case}: cache length after prefill"
    );
    let step = model
        .run(Phase::Decode, &mut cache, last)
        .unwrap_or_else(|e| panic!("{case}: decode after prefill failed: {e}"));
    common::check(
        case,
        "decode after prefill vs prefill (last token)",
        &step,
        &ours[head.len() * vocab..],
        vocab,
        TOLERANCE,
    );
}

/// A decode of many tokens (the device cache grows from 1 row through several doublings)
/// matches a prefill of the same tokens, with graphs off and on; the graph run must
/// really replay (no fallback) and give the same logits as plain launches.
fn check_long_decode(graphs: bool) -> Option<Vec<f32>> {
    device()?;
    let spec = testing::llama(testing::swiglu(100));
    let prefill = lower(&spec, Mode::Prefill).expect("lowers");
    let decode = lower(&spec, Mode::Decode).expect("lowers");
    let weights = RandomWeights::for_graphs(&[&prefill, &decode], 11);
    let tokens: Vec<u32> = (0..40)
        .map(|i| testing::PROMPT[i % testing::PROMPT.len()])
        .collect();
    let options = CudaOptions {
        logits: Logits::All,
        graphs,
    };
    let model = CudaModel::from_spec_with(&spec, &weights, 0, options)
        .unwrap_or_else(|e| panic!("cannot load the model: {e}"));
    let vocab = spec.vocab as usize;
    let mut cache = model.new_cache();
    let all = model
        .run(Phase::Prefill, &mut cache, &tokens)
        .expect("prefill");
    let mut steps = Vec::new();
    // Twice over one cache: `clear` keeps the device memory, which must not leak rows.
    for round in 0..2 {
        cache.clear();
        steps.clear();
        for (i, &t) in tokens.iter().enumerate() {
            let row = model
                .run(Phase::Decode, &mut cache, &[t])
                .unwrap_or_else(|e| panic!("decode step {i} (round {round}): {e}"));
            steps.extend(row);
        }
        common::check(
            "tiny llama",
            &format!("decode (graphs {graphs}, round {round}) vs prefill"),
            &steps,
            &all,
            vocab,
            TOLERANCE,
        );
    }
    let ws = cache.decode_workspace();
    if graphs {
        assert_eq!(ws.graph_error(), None, "the decode graph fell back");
        assert_eq!(ws.graph_replays(), 2 * tokens.len() as u64);
    } else {
        assert_eq!(ws.graph_replays(), 0);
    }
    Some(steps)
}

#[test]
fn long_decode_on_the_device_cache_matches_prefill() {
    let Some(plain) = check_long_decode(false) else {
        return;
    };
    let graphed = check_long_decode(true).expect("the device is still there");
    assert_eq!(plain, graphed, "graph replays differ from plain launches");
}

/// A prefill with `Logits::Last` returns the last row of the full prefill.
#[test]
fn last_logits_prefill_is_the_last_row() {
    let Some(()) = device() else { return };
    let spec = testing::llama(testing::swiglu(100));
    let prefill = lower(&spec, Mode::Prefill).expect("lowers");
    let decode = lower(&spec, Mode::Decode).expect("lowers");
    let weights = RandomWeights::for_graphs(&[&prefill, &decode], 5);
    let tokens = &testing::PROMPT[..12];
    let vocab = spec.vocab as usize;
    let mut logits = Vec::new();
    for which in [Logits::All, Logits::Last] {
        let options = CudaOptions {
            logits: which,
            graphs: false,
        };
        let model = CudaModel::from_spec_with(&spec, &weights, 0, options)
            .unwrap_or_else(|e| panic!("cannot load the model: {e}"));
        let mut cache = model.new_cache();
        logits.push(
            model
                .run(Phase::Prefill, &mut cache, tokens)
                .expect("prefill"),
        );
    }
    assert_eq!(logits[1].len(), vocab);
    common::check(
        "tiny llama",
        "last-row prefill vs full prefill",
        &logits[1],
        &logits[0][(tokens.len() - 1) * vocab..],
        vocab,
        TOLERANCE,
    );
}

/// A one-layer model whose every width is a multiple of 256, the longest GGUF block.
const QUANT_SPEC: &str = r#"
model "quant-tiny" {
  family  = llama
  vocab   = 256
  hidden  = 256
  layers  = 1
  context = 64
  dtype   = f32
  norm    = rmsnorm { eps = 1e-5 }
}
block {
  attention {
    heads    = 2
    kv_heads = 1
    head_dim = 128
    rope { theta = 10_000 }
  }
  mlp { hidden = 256 }
}
"#;

/// Random blocks of `fmt` for `n` bytes, each block's f16 scales set to a small normal
/// value (random bits there could be NaN or infinite) at the offsets the format keeps
/// them (`BlockFormat::f16_fields`, `f32_fields`), FP8's NaN codes and MXFP4's
/// exponents kept finite and small.
fn random_blocks(fmt: BlockFormat, n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out: Vec<u8> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let block = fmt.block_bytes() as usize;
    for b in out.chunks_exact_mut(block) {
        for &at in fmt.f16_fields() {
            let at = at as usize;
            // 2^-9 as f16.
            b[at..at + 2].copy_from_slice(&0x1800u16.to_le_bytes());
        }
        for &at in fmt.f32_fields() {
            let at = at as usize;
            b[at..at + 4].copy_from_slice(&2f32.powi(-9).to_le_bytes());
        }
        match fmt {
            // The e4m3 NaN codes, which binding refuses.
            BlockFormat::F8E4m3 => b[4..].iter_mut().for_each(|q| {
                if *q & 0x7f == 0x7f {
                    *q &= 0xfe;
                }
            }),
            // E8M0 2^-6 (as 2^(e - 128)).
            BlockFormat::Mxfp4 => b[0] = 122,
            _ => {}
        }
    }
    out
}

/// Decode on GGUF block weights read in place: for every block format, the decode
/// program with every projection and the embedding as blocks matches the kernel IR
/// interpreter on the same bytes. (Prefill of block weights cannot run on the GPU yet:
/// see `compiler/tests/data/ptx/quantised_unplanned.snap`.)
#[test]
fn quantised_decode_on_the_gpu_matches_the_kernel_interpreter() {
    let Some(()) = device() else { return };
    let spec = archc_spec::validate::check_source("quant-tiny.arch", QUANT_SPEC)
        .unwrap_or_else(|d| panic!("the quantised test spec is invalid: {d:?}"));
    let graph = lower(&spec, Mode::Decode).expect("lowers");
    let floats = RandomWeights::for_graphs(&[&graph], 3);
    for fmt in BlockFormat::ALL {
        let blocks = |n: &str| {
            let matrix = n == "embed.tokens" || (n.ends_with(".weight") && !n.contains("norm"));
            matrix.then_some(ParamFormat::Block(fmt))
        };
        let p = program_with(&optimize(&graph), &Lowering::with_formats(&blocks))
            .unwrap_or_else(|e| panic!("{}: {e}", fmt.name()));
        let (seq, past) = (1usize, 5usize);
        let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (i, b) in p.buffers.iter().enumerate() {
            let n: usize = b.shape.iter().map(|d| d.eval(seq, past)).product();
            let bytes = match (&b.kind, b.elem) {
                (BufferKind::Param, Elem::U8) => random_blocks(fmt, n, 17 + i as u64),
                (BufferKind::Param, Elem::F32) => {
                    let name = b.name.strip_prefix('@').unwrap_or(&b.name);
                    floats.get(name).expect("a float parameter").bytes.to_vec()
                }
                (BufferKind::Input(io), Elem::F32) if io.is_carried() => f32_bytes(
                    &(0..n)
                        .map(|i| ((i % 13) as f32 - 6.0) / 8.0)
                        .collect::<Vec<_>>(),
                ),
                (BufferKind::Input(Io::Tokens), _) => i32_bytes(&[42]),
                (BufferKind::Input(Io::Positions), _) => i32_bytes(&[past as i32]),
                (BufferKind::Param | BufferKind::Input(_), e) => {
                    panic!("{}: `{}` is {}", fmt.name(), b.name, e.as_str())
                }
                _ => continue,
            };
            data.insert(b.name.clone(), bytes);
        }
        let f32s: BTreeMap<String, Vec<f32>> = data
            .iter()
            .filter(|(n, _)| {
                p.buffers
                    .iter()
                    .any(|b| &b.name == *n && b.elem == Elem::F32)
            })
            .map(|(n, v)| (n.clone(), to_f32(v)))
            .collect();
        let ints: BTreeMap<String, Vec<i32>> = ["tokens", "positions"]
            .iter()
            .map(|n| {
                let v = &data[*n];
                (
                    n.to_string(),
                    v.chunks_exact(4)
                        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                )
            })
            .collect();
        let mut inputs: BTreeMap<String, KBufData> = BTreeMap::new();
        for (n, v) in &data {
            let kb = if let Some(f) = f32s.get(n) {
                KBufData::F32Ro(f)
            } else if let Some(i) = ints.get(n) {
                KBufData::I32Ro(i)
            } else {
                KBufData::U8Ro(v)
            };
            inputs.insert(n.clone(), kb);
        }
        let want = run_program(&p, inputs, seq as i64, past as i64, 1)
            .unwrap_or_else(|e| panic!("{}: kernel interpreter: {e}", fmt.name()));
        let params: BTreeMap<String, &[u8]> = p
            .buffers
            .iter()
            .filter(|b| b.kind == BufferKind::Param)
            .map(|b| (b.name.clone(), data[&b.name].as_slice()))
            .collect();
        let inputs: BTreeMap<String, &[u8]> = p
            .buffers
            .iter()
            .filter(|b| matches!(b.kind, BufferKind::Input(_)))
            .map(|b| (b.name.clone(), data[&b.name].as_slice()))
            .collect();
        let gpu = CudaProgram::new(p.clone(), 0, &params)
            .unwrap_or_else(|e| panic!("{}: {e}", fmt.name()));
        let got = gpu
            .run(&inputs, seq, past)
            .unwrap_or_else(|e| panic!("{}: {e}", fmt.name()));
        let w = want["logits"].to_f32();
        let g = to_f32(&got["logits"]);
        let scale = testing::max_abs(&w).max(1.0);
        let diff = testing::max_abs_diff(&w, &g);
        eprintln!("{}: max abs diff {diff:e} (scale {scale})", fmt.name());
        assert!(
            diff <= 1e-4 * scale,
            "{}: logits differ by {diff}",
            fmt.name()
        );
    }
}

macro_rules! cuda_cases {
    ($($case:ident),* $(,)?) => {
        mod fixtures {
            $(
                #[test]
                fn $case() {
                    super::check_fixture(stringify!($case));
                }
            )*
        }

        /// Every fixture directory has a case above, and every case has its directory.
        #[test]
        fn every_fixture_has_a_case() {
            common::assert_every_fixture_listed(&[$(stringify!($case)),*], "tests/cuda.rs");
        }
    };
}

with_compiled_fixtures!(cuda_cases);

fn snapshot(name: &str, text: &str) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cuda");
    insta::with_settings!({snapshot_path => dir, prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!(name, text);
    });
}

/// What `--backend cuda` says for each reason the GPU cannot be used, on every machine.
#[test]
fn cuda_error_messages() {
    let cases = [
        CudaError::NoDriver,
        CudaError::NoDevice {
            message: "device 0 requested, the driver reports 0".into(),
        },
        CudaError::Unsupported {
            message: "`Tesla V100` is compute capability 7.0; archc generates code for 8.0 \
                      and newer"
                .into(),
        },
    ];
    let text: String = cases
        .iter()
        .map(|e| format!("archc logits: --backend cuda: {e}\n"))
        .collect();
    snapshot("error_messages", &text);
}

/// `archc logits --backend cuda` on a fixture: with a GPU it succeeds and matches the
/// graph interpreter; without one it exits 2 and says what is missing (the exact message,
/// snapshotted above, is the probe's).
#[test]
fn logits_command_with_backend_cuda() {
    let case = "llama";
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().join("logits.npy");
    let Fixture {
        dir,
        spec,
        tokens,
        vocab,
        ..
    } = fixture(case);
    let weights = load(case, &spec, &dir);
    let ids: Vec<String> = tokens.iter().map(u32::to_string).collect();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_archc"))
        .arg("logits")
        .arg(&dir)
        .args(["--tokens", &ids.join(","), "--backend", "cuda", "--out"])
        .arg(&out)
        .output()
        .expect("archc runs");
    let stderr = String::from_utf8_lossy(&o.stderr);
    match probe(0) {
        Ok(info) => {
            assert!(o.status.success(), "on {}: {stderr}", info.name);
            let got = npy::read(&out).expect("logits written");
            let want = logits(&spec, &weights, &tokens, ExecMode::Prefill, Backend::Interp)
                .expect("graph interpreter");
            common::check(
                case,
                "archc logits --backend cuda",
                &got.data,
                &want,
                vocab,
                TOLERANCE,
            );
        }
        Err(e) => {
            eprintln!("no GPU here ({e}): checking the error instead");
            assert_eq!(o.status.code(), Some(2), "{stderr}");
            assert_eq!(stderr, format!("archc logits: --backend cuda: {e}\n"));
            assert!(
                matches!(e, CudaError::NoDriver | CudaError::NoDevice { .. }),
                "{e}"
            );
            assert!(!out.exists(), "no output file after a failure");
        }
    }
}
