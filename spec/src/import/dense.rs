//! Dense decoder families: GPT-2, Llama, Mistral, Qwen2/Qwen3, Gemma 3, OLMo 2/3, SmolLM3.

use crate::spec::{Family, Mixer, Pairing, Placement, QkNorm, Spec};

use super::{
    activation, all_bias, attention, block, check_layer_type, divisible, layer_norm, layer_types,
    mlp, qkv_bias, rms, rms_plus_one, Config, Globals, ImportError, Layer, RopeSource,
};

/// Query heads, KV heads and head dim as the Llama-style config classes derive them:
/// `num_key_value_heads` defaults to `kv_default` (the query heads when `None`) and
/// `head_dim` to `head_dim_default` (`hidden / heads` when `None`).
pub(crate) fn head_shape(
    c: &Config<'_>,
    hidden: u64,
    kv_default: Option<u64>,
    head_dim_default: Option<u64>,
) -> Result<(u64, u64, u64), ImportError> {
    let heads = c.req_u64("num_attention_heads")?;
    let kv = c.u64_or("num_key_value_heads", kv_default.unwrap_or(heads))?;
    let head_dim = match c.opt_u64("head_dim")?.or(head_dim_default) {
        Some(d) => d,
        None => {
            divisible(c, "hidden_size", hidden, heads, "num_attention_heads")?;
            hidden / heads
        }
    };
    if kv == 0 || heads % kv != 0 {
        return Err(c.invalid(
            "num_key_value_heads",
            format!("{kv} does not divide num_attention_heads ({heads})"),
        ));
    }
    Ok((heads, kv, head_dim))
}

pub(crate) fn gpt2(c: &Config<'_>, name: &str) -> Result<Spec, ImportError> {
    let hidden = c.req_u64("n_embd")?;
    let layers = c.req_layers("n_layer")?;
    let heads = c.req_u64("n_head")?;
    divisible(c, "n_embd", hidden, heads, "n_head")?;
    let positions = c.u64_or("n_positions", 1024)?;
    let inner = c.u64_or("n_inner", 4 * hidden)?;
    let eps = c.f64_or("layer_norm_epsilon", 1e-5)?;
    let act = activation(c, "activation_function", "gelu_new")?;
    if c.bool_or("scale_attn_by_inverse_layer_idx", false)? {
        return Err(c.invalid(
            "scale_attn_by_inverse_layer_idx",
            "per-layer attention scaling is not supported",
        ));
    }
    let mut attn = attention(heads, heads, hidden / heads, None);
    attn.bias = all_bias(true);
    if !c.bool_or("scale_attn_weights", true)? {
        attn.scale = Some(1.0);
    }
    let norm = layer_norm(eps);
    let layer = || Layer {
        labels: vec![],
        block: block(
            Placement::Pre,
            norm,
            Mixer::Attention(attn.clone()),
            mlp(inner, act, false, true),
        ),
    };
    let globals = Globals {
        vocab: c.req_u64("vocab_size")?,
        hidden,
        layers,
        context: positions,
        dtype: super::dtype(c)?,
        tied: c.tied_or(true)?,
    };
    let mut spec = globals.spec(
        name,
        Family::Gpt2,
        norm,
        (0..layers).map(|_| layer()).collect(),
    );
    spec.learned_positions = Some(positions);
    Ok(spec)
}

pub(crate) fn llama(c: &Config<'_>, name: &str, family: Family) -> Result<Spec, ImportError> {
    let g = Globals::read(c, 2048, false)?;
    let (heads, kv, head_dim) = head_shape(c, g.hidden, None, None)?;
    let eps = c.f64_or("rms_norm_eps", 1e-6)?;
    let rope = RopeSource::flat(c, 10_000.0, 1.0)?.build(head_dim, g.context, Pairing::Half)?;
    let mut attn = attention(heads, kv, head_dim, Some(rope));
    attn.bias = all_bias(c.bool_or("attention_bias", false)?);
    let ffn = mlp(
        c.req_u64("intermediate_size")?,
        activation(c, "hidden_act", "silu")?,
        true,
        c.bool_or("mlp_bias", false)?,
    );
    let b = block(Placement::Pre, rms(eps), Mixer::Attention(attn), ffn);
    let layers = (0..g.layers)
        .map(|_| Layer {
            labels: vec![],
            block: b.clone(),
        })
        .collect();
    Ok(g.spec(name, family, rms(eps), layers))
}

pub(crate) fn mistral(c: &Config<'_>, name: &str) -> Result<Spec, ImportError> {
    let g = Globals::read(c, 131_072, false)?;
    let (heads, kv, head_dim) = head_shape(c, g.hidden, Some(8), None)?;
    let eps = c.f64_or("rms_norm_eps", 1e-6)?;
    let rope = RopeSource::flat(c, 10_000.0, 1.0)?.build(head_dim, g.context, Pairing::Half)?;
    let mut attn = attention(heads, kv, head_dim, Some(rope));
    // MistralConfig defaults to a 4096-token window when the key is absent; `null` disables it.
    attn.window = match c.raw_is_null("sliding_window") {
        true => None,
        false => Some(c.u64_or("sliding_window", 4096)?),
    };
    let ffn = mlp(
        c.req_u64("intermediate_size")?,
        activation(c, "hidden_act", "silu")?,
        true,
        false,
    );
    let b = block(Placement::Pre, rms(eps), Mixer::Attention(attn), ffn);
    let layers = (0..g.layers)
        .map(|_| Layer {
            labels: vec![],
            block: b.clone(),
        })
        .collect();
    Ok(g.spec(name, Family::Mistral, rms(eps), layers))
}

/// The sliding window of Qwen2/Qwen3-style configs: only when `use_sliding_window`.
pub(crate) fn qwen_window(c: &Config<'_>) -> Result<Option<u64>, ImportError> {
    if !c.bool_or("use_sliding_window", false)? {
        return Ok(None);
    }
    match c.raw_is_null("sliding_window") {
        true => Ok(None),
        false => Ok(Some(c.u64_or("sliding_window", 4096)?)),
    }
}

/// Per-layer `sliding_attention`/`full_attention` for Qwen2/Qwen3: explicit `layer_types`,
/// else layers from `max_window_layers` on slide when a window is set.
fn qwen_layer_kinds(
    c: &Config<'_>,
    layers: u64,
    window: Option<u64>,
) -> Result<Vec<bool>, ImportError> {
    if let Some(types) = layer_types(c, layers)? {
        return types
            .iter()
            .map(|t| {
                Ok(
                    check_layer_type(c, t, &["sliding_attention", "full_attention"])?
                        == "sliding_attention",
                )
            })
            .collect();
    }
    let from = c.u64_or("max_window_layers", 28)?;
    Ok((0..layers).map(|i| window.is_some() && i >= from).collect())
}

pub(crate) fn qwen(c: &Config<'_>, name: &str, family: Family) -> Result<Spec, ImportError> {
    let qwen3 = family == Family::Qwen3;
    let g = Globals::read(c, 32_768, false)?;
    let (heads, kv, head_dim) = head_shape(c, g.hidden, Some(32), qwen3.then_some(128))?;
    let eps = c.f64_or("rms_norm_eps", 1e-6)?;
    let rope = RopeSource::flat(c, 10_000.0, 1.0)?.build(head_dim, g.context, Pairing::Half)?;
    let mut attn = attention(heads, kv, head_dim, Some(rope));
    if qwen3 {
        attn.bias = all_bias(c.bool_or("attention_bias", false)?);
        attn.qk_norm = QkNorm::PerHead(rms(eps));
    } else {
        attn.bias = qkv_bias(true);
    }
    let window = qwen_window(c)?;
    let sliding = qwen_layer_kinds(c, g.layers, window)?;
    let ffn = mlp(
        c.req_u64("intermediate_size")?,
        activation(c, "hidden_act", "silu")?,
        true,
        false,
    );
    let layers = sliding
        .iter()
        .map(|&s| {
            let mut a = attn.clone();
            a.window = if s { window } else { None };
            Layer {
                labels: vec![if s { "sliding" } else { "full" }],
                block: block(Placement::Pre, rms(eps), Mixer::Attention(a), ffn.clone()),
            }
        })
        .collect();
    Ok(g.spec(name, family, rms(eps), layers))
}

pub(crate) fn gemma3(c: &Config<'_>, name: &str) -> Result<Spec, ImportError> {
    let g = Globals::read_with_vocab(c, Some(262_208), 131_072, true)?;
    let (heads, kv, head_dim) = head_shape(c, g.hidden, Some(4), Some(256))?;
    let eps = c.f64_or("rms_norm_eps", 1e-6)?;
    if c.bool_or("use_bidirectional_attention", false)? {
        return Err(c.invalid(
            "use_bidirectional_attention",
            "bidirectional Gemma 3 is not supported",
        ));
    }
    let scalar = c.f64_or("query_pre_attn_scalar", 256.0)?;
    let window = c.u64_or("sliding_window", 4096)?;
    let kinds: Vec<bool> = match layer_types(c, g.layers)? {
        Some(types) => types
            .iter()
            .map(|t| {
                Ok(
                    check_layer_type(c, t, &["sliding_attention", "full_attention"])?
                        == "sliding_attention",
                )
            })
            .collect::<Result<_, ImportError>>()?,
        None => {
            let pattern = c.u64_or("sliding_window_pattern", 6)?;
            if pattern == 0 {
                return Err(c.invalid("sliding_window_pattern", "must be at least 1"));
            }
            (0..g.layers).map(|i| (i + 1) % pattern != 0).collect()
        }
    };
    // Full layers take `rope_theta` and `rope_scaling`; sliding layers `rope_local_base_freq`
    // and no scaling, unless a per-layer-type `rope_parameters` says otherwise.
    let (global_rope, local_rope) = per_type_rope(
        c,
        g.context,
        head_dim,
        1_000_000.0,
        "rope_local_base_freq",
        10_000.0,
    )?;
    let mut attn = attention(heads, kv, head_dim, None);
    attn.bias = all_bias(c.bool_or("attention_bias", false)?);
    attn.qk_norm = QkNorm::PerHead(rms_plus_one(eps));
    attn.softcap = c.opt_f64("attn_logit_softcapping")?;
    let default_scale = (head_dim as f64).powf(-0.5);
    let scale = scalar.powf(-0.5);
    if scale != default_scale {
        attn.scale = Some(scale);
    }
    let ffn = mlp(
        c.req_u64("intermediate_size")?,
        activation(c, "hidden_activation", "gelu_pytorch_tanh")?,
        true,
        false,
    );
    let layers = kinds
        .iter()
        .map(|&local| {
            let mut a = attn.clone();
            if local {
                a.window = Some(window);
                a.rope = Some(local_rope.clone());
            } else {
                a.rope = Some(global_rope.clone());
            }
            Layer {
                labels: vec![if local { "local" } else { "global" }],
                block: block(
                    Placement::Sandwich,
                    rms_plus_one(eps),
                    Mixer::Attention(a),
                    ffn.clone(),
                ),
            }
        })
        .collect();
    let hidden = g.hidden;
    let mut spec = g.spec(name, Family::Gemma3Text, rms_plus_one(eps), layers);
    spec.embed_scale = Some((hidden as f64).sqrt());
    spec.logit_softcap = c.opt_f64("final_logit_softcapping")?;
    Ok(spec)
}

/// RoPE of models with one setting per layer type (Gemma 3, OLMo 3): a nested
/// `rope_parameters` with `full_attention` and `sliding_attention` entries, or the older
/// flat keys, where `rope_scaling` applies to full layers only and sliding layers take
/// their theta from `local_theta_key` (falling back to `rope_theta`).
fn per_type_rope(
    c: &Config<'_>,
    context: u64,
    head_dim: u64,
    theta_default: f64,
    local_theta_key: &str,
    local_theta_default: f64,
) -> Result<(crate::spec::Rope, crate::spec::Rope), ImportError> {
    let theta = c.f64_or("rope_theta", theta_default)?;
    let local_theta = c.f64_or(local_theta_key, local_theta_default)?;
    let nested = match c.opt_object("rope_parameters")? {
        Some(p) if p.has("full_attention") || p.has("sliding_attention") => Some(p),
        _ => None,
    };
    let (full_params, sliding_params) = match &nested {
        Some(p) => (
            p.opt_object("full_attention")?,
            p.opt_object("sliding_attention")?,
        ),
        None => {
            let flat = match c.opt_object("rope_parameters")? {
                Some(p) => Some(p),
                None => c.opt_object("rope_scaling")?,
            };
            (flat, None)
        }
    };
    let full = RopeSource {
        params: full_params,
        theta,
        partial: 1.0,
    }
    .build(head_dim, context, Pairing::Half)?;
    let sliding = RopeSource {
        params: sliding_params,
        theta: local_theta,
        partial: 1.0,
    }
    .build(head_dim, context, Pairing::Half)?;
    Ok((full, sliding))
}

pub(crate) fn olmo(c: &Config<'_>, name: &str, family: Family) -> Result<Spec, ImportError> {
    let olmo3 = family == Family::Olmo3;
    let g = Globals::read(c, 2048, false)?;
    let (heads, kv, head_dim) = head_shape(c, g.hidden, None, None)?;
    let eps = c.f64_or("rms_norm_eps", 1e-5)?;
    let mut attn = attention(heads, kv, head_dim, None);
    attn.bias = all_bias(c.bool_or("attention_bias", false)?);
    attn.qk_norm = QkNorm::Full(rms(eps));
    let ffn = mlp(
        c.req_u64("intermediate_size")?,
        activation(c, "hidden_act", "silu")?,
        true,
        false,
    );
    let layers = if olmo3 {
        let window = c.u64_or("sliding_window", 4096)?;
        let kinds: Vec<bool> = match layer_types(c, g.layers)? {
            Some(types) => types
                .iter()
                .map(|t| {
                    Ok(
                        check_layer_type(c, t, &["sliding_attention", "full_attention"])?
                            == "sliding_attention",
                    )
                })
                .collect::<Result<_, ImportError>>()?,
            None => (0..g.layers).map(|i| (i + 1) % 4 != 0).collect(),
        };
        let (full_rope, sliding_rope) =
            per_type_rope(c, g.context, head_dim, 500_000.0, "rope_theta", 500_000.0)?;
        kinds
            .iter()
            .map(|&s| {
                let mut a = attn.clone();
                a.window = s.then_some(window);
                a.rope = Some(if s {
                    sliding_rope.clone()
                } else {
                    full_rope.clone()
                });
                Layer {
                    labels: vec![if s { "sliding" } else { "full" }],
                    block: block(Placement::Post, rms(eps), Mixer::Attention(a), ffn.clone()),
                }
            })
            .collect()
    } else {
        attn.rope =
            Some(RopeSource::flat(c, 10_000.0, 1.0)?.build(head_dim, g.context, Pairing::Half)?);
        let b = block(Placement::Post, rms(eps), Mixer::Attention(attn), ffn);
        (0..g.layers)
            .map(|_| Layer {
                labels: vec![],
                block: b.clone(),
            })
            .collect()
    };
    Ok(g.spec(name, family, rms(eps), layers))
}

pub(crate) fn smollm3(c: &Config<'_>, name: &str) -> Result<Spec, ImportError> {
    let g = Globals::read(c, 32_768, true)?;
    let (heads, kv, head_dim) = head_shape(c, g.hidden, Some(4), None)?;
    let eps = c.f64_or("rms_norm_eps", 1e-6)?;
    let rope = RopeSource::flat(c, 10_000.0, 1.0)?.build(head_dim, g.context, Pairing::Half)?;
    // `no_rope_layers[i]` is 1 where layer i uses RoPE (the name is HF's, the sense inverted).
    let uses_rope: Vec<bool> = match c.opt_u64_list("no_rope_layers")? {
        Some(list) => {
            if list.len() as u64 != g.layers {
                return Err(c.invalid(
                    "no_rope_layers",
                    format!(
                        "has {} entries but num_hidden_layers is {}",
                        list.len(),
                        g.layers
                    ),
                ));
            }
            list.iter().map(|&v| v != 0).collect()
        }
        None => {
            let interval = c.u64_or("no_rope_layer_interval", 4)?;
            if interval == 0 {
                return Err(c.invalid("no_rope_layer_interval", "must be at least 1"));
            }
            (0..g.layers).map(|i| (i + 1) % interval != 0).collect()
        }
    };
    let use_sliding = c.bool_or("use_sliding_window", false)?;
    let window = c.opt_u64("sliding_window")?;
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
        None => uses_rope
            .iter()
            .map(|&r| use_sliding && window.is_some() && !r)
            .collect(),
    };
    let mut attn = attention(heads, kv, head_dim, None);
    attn.bias = all_bias(c.bool_or("attention_bias", false)?);
    let ffn = mlp(
        c.req_u64("intermediate_size")?,
        activation(c, "hidden_act", "silu")?,
        true,
        c.bool_or("mlp_bias", false)?,
    );
    let layers = uses_rope
        .iter()
        .zip(&sliding)
        .map(|(&r, &s)| {
            let mut a = attn.clone();
            a.rope = r.then(|| rope.clone());
            // HF windows a layer only when sliding is enabled and the layer is typed sliding.
            a.window = if use_sliding && s { window } else { None };
            Layer {
                labels: vec![
                    if r { "rope" } else { "nope" },
                    if a.window.is_some() {
                        "sliding"
                    } else {
                        "full"
                    },
                ],
                block: block(Placement::Pre, rms(eps), Mixer::Attention(a), ffn.clone()),
            }
        })
        .collect();
    Ok(g.spec(name, Family::Smollm3, rms(eps), layers))
}
