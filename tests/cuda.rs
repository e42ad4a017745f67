//! GPU execution through the CUDA runtime: the device probe fails cleanly without a
//! driver or device, and where a device is present, kernel programs of tiny models run
//! on it (PTX from the NVPTX backend) and match the kernel IR interpreter in prefill and
//! in a decode step after a cache; `--backend cuda` matches the graph interpreter on every
//! family fixture (tests/data/fixtures/), and its decode matches its prefill. Without a
//! device the GPU tests print that they were skipped and why; `archc logits --backend
//! cuda` then exits 2 with a message naming what is missing.

mod common;

use archc_compiler::interp::{RandomWeights, WeightSource};
use archc_compiler::kernel::interp::{run_program, KBufData};
use archc_compiler::kernel::{lower::program, BufferKind, Elem, Program};
use archc_compiler::passes::optimize;
use archc_compiler::{lower, testing, Mode};
use archc_runtime::exec::cpu::Phase;
use archc_runtime::exec::cuda::{probe, CudaError, CudaModel, CudaProgram};
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
        match b.kind {
            BufferKind::Param => {
                assert_eq!(b.elem, Elem::F32, "tiny models have f32 weights");
                // Program parameter buffers are named `@tensor`; the weights are not.
                let name = b.name.strip_prefix('@').unwrap_or(&b.name);
                let w = weights.get(name).expect("random weights cover the graph");
                params.insert(b.name.clone(), to_f32(w.bytes));
            }
            BufferKind::Input if b.name.starts_with("cache.") => {
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

cuda_cases!(
    deepseek_v3_noqlora,
    deepseek_v3_qlora,
    gemma3_text,
    glm4_moe,
    gpt2,
    gpt_oss,
    llama,
    llama4,
    minimax_m2,
    mistral,
    mixtral,
    olmo2,
    qwen3,
    qwen3_moe_nonorm,
    qwen3_moe_norm,
    smollm3,
);

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
