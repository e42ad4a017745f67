//! Decode-vs-prefill consistency on small random-weight models, one per feature: the
//! logits of a prompt run at once must equal those of the same prompt fed a token at a
//! time through the KV cache (and a prefill continued after a prefill).

use archc_compiler::interp::{Interpreter, RandomWeights};
use archc_compiler::testing::*;
use archc_compiler::{lower, Mode};
use archc_spec::*;

/// The MLP of the dense models (gated SiLU).
fn ffn() -> Ffn {
    swiglu(48)
}

/// Prefill of the whole prompt vs prefill of 4 tokens then decode one by one, and vs
/// two prefills; returns the largest absolute difference seen.
fn check(spec: &Spec) -> f32 {
    let prompt = &PROMPT[..11];
    let (pre, dec) = lower_both(spec);
    let weights = RandomWeights::for_graphs(&[&pre, &dec], 7);
    let interp = Interpreter::new(&pre, &dec, &weights).expect("weights bind");
    let vocab = interp.vocab();

    let mut cache = interp.new_cache();
    let full = interp.prefill(&mut cache, prompt).expect("prefill runs");
    assert_eq!(full.len(), prompt.len() * vocab);
    assert!(full.iter().all(|x| x.is_finite()));
    // Logits must depend on the input: a constant output would make this test vacuous.
    assert!(max_abs(&full) > 1e-2, "logits are all near zero");

    let stepped = prefill_then_decode(&interp, prompt, 4);

    let mut cache = interp.new_cache();
    interp
        .prefill(&mut cache, &prompt[..6])
        .expect("first prefill runs");
    let rest = interp
        .prefill(&mut cache, &prompt[6..])
        .expect("second prefill runs");
    max_abs_diff(&stepped, &full).max(max_abs_diff(&rest, &full[6 * vocab..]))
}

fn assert_consistent(spec: &Spec) {
    let worst = check(spec);
    assert!(worst <= 1e-4, "decode differs from prefill by {worst}");
}

#[test]
fn llama_decode_matches_prefill() {
    assert_consistent(&llama(ffn()));
}

#[test]
fn sliding_window_decode_matches_prefill() {
    let mut a = attention();
    a.window = Some(3);
    assert_consistent(&spec(
        vec![block(a, ffn()), block(attention(), ffn())],
        vec![0, 1],
    ));
}

#[test]
fn chunked_attention_decode_matches_prefill() {
    assert_consistent(&llama4_attention(ffn()));
}

#[test]
fn sinks_softcap_and_biases_decode_match_prefill() {
    assert_consistent(&sinks_softcap(ffn()));
}

#[test]
fn mla_decode_matches_prefill() {
    assert_consistent(&mla(ffn()));
}

#[test]
fn moe_decode_matches_prefill() {
    assert_consistent(&moe_routers());
}

#[test]
fn gemma_style_model_decode_matches_prefill() {
    assert_consistent(&gemma(mlp(48, Activation::GeluTanh, true, false)));
}

#[test]
fn qwen3_next_and_olmo_style_decode_matches_prefill() {
    assert_consistent(&qwen3_next_olmo(ffn()));
}

#[test]
fn gpt2_and_bert_style_decode_matches_prefill() {
    assert_consistent(&gpt2(mlp(64, Activation::Gelu, false, true)));
    assert_consistent(&bert(mlp(64, Activation::Relu, false, true)));
}

#[test]
fn linear_attention_decode_matches_prefill() {
    // Gated DeltaNet (2 key heads serving 4 value heads) and Kimi Delta layers between
    // softmax-attention layers: their convolution and recurrent states are fixed-size
    // caches that decode and a second prefill continue from.
    let mut s = llama(ffn());
    s.blocks[0].mixer = Mixer::GatedDeltaNet(GatedDeltaNet {
        k_heads: 2,
        v_heads: 4,
        k_head_dim: 8,
        v_head_dim: 6,
        conv: 4,
    });
    let mut kda = s.blocks[0].clone();
    kda.name = "kda".into();
    kda.mixer = Mixer::KimiDelta(KimiDelta {
        heads: 4,
        head_dim: 8,
        conv: 3,
    });
    let mut full = s.blocks[0].clone();
    full.name = "full".into();
    full.mixer = Mixer::Attention(attention());
    s.blocks = vec![s.blocks[0].clone(), kda, full];
    s.schedule = vec![0, 2, 1];
    s.layers = 3;
    assert_consistent(&s);
}

#[test]
fn params_match_the_canonical_tensor_list() {
    // The graph's parameters are exactly what archc_spec::tensors lists, name and shape.
    let s = llama(ffn());
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
    let s = llama(ffn());
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
