//! Import of Hugging Face `config.json` files into a [`Spec`].
//!
//! Each supported `model_type` has one function that reads the keys its transformers
//! configuration class reads, with the same defaults, and builds the layer variants its
//! modeling code builds. Layers are turned into distinct named blocks plus a per-layer
//! schedule by [`assemble`]. Multimodal configs (Gemma 3, Llama 4, Mistral 3) contribute
//! their `text_config`.

mod config;
mod dense;
pub mod gguf;
mod hybrid;
mod moe;

use std::fmt;
use std::path::Path;

use serde_json::Value;

use crate::spec::{
    Activation, Attention, AttnBias, Block, DType, Family, Ffn, Mixer, Mlp, Norm, NormKind,
    Pairing, Placement, QkNorm, Rope, RopeScaling, Spec,
};

pub(crate) use config::Config;

/// Why a config could not be imported. Every variant names the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportError {
    /// The file or directory could not be read.
    Io { path: String, message: String },
    /// The file is not valid JSON, or its top level is not an object.
    Json { file: String, message: String },
    /// `model_type` names an architecture this importer does not know.
    UnknownModelType {
        file: String,
        found: String,
        supported: Vec<&'static str>,
    },
    /// A key the architecture needs is absent (or `null`).
    MissingKey { file: String, key: String },
    /// A key has a value of the wrong JSON type.
    WrongType {
        file: String,
        key: String,
        expected: &'static str,
        found: String,
    },
    /// A key has a well-typed value that archc cannot represent or that is inconsistent.
    Invalid {
        file: String,
        key: String,
        message: String,
    },
    /// The model the config describes fails the checks every `Spec` must pass (sizes over
    /// archc's limits, numbers that disagree); each problem names the model field.
    Unsupported { file: String, problems: Vec<String> },
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::Io { path, message } => write!(f, "{path}: cannot read: {message}"),
            ImportError::Json { file, message } => write!(f, "{file}: invalid JSON: {message}"),
            ImportError::UnknownModelType {
                file,
                found,
                supported,
            } => write!(
                f,
                "{file}: unsupported model_type \"{found}\"; supported: {}",
                supported.join(", ")
            ),
            ImportError::MissingKey { file, key } => {
                write!(f, "{file}: missing key \"{key}\"")
            }
            ImportError::WrongType {
                file,
                key,
                expected,
                found,
            } => {
                write!(
                    f,
                    "{file}: key \"{key}\": expected {expected}, found {found}"
                )
            }
            ImportError::Invalid { file, key, message } => {
                write!(f, "{file}: key \"{key}\": {message}")
            }
            ImportError::Unsupported { file, problems } => {
                write!(f, "{file}: the model it describes is not supported:")?;
                for p in problems {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ImportError {}

/// Every `model_type` accepted at the top level of a config, in a stable order.
pub const SUPPORTED_MODEL_TYPES: [&str; 23] = [
    "gpt2",
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen3",
    "qwen3_moe",
    "gemma3",
    "gemma3_text",
    "olmo2",
    "olmo3",
    "smollm3",
    "deepseek_v3",
    "kimi_k2",
    "gpt_oss",
    "glm4_moe",
    "minimax_m2",
    "llama4",
    "llama4_text",
    "qwen3_next",
    "kimi_linear",
    "lfm2",
    "mistral3",
];

/// Import a config from its JSON text. `source_name` names the file in errors and
/// becomes the model name (its file stem or directory name is a good choice).
pub fn from_config_json(text: &str, source_name: &str) -> Result<Spec, ImportError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ImportError::Json {
        file: source_name.to_string(),
        message: e.to_string(),
    })?;
    let Value::Object(map) = &value else {
        return Err(ImportError::Json {
            file: source_name.to_string(),
            message: format!(
                "expected an object at the top level, found {}",
                config::kind(&value)
            ),
        });
    };
    let root = Config::root(map, source_name);
    let name = model_name(source_name);
    checked(import_config(&root, &name)?, source_name)
}

/// Runs the checks every `Spec` must pass, so that import never hands out a spec that
/// stats, tensors or lowering would choke on.
fn checked(spec: Spec, file: &str) -> Result<Spec, ImportError> {
    crate::validate::check_spec(&spec).map_err(|problems| ImportError::Unsupported {
        file: file.to_string(),
        problems,
    })?;
    Ok(spec)
}

/// Import `path`: a `config.json` file, or a directory that holds one. The model is named
/// after the directory.
pub fn from_path(path: &Path) -> Result<Spec, ImportError> {
    let file = if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    };
    let bytes = crate::source::read_bounded(&file, crate::source::MAX_JSON_BYTES).map_err(|e| {
        ImportError::Io {
            path: file.display().to_string(),
            message: e.to_string(),
        }
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| ImportError::Json {
        file: file.display().to_string(),
        message: e.to_string(),
    })?;
    let shown = file.display().to_string();
    let Value::Object(map) = &value else {
        return Err(ImportError::Json {
            file: shown,
            message: format!(
                "expected an object at the top level, found {}",
                config::kind(&value)
            ),
        });
    };
    let root = Config::root(map, &shown);
    checked(import_config(&root, &model_name_of_path(&file))?, &shown)
}

/// The model name for a source: the parent directory of a `config.json`, else the file stem.
fn model_name(source_name: &str) -> String {
    model_name_of_path(Path::new(source_name))
}

fn model_name_of_path(file: &Path) -> String {
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    if stem == "config" {
        if let Some(dir) = file
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|s| s.to_str())
        {
            return dir.to_string();
        }
    }
    stem.to_string()
}

fn import_config(c: &Config<'_>, name: &str) -> Result<Spec, ImportError> {
    let model_type = c.req_str("model_type")?;
    match model_type {
        "gpt2" => dense::gpt2(c, name),
        "llama" => dense::llama(c, name, Family::Llama),
        "mistral" => dense::mistral(c, name),
        "qwen2" => dense::qwen(c, name, Family::Qwen2),
        "qwen3" => dense::qwen(c, name, Family::Qwen3),
        "gemma3_text" => dense::gemma3(c, name),
        "olmo2" => dense::olmo(c, name, Family::Olmo2),
        "olmo3" => dense::olmo(c, name, Family::Olmo3),
        "smollm3" => dense::smollm3(c, name),
        "mixtral" => moe::mixtral(c, name),
        "qwen3_moe" => moe::qwen3_moe(c, name),
        "deepseek_v3" | "kimi_k2" => moe::deepseek_v3(c, name),
        "gpt_oss" => moe::gpt_oss(c, name),
        "glm4_moe" => moe::glm4_moe(c, name),
        "minimax_m2" => moe::minimax_m2(c, name),
        "llama4_text" => moe::llama4(c, name),
        "qwen3_next" => hybrid::qwen3_next(c, name),
        "kimi_linear" => hybrid::kimi_linear(c, name),
        "lfm2" => hybrid::lfm2(c, name),
        "gemma3" | "llama4" | "mistral3" => {
            let text = c.text_config()?;
            let inner = text.req_str("model_type")?;
            let expected = match model_type {
                "gemma3" => "gemma3_text",
                "llama4" => "llama4_text",
                _ => "mistral",
            };
            if inner != expected {
                return Err(text.invalid(
                    "model_type",
                    format!("a {model_type} config needs a text_config of type {expected}, found \"{inner}\""),
                ));
            }
            import_config(&text, name)
        }
        other => Err(ImportError::UnknownModelType {
            file: c.file().to_string(),
            found: other.to_string(),
            supported: SUPPORTED_MODEL_TYPES.to_vec(),
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Shared pieces used by every family.
// ---------------------------------------------------------------------------------------

/// The global, non-layer part of a model, read by most families the same way.
pub(crate) struct Globals {
    pub vocab: u64,
    pub hidden: u64,
    pub layers: u64,
    pub context: u64,
    pub dtype: DType,
    pub tied: bool,
}

impl Globals {
    /// Read the usual Llama-style keys. `context_default` and `tied_default` are the
    /// family's configuration-class defaults.
    pub fn read(
        c: &Config<'_>,
        context_default: u64,
        tied_default: bool,
    ) -> Result<Self, ImportError> {
        Self::read_with_vocab(c, None, context_default, tied_default)
    }

    /// As [`Globals::read`], for families whose configuration class defaults the vocabulary
    /// (published Gemma 3 text configs omit it).
    pub fn read_with_vocab(
        c: &Config<'_>,
        vocab_default: Option<u64>,
        context_default: u64,
        tied_default: bool,
    ) -> Result<Self, ImportError> {
        Ok(Globals {
            vocab: match vocab_default {
                Some(v) => c.u64_or("vocab_size", v)?,
                None => c.req_u64("vocab_size")?,
            },
            hidden: c.req_u64("hidden_size")?,
            layers: c.req_layers("num_hidden_layers")?,
            context: c.u64_or("max_position_embeddings", context_default)?,
            dtype: dtype(c)?,
            tied: c.tied_or(tied_default)?,
        })
    }

    /// A spec with these globals, `final_norm` and the assembled layers.
    pub fn spec(self, name: &str, family: Family, final_norm: Norm, layers: Vec<Layer>) -> Spec {
        let (blocks, schedule) = assemble(layers);
        Spec {
            name: name.to_string(),
            family,
            vocab: self.vocab,
            hidden: self.hidden,
            layers: self.layers,
            context: self.context,
            dtype: self.dtype,
            tied: self.tied,
            embed_scale: None,
            learned_positions: None,
            token_types: None,
            embed_norm: None,
            final_norm: Some(final_norm),
            logit_softcap: None,
            mtp: 0,
            blocks,
            schedule,
        }
    }
}

/// The storage dtype: FP8 when the checkpoint is FP8-quantized, else `torch_dtype`/`dtype`
/// (read from the enclosing multimodal config when a text config lacks them). A
/// `quantization_config` must be one the runtime reads: block-scaled FP8 (e4m3, dynamic
/// activations, a `weight_block_size`) or MXFP4 (whose experts are blocks, the rest in
/// `torch_dtype`); any other method is refused.
pub(crate) fn dtype(c: &Config<'_>) -> Result<DType, ImportError> {
    let mut scope = Some(c.clone());
    while let Some(c) = scope {
        if let Some(q) = c.opt_object("quantization_config")? {
            match q.opt_str("quant_method")? {
                Some("fp8") => {
                    if let Some(fmt) = q.opt_str("fmt")?.filter(|f| *f != "e4m3") {
                        return Err(q.invalid("fmt", format!("FP8 format \"{fmt}\" is not read (only e4m3)")));
                    }
                    if let Some(s) = q.opt_str("activation_scheme")?.filter(|s| *s != "dynamic") {
                        return Err(q.invalid(
                            "activation_scheme",
                            format!("\"{s}\" activation scales are not read (only dynamic)"),
                        ));
                    }
                    match q.opt_u64_list("weight_block_size")? {
                        Some(b) if b.len() == 2 && b.iter().all(|&x| x > 0) => {}
                        _ => {
                            return Err(q.invalid(
                                "weight_block_size",
                                "block-scaled FP8 needs the block size, two positive integers",
                            ))
                        }
                    }
                    return Ok(DType::F8);
                }
                Some("mxfp4") => {}
                other => {
                    return Err(q.invalid(
                        "quant_method",
                        format!(
                            "quantisation {} is not read (archc reads fp8 and mxfp4 checkpoints, or GGUF files)",
                            other.map_or("without a method".to_string(), |m| format!("\"{m}\""))
                        ),
                    ))
                }
            }
        }
        let key = if c.has("torch_dtype") {
            "torch_dtype"
        } else {
            "dtype"
        };
        match c.opt_str(key)? {
            None => {}
            Some("bfloat16") => return Ok(DType::Bf16),
            Some("float16") => return Ok(DType::F16),
            Some("float32") => return Ok(DType::F32),
            Some(other) => {
                return Err(c.invalid(
                    key,
                    format!(
                        "unsupported dtype \"{other}\" (expected bfloat16, float16 or float32)"
                    ),
                ))
            }
        }
        scope = c.outer();
    }
    Ok(DType::Bf16)
}

/// One layer before deduplication: its labels along each axis in which layers may differ
/// (e.g. `["sliding", "moe"]`) and its block (whose name is filled in by [`assemble`]).
pub(crate) struct Layer {
    pub labels: Vec<&'static str>,
    pub block: Block,
}

/// Turn per-layer blocks into distinct named variants and a schedule.
///
/// A variant is named after the labels that differ between layers, joined with `_`
/// (`dense`, `moe_nope`, ...); a model whose layers are all alike has the single variant
/// `default`. Two different blocks that end up with the same name get a numeric suffix.
pub(crate) fn assemble(layers: Vec<Layer>) -> (Vec<Block>, Vec<usize>) {
    let axes = layers.first().map_or(0, |l| l.labels.len());
    let varying: Vec<bool> = (0..axes)
        .map(|axis| {
            layers
                .iter()
                .any(|l| l.labels.get(axis) != layers[0].labels.get(axis))
        })
        .collect();
    let mut blocks: Vec<Block> = Vec::new();
    // The label-derived name of each block, before any suffix that keeps names unique.
    let mut bases: Vec<String> = Vec::new();
    let mut schedule = Vec::with_capacity(layers.len());
    for layer in layers {
        let parts: Vec<&str> = layer
            .labels
            .iter()
            .zip(&varying)
            .filter(|(_, v)| **v)
            .map(|(l, _)| *l)
            .collect();
        let base = if parts.is_empty() {
            "default".to_string()
        } else {
            parts.join("_")
        };
        let mut block = layer.block;
        let found =
            (0..blocks.len()).find(|&i| bases[i] == base && same_except_name(&blocks[i], &block));
        let index = match found {
            Some(i) => i,
            None => {
                let taken = bases.iter().filter(|b| **b == base).count();
                block.name = if taken == 0 {
                    base.clone()
                } else {
                    format!("{base}_{}", taken + 1)
                };
                blocks.push(block);
                bases.push(base);
                blocks.len() - 1
            }
        };
        schedule.push(index);
    }
    (blocks, schedule)
}

fn same_except_name(a: &Block, b: &Block) -> bool {
    a.placement == b.placement && a.norm == b.norm && a.mixer == b.mixer && a.ffn == b.ffn
}

pub(crate) fn rms(eps: f64) -> Norm {
    Norm {
        kind: NormKind::RmsNorm,
        eps,
        bias: false,
        plus_one: false,
    }
}

pub(crate) fn rms_plus_one(eps: f64) -> Norm {
    Norm {
        kind: NormKind::RmsNorm,
        eps,
        bias: false,
        plus_one: true,
    }
}

pub(crate) fn layer_norm(eps: f64) -> Norm {
    Norm {
        kind: NormKind::LayerNorm,
        eps,
        bias: true,
        plus_one: false,
    }
}

pub(crate) fn all_bias(on: bool) -> AttnBias {
    AttnBias {
        q: on,
        k: on,
        v: on,
        o: on,
    }
}

pub(crate) fn qkv_bias(on: bool) -> AttnBias {
    AttnBias {
        q: on,
        k: on,
        v: on,
        o: false,
    }
}

/// Plain softmax attention with the usual defaults; callers adjust fields afterwards.
pub(crate) fn attention(heads: u64, kv_heads: u64, head_dim: u64, rope: Option<Rope>) -> Attention {
    Attention {
        heads,
        kv_heads,
        head_dim,
        v_head_dim: head_dim,
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
        rope,
    }
}

pub(crate) fn block(placement: Placement, norm: Norm, mixer: Mixer, ffn: Ffn) -> Block {
    Block {
        name: String::new(),
        placement,
        norm,
        mixer,
        ffn,
    }
}

/// A gated (or plain) MLP with the activation named by `act_key`.
pub(crate) fn mlp(hidden: u64, act: Activation, gated: bool, bias: bool) -> Ffn {
    Ffn::Mlp(Mlp {
        hidden,
        act,
        gated,
        bias,
    })
}

/// The activation named by an HF `hidden_act`-style key.
pub(crate) fn activation(
    c: &Config<'_>,
    key: &str,
    default: &str,
) -> Result<Activation, ImportError> {
    let name = c.str_or(key, default)?;
    match name {
        "silu" | "swish" => Ok(Activation::Silu),
        "gelu" => Ok(Activation::Gelu),
        "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
        "relu" => Ok(Activation::Relu),
        other => Err(c.invalid(
            key,
            format!("unsupported activation \"{other}\" (expected silu, gelu, gelu_new, gelu_pytorch_tanh or relu)"),
        )),
    }
}

/// Where a layer's RoPE settings come from: the scaling dict (`rope_parameters`,
/// `rope_scaling` or one per-layer-type entry of them), plus the fallbacks HF applies
/// when the dict lacks `rope_theta` or `partial_rotary_factor`.
pub(crate) struct RopeSource<'a> {
    /// The dict, with the config it was read from (for error paths).
    pub params: Option<Config<'a>>,
    pub theta: f64,
    pub partial: f64,
}

impl<'a> RopeSource<'a> {
    /// The flat RoPE settings of a config: `rope_parameters` (new) or `rope_scaling` (old),
    /// with `rope_theta` and `partial_rotary_factor` from the top level as fallbacks.
    pub fn flat(
        c: &Config<'a>,
        theta_default: f64,
        partial_default: f64,
    ) -> Result<Self, ImportError> {
        let params = match c.opt_object("rope_parameters")? {
            Some(p) => Some(p),
            None => c.opt_object("rope_scaling")?,
        };
        Ok(RopeSource {
            params,
            theta: c.f64_or("rope_theta", theta_default)?,
            partial: c.f64_or("partial_rotary_factor", partial_default)?,
        })
    }

    /// Build the rotary embedding for heads of `head_dim` in a model of `context` positions.
    pub fn build(
        &self,
        head_dim: u64,
        context: u64,
        pairing: Pairing,
    ) -> Result<Rope, ImportError> {
        let Some(p) = &self.params else {
            return Ok(Rope {
                theta: self.theta,
                dims: rotary_dims(head_dim, self.partial),
                pairing,
                scaling: RopeScaling::None,
            });
        };
        let theta = p.f64_or("rope_theta", self.theta)?;
        let partial = p.f64_or("partial_rotary_factor", self.partial)?;
        let kind_key = if p.has("rope_type") {
            "rope_type"
        } else {
            "type"
        };
        let kind = p.str_or(kind_key, "default")?;
        let scaling = match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: p.req_f64("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: p.req_f64("factor")?,
                low_freq_factor: p.req_f64("low_freq_factor")?,
                high_freq_factor: p.req_f64("high_freq_factor")?,
                original_context: p.u64_or("original_max_position_embeddings", context)?,
            },
            "yarn" => {
                let original = p.u64_or("original_max_position_embeddings", context)?;
                let factor = match p.opt_f64("factor")? {
                    Some(f) => f,
                    None => context as f64 / original as f64,
                };
                // HF treats a missing, null or zero beta as its default (`or 32`, `or 1`).
                let beta_fast = p
                    .opt_f64("beta_fast")?
                    .filter(|b| *b != 0.0)
                    .unwrap_or(32.0);
                let beta_slow = p.opt_f64("beta_slow")?.filter(|b| *b != 0.0).unwrap_or(1.0);
                RopeScaling::Yarn {
                    factor,
                    original_context: original,
                    beta_fast,
                    beta_slow,
                    mscale: p.f64_or("mscale", 1.0)?,
                    mscale_all_dim: p.f64_or("mscale_all_dim", 0.0)?,
                    attention_factor: p.opt_f64("attention_factor")?,
                    truncate: p.bool_or("truncate", true)?,
                }
            }
            other => {
                return Err(p.invalid(
                    kind_key,
                    format!(
                    "unsupported RoPE type \"{other}\" (expected default, linear, llama3 or yarn)"
                ),
                ))
            }
        };
        Ok(Rope {
            theta,
            dims: rotary_dims(head_dim, partial),
            pairing,
            scaling,
        })
    }
}

/// HF's `int(head_dim * partial_rotary_factor)`.
fn rotary_dims(head_dim: u64, partial: f64) -> u64 {
    (head_dim as f64 * partial).floor() as u64
}

/// HF's sliding-window layer rule shared by Qwen2/Qwen3/SmolLM3: explicit `layer_types`
/// win; else layers from `max_window_layers` on slide when sliding is enabled.
pub(crate) fn layer_types(c: &Config<'_>, layers: u64) -> Result<Option<Vec<String>>, ImportError> {
    let Some(types) = c.opt_str_list("layer_types")? else {
        return Ok(None);
    };
    if types.len() as u64 != layers {
        return Err(c.invalid(
            "layer_types",
            format!(
                "has {} entries but num_hidden_layers is {layers}",
                types.len()
            ),
        ));
    }
    Ok(Some(types))
}

/// Check a `layer_types` entry against the kinds a family knows.
pub(crate) fn check_layer_type<'t>(
    c: &Config<'_>,
    ty: &'t str,
    allowed: &[&str],
) -> Result<&'t str, ImportError> {
    if allowed.contains(&ty) {
        Ok(ty)
    } else {
        Err(c.invalid(
            "layer_types",
            format!(
                "unsupported layer type \"{ty}\" (expected one of: {})",
                allowed.join(", ")
            ),
        ))
    }
}

/// Require `a` to be divisible by `b` where HF would otherwise misbehave.
pub(crate) fn divisible(
    c: &Config<'_>,
    key: &str,
    a: u64,
    b: u64,
    what: &str,
) -> Result<(), ImportError> {
    if b == 0 || a % b != 0 {
        return Err(c.invalid(key, format!("{a} is not divisible by {what} ({b})")));
    }
    Ok(())
}
