//! Decode-vs-prefill consistency on small random-weight models, one per feature: the
//! logits of a prompt run at once must equal those of the same prompt fed a token at a
//! time through the KV cache (and a prefill continued after a prefill).

use archc_compiler::interp::{Interpreter, RandomWeights};
use archc_compiler::ir::verify;
use archc_compiler::{lower, Mode};
use archc_spec::*;

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

fn llama() -> Spec {
    spec(vec![block(attention(), mlp())], vec![0, 0])
}

const PROMPT: [u32; 11] = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 60];

/// Prefill of the whole prompt vs prefill of 4 tokens then decode one by one, and vs
/// two prefills; returns the largest absolute difference seen.
fn check(spec: &Spec) -> f32 {
    let pre = lower(spec, Mode::Prefill).expect("prefill lowers");
    let dec = lower(spec, Mode::Decode).expect("decode lowers");
    verify(&pre).expect("prefill verifies");
    verify(&dec).expect("decode verifies");
    let weights = RandomWeights::for_graphs(&[&pre, &dec], 7);
    let interp = Interpreter::new(&pre, &dec, &weights).expect("weights bind");
    let vocab = interp.vocab();

    let mut cache = interp.new_cache();
    let full = interp.prefill(&mut cache, &PROMPT).expect("prefill runs");
    assert_eq!(full.len(), PROMPT.len() * vocab);
    assert!(full.iter().all(|x| x.is_finite()));
    // Logits must depend on the input: a constant output would make this test vacuous.
    let spread = full.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
    assert!(spread > 1e-2, "logits are all near zero");

    let mut worst = 0.0f32;
    let mut cache = interp.new_cache();
    let head = interp
        .prefill(&mut cache, &PROMPT[..4])
        .expect("short prefill runs");
    for (a, b) in head.iter().zip(&full) {
        worst = worst.max((a - b).abs());
    }
    for (i, &t) in PROMPT.iter().enumerate().skip(4) {
        let row = interp.decode(&mut cache, t).expect("decode runs");
        for (a, b) in row.iter().zip(&full[i * vocab..(i + 1) * vocab]) {
            worst = worst.max((a - b).abs());
        }
    }
    assert_eq!(cache.past, PROMPT.len());

    let mut cache = interp.new_cache();
    interp
        .prefill(&mut cache, &PROMPT[..6])
        .expect("first prefill runs");
    let rest = interp
        .prefill(&mut cache, &PROMPT[6..])
        .expect("second prefill runs");
    for (a, b) in rest.iter().zip(&full[6 * vocab..]) {
        worst = worst.max((a - b).abs());
    }
    worst
}

fn assert_consistent(spec: &Spec) {
    let worst = check(spec);
    assert!(worst <= 1e-4, "decode differs from prefill by {worst}");
}

#[test]
fn llama_decode_matches_prefill() {
    assert_consistent(&llama());
}

#[test]
fn sliding_window_decode_matches_prefill() {
    let mut a = attention();
    a.window = Some(3);
    assert_consistent(&spec(
        vec![block(a, mlp()), block(attention(), mlp())],
        vec![0, 1],
    ));
}

#[test]
fn chunked_attention_decode_matches_prefill() {
    let mut a = attention();
    a.chunk = Some(4);
    a.qk_norm = QkNorm::L2 { eps: 1e-6 };
    a.rope.as_mut().expect("rope").pairing = Pairing::Interleaved;
    let mut nope = attention();
    nope.rope = None;
    nope.temperature = Some(Temperature {
        floor_scale: 4.0,
        attn_scale: 0.1,
    });
    assert_consistent(&spec(vec![block(a, mlp()), block(nope, mlp())], vec![0, 1]));
}

#[test]
fn sinks_softcap_and_biases_decode_match_prefill() {
    let mut a = attention();
    a.sinks = true;
    a.softcap = Some(5.0);
    a.bias = AttnBias {
        q: true,
        k: true,
        v: true,
        o: true,
    };
    a.window = Some(5);
    assert_consistent(&spec(vec![block(a, mlp())], vec![0, 0]));
}

#[test]
fn mla_decode_matches_prefill() {
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
    assert_consistent(&spec(vec![block(a, mlp()), block(b, mlp())], vec![0, 1]));
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
fn moe_decode_matches_prefill() {
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
    let blocks = vec![
        block(attention(), moe(router())),
        block(attention(), moe(deepseek)),
        block(attention(), moe(llama4)),
        block(attention(), oss),
    ];
    assert_consistent(&spec(blocks, vec![0, 1, 2, 3]));
}

#[test]
fn gemma_style_model_decode_matches_prefill() {
    let plus = Norm {
        plus_one: true,
        eps: 1e-6,
        ..norm()
    };
    let mut a = attention();
    a.qk_norm = QkNorm::PerHead(plus);
    a.scale = Some(0.2);
    a.window = Some(4);
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
    assert_consistent(&s);
}

#[test]
fn qwen3_next_and_olmo_style_decode_matches_prefill() {
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
    assert_consistent(&spec(vec![block(gated, mlp()), post], vec![0, 1]));
}

#[test]
fn gpt2_and_bert_style_decode_matches_prefill() {
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
    let ffn = Ffn::Mlp(Mlp {
        hidden: 64,
        act: Activation::Gelu,
        gated: false,
        bias: true,
    });
    let mut b = block(a.clone(), ffn.clone());
    b.norm = ln;
    let mut s = spec(vec![b], vec![0, 0]);
    s.learned_positions = Some(32);
    s.final_norm = Some(ln);
    assert_consistent(&s);

    // Post-LN with token types and an embedding norm (causal so that decode is defined).
    let mut b = block(
        a,
        Ffn::Mlp(Mlp {
            hidden: 64,
            act: Activation::Relu,
            gated: false,
            bias: true,
        }),
    );
    b.norm = ln;
    b.placement = Placement::PostLn;
    let mut s = spec(vec![b], vec![0, 0]);
    s.learned_positions = Some(32);
    s.token_types = Some(2);
    s.embed_norm = Some(ln);
    s.final_norm = None;
    assert_consistent(&s);
}

#[test]
fn linear_attention_is_reported_as_unsupported() {
    let mut s = llama();
    s.blocks[0].mixer = Mixer::GatedDeltaNet(GatedDeltaNet {
        k_heads: 2,
        v_heads: 4,
        k_head_dim: 8,
        v_head_dim: 8,
        conv: 4,
    });
    let e = lower(&s, Mode::Prefill).expect_err("linear attention is not lowered yet");
    assert_eq!(
        e.to_string(),
        "layer 0 (block default): gated_deltanet mixers are not supported yet"
    );
}

#[test]
fn params_match_the_canonical_tensor_list() {
    // The graph's parameters are exactly what archc_spec::tensors lists, name and shape.
    let s = llama();
    let g = lower(&s, Mode::Prefill).expect("lowers");
    let mut from_graph: Vec<(String, Vec<u64>)> = g
        .params
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone()))
        .collect();
    from_graph.sort();
    assert_eq!(from_graph.len(), 2 * 9 + 3);
    assert!(from_graph
        .iter()
        .any(|(n, s)| n == "layers.1.attn.q.weight" && s == &vec![32, 32]));
    assert!(from_graph
        .iter()
        .any(|(n, s)| n == "layers.0.ffn.down.weight" && s == &vec![32, 48]));
}

#[test]
fn missing_and_misshapen_weights_are_errors_naming_the_tensor() {
    let s = llama();
    let pre = lower(&s, Mode::Prefill).expect("lowers");
    let dec = lower(&s, Mode::Decode).expect("lowers");
    let mut weights = RandomWeights::default();
    let e = Interpreter::new(&pre, &dec, &weights).expect_err("no weights");
    assert_eq!(e.to_string(), "missing weight `embed.tokens`");
    weights = RandomWeights::for_graphs(&[&pre], 1);
    weights.insert("layers.1.attn.k.weight", vec![16, 31], &[0.0; 16 * 31]);
    let e = Interpreter::new(&pre, &dec, &weights).expect_err("bad shape");
    assert_eq!(
        e.to_string(),
        "weight `layers.1.attn.k.weight` has shape [16, 31], the graph expects [16, 32]"
    );
}
