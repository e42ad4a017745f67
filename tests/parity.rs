//! Numerical parity with HF transformers: every fixture under `tests/data/fixtures/`
//! (a tiny random HF model with HF's recorded fp32 logits) is imported from its
//! `config.json`, bound to its `model.safetensors` and run by the reference interpreter,
//! in prefill, in token-by-token decode and in a prefill of two chunks (the second after
//! a cache of the first).
//!
//! Fixtures come from `tools/reference/make_fixtures.py`; one test per case, so a failure
//! names the family.

#[macro_use]
mod common;

use archc_compiler::interp::Interpreter;
use archc_compiler::{lower, Mode as GraphMode};
use archc_runtime::bind::BoundWeights;
use archc_runtime::exec::{logits, Backend, Mode};
use archc_spec::Spec;
use common::{check, fixture, load, read_logits, std_dev, Fixture};

/// Largest allowed |ours - HF| on any logit (fp32 against fp32).
const TOLERANCE: f32 = 1e-4;

fn check_case(case: &str) {
    let Fixture {
        dir,
        spec,
        tokens,
        hf,
        vocab,
    } = fixture(case);
    let weights = load(case, &spec, &dir);
    let sd = std_dev(&hf);
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
    // Printed (--nocapture): how much headroom each family has under the tolerance.
    check(case, "prefill vs HF", &ours, &hf, vocab, TOLERANCE);

    let decoded = logits(&spec, &weights, &tokens, Mode::Decode, Backend::Interp)
        .unwrap_or_else(|e| panic!("{case}: decode failed: {e}"));
    assert_eq!(
        decoded.len(),
        tokens.len() * vocab,
        "{case}: decode logits size"
    );
    check(case, "decode vs prefill", &decoded, &ours, vocab, TOLERANCE);
    let hf_decode = read_logits(case, &dir, "decode_logits.npy", tokens.len(), vocab);
    check(
        case,
        "decode vs HF decode",
        &decoded,
        &hf_decode,
        vocab,
        TOLERANCE,
    );

    let chunked = chunked_prefill(case, &spec, &weights, &tokens);
    check(
        case,
        "prefill in two chunks vs one",
        &chunked,
        &ours,
        vocab,
        TOLERANCE,
    );
}

/// The prompt prefilled in two chunks, the second after a cache of `past > 0` tokens
/// (KV rows, or a linear-attention layer's convolution and recurrent state), then the
/// logits of both chunks side by side.
fn chunked_prefill(case: &str, spec: &Spec, weights: &BoundWeights, tokens: &[u32]) -> Vec<f32> {
    let lowered = |mode| {
        lower(spec, mode).unwrap_or_else(|e| panic!("{case}: lowering ({}): {e}", mode.as_str()))
    };
    let (prefill, decode) = (lowered(GraphMode::Prefill), lowered(GraphMode::Decode));
    let interp = Interpreter::new(&prefill, &decode, weights)
        .unwrap_or_else(|e| panic!("{case}: interpreter: {e}"));
    let mut cache = interp.new_cache();
    let (first, rest) = tokens.split_at(tokens.len() / 2 + 1);
    let mut out = interp
        .prefill(&mut cache, first)
        .unwrap_or_else(|e| panic!("{case}: first chunk: {e}"));
    out.extend(
        interp
            .prefill(&mut cache, rest)
            .unwrap_or_else(|e| panic!("{case}: second chunk after {} tokens: {e}", first.len())),
    );
    out
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
            common::assert_every_fixture_listed(&[$(stringify!($case)),*], "tests/parity.rs");
        }
    };
}

with_compiled_fixtures!(parity_cases);
