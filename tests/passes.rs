//! The fusion passes: one snapshot suite per pass, differential tests of the optimized
//! graphs against the unoptimized ones, and the HF fixtures run on optimized graphs.
//!
//! - `tests/data/passes/<pass>/<name>.arch`: the graph the pipeline hands to `<pass>`
//!   (prefill) and the graph the pass returns, snapshotted side by side in `<name>.snap`.
//!   Inputs named `no-*` must come back unchanged; the others must change. Every pass is
//!   idempotent, and the verifier runs after every pass.
//! - Differential: small random-weight models covering every feature; the interpreter on
//!   `optimize(g)` must match it on `g` within 1e-5, in prefill and in decode.
//! - Fixtures: every `tests/data/fixtures/` case, optimized, still matches HF's logits.
//!
//! Bless with `INSTA_UPDATE=always cargo test --test passes`, then read the snapshots.

use archc_compiler::interp::{Interpreter, RandomWeights, WeightSource};
use archc_compiler::passes::{optimize, optimize_verified, PIPELINE};
use archc_compiler::testing::*;
use archc_compiler::{lower, verify, Graph, Mode};
use archc_spec::*;
use std::path::{Path, PathBuf};

fn arch_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .collect();
    files.sort();
    files
}

fn lower_file(file: &Path, mode: Mode) -> Graph {
    let src = std::fs::read_to_string(file).expect("readable");
    let spec = archc_spec::validate::check_source(&file.display().to_string(), &src)
        .unwrap_or_else(|_| panic!("{} is not a valid spec", file.display()));
    lower(&spec, mode).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The graph the pipeline hands to pass `name`, and the pass's result.
fn around(graph: &Graph, name: &str) -> (Graph, Graph) {
    let mut g = graph.clone();
    for (pass_name, pass) in PIPELINE {
        let out = pass(&g);
        verify(&out).unwrap_or_else(|e| panic!("after {pass_name}: {e}"));
        if pass_name == name {
            return (g, out);
        }
        g = out;
    }
    panic!("no pass named {name} in the pipeline");
}

fn suite(pass: &str) {
    let (_, f) = PIPELINE
        .iter()
        .find(|(n, _)| *n == pass)
        .unwrap_or_else(|| panic!("no pass named {pass}"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/passes")
        .join(pass);
    let files = arch_files(&dir);
    assert!(!files.is_empty(), "no inputs for {pass}");
    for file in files {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name");
        let (before, after) = around(&lower_file(&file, Mode::Prefill), pass);
        if name.starts_with("no-") {
            assert_eq!(before, after, "{pass} must not apply to {name}");
        } else {
            assert_ne!(before, after, "{pass} must apply to {name}");
        }
        assert_eq!(f(&after), after, "{pass} is not idempotent on {name}");
        let text = format!("## before {pass}\n{before}\n## after {pass}\n{after}");
        insta::with_settings!({snapshot_path => &dir, prepend_module_to_snapshot => false, omit_expression => true}, {
            insta::assert_snapshot!(name, text);
        });
    }
}

macro_rules! suites {
    ($($pass:ident),* $(,)?) => {
        $(
            #[test]
            fn $pass() {
                suite(stringify!($pass));
            }
        )*

        /// Every pass of the pipeline has a suite, and every suite a pass.
        #[test]
        fn every_pass_has_a_suite() {
            let mut listed = vec![$(stringify!($pass)),*];
            listed.sort();
            let mut passes: Vec<&str> = PIPELINE.iter().map(|(n, _)| *n).collect();
            passes.sort();
            passes.dedup();
            assert_eq!(listed, passes);
        }
    };
}

suites!(
    cse,
    dce,
    fuse_linear_bias,
    merge_projections,
    fuse_glu,
    fuse_residual,
    fuse_norm_prologue,
    fuse_norm_rope,
    fuse_attention,
    fuse_moe,
    fuse_elementwise,
);

/// A dead node and an unused parameter, which lowering never produces, go.
#[test]
fn dce_removes_dead_nodes_and_their_parameters() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/passes/dce/no-llama.arch");
    let g = lower_file(&file, Mode::Prefill);
    let mut dead = g.clone();
    // A second head matmul that nothing reads.
    let logits = dead
        .output(&archc_compiler::ir::Io::Logits)
        .expect("logits");
    let mut extra = dead.node(logits).clone();
    dead.params.push(archc_compiler::ir::Param {
        name: "unused.weight".into(),
        shape: vec![16, 8],
        dtype: archc_compiler::ir::DType::F32,
    });
    extra.inputs[1] =
        archc_compiler::ir::Value::Param(archc_compiler::ir::ParamId(dead.params.len() as u32 - 1));
    dead.nodes.push(extra);
    verify(&dead).expect("the dead node is well-formed");
    assert_eq!(archc_compiler::passes::dce(&dead), g);
}

#[test]
fn the_pipeline_is_idempotent_and_deterministic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in arch_files(&root.join("tests/data/lower")) {
        let src = std::fs::read_to_string(&file).expect("readable");
        let Ok(spec) = archc_spec::validate::check_source("x", &src) else {
            continue;
        };
        for mode in [Mode::Prefill, Mode::Decode] {
            let Ok(g) = lower(&spec, mode) else { continue };
            let once = optimize(&g);
            assert_eq!(optimize(&once), once, "{}", file.display());
            assert_eq!(optimize(&g).to_string(), once.to_string());
        }
    }
}

// ---- Differential tests on random weights ----

/// The MLP of the dense models (gated SiLU).
fn ffn() -> Ffn {
    swiglu(48)
}

/// Logits of the whole prompt (prefill), and of a 5-token prefill followed by decode of
/// the rest, one row per token.
fn run(interp: &Interpreter<'_>, tokens: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let mut cache = interp.new_cache();
    let full = interp.prefill(&mut cache, tokens).expect("prefill runs");
    (full, prefill_then_decode(interp, tokens, 5))
}

/// The largest |optimized - reference| over prefill and decode logits.
fn differential(pre: &Graph, dec: &Graph, weights: &dyn WeightSource, tokens: &[u32]) -> f32 {
    let opt_pre = optimize_verified(pre).expect("prefill pipeline verifies");
    let opt_dec = optimize_verified(dec).expect("decode pipeline verifies");
    let (opt_pre, opt_dec) = (&opt_pre[opt_pre.len() - 1].1, &opt_dec[opt_dec.len() - 1].1);
    assert_ne!(opt_pre, pre, "the pipeline changed nothing");
    let reference = Interpreter::new(pre, dec, weights).expect("weights bind");
    let fused =
        Interpreter::new(opt_pre, opt_dec, weights).expect("weights bind to the fused graphs");
    let (a_full, a_step) = run(&reference, tokens);
    let (b_full, b_step) = run(&fused, tokens);
    assert!(max_abs(&a_full) > 1e-2, "logits are all near zero");
    max_abs_diff(&a_full, &b_full).max(max_abs_diff(&a_step, &b_step))
}

fn check(name: &str, s: &Spec) {
    let (pre, dec) = lower_both(s);
    let weights = RandomWeights::for_graphs(&[&pre, &dec], 11);
    let d = differential(&pre, &dec, &weights, &PROMPT);
    eprintln!("{name}: max |fused - reference| = {d:e}");
    assert!(d <= 1e-5, "{name}: the optimized graph differs by {d:e}");
}

#[test]
fn differential_llama_gqa() {
    check("llama", &llama(ffn()));
}

#[test]
fn differential_window_chunk_sinks_softcap_biases() {
    let mut win = sinks_softcap_attention();
    win.window = Some(3);
    let mut nope = nope_temperature_attention();
    nope.kv_heads = 1;
    let blocks = vec![
        block(win, ffn()),
        block(chunked_l2_attention(), ffn()),
        block(nope, ffn()),
    ];
    check("window-chunk-sinks", &spec(blocks, vec![0, 1, 2, 2]));
}

#[test]
fn differential_mla_with_and_without_q_rank() {
    check("mla", &mla(ffn()));
}

#[test]
fn differential_moe_routers_and_shared_experts() {
    let mut plain = moe(router());
    plain.gated = false;
    plain.act = Activation::Gelu;
    plain.shared = Some(SharedExperts {
        count: 2,
        hidden: 8,
        gate: false,
    });
    let mut blocks = moe_blocks();
    blocks.push(block(attention(), Ffn::Moe(plain)));
    check("moe", &spec(blocks, vec![0, 1, 2, 3, 4]));
}

#[test]
fn differential_gemma_sandwich_per_head_qk_norm_softcaps() {
    let mut s = gemma(mlp(48, Activation::GeluTanh, true, false));
    // The local layers also cap their attention logits (Gemma 2).
    let Mixer::Attention(local) = &mut s.blocks[0].mixer else {
        panic!("gemma's local block is attention");
    };
    local.softcap = Some(20.0);
    check("gemma", &s);
}

#[test]
fn differential_gated_attention_full_qk_norm_post_norms() {
    check("gated-post", &qwen3_next_olmo(ffn()));
}

#[test]
fn differential_gpt2_and_bert_layernorm_biases() {
    check("gpt2", &gpt2(mlp(64, Activation::Gelu, false, true)));
    check("bert", &bert(mlp(64, Activation::Relu, false, true)));
}

#[test]
fn differential_clamped_swiglu_mlp_and_mqa() {
    let mut a = attention();
    a.kv_heads = 1;
    let clamped = Activation::ClampedSwiglu {
        alpha: 1.702,
        limit: 7.0,
    };
    check(
        "clamped-mqa",
        &spec(vec![block(a, mlp(40, clamped, true, true))], vec![0, 0]),
    );
}

// ---- HF fixtures through the optimized graphs ----

#[test]
fn hf_fixtures_match_after_optimization() {
    use archc_runtime::bind::bind;
    use archc_runtime::npy;
    use archc_runtime::weights::Checkpoint;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("fixtures exist")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "only {} fixtures", cases.len());
    for dir in cases {
        let case = dir
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("?")
            .to_string();
        let spec = archc_spec::import::from_path(&dir)
            .unwrap_or_else(|e| panic!("{case}: import failed: {e}"));
        let checkpoint = Checkpoint::open(&dir).unwrap_or_else(|e| panic!("{case}: {e}"));
        let weights = bind(&spec, checkpoint).unwrap_or_else(|e| panic!("{case}: {e}"));
        let tokens: Vec<u32> = serde_json::from_str(
            &std::fs::read_to_string(dir.join("tokens.json")).expect("tokens.json"),
        )
        .expect("token ids");
        let pre = lower(&spec, Mode::Prefill).expect("lowers");
        let dec = lower(&spec, Mode::Decode).expect("lowers");
        let d = differential(&pre, &dec, &weights, &tokens);
        let opt_pre = optimize(&pre);
        let opt_dec = optimize(&dec);
        let fused = Interpreter::new(&opt_pre, &opt_dec, &weights).expect("binds");
        let mut cache = fused.new_cache();
        let ours = fused.prefill(&mut cache, &tokens).expect("prefill runs");
        let hf = npy::read(&dir.join("logits.npy")).unwrap_or_else(|e| panic!("{case}: {e}"));
        let hf_d = max_abs_diff(&ours, &hf.data);
        eprintln!("{case}: max |fused - reference| = {d:e}, max |fused - HF| = {hf_d:e}");
        assert!(
            d <= 1e-5,
            "{case}: fused differs from the reference by {d:e}"
        );
        assert!(hf_d <= 1e-4, "{case}: fused differs from HF by {hf_d:e}");
    }
}
