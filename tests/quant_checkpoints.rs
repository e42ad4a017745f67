//! Official quantised checkpoints as they ship, against HF: block-scaled FP8 (a tiny
//! DeepSeek-V3 with f32 `weight_scale_inv` and partial edge blocks on both axes, a tiny
//! dense Qwen3 with bf16 scales) and MXFP4 experts (a tiny gpt-oss with `_blocks` /
//! `_scales`), under `tests/data/quantized/`, written by
//! `tools/reference/make_quant_fixtures.py`. The reference is HF on the dequantised
//! weights in fp32.
//!
//! Each case is imported from its `config.json` and bound; every quantised weight must be
//! held as blocks the kernels decode (no f32 copy), and the graph interpreter (which reads
//! the reference dequantisation) and the LLVM and Cranelift kernels match HF within 1e-4
//! on prefill, token-by-token decode, and a prefill continued from a cached prefix.

#[macro_use]
mod common;

use archc_compiler::interp::WeightSource;
use archc_compiler::kernel::lower::BlockFormat;
use archc_compiler::kernel::Elem;
use archc_runtime::bind::{bind, BoundWeights};
use archc_runtime::exec::cpu::{CpuModel, Engine, LlvmOptions, Options, Phase};
use archc_runtime::exec::{logits, Backend, Mode};
use archc_runtime::weights::Checkpoint;
use archc_spec::Spec;
use common::{check, read_logits};
use std::path::{Path, PathBuf};

const TOLERANCE: f32 = 1e-4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/quantized")
}

struct Case {
    spec: Spec,
    tokens: Vec<u32>,
    hf: Vec<f32>,
    hf_decode: Vec<f32>,
    vocab: usize,
}

fn case(name: &str) -> (Case, BoundWeights) {
    let dir = root().join(name);
    let spec = archc_spec::import::from_path(&dir)
        .unwrap_or_else(|e| panic!("{name}: import of config.json failed: {e}"));
    let text = std::fs::read_to_string(dir.join("tokens.json")).expect("tokens.json");
    let tokens: Vec<u32> = serde_json::from_str(&text).expect("token ids");
    let vocab = spec.vocab as usize;
    let hf = read_logits(name, &dir, "logits.npy", tokens.len(), vocab);
    let hf_decode = read_logits(name, &dir, "decode_logits.npy", tokens.len(), vocab);
    let ck = Checkpoint::open(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    let w = bind(&spec, ck).unwrap_or_else(|e| panic!("{name}: {e}"));
    let c = Case {
        spec,
        tokens,
        hf,
        hf_decode,
        vocab,
    };
    (c, w)
}

fn code_cache() -> LlvmOptions {
    LlvmOptions {
        cache: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("archc-code-cache")),
        cc: None,
    }
}

fn model<'w>(
    name: &str,
    c: &Case,
    w: &'w BoundWeights,
    engine: Engine,
    threads: usize,
) -> CpuModel<'w> {
    CpuModel::from_spec_options(
        &c.spec,
        w,
        engine,
        threads,
        &code_cache(),
        &Options::default(),
    )
    .unwrap_or_else(|e| panic!("{name}: {} cannot load the model: {e}", engine.as_str()))
}

/// The names of the parameters held as `format` blocks: every quantised tensor of the
/// checkpoint, `count` of them.
fn held_as(name: &str, w: &BoundWeights, format: BlockFormat, count: usize) -> Vec<String> {
    let held: Vec<String> = w
        .names()
        .filter(|n| w.blocks(n).is_some_and(|b| b.format == format))
        .map(str::to_string)
        .collect();
    assert_eq!(
        held.len(),
        count,
        "{name}: parameters held as {} blocks: {held:?}",
        format.name()
    );
    held
}

/// Prefill, decode and continued prefill through `engine`, against HF; both programs read
/// every parameter in `held` as its blocks.
fn check_engine(name: &str, c: &Case, w: &BoundWeights, engine: Engine, held: &[String]) {
    let what = |s: &str| format!("{} {s}", engine.as_str());
    let mut m = model(name, c, w, engine, 1);
    for phase in [Phase::Prefill, Phase::Decode] {
        let doc = m.program(phase);
        for p in held {
            let b = doc
                .buffers
                .iter()
                .find(|b| b.name == format!("@{p}"))
                .unwrap_or_else(|| panic!("{name}: {phase:?} program reads no {p}"));
            assert_eq!(
                b.elem,
                Elem::U8,
                "{name}: {phase:?} program reads {p} as {:?}",
                b.elem
            );
        }
    }
    let mut cache = m.new_cache();
    let prefill = m
        .run(Phase::Prefill, &mut cache, &c.tokens)
        .unwrap_or_else(|e| panic!("{name}: prefill: {e}"));
    check(
        name,
        &what("prefill vs HF"),
        &prefill,
        &c.hf,
        c.vocab,
        TOLERANCE,
    );
    let stats = m.param_stats();
    assert_eq!(
        stats.converted, 0,
        "{name}: weights must be read as stored: {stats:?}"
    );

    let mut cache = m.new_cache();
    let mut decoded = Vec::new();
    for &t in &c.tokens {
        decoded.extend(
            m.run(Phase::Decode, &mut cache, &[t])
                .unwrap_or_else(|e| panic!("{name}: decode: {e}")),
        );
    }
    check(
        name,
        &what("decode vs HF decode"),
        &decoded,
        &c.hf_decode,
        c.vocab,
        TOLERANCE,
    );

    // A prefill continued from a cached prefix of 13 tokens.
    let split = 13;
    let mut cache = m.new_cache();
    let mut continued = m
        .run(Phase::Prefill, &mut cache, &c.tokens[..split])
        .unwrap_or_else(|e| panic!("{name}: prefix prefill: {e}"));
    continued.extend(
        m.run(Phase::Prefill, &mut cache, &c.tokens[split..])
            .unwrap_or_else(|e| panic!("{name}: continued prefill: {e}")),
    );
    check(
        name,
        &what("continued prefill vs HF"),
        &continued,
        &c.hf,
        c.vocab,
        TOLERANCE,
    );

    let mut two = model(name, c, w, engine, 2);
    let mut cache = two.new_cache();
    let prefill2 = two
        .run(Phase::Prefill, &mut cache, &c.tokens)
        .unwrap_or_else(|e| panic!("{name}: prefill (2 threads): {e}"));
    check(
        name,
        &what("prefill, 2 threads vs 1"),
        &prefill2,
        &prefill,
        c.vocab,
        1e-6,
    );
}

fn check_case(name: &str, format: BlockFormat, count: usize) {
    let (c, w) = case(name);
    let held = held_as(name, &w, format, count);
    let interp = logits(&c.spec, &w, &c.tokens, Mode::Prefill, Backend::Interp)
        .unwrap_or_else(|e| panic!("{name}: interpreter: {e}"));
    check(
        name,
        "interp prefill vs HF",
        &interp,
        &c.hf,
        c.vocab,
        TOLERANCE,
    );
    let interp_decode = logits(&c.spec, &w, &c.tokens, Mode::Decode, Backend::Interp)
        .unwrap_or_else(|e| panic!("{name}: interpreter decode: {e}"));
    check(
        name,
        "interp decode vs HF decode",
        &interp_decode,
        &c.hf_decode,
        c.vocab,
        TOLERANCE,
    );
    check_engine(name, &c, &w, Engine::Llvm, &held);
    check_engine(name, &c, &w, Engine::Cranelift, &held);
}

/// DeepSeek-V3 in FP8 with f32 block scales: every attention, dense-MLP, shared- and
/// routed-expert projection is FP8 (the router, norms, embeddings and head bf16).
#[test]
fn deepseek_v3_fp8() {
    check_case("deepseek_v3_fp8", BlockFormat::F8E4m3, 19);
}

/// A dense Qwen3 in FP8 with bf16 block scales (the head left unquantised).
#[test]
fn qwen3_fp8() {
    check_case("qwen3_fp8", BlockFormat::F8E4m3, 14);
}

/// gpt-oss with MXFP4 experts (`_blocks` / `_scales`), the rest in the config's dtype.
#[test]
fn gpt_oss_mxfp4() {
    check_case("gpt_oss_mxfp4", BlockFormat::Mxfp4, 6);
}

/// Every directory under `tests/data/quantized/` is a case above.
#[test]
fn every_quantised_fixture_has_a_case() {
    let mut found: Vec<String> = std::fs::read_dir(root())
        .expect("tests/data/quantized exists")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, ["deepseek_v3_fp8", "gpt_oss_mxfp4", "qwen3_fp8"]);
}

/// A copy of case `name` in a temporary directory, with `patch` applied to the bytes of
/// stored tensor `tensor` in `model.safetensors`.
fn patched(name: &str, tensor: &str, patch: impl FnOnce(&mut [u8])) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("temp dir");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(root().join(name).join(f), tmp.path().join(f)).expect("copy");
    }
    let path = tmp.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path).expect("read");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let offsets = &header[tensor]["data_offsets"];
    let (a, b) = (
        offsets[0].as_u64().expect("begin") as usize,
        offsets[1].as_u64().expect("end") as usize,
    );
    patch(&mut bytes[8 + n + a..8 + n + b]);
    std::fs::write(&path, bytes).expect("write");
    tmp
}

/// Binding `dir` (imported from its config) fails; the message.
fn bind_error(dir: &Path) -> String {
    let spec = archc_spec::import::from_path(dir).expect("import");
    let ck = Checkpoint::open(dir).expect("checkpoint");
    bind(&spec, ck).expect_err("binding must fail").to_string()
}

/// Codes that decode to NaN, scales out of range and a missing block size are refused,
/// naming the tensor; never read as numbers.
#[test]
fn lying_quantised_tensors_are_refused() {
    let q = "model.layers.0.self_attn.q_proj.weight";
    let dir = patched("qwen3_fp8", q, |b| b[5] = 0xff);
    let e = bind_error(dir.path());
    assert!(
        e.contains(q) && e.contains("element 5 is an e4m3 NaN (0xff)"),
        "{e}"
    );

    let s = "model.layers.1.mlp.down_proj.weight_scale_inv";
    let dir = patched("qwen3_fp8", s, |b| b[2..4].copy_from_slice(&[0x80, 0x7f]));
    let e = bind_error(dir.path());
    assert!(e.contains(s) && e.contains("scale 1 is inf"), "{e}");

    let scales = "model.layers.1.mlp.experts.down_proj_scales";
    let dir = patched("gpt_oss_mxfp4", scales, |b| b[3] = 0xff);
    let e = bind_error(dir.path());
    assert!(
        e.contains(scales) && e.contains("scale 3 is the E8M0 NaN"),
        "{e}"
    );

    // The block size comes from config.json; without it nothing says which rows a scale covers.
    let dir = root().join("qwen3_fp8");
    let spec = archc_spec::import::from_path(&dir).expect("import");
    let ck = Checkpoint::open(&dir)
        .expect("checkpoint")
        .with_quantization(None);
    let e = bind(&spec, ck).expect_err("no block size").to_string();
    assert!(
        e.contains("an FP8 tensor, but no quantization_config"),
        "{e}"
    );
}

/// `import` reads `quantization_config`: FP8 needs e4m3, dynamic activations and a block
/// size; MXFP4 is read; any other method is refused, naming the key.
#[test]
fn quantisation_configs_are_read_or_refused() {
    let text = std::fs::read_to_string(root().join("qwen3_fp8/config.json")).expect("config");
    let config: serde_json::Value = serde_json::from_str(&text).expect("json");
    let import = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut c = config.clone();
        edit(&mut c["quantization_config"]);
        let tmp = tempfile::tempdir().expect("temp dir");
        std::fs::write(tmp.path().join("config.json"), c.to_string()).expect("write");
        archc_spec::import::from_path(tmp.path()).map(|s| s.dtype)
    };
    assert_eq!(import(&|_| {}).expect("fp8"), archc_spec::DType::F8);
    let refused = [
        (
            "quant_method",
            serde_json::json!("gptq"),
            "quantisation \"gptq\" is not read",
        ),
        (
            "fmt",
            serde_json::json!("e5m2"),
            "FP8 format \"e5m2\" is not read",
        ),
        (
            "activation_scheme",
            serde_json::json!("static"),
            "\"static\" activation scales",
        ),
        (
            "weight_block_size",
            serde_json::json!([128]),
            "needs the block size",
        ),
    ];
    for (key, value, says) in refused {
        let e = import(&|q| q[key] = value.clone())
            .expect_err(key)
            .to_string();
        assert!(e.contains(says) && e.contains(key), "{key}: {e}");
    }
}
