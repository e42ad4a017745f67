//! Builders of tiny models for tests and benchmarks: tiny `Spec`s that exercise each
//! feature (Llama/GQA, GPT-2 LayerNorm and biases, Gemma sandwich norms with `(1 + w)` and
//! softcaps, BERT post-LN, sliding windows, chunks, sinks and softcaps, MLA with and
//! without a query rank under YaRN, every MoE router kind, Qwen3-Next's output gate, OLMo's
//! post-norms, Llama 4's chunked L2-normed attention with NoPE temperature), fixed and
//! random token sequences, lowering and running helpers, and max-abs / scaled-difference
//! comparison of outputs.
//!
//! Every model is 32 wide with a vocabulary of 61 (a prime, so that no tile size divides it
//! by accident); attention has 4 query and 2 KV heads of 8 dims with half-pair RoPE unless a
//! builder says otherwise. The model builders take the dense feed-forward their blocks use,
//! because suites differ in how wide it must be (a kernel suite wants it wider than one
//! column block). Weights come from `interp::RandomWeights`.
//!
//! The helpers panic with context when something fails: they serve tests and benchmarks,
//! where a failure is a bug to report, never input to recover from.

use crate::interp::random::Rng;
use crate::interp::Interpreter;
use crate::{lower, verify, Graph, Mode};
use archc_spec::{
    Activation, Attention, AttnBias, Block, DType, Family, Ffn, Mixer, Mla, Mlp, Moe, Norm,
    NormKind, Pairing, Placement, QkNorm, Rope, RopeScaling, Router, RouterGroups, RouterScore,
    SharedExperts, Spec, Temperature,
};

/// Width of the residual stream of every tiny model.
pub const HIDDEN: u64 = 32;
/// Vocabulary of every tiny model (a prime).
pub const VOCAB: u64 = 61;

/// A fixed token sequence below [`VOCAB`], long enough to cross every window and chunk the
/// builders use.
pub const PROMPT: [u32; 21] = [
    3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 60, 2, 7, 18, 28, 18, 28, 45, 9, 0, 4,
];

// ---- Norms and positions ----

/// RMSNorm, eps 1e-5: the block and final norm of every model unless a builder says otherwise.
pub fn rms_norm() -> Norm {
    Norm {
        kind: NormKind::RmsNorm,
        eps: 1e-5,
        bias: false,
        plus_one: false,
    }
}

/// LayerNorm with a bias, eps 1e-5 (GPT-2, BERT).
pub fn layer_norm() -> Norm {
    Norm {
        kind: NormKind::LayerNorm,
        eps: 1e-5,
        bias: true,
        plus_one: false,
    }
}

/// Gemma's RMSNorm: weight applied as `(1 + w)`, eps 1e-6.
pub fn gemma_norm() -> Norm {
    Norm {
        plus_one: true,
        eps: 1e-6,
        ..rms_norm()
    }
}

/// Half-pair RoPE over all 8 head dims, theta 10 000, unscaled.
pub fn rope() -> Rope {
    Rope {
        theta: 10_000.0,
        dims: 8,
        pairing: Pairing::Half,
        scaling: RopeScaling::None,
    }
}

/// YaRN with factor 4 over an original context of 32; `mscale_all_dim` other than
/// `mscale` makes DeepSeek's attention factor differ from 1.
pub fn yarn(mscale_all_dim: f64) -> RopeScaling {
    RopeScaling::Yarn {
        factor: 4.0,
        original_context: 32,
        beta_fast: 32.0,
        beta_slow: 1.0,
        mscale: 1.0,
        mscale_all_dim,
        attention_factor: None,
        truncate: true,
    }
}

/// Llama 3 frequency scaling with an original context of 16, so that the tiny context
/// crosses both of its bands.
pub fn llama3_scaling() -> RopeScaling {
    RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_context: 16,
    }
}

// ---- Attention ----

/// Causal GQA: 4 query heads sharing 2 KV heads of 8 dims, [`rope`], no biases or norms.
pub fn attention() -> Attention {
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
        rope: Some(rope()),
    }
}

/// Biases on all four projections.
pub fn all_biases() -> AttnBias {
    AttnBias {
        q: true,
        k: true,
        v: true,
        o: true,
    }
}

/// GPT-2 / BERT attention: multi-head (4 KV heads), biased projections, no RoPE.
pub fn gpt2_attention() -> Attention {
    Attention {
        rope: None,
        kv_heads: 4,
        bias: all_biases(),
        ..attention()
    }
}

/// GPT-OSS-style attention: sinks, a logit softcap of 5, a window of 5 and all biases.
pub fn sinks_softcap_attention() -> Attention {
    Attention {
        sinks: true,
        softcap: Some(5.0),
        bias: all_biases(),
        window: Some(5),
        ..attention()
    }
}

/// Llama 4's RoPE layers: chunks of 4 tokens, weightless L2 QK-norm, interleaved pairs.
pub fn chunked_l2_attention() -> Attention {
    let mut a = attention();
    a.chunk = Some(4);
    a.qk_norm = QkNorm::L2 { eps: 1e-6 };
    a.rope = Some(Rope {
        pairing: Pairing::Interleaved,
        ..rope()
    });
    a
}

/// Llama 4's NoPE layers: no RoPE, attention temperature tuning instead.
pub fn nope_temperature_attention() -> Attention {
    Attention {
        rope: None,
        temperature: Some(Temperature {
            floor_scale: 4.0,
            attn_scale: 0.1,
        }),
        ..attention()
    }
}

/// Gemma's local layers: per-head `(1 + w)` QK-norm, an explicit query scale, a window of 4.
pub fn gemma_local_attention() -> Attention {
    Attention {
        qk_norm: QkNorm::PerHead(gemma_norm()),
        scale: Some(0.2),
        window: Some(4),
        ..attention()
    }
}

/// Gemma's global layers: per-head `(1 + w)` QK-norm and linear RoPE scaling.
pub fn gemma_global_attention() -> Attention {
    Attention {
        qk_norm: QkNorm::PerHead(gemma_norm()),
        rope: Some(Rope {
            scaling: RopeScaling::Linear { factor: 8.0 },
            ..rope()
        }),
        ..attention()
    }
}

/// Qwen3-Next's gated attention: sigmoid output gate, per-head `(1 + w)` QK-norm (eps
/// 1e-5), partial rotary over 4 of 8 dims.
pub fn qwen3_next_attention() -> Attention {
    Attention {
        gate: true,
        qk_norm: QkNorm::PerHead(Norm {
            plus_one: true,
            ..rms_norm()
        }),
        rope: Some(Rope { dims: 4, ..rope() }),
        ..attention()
    }
}

/// OLMo 2's attention: QK-norm over the whole projection, Llama 3 RoPE scaling.
pub fn olmo_attention() -> Attention {
    Attention {
        qk_norm: QkNorm::Full(rms_norm()),
        rope: Some(Rope {
            scaling: llama3_scaling(),
            ..rope()
        }),
        ..attention()
    }
}

/// DeepSeek-style MLA: 3 heads, KV rank 10, 6 + 4 query/key dims and 5 value dims, with a
/// query rank of `q_rank` (or direct query projection), interleaved RoPE under
/// [`yarn`]`(mscale_all_dim)`.
pub fn mla_attention(q_rank: Option<u64>, mscale_all_dim: f64) -> Attention {
    Attention {
        mla: Some(Mla {
            q_rank,
            kv_rank: 10,
            nope_dim: 6,
            rope_dim: 4,
            v_dim: 5,
        }),
        heads: 3,
        kv_heads: 3,
        head_dim: 10,
        v_head_dim: 5,
        rope: Some(Rope {
            theta: 10_000.0,
            dims: 4,
            pairing: Pairing::Interleaved,
            scaling: yarn(mscale_all_dim),
        }),
        ..attention()
    }
}

// ---- Feed-forward ----

/// A dense MLP of `hidden` units.
pub fn mlp(hidden: u64, act: Activation, gated: bool, bias: bool) -> Ffn {
    Ffn::Mlp(Mlp {
        hidden,
        act,
        gated,
        bias,
    })
}

/// The Llama MLP: gated SiLU without biases.
pub fn swiglu(hidden: u64) -> Ffn {
    mlp(hidden, Activation::Silu, true, false)
}

/// Softmax over all experts, then top-k, renormalised; no biases.
pub fn router() -> Router {
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

/// DeepSeek V3: sigmoid scores, a correction bias, 4 groups of which 2 are kept, scale 2.5.
pub fn deepseek_router() -> Router {
    Router {
        score: RouterScore::Sigmoid,
        correction_bias: true,
        groups: Some(RouterGroups { count: 4, keep: 2 }),
        scale: 2.5,
        ..router()
    }
}

/// Llama 4: top-k first, then sigmoid, not renormalised, weighting the expert's input.
pub fn llama4_router() -> Router {
    Router {
        score: RouterScore::Sigmoid,
        topk_first: true,
        renormalize: false,
        weight_input: true,
        ..router()
    }
}

/// GPT-OSS: top-k first, then softmax, with a router bias.
pub fn gpt_oss_router() -> Router {
    Router {
        topk_first: true,
        bias: true,
        ..router()
    }
}

/// 8 experts of 16 gated SiLU units, top 2, plus one gated shared expert of 24.
pub fn moe(router: Router) -> Moe {
    Moe {
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
    }
}

/// GPT-OSS experts: [`gpt_oss_router`], biased experts with the clamped SwiGLU, no shared
/// expert.
pub fn gpt_oss_moe() -> Moe {
    Moe {
        bias: true,
        act: Activation::ClampedSwiglu {
            alpha: 1.702,
            limit: 7.0,
        },
        shared: None,
        ..moe(gpt_oss_router())
    }
}

// ---- Blocks and models ----

/// A pre-norm block (RMSNorm) around an attention mixer and `ffn`.
pub fn block(mixer: Attention, ffn: Ffn) -> Block {
    Block {
        name: "default".into(),
        placement: Placement::Pre,
        norm: rms_norm(),
        mixer: Mixer::Attention(mixer),
        ffn,
    }
}

/// An f32 Llama-family model of [`HIDDEN`] and [`VOCAB`] with a final RMSNorm, untied, one
/// layer per schedule entry.
pub fn spec(blocks: Vec<Block>, schedule: Vec<usize>) -> Spec {
    Spec {
        name: "tiny".into(),
        family: Family::Llama,
        vocab: VOCAB,
        hidden: HIDDEN,
        layers: schedule.len() as u64,
        context: 128,
        dtype: DType::F32,
        tied: false,
        embed_scale: None,
        learned_positions: None,
        token_types: None,
        embed_norm: None,
        final_norm: Some(rms_norm()),
        logit_softcap: None,
        mtp: 0,
        blocks,
        schedule,
    }
}

/// Two Llama layers: [`attention`] (GQA) and `ffn`.
pub fn llama(ffn: Ffn) -> Spec {
    spec(vec![block(attention(), ffn)], vec![0, 0])
}

/// Two GPT-2 layers: LayerNorm with biases, biased MHA without RoPE, learned positions.
pub fn gpt2(ffn: Ffn) -> Spec {
    let mut b = block(gpt2_attention(), ffn);
    b.norm = layer_norm();
    let mut s = spec(vec![b], vec![0, 0]);
    s.learned_positions = Some(32);
    s.context = 32;
    s.final_norm = Some(layer_norm());
    s
}

/// Two BERT layers: post-LN blocks like [`gpt2`]'s, token types and an embedding norm, no
/// final norm (causal, so that decode is defined).
pub fn bert(ffn: Ffn) -> Spec {
    let mut b = block(gpt2_attention(), ffn);
    b.norm = layer_norm();
    b.placement = Placement::PostLn;
    let mut s = spec(vec![b], vec![0, 0]);
    s.learned_positions = Some(32);
    s.context = 32;
    s.token_types = Some(2);
    s.embed_norm = Some(layer_norm());
    s.final_norm = None;
    s
}

/// Gemma: local, global, local sandwich blocks with `(1 + w)` norms, a scaled and tied
/// embedding and a final logit softcap of 10.
pub fn gemma(ffn: Ffn) -> Spec {
    let mut local = block(gemma_local_attention(), ffn.clone());
    local.placement = Placement::Sandwich;
    local.norm = gemma_norm();
    let mut global = block(gemma_global_attention(), ffn);
    global.placement = Placement::Sandwich;
    global.norm = gemma_norm();
    let mut s = spec(vec![local, global], vec![0, 1, 0]);
    s.embed_scale = Some((HIDDEN as f64).sqrt());
    s.tied = true;
    s.logit_softcap = Some(10.0);
    s.final_norm = Some(gemma_norm());
    s
}

/// A Qwen3-Next gated-attention layer, then an OLMo-style post-norm layer.
pub fn qwen3_next_olmo(ffn: Ffn) -> Spec {
    let mut post = block(olmo_attention(), ffn.clone());
    post.placement = Placement::Post;
    spec(vec![block(qwen3_next_attention(), ffn), post], vec![0, 1])
}

/// Llama 4's attention: a chunked L2-normed layer, then a NoPE layer with temperature.
pub fn llama4_attention(ffn: Ffn) -> Spec {
    spec(
        vec![
            block(chunked_l2_attention(), ffn.clone()),
            block(nope_temperature_attention(), ffn),
        ],
        vec![0, 1],
    )
}

/// Two layers of [`sinks_softcap_attention`].
pub fn sinks_softcap(ffn: Ffn) -> Spec {
    spec(vec![block(sinks_softcap_attention(), ffn)], vec![0, 0])
}

/// An MLA layer with a query rank of 12, then one without, under plain YaRN.
pub fn mla(ffn: Ffn) -> Spec {
    spec(
        vec![
            block(mla_attention(Some(12), 1.0), ffn.clone()),
            block(mla_attention(None, 1.0), ffn),
        ],
        vec![0, 1],
    )
}

/// One [`attention`] block per router kind, in this order: softmax [`router`],
/// [`deepseek_router`], [`llama4_router`], and [`gpt_oss_moe`].
pub fn moe_blocks() -> Vec<Block> {
    vec![
        block(attention(), Ffn::Moe(moe(router()))),
        block(attention(), Ffn::Moe(moe(deepseek_router()))),
        block(attention(), Ffn::Moe(moe(llama4_router()))),
        block(attention(), Ffn::Moe(gpt_oss_moe())),
    ]
}

/// The [`moe_blocks`], one layer each.
pub fn moe_routers() -> Spec {
    spec(moe_blocks(), vec![0, 1, 2, 3])
}

// ---- Tokens, lowering and running ----

/// `n` tokens below `vocab`, reproducible from `seed`.
pub fn random_tokens(n: usize, vocab: u64, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| (rng.next_u64() % vocab.max(1)) as u32)
        .collect()
}

/// The prefill and decode graphs of `spec`, both verified.
///
/// # Panics
/// When `spec` does not lower or a graph fails the verifier.
pub fn lower_both(spec: &Spec) -> (Graph, Graph) {
    let pre = lower(spec, Mode::Prefill).unwrap_or_else(|e| panic!("prefill lowers: {e}"));
    let dec = lower(spec, Mode::Decode).unwrap_or_else(|e| panic!("decode lowers: {e}"));
    verify(&pre).unwrap_or_else(|e| panic!("prefill verifies: {e}"));
    verify(&dec).unwrap_or_else(|e| panic!("decode verifies: {e}"));
    (pre, dec)
}

/// The logits of `tokens` through a fresh cache: a prefill of the first `split` tokens,
/// then one decode step per remaining token, all rows concatenated (so they line up with
/// a prefill of the whole sequence).
///
/// # Panics
/// When a step fails, or the cache does not end up holding every token.
pub fn prefill_then_decode(interp: &Interpreter<'_>, tokens: &[u32], split: usize) -> Vec<f32> {
    let mut cache = interp.new_cache();
    let mut logits = interp
        .prefill(&mut cache, &tokens[..split])
        .unwrap_or_else(|e| panic!("prefill of {split} tokens runs: {e}"));
    for &t in &tokens[split..] {
        let row = interp
            .decode(&mut cache, t)
            .unwrap_or_else(|e| panic!("decode at {} runs: {e}", cache.past));
        logits.extend(row);
    }
    assert_eq!(cache.past, tokens.len(), "the cache holds every token");
    logits
}

// ---- Comparison ----

/// The largest magnitude in `xs` (0 when empty; NaNs are skipped).
pub fn max_abs(xs: &[f32]) -> f32 {
    xs.iter().fold(0.0f32, |m, &x| m.max(x.abs()))
}

/// The largest `|a - b|`, elementwise. A NaN difference (a NaN on either side, or equal
/// infinities) counts as infinite, so that a comparison never passes because both sides
/// broke.
///
/// # Panics
/// When the lengths differ.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
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

/// [`max_abs_diff`] relative to the largest magnitude of `want` when that exceeds 1, and
/// absolute otherwise: f32 rounding differences grow with the values.
pub fn scaled_diff(want: &[f32], got: &[f32]) -> f32 {
    max_abs_diff(want, got) / max_abs(want).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_builder_lowers_and_verifies() {
        // The builders must stay lowerable: a broken builder would silently shrink every
        // suite that uses it to an error path.
        let ffn = swiglu(48);
        for s in [
            llama(ffn.clone()),
            gpt2(mlp(64, Activation::Gelu, false, true)),
            bert(mlp(64, Activation::Relu, false, true)),
            gemma(mlp(48, Activation::GeluTanh, true, false)),
            qwen3_next_olmo(ffn.clone()),
            llama4_attention(ffn.clone()),
            sinks_softcap(ffn.clone()),
            mla(ffn),
            moe_routers(),
        ] {
            let (pre, dec) = lower_both(&s);
            assert!(!pre.params.is_empty() && !dec.params.is_empty());
        }
    }

    #[test]
    fn prompt_and_random_tokens_are_in_the_vocabulary() {
        assert!(PROMPT.iter().all(|&t| u64::from(t) < VOCAB));
        let a = random_tokens(100, VOCAB, 3);
        assert_eq!(a, random_tokens(100, VOCAB, 3), "not reproducible");
        assert_ne!(a, random_tokens(100, VOCAB, 4), "the seed is ignored");
        assert!(a.iter().all(|&t| u64::from(t) < VOCAB));
    }

    #[test]
    fn differences_treat_nan_and_equal_infinities_as_infinite() {
        assert_eq!(max_abs_diff(&[1.0, -2.0], &[1.5, -2.0]), 0.5);
        assert_eq!(max_abs_diff(&[f32::NAN], &[0.0]), f32::INFINITY);
        assert_eq!(
            max_abs_diff(&[f32::INFINITY], &[f32::INFINITY]),
            f32::INFINITY
        );
        assert_eq!(scaled_diff(&[4.0, 0.0], &[3.0, 0.0]), 0.25);
        assert_eq!(scaled_diff(&[0.5], &[0.25]), 0.25);
        assert_eq!(max_abs(&[-3.0, f32::NAN, 2.0]), 3.0);
    }
}
