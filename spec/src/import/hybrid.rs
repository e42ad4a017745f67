//! Hybrid recurrent/full-attention families: Qwen3-Next (Gated DeltaNet), Kimi Linear
//! (Kimi Delta Attention with NoPE MLA) and LFM2 (gated short convolutions).

use crate::spec::{
    Family, Ffn, GatedDeltaNet, KimiDelta, Mixer, Moe, Pairing, Placement, QkNorm, Router,
    RouterScore, SharedExperts, ShortConv, Spec,
};

use super::dense::head_shape;
use super::moe::mla_attention;
use super::{
    activation, all_bias, attention, block, check_layer_type, layer_types, mlp, rms, rms_plus_one,
    Config, Globals, ImportError, Layer, RopeSource,
};

pub(crate) fn qwen3_next(c: &Config<'_>, name: &str) -> Result<Spec, ImportError> {
    let g = Globals::read(c, 32_768, false)?;
    let (heads, kv, head_dim) = head_shape(c, g.hidden, Some(2), Some(256))?;
    let eps = c.f64_or("rms_norm_eps", 1e-6)?;
    let rope = RopeSource::flat(c, 10_000.0, 0.25)?.build(head_dim, g.context, Pairing::Half)?;
    let linear_layers: Vec<bool> = match layer_types(c, g.layers)? {
        Some(types) => types
            .iter()
            .map(|t| {
                Ok(
                    check_layer_type(c, t, &["linear_attention", "full_attention"])?
                        == "linear_attention",
                )
            })
            .collect::<Result<_, ImportError>>()?,
        None => {
            let interval = c.u64_or("full_attention_interval", 4)?;
            if interval == 0 {
                return Err(c.invalid("full_attention_interval", "must be at least 1"));
            }
            (0..g.layers).map(|i| (i + 1) % interval != 0).collect()
        }
    };
    let mut attn = attention(heads, kv, head_dim, Some(rope));
    attn.bias = all_bias(c.bool_or("attention_bias", false)?);
    attn.qk_norm = QkNorm::PerHead(rms_plus_one(eps));
    attn.gate = true;
    let gdn = GatedDeltaNet {
        k_heads: c.u64_or("linear_num_key_heads", 16)?,
        v_heads: c.u64_or("linear_num_value_heads", 32)?,
        k_head_dim: c.u64_or("linear_key_head_dim", 128)?,
        v_head_dim: c.u64_or("linear_value_head_dim", 128)?,
        conv: c.u64_or("linear_conv_kernel_dim", 4)?,
    };
    let experts = c
        .opt_u64_any(&["num_experts", "num_local_experts"])?
        .unwrap_or(512);
    let top_k = c.u64_or("num_experts_per_tok", 10)?;
    if experts > 0 && (top_k == 0 || top_k > experts) {
        return Err(c.invalid(
            "num_experts_per_tok",
            format!("must be between 1 and the {experts} experts, found {top_k}"),
        ));
    }
    let act = activation(c, "hidden_act", "silu")?;
    let shared_hidden = c.u64_or("shared_expert_intermediate_size", 512)?;
    let sparse = Ffn::Moe(Moe {
        experts,
        top_k,
        hidden: c.u64_or("moe_intermediate_size", 512)?,
        act,
        gated: true,
        bias: false,
        shared: (shared_hidden > 0).then_some(SharedExperts {
            count: 1,
            hidden: shared_hidden,
            gate: true,
        }),
        router: Router {
            score: RouterScore::Softmax,
            topk_first: false,
            renormalize: c.bool_or("norm_topk_prob", true)?,
            scale: 1.0,
            correction_bias: false,
            groups: None,
            bias: false,
            weight_input: false,
        },
    });
    let dense_list: std::collections::BTreeSet<u64> = c
        .opt_u64_list("mlp_only_layers")?
        .unwrap_or_default()
        .into_iter()
        .collect();
    let step = c.u64_or("decoder_sparse_step", 1)?;
    if step == 0 {
        return Err(c.invalid("decoder_sparse_step", "must be at least 1"));
    }
    let is_sparse = |i: u64| !dense_list.contains(&i) && experts > 0 && (i + 1) % step == 0;
    let dense = if (0..g.layers).all(is_sparse) {
        None
    } else {
        Some(mlp(c.req_u64("intermediate_size")?, act, true, false))
    };
    let norm = rms_plus_one(eps);
    let layers = linear_layers
        .iter()
        .enumerate()
        .map(|(i, &linear)| {
            let sparse_layer = is_sparse(i as u64);
            let mixer = if linear {
                Mixer::GatedDeltaNet(gdn)
            } else {
                Mixer::Attention(attn.clone())
            };
            let ffn = match (&dense, sparse_layer) {
                (Some(d), false) => d.clone(),
                _ => sparse.clone(),
            };
            Layer {
                labels: vec![
                    if linear { "linear" } else { "full" },
                    if sparse_layer { "moe" } else { "dense" },
                ],
                block: block(Placement::Pre, norm, mixer, ffn),
            }
        })
        .collect();
    let mut spec = g.spec(name, Family::Qwen3Next, norm, layers);
    // Qwen3-Next checkpoints carry one MTP layer under `mtp.` (HF leaves `mtp.*` unloaded);
    // its config has no key for it unless a converter adds `num_nextn_predict_layers`.
    spec.mtp = c.u64_or("num_nextn_predict_layers", 1)?;
    Ok(spec)
}

pub(crate) fn kimi_linear(c: &Config<'_>, name: &str) -> Result<Spec, ImportError> {
    let g = Globals {
        vocab: c.req_u64("vocab_size")?,
        hidden: c.req_u64("hidden_size")?,
        layers: c.req_layers("num_hidden_layers")?,
        context: c
            .opt_u64_any(&["model_max_length", "max_position_embeddings"])?
            .unwrap_or(1_048_576),
        dtype: super::dtype(c)?,
        tied: c.tied_or(false)?,
    };
    let n = g.layers;
    let eps = c.f64_or("rms_norm_eps", 1e-5)?;
    let linear_cfg = c.opt_object("linear_attn_config")?;
    // Layer kinds: explicit `layer_types`, else the checkpoint's 1-indexed lists, else
    // every fourth layer (from layer 4) is full attention.
    let full: Vec<bool> = if let Some(types) = layer_types(c, n)? {
        types
            .iter()
            .map(|t| {
                Ok(
                    check_layer_type(c, t, &["linear_attention", "full_attention"])?
                        == "full_attention",
                )
            })
            .collect::<Result<_, ImportError>>()?
    } else if let Some(lc) = linear_cfg
        .as_ref()
        .filter(|lc| lc.has("full_attn_layers") && lc.has("kda_layers"))
    {
        let mut kinds: Vec<Option<bool>> = vec![None; n as usize];
        for (key, is_full) in [("full_attn_layers", true), ("kda_layers", false)] {
            for layer in lc.opt_u64_list(key)?.unwrap_or_default() {
                if layer == 0 || layer > n {
                    return Err(lc.invalid(
                        key,
                        format!("layer {layer} is out of range 1..={n} (the list is 1-indexed)"),
                    ));
                }
                kinds[(layer - 1) as usize] = Some(is_full);
            }
        }
        if let Some(missing) = kinds.iter().position(Option::is_none) {
            return Err(lc.invalid(
                "kda_layers",
                format!(
                    "layer {} is in neither full_attn_layers nor kda_layers",
                    missing + 1
                ),
            ));
        }
        kinds.into_iter().map(|k| k == Some(true)).collect()
    } else {
        (0..n).map(|i| i > 0 && i % 4 == 0).collect()
    };
    let lc = linear_cfg.as_ref();
    let kda = KimiDelta {
        heads: match lc {
            Some(l) if l.has("num_heads") => l.req_u64("num_heads")?,
            _ => c.u64_or("linear_num_heads", 32)?,
        },
        head_dim: match lc {
            Some(l) if l.has("head_dim") => l.req_u64("head_dim")?,
            _ => c.u64_or("linear_head_dim", 128)?,
        },
        conv: match lc {
            Some(l) if l.has("short_conv_kernel_size") => l.req_u64("short_conv_kernel_size")?,
            _ => c.u64_or("linear_conv_kernel_dim", 4)?,
        },
    };
    // Kimi Linear's MLA layers use no positional encoding at all.
    let attn = mla_attention(c, None)?;
    let experts = c.req_u64_any(&["num_experts", "num_local_experts"])?;
    let top_k = c.req_u64_any(&["num_experts_per_token", "num_experts_per_tok"])?;
    if top_k == 0 || top_k > experts {
        return Err(c.invalid(
            "num_experts_per_token",
            format!("must be between 1 and the {experts} experts, found {top_k}"),
        ));
    }
    let score = match c.str_or("moe_router_activation_func", "sigmoid")? {
        "sigmoid" => RouterScore::Sigmoid,
        other => {
            return Err(c.invalid(
                "moe_router_activation_func",
                format!("only \"sigmoid\" routing is supported, found \"{other}\""),
            ))
        }
    };
    let group_count = c
        .opt_u64_any(&["num_expert_group", "n_group"])?
        .unwrap_or(1);
    let groups = if group_count > 1 {
        if experts % group_count != 0 {
            return Err(c.invalid(
                "num_expert_group",
                format!("{group_count} groups do not divide {experts} experts"),
            ));
        }
        let keep = c.u64_or("topk_group", 1)?;
        if keep == 0 || keep > group_count {
            return Err(c.invalid(
                "topk_group",
                format!("must be between 1 and {group_count}, found {keep}"),
            ));
        }
        Some(crate::spec::RouterGroups {
            count: group_count,
            keep,
        })
    } else {
        None
    };
    let renormalize = match c.opt_bool("moe_renormalize")? {
        Some(v) => v,
        None => c.bool_or("norm_topk_prob", true)?,
    };
    let expert_hidden = c.u64_or("moe_intermediate_size", 1024)?;
    let shared_count = c
        .opt_u64_any(&["num_shared_experts", "n_shared_experts"])?
        .unwrap_or(1);
    let act = activation(c, "hidden_act", "silu")?;
    let sparse = Ffn::Moe(Moe {
        experts,
        top_k,
        hidden: expert_hidden,
        act,
        gated: true,
        bias: false,
        shared: (shared_count > 0).then_some(SharedExperts {
            count: shared_count,
            hidden: expert_hidden,
            gate: false,
        }),
        router: Router {
            score,
            topk_first: false,
            renormalize,
            scale: c.f64_or("routed_scaling_factor", 2.446)?,
            correction_bias: true,
            groups,
            bias: false,
            weight_input: false,
        },
    });
    let sparse_layers: Vec<bool> = match c.opt_str_list("mlp_layer_types")? {
        Some(types) => {
            if types.len() as u64 != n {
                return Err(c.invalid(
                    "mlp_layer_types",
                    format!("has {} entries but num_hidden_layers is {n}", types.len()),
                ));
            }
            types
                .iter()
                .map(|t| match t.as_str() {
                    "sparse" => Ok(true),
                    "dense" => Ok(false),
                    other => Err(c.invalid(
                        "mlp_layer_types",
                        format!("unsupported MLP type \"{other}\" (expected dense or sparse)"),
                    )),
                })
                .collect::<Result<_, _>>()?
        }
        None => {
            let first_dense = c.u64_or("first_k_dense_replace", 1)?;
            (0..n).map(|i| i >= first_dense).collect()
        }
    };
    let dense = if sparse_layers.iter().all(|s| *s) {
        None
    } else {
        Some(mlp(c.req_u64("intermediate_size")?, act, true, false))
    };
    let layers = full
        .iter()
        .zip(&sparse_layers)
        .map(|(&is_full, &is_sparse)| {
            let mixer = if is_full {
                Mixer::Attention(attn.clone())
            } else {
                Mixer::KimiDelta(kda)
            };
            let ffn = match (&dense, is_sparse) {
                (Some(d), false) => d.clone(),
                _ => sparse.clone(),
            };
            Layer {
                labels: vec![
                    if is_full { "full" } else { "linear" },
                    if is_sparse { "moe" } else { "dense" },
                ],
                block: block(Placement::Pre, rms(eps), mixer, ffn),
            }
        })
        .collect();
    Ok(g.spec(name, Family::KimiLinear, rms(eps), layers))
}

/// LFM2: gated short-convolution layers (`layer_types` "conv") and GQA attention layers
/// with per-head q/k RMSNorm, pre-norms, a SwiGLU whose width `block_auto_adjust_ff_dim`
/// derives from `intermediate_size` as `Lfm2MLP` does, and `embedding_norm` as the final
/// norm.
pub(crate) fn lfm2(c: &Config<'_>, name: &str) -> Result<Spec, ImportError> {
    let mut g = Globals::read(c, 128_000, true)?;
    if let Some(t) = c.opt_bool("tie_embedding")? {
        g.tied = t;
    }
    let (heads, kv, head_dim) = head_shape(c, g.hidden, None, None)?;
    let eps = c.f64_or("norm_eps", 1e-5)?;
    let rope = RopeSource::flat(c, 1_000_000.0, 1.0)?.build(head_dim, g.context, Pairing::Half)?;
    let n = g.layers;
    let conv_layers: Vec<bool> = match layer_types(c, n)? {
        Some(types) => types
            .iter()
            .map(|t| Ok(check_layer_type(c, t, &["conv", "full_attention"])? == "conv"))
            .collect::<Result<_, ImportError>>()?,
        None => match c.opt_u64_list("full_attn_idxs")? {
            Some(full) => {
                if let Some(bad) = full.iter().find(|&&i| i >= n) {
                    return Err(c.invalid(
                        "full_attn_idxs",
                        format!("layer {bad} is out of range 0..{n}"),
                    ));
                }
                (0..n).map(|i| !full.contains(&i)).collect()
            }
            // `Lfm2Config`: without either list every layer is attention.
            None => vec![false; n as usize],
        },
    };
    let mut attn = attention(heads, kv, head_dim, Some(rope));
    attn.qk_norm = QkNorm::PerHead(rms(eps));
    let conv = ShortConv {
        conv: c.u64_or("conv_L_cache", 3)?,
        bias: c.bool_or("conv_bias", false)?,
    };
    if conv.conv == 0 {
        return Err(c.invalid("conv_L_cache", "must be at least 1"));
    }
    let width = lfm2_ffn_width(c)?;
    let act = activation(c, "hidden_act", "silu")?;
    let ffn = mlp(width, act, true, false);
    let layers = conv_layers
        .iter()
        .map(|&is_conv| Layer {
            labels: vec![if is_conv { "conv" } else { "attention" }],
            block: block(
                Placement::Pre,
                rms(eps),
                if is_conv {
                    Mixer::ShortConv(conv)
                } else {
                    Mixer::Attention(attn.clone())
                },
                ffn.clone(),
            ),
        })
        .collect();
    Ok(g.spec(name, Family::Lfm2, rms(eps), layers))
}

/// The feed-forward width of `Lfm2MLP`: `intermediate_size` (or `block_ff_dim`); with
/// `block_auto_adjust_ff_dim`, two thirds of it (truncated), then, unless
/// `block_ffn_dim_multiplier` is null, times the multiplier (truncated) and rounded up to
/// a multiple of `block_multiple_of`.
fn lfm2_ffn_width(c: &Config<'_>) -> Result<u64, ImportError> {
    let key = if c.has("block_ff_dim") {
        "block_ff_dim"
    } else {
        "intermediate_size"
    };
    let mut width = c.u64_or(key, 12_288)?;
    if !c.bool_or("block_auto_adjust_ff_dim", true)? {
        return Ok(width);
    }
    width = (2.0 * width as f64 / 3.0) as u64;
    let multiplier = if c.raw_is_null("block_ffn_dim_multiplier") {
        None
    } else {
        Some(c.f64_or("block_ffn_dim_multiplier", 1.0)?)
    };
    if let Some(m) = multiplier {
        if !(m.is_finite() && m > 0.0) {
            return Err(c.invalid("block_ffn_dim_multiplier", "must be a positive number"));
        }
        let multiple = c.u64_or("block_multiple_of", 256)?;
        if multiple == 0 {
            return Err(c.invalid("block_multiple_of", "must be at least 1"));
        }
        width = (m * width as f64) as u64;
        width = width.div_ceil(multiple).saturating_mul(multiple);
    }
    if width == 0 {
        return Err(c.invalid(key, "gives a feed-forward width of 0"));
    }
    Ok(width)
}
