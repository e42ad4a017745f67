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
    let logits = dead.output("logits").expect("logits");
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

fn norm() -> Norm {
    Norm {
        kind: NormKind::RmsNorm,
        eps: 1e-5,
        bias: false,
        plus_one: false,
    }
}

fn attention() -> Attention {
    Attention {
        heads: 4,
        kv_heads: 2,
        head_dim: 8,
        v_head_dim: 8,
        mla: None,
        bias: AttnBias::default(),
        qk_norm: QkNorm::None,
        causal: true,
        window: None,
        chunk: None,
        sinks: false,
        softcap: None,
        scale: None,
        gate: false,
        temperature: None,
        rope: Some(Rope {
            theta: 10_000.0,
            dims: 8,
            pairing: Pairing::Half,
            scaling: RopeScaling::None,
        }),
    }
}

fn block(mixer: Attention, ffn: Ffn) -> Block {
    Block {
        name: "default".into(),
        placement: Placement::Pre,
        norm: norm(),
        mixer: Mixer::Attention(mixer),
        ffn,
    }
}

fn mlp() -> Ffn {
    Ffn::Mlp(Mlp {
        hidden: 48,
        act: Activation::Silu,
        gated: true,
        bias: false,
    })
}

fn spec(blocks: Vec<Block>, schedule: Vec<usize>) -> Spec {
    Spec {
        name: "tiny".into(),
        family: Family::Llama,
        vocab: 61,
        hidden: 32,
        layers: schedule.len() as u64,
        context: 128,
        dtype: DType::F32,
        tied: false,
        embed_scale: None,
        learned_positions: None,
        token_types: None,
        embed_norm: None,
        final_norm: Some(norm()),
        logit_softcap: None,
        blocks,
        schedule,
    }
}

const PROMPT: [u32; 21] = [
    3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 60, 2, 7, 18, 28, 18, 28, 45, 9, 0, 4,
];

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (x - y).abs();
            if d.is_nan() {
                f32::INFINITY
            } else {
                d
            }
        })
        .fold(0.0, f32::max)
}

/// Logits of the whole prompt (prefill), and of a 5-token prefill followed by decode of
/// the rest, one row per token.
fn run(interp: &Interpreter<'_>, tokens: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let mut cache = interp.new_cache();
    let full = interp.prefill(&mut cache, tokens).expect("prefill runs");
    let mut cache = interp.new_cache();
    let mut stepped = interp
        .prefill(&mut cache, &tokens[..5])
        .expect("short prefill runs");
    for &t in &tokens[5..] {
        stepped.extend(interp.decode(&mut cache, t).expect("decode runs"));
    }
    (full, stepped)
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
    let spread = a_full.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
    assert!(spread > 1e-2, "logits are all near zero");
    max_diff(&a_full, &b_full).max(max_diff(&a_step, &b_step))
}

fn check(name: &str, s: &Spec) {
    let pre = lower(s, Mode::Prefill).expect("prefill lowers");
    let dec = lower(s, Mode::Decode).expect("decode lowers");
    let weights = RandomWeights::for_graphs(&[&pre, &dec], 11);
    let d = differential(&pre, &dec, &weights, &PROMPT);
    eprintln!("{name}: max |fused - reference| = {d:e}");
    assert!(d <= 1e-5, "{name}: the optimized graph differs by {d:e}");
}

#[test]
fn differential_llama_gqa() {
    check("llama", &spec(vec![block(attention(), mlp())], vec![0, 0]));
}

#[test]
fn differential_window_chunk_sinks_softcap_biases() {
    let mut win = attention();
    win.window = Some(3);
    win.sinks = true;
    win.softcap = Some(5.0);
    win.bias = AttnBias {
        q: true,
        k: true,
        v: true,
        o: true,
    };
    let mut chunk = attention();
    chunk.chunk = Some(4);
    chunk.qk_norm = QkNorm::L2 { eps: 1e-6 };
    chunk.rope.as_mut().expect("rope").pairing = Pairing::Interleaved;
    let mut nope = attention();
    nope.rope = None;
    nope.kv_heads = 1;
    nope.temperature = Some(Temperature {
        floor_scale: 4.0,
        attn_scale: 0.1,
    });
    let blocks = vec![block(win, mlp()), block(chunk, mlp()), block(nope, mlp())];
    check("window-chunk-sinks", &spec(blocks, vec![0, 1, 2, 2]));
}

#[test]
fn differential_mla_with_and_without_q_rank() {
    let mut a = attention();
    a.mla = Some(Mla {
        q_rank: Some(12),
        kv_rank: 10,
        nope_dim: 6,
        rope_dim: 4,
        v_dim: 5,
    });
    a.heads = 3;
    a.kv_heads = 3;
    a.head_dim = 10;
    a.v_head_dim = 5;
    a.rope = Some(Rope {
        theta: 10_000.0,
        dims: 4,
        pairing: Pairing::Interleaved,
        scaling: RopeScaling::Yarn {
            factor: 4.0,
            original_context: 32,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 1.0,
            mscale_all_dim: 1.0,
            attention_factor: None,
            truncate: true,
        },
    });
    let mut b = a.clone();
    b.mla.as_mut().expect("mla").q_rank = None;
    check(
        "mla",
        &spec(vec![block(a, mlp()), block(b, mlp())], vec![0, 1]),
    );
}

fn moe(router: Router) -> Ffn {
    Ffn::Moe(Moe {
        experts: 8,
        top_k: 2,
        hidden: 16,
        act: Activation::Silu,
        gated: true,
        bias: false,
        shared: Some(SharedExperts {
            count: 1,
            hidden: 24,
            gate: true,
        }),
        router,
    })
}

fn router() -> Router {
    Router {
        score: RouterScore::Softmax,
        topk_first: false,
        renormalize: true,
        scale: 1.0,
        correction_bias: false,
        groups: None,
        bias: false,
        weight_input: false,
    }
}

#[test]
fn differential_moe_routers_and_shared_experts() {
    let deepseek = Router {
        score: RouterScore::Sigmoid,
        correction_bias: true,
        groups: Some(RouterGroups { count: 4, keep: 2 }),
        scale: 2.5,
        ..router()
    };
    let llama4 = Router {
        score: RouterScore::Sigmoid,
        topk_first: true,
        renormalize: false,
        weight_input: true,
        ..router()
    };
    let gpt_oss = Router {
        topk_first: true,
        bias: true,
        ..router()
    };
    let mut oss = moe(gpt_oss);
    if let Ffn::Moe(m) = &mut oss {
        m.bias = true;
        m.act = Activation::ClampedSwiglu {
            alpha: 1.702,
            limit: 7.0,
        };
        m.shared = None;
    }
    let mut plain = moe(router());
    if let Ffn::Moe(m) = &mut plain {
        m.gated = false;
        m.act = Activation::Gelu;
        m.shared = Some(SharedExperts {
            count: 2,
            hidden: 8,
            gate: false,
        });
    }
    let blocks = vec![
        block(attention(), moe(router())),
        block(attention(), moe(deepseek)),
        block(attention(), moe(llama4)),
        block(attention(), oss),
        block(attention(), plain),
    ];
    check("moe", &spec(blocks, vec![0, 1, 2, 3, 4]));
}

#[test]
fn differential_gemma_sandwich_per_head_qk_norm_softcaps() {
    let plus = Norm {
        plus_one: true,
        eps: 1e-6,
        ..norm()
    };
    let mut a = attention();
    a.qk_norm = QkNorm::PerHead(plus);
    a.scale = Some(0.2);
    a.window = Some(4);
    a.softcap = Some(20.0);
    let mut g = attention();
    g.qk_norm = QkNorm::PerHead(plus);
    g.rope.as_mut().expect("rope").scaling = RopeScaling::Linear { factor: 8.0 };
    let ffn = Ffn::Mlp(Mlp {
        hidden: 48,
        act: Activation::GeluTanh,
        gated: true,
        bias: false,
    });
    let mut local = block(a, ffn.clone());
    local.placement = Placement::Sandwich;
    local.norm = plus;
    let mut global = block(g, ffn);
    global.placement = Placement::Sandwich;
    global.norm = plus;
    let mut s = spec(vec![local, global], vec![0, 1, 0]);
    s.embed_scale = Some(32f64.sqrt());
    s.tied = true;
    s.logit_softcap = Some(10.0);
    s.final_norm = Some(plus);
    check("gemma", &s);
}

#[test]
fn differential_gated_attention_full_qk_norm_post_norms() {
    let mut gated = attention();
    gated.gate = true;
    gated.qk_norm = QkNorm::PerHead(Norm {
        plus_one: true,
        ..norm()
    });
    gated.rope.as_mut().expect("rope").dims = 4;
    let mut full = attention();
    full.qk_norm = QkNorm::Full(norm());
    full.rope.as_mut().expect("rope").scaling = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_context: 16,
    };
    let mut post = block(full, mlp());
    post.placement = Placement::Post;
    check(
        "gated-post",
        &spec(vec![block(gated, mlp()), post], vec![0, 1]),
    );
}

#[test]
fn differential_gpt2_and_bert_layernorm_biases() {
    let ln = Norm {
        kind: NormKind::LayerNorm,
        eps: 1e-5,
        bias: true,
        plus_one: false,
    };
    let mut a = attention();
    a.rope = None;
    a.kv_heads = 4;
    a.bias = AttnBias {
        q: true,
        k: true,
        v: true,
        o: true,
    };
    let gelu = Ffn::Mlp(Mlp {
        hidden: 64,
        act: Activation::Gelu,
        gated: false,
        bias: true,
    });
    let mut b = block(a.clone(), gelu);
    b.norm = ln;
    let mut s = spec(vec![b], vec![0, 0]);
    s.learned_positions = Some(32);
    s.final_norm = Some(ln);
    check("gpt2", &s);

    let mut bert = block(
        a,
        Ffn::Mlp(Mlp {
            hidden: 64,
            act: Activation::Relu,
            gated: false,
            bias: true,
        }),
    );
    bert.norm = ln;
    bert.placement = Placement::PostLn;
    let mut s = spec(vec![bert], vec![0, 0]);
    s.learned_positions = Some(32);
    s.token_types = Some(2);
    s.embed_norm = Some(ln);
    s.final_norm = None;
    check("bert", &s);
}

#[test]
fn differential_clamped_swiglu_mlp_and_mqa() {
    let mut a = attention();
    a.kv_heads = 1;
    a.causal = true;
    let ffn = Ffn::Mlp(Mlp {
        hidden: 40,
        act: Activation::ClampedSwiglu {
            alpha: 1.702,
            limit: 7.0,
        },
        gated: true,
        bias: true,
    });
    check("clamped-mqa", &spec(vec![block(a, ffn)], vec![0, 0]));
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
        let hf_d = max_diff(&ours, &hf.data);
        eprintln!("{case}: max |fused - reference| = {d:e}, max |fused - HF| = {hf_d:e}");
        assert!(
            d <= 1e-5,
            "{case}: fused differs from the reference by {d:e}"
        );
        assert!(hf_d <= 1e-4, "{case}: fused differs from HF by {hf_d:e}");
    }
}
