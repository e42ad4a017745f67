//! GGUF files written by llama.cpp's own `convert_hf_to_gguf.py`, one or more per accepted
//! architecture: each is imported from its metadata, bound, and its prefill and decode
//! logits are checked against HF's through the interpreter and the LLVM kernels.
//!
//! Fixtures come from `tools/reference/make_converted_fixtures.py`
//! (`tests/data/gguf/converted/<case>/`: `model.gguf`, `tokens.json`, HF's `logits.npy` and
//! `decode_logits.npy`, `meta.json`). Every architecture in `SUPPORTED_ARCHITECTURES` must
//! have a case, so accepting a new one without a converted file fails here.
//!
//! `gpt_oss_mxfp4` is gpt-oss with MXFP4 experts as it ships, converted the same way
//! (`tools/reference/make_quant_fixtures.py`): the experts stay GGML MXFP4 tensors.
//!
//! Also here: DeepSeek-V3 with `kv_b` split into `attn_k_b` / `attn_v_b` as current
//! conversions store it (`tests/data/gguf/tiny_deepseek_split/`, written the converter's
//! way by `tools/reference/make_gguf_fixtures.py`).

use archc_compiler::testing::max_abs_diff;
use archc_runtime::bind::bind_gguf;
use archc_runtime::exec::{logits, Backend, Mode};
use archc_runtime::npy;
use archc_runtime::weights::gguf::GgufFile;
use archc_spec::import::gguf::{from_gguf_metadata, MetaValue, SUPPORTED_ARCHITECTURES};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The largest |archc - HF| allowed on any logit (fp32 throughout).
const TOLERANCE: f32 = 1e-4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf/converted")
}

fn snapshot(dir: &Path, name: &str, text: &str) {
    insta::with_settings!({snapshot_path => dir, prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!(name, text);
    });
}

/// `general.architecture` of a case's file.
fn architecture(file: &GgufFile, case: &str) -> String {
    match file.metadata().get("general.architecture") {
        Some(MetaValue::Str(a)) => a.clone(),
        other => panic!("{case}: general.architecture is {other:?}"),
    }
}

/// Imports, binds and runs one case; every backend and mode must be within [`TOLERANCE`].
fn check_case(case: &str) {
    let dir = root().join(case);
    let path = dir.join("model.gguf");
    let open = || GgufFile::open(&path).unwrap_or_else(|e| panic!("{case}: {e}"));
    let file = open();
    let spec = from_gguf_metadata(file.metadata(), &file.names(), &format!("{case}.gguf"))
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    snapshot(&dir, "import", &archc_spec::print::to_arch(&spec));
    let weights = bind_gguf(&spec, file).unwrap_or_else(|e| panic!("{case}: {e}"));
    let tokens: Vec<u32> = serde_json::from_str(
        &std::fs::read_to_string(dir.join("tokens.json"))
            .unwrap_or_else(|e| panic!("{case}: tokens.json: {e}")),
    )
    .unwrap_or_else(|e| panic!("{case}: tokens.json: {e}"));
    let mut failures = Vec::new();
    for (mode, reference) in [
        (Mode::Prefill, "logits.npy"),
        (Mode::Decode, "decode_logits.npy"),
    ] {
        let hf = npy::read(&dir.join(reference)).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(
            hf.shape,
            [tokens.len(), spec.vocab as usize],
            "{case}: {reference}"
        );
        for backend in [Backend::Interp, Backend::Llvm] {
            let ours = logits(&spec, &weights, &tokens, mode, backend)
                .unwrap_or_else(|e| panic!("{case} {backend:?} {mode:?}: {e}"));
            let d = max_abs_diff(&ours, &hf.data);
            eprintln!("{case} {backend:?} {mode:?}: max |archc - HF| = {d:.2e}");
            if d > TOLERANCE {
                failures.push(format!(
                    "{backend:?} {mode:?}: max |archc - HF| = {d:e} > {TOLERANCE:e}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{case}:\n{}", failures.join("\n"));
}

macro_rules! cases {
    ($($test:ident => $dir:literal),* $(,)?) => {
        /// Every case directory, as the tests below name them.
        const CASES: &[&str] = &[$($dir),*];
        $(
            #[test]
            fn $test() {
                check_case($dir);
            }
        )*
    };
}

cases! {
    llama_matches_hf => "llama",
    qwen2_matches_hf => "qwen2",
    qwen3_matches_hf => "qwen3",
    qwen3moe_matches_hf => "qwen3moe",
    gemma3_matches_hf => "gemma3",
    deepseek2_matches_hf => "deepseek2",
    gpt_oss_matches_hf => "gpt-oss",
    olmo2_matches_hf => "olmo2",
    olmo3_as_olmo2_with_a_window_matches_hf => "olmo3",
    gpt_oss_with_mxfp4_experts_matches_hf => "gpt_oss_mxfp4",
    lfm2_matches_hf => "lfm2",
}

/// The converter keeps gpt-oss's MXFP4 experts as GGML MXFP4 tensors; they are bound as
/// blocks the MoE kernels decode, every expert matrix of both layers.
#[test]
fn mxfp4_experts_stay_blocks() {
    use archc_compiler::interp::WeightSource;
    use archc_compiler::kernel::lower::BlockFormat;
    let path = root().join("gpt_oss_mxfp4/model.gguf");
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let spec = from_gguf_metadata(file.metadata(), &file.names(), "gpt_oss_mxfp4.gguf")
        .unwrap_or_else(|e| panic!("{e}"));
    let weights = bind_gguf(&spec, file).unwrap_or_else(|e| panic!("{e}"));
    let held: Vec<&str> = weights
        .names()
        .filter(|n| {
            weights
                .blocks(n)
                .is_some_and(|b| b.format == BlockFormat::Mxfp4)
        })
        .collect();
    assert_eq!(held.len(), 6, "{held:?}");
    assert!(held.iter().all(|n| n.contains(".experts.")), "{held:?}");
}

/// The directory holds exactly the cases above, and together they cover every architecture
/// the importer accepts.
#[test]
fn every_supported_architecture_has_a_converted_fixture() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(root())
        .unwrap_or_else(|e| panic!("{}: {e}", root().display()))
        .map(|e| e.expect("a directory entry"))
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = CASES.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        on_disk, listed,
        "tests/data/gguf/converted/ and the cases of tests/gguf_converted.rs differ"
    );
    let mut covered = BTreeSet::new();
    for case in CASES {
        let path = root().join(case).join("model.gguf");
        let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{case}: {e}"));
        covered.insert(architecture(&file, case));
    }
    let missing: Vec<&str> = SUPPORTED_ARCHITECTURES
        .iter()
        .map(|(arch, _)| *arch)
        .filter(|arch| !covered.contains(*arch))
        .collect();
    assert!(
        missing.is_empty(),
        "accepted GGUF architectures without a converted fixture (add a case to tools/reference/make_converted_fixtures.py): {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Converted metadata with one key changed: what llama.cpp would compute, or a refusal.

/// Per layer: the window and RoPE base of its attention, and its router, if any.
fn facts(spec: &archc_spec::Spec) -> String {
    let mut lines = Vec::new();
    for (i, &b) in spec.schedule.iter().enumerate() {
        let block = &spec.blocks[b];
        let mut line = format!("layer {i}:");
        if let archc_spec::Mixer::Attention(a) = &block.mixer {
            let theta = a.rope.as_ref().map(|r| r.theta);
            line += &format!(" window {:?}, rope theta {theta:?}", a.window);
        }
        if let archc_spec::Ffn::Moe(m) = &block.ffn {
            let r = &m.router;
            line += &format!(
                ", router {:?} renormalize {} scale {}",
                r.score, r.renormalize, r.scale
            );
        }
        lines.push(line);
    }
    lines.join("\n  ")
}

/// A key set to a value, or removed (`None`).
type Change = (&'static str, Option<MetaValue>);

#[test]
fn converted_metadata_variants_follow_llama_cpp() {
    let variants: Vec<(&str, &str, Vec<Change>)> = vec![
        ("gemma3 as converted", "gemma3", vec![]),
        (
            "gemma3 without a window: every layer global",
            "gemma3",
            vec![("gemma3.attention.sliding_window", None)],
        ),
        (
            "gemma3 with a local RoPE base of 20000",
            "gemma3",
            vec![("gemma3.rope.freq_base_swa", Some(MetaValue::F32(20_000.0)))],
        ),
        (
            "gemma3 with a pattern of period 2",
            "gemma3",
            vec![(
                "gemma3.attention.sliding_window_pattern",
                Some(MetaValue::U32(2)),
            )],
        ),
        ("deepseek2 as converted", "deepseek2", vec![]),
        (
            "deepseek2 without weights norm and scale: llama.cpp's defaults",
            "deepseek2",
            vec![
                ("deepseek2.expert_weights_norm", None),
                ("deepseek2.expert_weights_scale", None),
            ],
        ),
        (
            "deepseek2 without a gating function (llama.cpp: softmax)",
            "deepseek2",
            vec![("deepseek2.expert_gating_func", None)],
        ),
    ];
    let mut text = String::new();
    for (name, case, changes) in variants {
        let path = root().join(case).join("model.gguf");
        let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{case}: {e}"));
        let mut meta = file.metadata().clone();
        for (key, value) in changes {
            match value {
                Some(v) => meta.insert(key.to_string(), v),
                None => meta.remove(key),
            };
        }
        let outcome = match from_gguf_metadata(&meta, &file.names(), &format!("{case}.gguf")) {
            Ok(spec) => facts(&spec),
            Err(e) => e.to_string(),
        };
        text += &format!("{name}:\n  {outcome}\n");
    }
    snapshot(&root(), "variants", &text);
}

/// DeepSeek-V3 as current llama.cpp conversions store it: `kv_b` split per head into
/// `attn_k_b` (transposed) and `attn_v_b`, rebuilt at binding; prefill and decode through
/// the interpreter and the LLVM kernels against HF.
#[test]
fn tiny_deepseek_with_split_kv_b_matches_hf() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf/tiny_deepseek_split");
    let path = dir.join("f32.gguf");
    let open = |p: &Path| GgufFile::open(p).unwrap_or_else(|e| panic!("{e}"));
    let file = open(&path);
    assert!(file.info("blk.0.attn_k_b.weight").is_some());
    assert!(file.info("blk.0.attn_kv_b.weight").is_none());
    let spec = from_gguf_metadata(file.metadata(), &file.names(), "f32.gguf")
        .unwrap_or_else(|e| panic!("{e}"));
    let weights = bind_gguf(&spec, file).unwrap_or_else(|e| panic!("{e}"));
    let tokens: Vec<u32> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokens.json")).unwrap()).unwrap();
    let hf = npy::read(&dir.join("logits.npy")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hf.shape, [tokens.len(), spec.vocab as usize]);
    for backend in [Backend::Interp, Backend::Llvm] {
        for mode in [Mode::Prefill, Mode::Decode] {
            let ours = logits(&spec, &weights, &tokens, mode, backend)
                .unwrap_or_else(|e| panic!("{backend:?} {mode:?}: {e}"));
            let d = max_abs_diff(&ours, &hf.data);
            assert!(
                d <= TOLERANCE,
                "{backend:?} {mode:?}: max |ours - HF| = {d:e}"
            );
        }
    }
    // A value half of the wrong size is a shape error naming the tensor.
    let bad = path.clone();
    let mut spec2 = spec.clone();
    if let archc_spec::Mixer::Attention(a) = &mut spec2.blocks[0].mixer {
        a.v_head_dim += 1;
        if let Some(mla) = &mut a.mla {
            mla.v_dim += 1;
        }
    }
    let e = bind_gguf(&spec2, open(&bad)).unwrap_err().to_string();
    assert!(e.contains("attn_v_b"), "{e}");
}
