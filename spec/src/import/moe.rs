//! Mixture-of-experts families: Mixtral, Qwen3-MoE, DeepSeek V3 / Kimi K2, GPT-OSS,
//! GLM-4.5, MiniMax-M2 and Llama 4.

use crate::spec::{
    Activation, Family, Ffn, Mixer, Mla, Moe, Pairing, Placement, QkNorm, Router, RouterGroups,
    RouterScore, SharedExperts, Spec, Temperature,
};

use super::dense::{head_shape, qwen_window};
use super::{
    activation, all_bias, attention, block, check_layer_type, layer_types, mlp, qkv_bias, rms,
    Config, Globals, ImportError, Layer, RopeSource,
};

/// A router with every option off; families switch on what their modeling code does.
fn router(score: RouterScore) -> Router {
    Router {
        score,
        topk_first: false,
        renormalize: false,
        scale: 1.0,
        correction_bias: false,
        groups: None,
        bias: false,
        weight_input: false,
    }
}

/// Group-limited routing when `n_group` > 1 (a single group selects nothing).
fn groups(
    c: &Config<'_>,
    experts: u64,
    group_key: &str,
    keep_key: &str,
) -> Result<Option<RouterGroups>, ImportError> {
    let count = c.u64_or(group_key, 1)?;
    if count <= 1 {
        return Ok(None);
    }
    if experts % count != 0 {
        return Err(c.invalid(
            group_key,
            format!("{count} groups do not divide {experts} experts"),
        ));
    }
    let keep = c.u64_or(keep_key, 1)?;
    if keep == 0 || keep > count {
        return Err(c.invalid(
            keep_key,
            format!("must be between 1 and {count}, found {keep}"),
        ));
    }
    Ok(Some(RouterGroups { count, keep }))
}

fn check_top_k(c: &Config<'_>, key: &str, top_k: u64, experts: u64) -> Result<(), ImportError> {
    if top_k == 0 || top_k > experts {
        return Err(c.invalid(
            key,
            format!("must be between 1 and the {experts} experts, found {top_k}"),
        ));
    }
    Ok(())
}

fn moe(experts: u64, top_k: u64, hidden: u64, act: Activation, router: Router) -> Moe {
    Moe {
        experts,
        top_k,
        hidden,
        act,
        gated: true,
        bias: false,
        shared: None,
        router,
    }
}

pub(crate) fn mixtral(c: &Config<'_>, name: &str) -> Result<Spec, ImportError> {
    let g = Globals::read(c, 131_072, false)?;
    let (heads, kv, head_dim) = head_shape(c, g.hidden, Some(8), None)?;
    let eps = c.f64_or("rms_norm_eps", 1e-5)?;
    let rope = RopeSource::flat(c, 10_000.0, 1.0)?.build(head_dim, g.context, Pairing::Half)?;
    let mut attn = attention(heads, kv, head_dim, Some(rope));
    attn.window = c.opt_u64("sliding_window")?;
    let experts = c.req_u64("num_local_experts")?;
    let top_k = c.req_u64("num_experts_per_tok")?;
    check_top_k(c, "num_experts_per_tok", top_k, experts)?;
    let mut r = router(RouterScore::Softmax);
    r.renormalize = true;
    let act = activation(c, "hidden_act", "silu")?;
    let ffn = Ffn::Moe(moe(experts, top_k, c.req_u64("intermediate_size")?, act, r));
    let b = block(Placement::Pre, rms(eps), Mixer::Attention(attn), ffn);
    let layers = (0..g.layers)
        .map(|_| Layer {
            labels: vec![],
            block: b.clone(),
        })
        .collect();
    Ok(g.spec(name, Family::Mixtral, rms(eps), layers))
}

/// Which layers of a Qwen-style MoE are sparse: not in `mlp_only_layers`, experts exist,
/// and `(i + 1)` is a multiple of `decoder_sparse_step`.
fn qwen_sparse_layers(c: &Config<'_>, layers: u64, experts: u64) -> Result<Vec<bool>, ImportError> {
    let dense: std::collections::BTreeSet<u64> = c
        .opt_u64_list("mlp_only_layers")?
        .unwrap_or_default()
        .into_iter()
        .collect();
    let step = c.u64_or("decoder_sparse_step", 1)?;
    if step == 0 {
        return Err(c.invalid("decoder_sparse_step", "must be at least 1"));
    }
    Ok((0..layers)
        .map(|i| !dense.contains(&i) && experts > 0 && (i + 1) % step == 0)
        .collect())
}

pub(crate) fn qwen3_moe(c: &Config<'_>, name: &str) -> Result<Spec, ImportError> {
    let g = Globals::read(c, 32_768, false)?;
    let (heads, kv, head_dim) = head_shape(c, g.hidden, Some(4), None)?;
    let eps = c.f64_or("rms_norm_eps", 1e-6)?;
    let rope = RopeSource::flat(c, 10_000.0, 1.0)?.build(head_dim, g.context, Pairing::Half)?;
    let mut attn = attention(heads, kv, head_dim, Some(rope));
    attn.bias = all_bias(c.bool_or("attention_bias", false)?);
    attn.qk_norm = QkNorm::PerHead(rms(eps));
    // Qwen3-MoE applies its window to every layer when sliding is on.
    attn.window = qwen_window(c)?;
    // The hub spells it `num_experts`; transformers 5 saves `num_local_experts`.
    let experts = c.req_u64_any(&["num_experts", "num_local_experts"])?;
    let top_k = c.req_u64("num_experts_per_tok")?;
    check_top_k(c, "num_experts_per_tok", top_k, experts)?;
    let act = activation(c, "hidden_act", "silu")?;
    let mut r = router(RouterScore::Softmax);
    r.renormalize = c.bool_or("norm_topk_prob", false)?;
    let sparse = Ffn::Moe(moe(
        experts,
        top_k,
        c.req_u64("moe_intermediate_size")?,
        act,
        r,
    ));
    let sparse_layers = qwen_sparse_layers(c, g.layers, experts)?;
    let dense = if sparse_layers.iter().all(|s| *s) {
        None
    } else {
        Some(mlp(c.req_u64("intermediate_size")?, act, true, false))
    };
    let layers = sparse_layers
        .iter()
        .map(|&s| {
            let ffn = if s {
                sparse.clone()
            } else {
                dense.clone().unwrap_or_else(|| sparse.clone())
            };
            Layer {
                labels: vec![if s { "moe" } else { "dense" }],
                block: block(
                    Placement::Pre,
                    rms(eps),
                    Mixer::Attention(attn.clone()),
                    ffn,
                ),
            }
        })
        .collect();
    Ok(g.spec(name, Family::Qwen3Moe, rms(eps), layers))
}

/// Multi-head latent attention as DeepSeek V3 and Kimi Linear configure it.
pub(crate) fn mla_attention(
    c: &Config<'_>,
    q_rank_default: Option<u64>,
) -> Result<crate::spec::Attention, ImportError> {
    if c.bool_or("attention_bias", false)? {
        return Err(c.invalid(
            "attention_bias",
            "biases on MLA projections are not supported",
        ));
    }
    let heads = c.req_u64("num_attention_heads")?;
    let q_rank = if c.raw_is_null("q_lora_rank") {
        None
    } else {
        c.opt_u64("q_lora_rank")?.or(q_rank_default)
    };
    let mla = Mla {
        q_rank,
        kv_rank: c.u64_or("kv_lora_rank", 512)?,
        nope_dim: c.u64_or("qk_nope_head_dim", 128)?,
        rope_dim: c.u64_or("qk_rope_head_dim", 64)?,
        v_dim: c.u64_or("v_head_dim", 128)?,
    };
    let mut attn = attention(heads, heads, mla.nope_dim + mla.rope_dim, None);
    attn.v_head_dim = mla.v_dim;
    attn.mla = Some(mla);
    Ok(attn)
}

/// DeepSeek-style routed experts: sigmoid scores with a selection-only correction bias,
/// optional group-limited selection, renormalisation and a routed scaling factor.
fn deepseek_router(
    c: &Config<'_>,
    experts: u64,
    scale_default: f64,
    group_keys: (&str, &str),
    renormalize_keys: &[&str],
) -> Result<Router, ImportError> {
    let mut r = router(RouterScore::Sigmoid);
    r.correction_bias = true;
    r.groups = groups(c, experts, group_keys.0, group_keys.1)?;
    r.scale = c.f64_or("routed_scaling_factor", scale_default)?;
    r.renormalize = true;
    for key in renormalize_keys {
        if let Some(v) = c.opt_bool(key)? {
            r.renormalize = v;
            break;
        }
    }
    Ok(r)
}

fn shared(count: u64, hidden: u64) -> Option<SharedExperts> {
    (count > 0).then_some(SharedExperts {
        count,
        hidden,
        gate: false,
    })
}

/// The config defaults of a DeepSeek-style MoE family (they differ between families).
#[derive(Clone, Copy)]
struct DeepseekMoeDefaults {
    experts: u64,
    expert_hidden: u64,
    scale: f64,
    first_dense: u64,
}

/// Layers of a DeepSeek-style model (DeepSeek V3, Kimi K2, GLM-4.5): the first
/// `first_k_dense_replace` layers dense, the rest routed experts with shared experts and
/// sigmoid, bias-corrected, group-limited routing.
fn deepseek_moe_layers(
    c: &Config<'_>,
    layers: u64,
    attn: &crate::Attention,
    eps: f64,
    d: DeepseekMoeDefaults,
) -> Result<Vec<Layer>, ImportError> {
    let experts = c.u64_or("n_routed_experts", d.experts)?;
    let top_k = c.u64_or("num_experts_per_tok", 8)?;
    check_top_k(c, "num_experts_per_tok", top_k, experts)?;
    let expert_hidden = c.u64_or("moe_intermediate_size", d.expert_hidden)?;
    let act = activation(c, "hidden_act", "silu")?;
    let router = deepseek_router(
        c,
        experts,
        d.scale,
        ("n_group", "topk_group"),
        &["norm_topk_prob"],
    )?;
    let mut m = moe(experts, top_k, expert_hidden, act, router);
    m.shared = shared(c.u64_or("n_shared_experts", 1)?, expert_hidden);
    let first_dense = c.u64_or("first_k_dense_replace", d.first_dense)?;
    let dense = mlp(c.req_u64("intermediate_size")?, act, true, false);
    Ok((0..layers)
        .map(|i| {
            let sparse = i >= first_dense;
            Layer {
                labels: vec![if sparse { "moe" } else { "dense" }],
                block: block(
                    Placement::Pre,
                    rms(eps),
                    Mixer::Attention(attn.clone()),
                    if sparse {
                        Ffn::Moe(m.clone())
                    } else {
                        dense.clone()
                    },
                ),
            }
        })
        .collect())
}

pub(crate) fn deepseek_v3(c: &Config<'_>, name: &str) -> Result<Spec, ImportError> {
    let g = Globals::read(c, 4096, false)?;
    let eps = c.f64_or("rms_norm_eps", 1e-6)?;
    if let Some(func) = c.opt_str("scoring_func")? {
        if func != "sigmoid" {
            return Err(c.invalid(
                "scoring_func",
                format!("only \"sigmoid\" routing is supported, found \"{func}\""),
            ));
        }
    }
    let mut attn = mla_attention(c, Some(1536))?;
    let rope_dim = attn.mla.map_or(64, |m| m.rope_dim);
    let pairing = if c.bool_or("rope_interleave", true)? {
        Pairing::Interleaved
    } else {
        Pairing::Half
    };
    attn.rope = Some(RopeSource::flat(c, 10_000.0, 1.0)?.build(rope_dim, g.context, pairing)?);
    // HF's DeepSeek V3 makes every layer from `first_k_dense_replace` on sparse.
    let d = DeepseekMoeDefaults {
        experts: 256,
        expert_hidden: 2048,
        scale: 2.5,
        first_dense: 3,
    };
    let layers = deepseek_moe_layers(c, g.layers, &attn, eps, d)?;
    let mut spec = g.spec(name, Family::DeepseekV3, rms(eps), layers);
    spec.mtp = c.u64_or("num_nextn_predict_layers", 0)?;
    Ok(spec)
}

pub(crate) fn gpt_oss(c: &Config<'_>, name: &str) -> Result<Spec, ImportError> {
    let g = Globals::read(c, 131_072, false)?;
    let (heads, kv, head_dim) = head_shape(c, g.hidden, Some(8), Some(64))?;
    let eps = c.f64_or("rms_norm_eps", 1e-5)?;
    let source = RopeSource::flat(c, 10_000.0, 1.0)?;
    // GptOssConfig supplies its own YaRN settings when the config has none.
    let rope = if source.params.is_some() {
        source.build(head_dim, g.context, Pairing::Half)?
    } else {
        crate::spec::Rope {
            theta: source.theta,
            dims: head_dim,
            pairing: Pairing::Half,
            scaling: crate::spec::RopeScaling::Yarn {
                factor: 32.0,
                original_context: 4096,
                beta_fast: 32.0,
                beta_slow: 1.0,
                mscale: 1.0,
                mscale_all_dim: 0.0,
                attention_factor: None,
                truncate: false,
            },
        }
    };
    let mut attn = attention(heads, kv, head_dim, Some(rope));
    attn.bias = all_bias(c.bool_or("attention_bias", true)?);
    attn.sinks = true;
    let window = c.u64_or("sliding_window", 128)?;
    let sliding: Vec<bool> = match layer_types(c, g.layers)? {
        Some(types) => types
            .iter()
            .map(|t| {
                Ok(
                    check_layer_type(c, t, &["sliding_attention", "full_attention"])?
                        == "sliding_attention",
                )
            })
            .collect::<Result<_, ImportError>>()?,
        None => (0..g.layers).map(|i| (i + 1) % 2 != 0).collect(),
    };
    let experts = c.req_u64_any(&["num_local_experts"])?;
    let top_k = c.req_u64_any(&["num_experts_per_tok", "experts_per_token"])?;
    check_top_k(c, "num_experts_per_tok", top_k, experts)?;
    let act = Activation::ClampedSwiglu {
        alpha: c.f64_or("swiglu_alpha", 1.702)?,
        limit: c.f64_or("swiglu_limit", 7.0)?,
    };
    let mut r = router(RouterScore::Softmax);
    r.topk_first = true;
    r.bias = true;
    let mut m = moe(experts, top_k, c.req_u64("intermediate_size")?, act, r);
    m.bias = true;
    let layers = sliding
        .iter()
        .map(|&s| {
            let mut a = attn.clone();
            a.window = s.then_some(window);
            Layer {
                labels: vec![if s { "sliding" } else { "full" }],
                block: block(
                    Placement::Pre,
                    rms(eps),
                    Mixer::Attention(a),
                    Ffn::Moe(m.clone()),
                ),
            }
        })
        .collect();
    Ok(g.spec(name, Family::GptOss, rms(eps), layers))
}

pub(crate) fn glm4_moe(c: &Config<'_>, name: &str) -> Result<Spec, ImportError> {
    let g = Globals::read(c, 131_072, false)?;
    let (heads, kv, head_dim) = head_shape(c, g.hidden, Some(8), None)?;
    let eps = c.f64_or("rms_norm_eps", 1e-5)?;
    let rope = RopeSource::flat(c, 10_000.0, 0.5)?.build(head_dim, g.context, Pairing::Half)?;
    let mut attn = attention(heads, kv, head_dim, Some(rope));
    attn.bias = qkv_bias(c.bool_or("attention_bias", false)?);
    if c.bool_or("use_qk_norm", false)? {
        attn.qk_norm = QkNorm::PerHead(rms(eps));
    }
    let d = DeepseekMoeDefaults {
        experts: 128,
        expert_hidden: 1408,
        scale: 1.0,
        first_dense: 1,
    };
    let layers = deepseek_moe_layers(c, g.layers, &attn, eps, d)?;
    let mut spec = g.spec(name, Family::Glm4Moe, rms(eps), layers);
    // HF's GLM-4.5 config defaults to one MTP layer (`num_mtp_layers`).
    spec.mtp = c.u64_or("num_nextn_predict_layers", 1)?;
    Ok(spec)
}

pub(crate) fn minimax_m2(c: &Config<'_>, name: &str) -> Result<Spec, ImportError> {
    let g = Globals::read(c, 196_608, false)?;
    let (heads, kv, head_dim) = head_shape(c, g.hidden, Some(8), Some(128))?;
    let eps = c.f64_or("rms_norm_eps", 1e-6)?;
    // `rotary_dim` is how MiniMax states partial rotary; HF turns it into a factor.
    let partial = match c.opt_u64("rotary_dim")? {
        Some(d) => d as f64 / head_dim as f64,
        None => 1.0,
    };
    let rope = RopeSource::flat(c, 10_000.0, partial)?.build(head_dim, g.context, Pairing::Half)?;
    let mut attn = attention(heads, kv, head_dim, Some(rope));
    if c.bool_or("use_qk_norm", true)? {
        attn.qk_norm = match c.str_or("qk_norm_type", "per_layer")? {
            "per_layer" => QkNorm::Full(rms(eps)),
            "per_head" => QkNorm::PerHead(rms(eps)),
            other => {
                return Err(c.invalid(
                    "qk_norm_type",
                    format!(
                        "unsupported QK-norm type \"{other}\" (expected per_layer or per_head)"
                    ),
                ))
            }
        };
    }
    if c.u64_or("shared_intermediate_size", 0)? > 0 {
        return Err(c.invalid(
            "shared_intermediate_size",
            "shared experts are not supported for minimax_m2",
        ));
    }
    let score = match c.str_or("scoring_func", "sigmoid")? {
        "sigmoid" => RouterScore::Sigmoid,
        "softmax" => RouterScore::Softmax,
        other => {
            return Err(c.invalid(
                "scoring_func",
                format!("unsupported scoring function \"{other}\" (expected sigmoid or softmax)"),
            ))
        }
    };
    let mut r = router(score);
    r.renormalize = true;
    r.correction_bias = c.bool_or("use_routing_bias", true)?;
    let experts = c.u64_or("num_local_experts", 256)?;
    let top_k = c.u64_or("num_experts_per_tok", 8)?;
    check_top_k(c, "num_experts_per_tok", top_k, experts)?;
    let act = activation(c, "hidden_act", "silu")?;
    let ffn = Ffn::Moe(moe(experts, top_k, c.req_u64("intermediate_size")?, act, r));
    let b = block(Placement::Pre, rms(eps), Mixer::Attention(attn), ffn);
    let layers = (0..g.layers)
        .map(|_| Layer {
            labels: vec![],
            block: b.clone(),
        })
        .collect();
    Ok(g.spec(name, Family::MinimaxM2, rms(eps), layers))
}

pub(crate) fn llama4(c: &Config<'_>, name: &str) -> Result<Spec, ImportError> {
    let g = Globals::read(c, 131_072, false)?;
    let (heads, kv, head_dim) = head_shape(c, g.hidden, Some(8), Some(128))?;
    let eps = c.f64_or("rms_norm_eps", 1e-5)?;
    // Llama 4 rotates adjacent pairs (it multiplies complex numbers).
    let rope =
        RopeSource::flat(c, 10_000.0, 1.0)?.build(head_dim, g.context, Pairing::Interleaved)?;
    let n = g.layers;
    let uses_rope: Vec<bool> = match c.opt_u64_list("no_rope_layers")?.filter(|l| !l.is_empty()) {
        Some(list) => {
            if list.len() as u64 != n {
                return Err(c.invalid(
                    "no_rope_layers",
                    format!("has {} entries but num_hidden_layers is {n}", list.len()),
                ));
            }
            list.iter().map(|&v| v != 0).collect()
        }
        None => {
            let interval = c.u64_or("no_rope_layer_interval", 4)?;
            if interval == 0 {
                return Err(c.invalid("no_rope_layer_interval", "must be at least 1"));
            }
            (0..n).map(|i| (i + 1) % interval != 0).collect()
        }
    };
    let moe_layers: std::collections::BTreeSet<u64> = match c.opt_u64_list("moe_layers")? {
        Some(list) => list.into_iter().collect(),
        None => {
            let step = c.u64_or("interleave_moe_layer_step", 1)?;
            if step == 0 {
                return Err(c.invalid("interleave_moe_layer_step", "must be at least 1"));
            }
            (step - 1..n).step_by(step as usize).collect()
        }
    };
    if let Some(bad) = moe_layers.iter().find(|&&i| i >= n) {
        return Err(c.invalid(
            "moe_layers",
            format!("layer {bad} is out of range (num_hidden_layers is {n})"),
        ));
    }
    let chunk = c.opt_u64("attention_chunk_size")?;
    let qk_norm = c.bool_or("use_qk_norm", true)?;
    let temperature = if c.bool_or("attn_temperature_tuning", true)? {
        Some(Temperature {
            floor_scale: c.f64_or("floor_scale", 8192.0)?,
            attn_scale: c.f64_or("attn_scale", 0.1)?,
        })
    } else {
        None
    };
    let bias = c.bool_or("attention_bias", false)?;
    let experts = c.u64_or("num_local_experts", 16)?;
    let top_k = c.u64_or("num_experts_per_tok", 1)?;
    check_top_k(c, "num_experts_per_tok", top_k, experts)?;
    let act = activation(c, "hidden_act", "silu")?;
    let expert_hidden = c.u64_or("intermediate_size", 8192)?;
    let mut r = router(RouterScore::Sigmoid);
    r.topk_first = true;
    r.weight_input = true;
    let mut m = moe(experts, top_k, expert_hidden, act, r);
    m.shared = shared(1, expert_hidden);
    let dense = mlp(c.u64_or("intermediate_size_mlp", 16_384)?, act, true, false);
    let layers = (0..n)
        .map(|i| {
            let with_rope = uses_rope[i as usize];
            let mut a = attention(heads, kv, head_dim, None);
            a.bias = all_bias(bias);
            if with_rope {
                // RoPE layers attend within chunks and L2-normalise queries and keys.
                a.rope = Some(rope.clone());
                a.chunk = chunk;
                if qk_norm {
                    a.qk_norm = QkNorm::L2 { eps };
                }
            } else {
                a.temperature = temperature;
            }
            let sparse = moe_layers.contains(&i);
            Layer {
                labels: vec![
                    if sparse { "moe" } else { "dense" },
                    if with_rope { "rope" } else { "nope" },
                ],
                block: block(
                    Placement::Pre,
                    rms(eps),
                    Mixer::Attention(a),
                    if sparse {
                        Ffn::Moe(m.clone())
                    } else {
                        dense.clone()
                    },
                ),
            }
        })
        .collect();
    Ok(g.spec(name, Family::Llama4Text, rms(eps), layers))
}
