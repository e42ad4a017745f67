//! Fixture scaffolding shared by the integration tests that run every family fixture under
//! `tests/data/fixtures/` (backend, parity, cuda): locating a case, reading its tokens,
//! HF logits and config, binding its weights, and comparing two sets of logits.

// Each test binary compiles its own copy of this module and uses only part of it.
#![allow(dead_code, unused_macros)]

use archc_runtime::bind::{bind, BoundWeights};
use archc_runtime::npy;
use archc_runtime::weights::Checkpoint;
use archc_spec::Spec;
use std::path::{Path, PathBuf};

/// The directory that holds one subdirectory per fixture case.
pub fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures")
}

/// One fixture: its directory, the spec imported from its `config.json`, the token ids
/// and HF's recorded fp32 prefill logits ([tokens, vocab], row-major).
pub struct Fixture {
    pub dir: PathBuf,
    pub spec: Spec,
    pub tokens: Vec<u32>,
    pub hf: Vec<f32>,
    pub vocab: usize,
}

/// Reads the fixture `case`; any missing or malformed file panics naming the case.
pub fn fixture(case: &str) -> Fixture {
    let dir = fixture_root().join(case);
    let spec = archc_spec::import::from_path(&dir)
        .unwrap_or_else(|e| panic!("{case}: import of config.json failed: {e}"));
    let tokens_text = std::fs::read_to_string(dir.join("tokens.json"))
        .unwrap_or_else(|e| panic!("{case}: cannot read tokens.json: {e}"));
    let tokens: Vec<u32> = serde_json::from_str(&tokens_text)
        .unwrap_or_else(|e| panic!("{case}: tokens.json is not a list of token ids: {e}"));
    let vocab = spec.vocab as usize;
    let hf = read_logits(case, &dir, "logits.npy", tokens.len(), vocab);
    Fixture {
        dir,
        spec,
        tokens,
        hf,
        vocab,
    }
}

/// Reads `file` (an .npy of logits) from `dir`, checking it is [rows, vocab].
pub fn read_logits(case: &str, dir: &Path, file: &str, rows: usize, vocab: usize) -> Vec<f32> {
    let a = npy::read(&dir.join(file)).unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(
        a.shape,
        [rows, vocab],
        "{case}: {file} shape against (tokens, vocab)"
    );
    a.data
}

/// Binds the checkpoint in `dir` to `spec`.
pub fn load(case: &str, spec: &Spec, dir: &Path) -> BoundWeights {
    let checkpoint =
        Checkpoint::open(dir).unwrap_or_else(|e| panic!("{case}: cannot open weights: {e}"));
    bind(spec, checkpoint).unwrap_or_else(|e| panic!("{case}: {e}"))
}

/// The largest absolute difference and where it is (token, vocab index); NaN counts as
/// infinitely far, so a NaN anywhere fails any tolerance.
pub fn max_diff(a: &[f32], b: &[f32], vocab: usize) -> (f32, usize, usize) {
    assert_eq!(a.len(), b.len(), "logits of different sizes");
    let mut worst = (0.0f32, 0, 0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = (x - y).abs();
        let d = if d.is_nan() { f32::INFINITY } else { d };
        if d > worst.0 {
            worst = (d, i / vocab, i % vocab);
        }
    }
    worst
}

/// Asserts that `a` and `b` differ by at most `tol` everywhere and returns the largest
/// difference; it is printed (`--nocapture`) to show each case's headroom.
pub fn check(case: &str, what: &str, a: &[f32], b: &[f32], vocab: usize, tol: f32) -> f32 {
    assert_eq!(
        a.len(),
        b.len(),
        "{case}: {what}: logits of different sizes"
    );
    let (d, t, v) = max_diff(a, b, vocab);
    eprintln!("{case}: {what}: max abs diff {d:e}");
    assert!(
        d <= tol,
        "{case}: {what}: differs by {d:e} > {tol:e} at token {t}, vocab {v} ({} against {})",
        a[t * vocab + v],
        b[t * vocab + v]
    );
    d
}

/// The population standard deviation of `x`, in f64.
pub fn std_dev(x: &[f32]) -> f64 {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    (x.iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt()
}

/// Asserts that the fixture directories are exactly the cases `listed` in the test file
/// `file`, so that a new fixture cannot go untested and a test cannot lose its data.
pub fn assert_every_fixture_listed(listed: &[&str], file: &str) {
    let mut listed = listed.to_vec();
    listed.sort();
    let mut found: Vec<String> = std::fs::read_dir(fixture_root())
        .expect("tests/data/fixtures exists")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(
        found, listed,
        "fixture directories against the cases in {file}"
    );
}

/// Calls the macro `$cases` with every fixture (the compiled backends run them all), one
/// identifier each, then any `$extra` ones: the one list that the kernel-backend suites
/// (`backend`, `cuda`, `build`) make their per-fixture tests from.
/// Their `every_fixture_has_a_case` tests check it against the fixture directories.
macro_rules! with_compiled_fixtures {
    ($cases:ident $(, $extra:ident)*) => {
        $cases!(
            deepseek_v3_noqlora,
            deepseek_v3_qlora,
            gemma3_text,
            glm4_moe,
            gpt2,
            gpt_oss,
            kimi_linear,
            lfm2,
            llama,
            llama4,
            minimax_m2,
            mistral,
            mixtral,
            olmo2,
            qwen3,
            qwen3_moe_nonorm,
            qwen3_moe_norm,
            qwen3_next,
            smollm3,
            $($extra,)*
        );
    };
}
