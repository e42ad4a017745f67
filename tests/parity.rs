//! Numerical parity with HF transformers: every fixture under `tests/data/fixtures/`
//! (a tiny random HF model with HF's recorded fp32 logits) is imported from its
//! `config.json`, bound to its `model.safetensors` and run by the reference interpreter,
//! in prefill and in token-by-token decode.
//!
//! Fixtures come from `tools/reference/make_fixtures.py`; one test per case, so a failure
//! names the family.

use archc_runtime::bind::bind;
use archc_runtime::exec::{logits, Backend, Mode};
use archc_runtime::npy;
use archc_runtime::weights::Checkpoint;
use std::path::{Path, PathBuf};

/// Largest allowed |ours - HF| on any logit (fp32 against fp32).
const TOLERANCE: f32 = 1e-4;

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures")
}

/// The largest absolute difference and where it is (token, vocab index).
fn max_diff(a: &[f32], b: &[f32], vocab: usize) -> (f32, usize, usize) {
    let mut worst = (0.0f32, 0, 0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = (x - y).abs();
        // A NaN anywhere must fail, so it counts as infinitely far.
        let d = if d.is_nan() { f32::INFINITY } else { d };
        if d > worst.0 {
            worst = (d, i / vocab, i % vocab);
        }
    }
    worst
}

fn std_dev(x: &[f32]) -> f64 {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    (x.iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt()
}

fn check_case(case: &str) {
    let dir = fixture_root().join(case);
    let spec = archc_spec::import::from_path(&dir)
        .unwrap_or_else(|e| panic!("{case}: import of config.json failed: {e}"));
    let checkpoint =
        Checkpoint::open(&dir).unwrap_or_else(|e| panic!("{case}: cannot open weights: {e}"));
    let weights = bind(&spec, checkpoint).unwrap_or_else(|e| panic!("{case}: {e}"));
    let tokens_text = std::fs::read_to_string(dir.join("tokens.json"))
        .unwrap_or_else(|e| panic!("{case}: cannot read tokens.json: {e}"));
    let tokens: Vec<u32> = serde_json::from_str(&tokens_text)
        .unwrap_or_else(|e| panic!("{case}: tokens.json is not a list of token ids: {e}"));
    let vocab = spec.vocab as usize;
    let hf = npy::read(&dir.join("logits.npy")).unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(
        hf.shape,
        [tokens.len(), vocab],
        "{case}: logits.npy shape against (tokens, vocab)"
    );
    let sd = std_dev(&hf.data);
    assert!(
        (0.5..=3.0).contains(&sd),
        "{case}: HF logits have std {sd:.4}, outside [0.5, 3]: the fixture is degenerate"
    );

    let ours = logits(&spec, &weights, &tokens, Mode::Prefill, Backend::Interp)
        .unwrap_or_else(|e| panic!("{case}: prefill failed: {e}"));
    assert_eq!(
        ours.len(),
        tokens.len() * vocab,
        "{case}: prefill logits size"
    );
    let (d, t, v) = max_diff(&ours, &hf.data, vocab);
    // Shown with --nocapture: how much headroom each family has under the tolerance.
    eprintln!("{case}: max |ours - HF| = {d:e} (prefill)");
    assert!(
        d <= TOLERANCE,
        "{case}: prefill differs from HF by {d:e} at token {t}, vocab {v} (ours {}, HF {})",
        ours[t * vocab + v],
        hf.data[t * vocab + v]
    );

    let decoded = logits(&spec, &weights, &tokens, Mode::Decode, Backend::Interp)
        .unwrap_or_else(|e| panic!("{case}: decode failed: {e}"));
    assert_eq!(
        decoded.len(),
        tokens.len() * vocab,
        "{case}: decode logits size"
    );
    let (d, t, v) = max_diff(&decoded, &ours, vocab);
    assert!(
        d <= TOLERANCE,
        "{case}: decode differs from prefill by {d:e} at token {t}, vocab {v}"
    );
    let hf_decode =
        npy::read(&dir.join("decode_logits.npy")).unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(hf_decode.shape, hf.shape, "{case}: decode_logits.npy shape");
    let (d, t, v) = max_diff(&decoded, &hf_decode.data, vocab);
    assert!(
        d <= TOLERANCE,
        "{case}: decode differs from HF decode by {d:e} at token {t}, vocab {v}"
    );
}

macro_rules! parity_cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                check_case(stringify!($case));
            }
        )*

        /// Every fixture directory has a test above, and every test has its directory.
        #[test]
        fn every_fixture_has_a_test() {
            let listed: Vec<&str> = vec![$(stringify!($case)),*];
            let mut found: Vec<String> = std::fs::read_dir(fixture_root())
                .expect("tests/data/fixtures exists")
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            found.sort();
            let mut listed_sorted = listed.clone();
            listed_sorted.sort();
            assert_eq!(found, listed_sorted, "fixture directories against the cases in tests/parity.rs");
        }
    };
}

parity_cases!(
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
