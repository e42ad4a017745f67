//! Import of llama.cpp GGUF metadata into a [`Spec`].
//!
//! GGUF metadata says less than an HF config (llama.cpp hard-codes some per-architecture
//! facts), and a few things only show in the tensor list: whether `output.weight` exists
//! (else the head is tied) and whether projections carry biases. So the importer takes
//! both. It translates the `{arch}.*` keys into the HF config keys of the matching
//! `model_type` and runs that family's HF importer, so a GGUF file and the HF checkpoint
//! it was converted from give the same `Spec`. Every error names the GGUF key it came from.
//!
//! [`MetaValue`] is the neutral form of a metadata value: the runtime's GGUF reader
//! produces it, and this crate never reads files itself.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Number, Value};

use super::{checked, import_config, model_name, Config, ImportError};
use crate::spec::Spec;

/// The type of a GGUF metadata value, with its on-disk id (`gguf_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MetaType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    Str,
    Array,
    U64,
    I64,
    F64,
}

impl MetaType {
    /// The type with on-disk id `id`.
    pub fn from_id(id: u32) -> Option<MetaType> {
        use MetaType::*;
        [
            U8, I8, U16, I16, U32, I32, F32, Bool, Str, Array, U64, I64, F64,
        ]
        .get(id as usize)
        .copied()
    }

    pub fn id(self) -> u32 {
        self as u32
    }

    pub fn name(self) -> &'static str {
        match self {
            MetaType::U8 => "u8",
            MetaType::I8 => "i8",
            MetaType::U16 => "u16",
            MetaType::I16 => "i16",
            MetaType::U32 => "u32",
            MetaType::I32 => "i32",
            MetaType::F32 => "f32",
            MetaType::Bool => "bool",
            MetaType::Str => "string",
            MetaType::Array => "array",
            MetaType::U64 => "u64",
            MetaType::I64 => "i64",
            MetaType::F64 => "f64",
        }
    }
}

/// One GGUF metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    /// An array of values of one type (`elem`); arrays may nest.
    Array {
        elem: MetaType,
        items: Vec<MetaValue>,
    },
}

impl MetaValue {
    pub fn ty(&self) -> MetaType {
        match self {
            MetaValue::U8(_) => MetaType::U8,
            MetaValue::I8(_) => MetaType::I8,
            MetaValue::U16(_) => MetaType::U16,
            MetaValue::I16(_) => MetaType::I16,
            MetaValue::U32(_) => MetaType::U32,
            MetaValue::I32(_) => MetaType::I32,
            MetaValue::U64(_) => MetaType::U64,
            MetaValue::I64(_) => MetaType::I64,
            MetaValue::F32(_) => MetaType::F32,
            MetaValue::F64(_) => MetaType::F64,
            MetaValue::Bool(_) => MetaType::Bool,
            MetaValue::Str(_) => MetaType::Str,
            MetaValue::Array { .. } => MetaType::Array,
        }
    }

    /// A non-negative integer of any integer type.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any number. An f32 is widened through its shortest decimal form, so that the
    /// `1e-5` a converter stored as f32 reads back as the f64 `1e-5`, not `9.9999997e-6`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => format!("{v}").parse().ok(),
            MetaValue::F64(v) => Some(v),
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            MetaValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The items of an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array { items, .. } => Some(items),
            _ => None,
        }
    }

    /// A short description for error messages: the type and, for scalars, the value.
    pub fn describe(&self) -> String {
        match self {
            MetaValue::Array { elem, items } => {
                format!("an array of {} {}", items.len(), elem.name())
            }
            MetaValue::Str(s) => format!("the string {s:?}"),
            other => format!("the {} {other}", other.ty().name()),
        }
    }
}

impl fmt::Display for MetaValue {
    /// Scalars as themselves, strings quoted, arrays with at most eight items shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::U8(v) => write!(f, "{v}"),
            MetaValue::I8(v) => write!(f, "{v}"),
            MetaValue::U16(v) => write!(f, "{v}"),
            MetaValue::I16(v) => write!(f, "{v}"),
            MetaValue::U32(v) => write!(f, "{v}"),
            MetaValue::I32(v) => write!(f, "{v}"),
            MetaValue::U64(v) => write!(f, "{v}"),
            MetaValue::I64(v) => write!(f, "{v}"),
            MetaValue::F32(v) => write!(f, "{v:?}"),
            MetaValue::F64(v) => write!(f, "{v:?}"),
            MetaValue::Bool(v) => write!(f, "{v}"),
            MetaValue::Str(s) => write!(f, "{s:?}"),
            MetaValue::Array { elem, items } => {
                write!(f, "[{}; {}]", elem.name(), items.len())?;
                f.write_str(" [")?;
                for (i, item) in items.iter().take(8).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                if items.len() > 8 {
                    f.write_str(", ...")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// Every `general.architecture` this importer accepts, with the HF `model_type` whose
/// importer it feeds.
pub const SUPPORTED_ARCHITECTURES: [(&str, &str); 9] = [
    ("llama", "llama"),
    ("qwen2", "qwen2"),
    ("qwen3", "qwen3"),
    ("qwen3moe", "qwen3_moe"),
    ("gemma3", "gemma3_text"),
    ("deepseek2", "deepseek_v3"),
    ("gpt-oss", "gpt_oss"),
    ("olmo2", "olmo2"),
    ("lfm2", "lfm2"),
];

/// Imports a model from GGUF metadata and the file's tensor names. `source_name` names
/// the file in errors; its stem becomes the model name.
pub fn from_gguf_metadata(
    meta: &BTreeMap<String, MetaValue>,
    tensor_names: &BTreeSet<String>,
    source_name: &str,
) -> Result<Spec, ImportError> {
    let mut t = Translator {
        meta,
        tensors: tensor_names,
        file: source_name,
        arch: "",
        json: Map::new(),
        origin: BTreeMap::new(),
        read: Default::default(),
    };
    let arch = t.req_str("general.architecture")?;
    let Some(&(_, model_type)) = SUPPORTED_ARCHITECTURES.iter().find(|(a, _)| *a == arch) else {
        return Err(ImportError::UnknownModelType {
            file: source_name.to_string(),
            found: format!("{arch} (general.architecture)"),
            supported: SUPPORTED_ARCHITECTURES.iter().map(|(a, _)| *a).collect(),
        });
    };
    t.arch = arch;
    t.json
        .insert("model_type".into(), Value::String(model_type.into()));
    t.origin
        .insert("model_type".into(), "general.architecture".into());
    t.common()?;
    match arch {
        "llama" => t.llama()?,
        "qwen2" | "qwen3" => {}
        "olmo2" => t.olmo2()?,
        "qwen3moe" => t.qwen3moe()?,
        "gemma3" => t.gemma3()?,
        "deepseek2" => t.deepseek2()?,
        "gpt-oss" => t.gpt_oss()?,
        "lfm2" => t.lfm2()?,
        _ => {}
    }
    t.refuse_unread()?;
    let Translator { json, origin, .. } = t;
    let root = Config::root(&json, source_name);
    let name = model_name(source_name);
    import_config(&root, &name)
        .and_then(|spec| checked(spec, source_name))
        .map_err(|e| rename_keys(e, &origin))
}

/// Turns an error about a translated HF key back into one about the GGUF key it came from.
fn rename_keys(e: ImportError, origin: &BTreeMap<String, String>) -> ImportError {
    let rename = |key: String| match origin.get(&key) {
        Some(g) => g.clone(),
        None => format!("{key} (no GGUF key gives this; the HF importer needs it)"),
    };
    match e {
        ImportError::MissingKey { file, key } => ImportError::MissingKey {
            file,
            key: rename(key),
        },
        ImportError::WrongType {
            file,
            key,
            expected,
            found,
        } => ImportError::WrongType {
            file,
            key: rename(key),
            expected,
            found,
        },
        ImportError::Invalid { file, key, message } => ImportError::Invalid {
            file,
            key: rename(key),
            message,
        },
        other => other,
    }
}

/// Builds the HF config object of one GGUF file, remembering for every HF key the GGUF
/// key that gave it (or would have, when absent).
struct Translator<'a> {
    meta: &'a BTreeMap<String, MetaValue>,
    tensors: &'a BTreeSet<String>,
    file: &'a str,
    arch: &'a str,
    json: Map<String, Value>,
    origin: BTreeMap<String, String>,
    /// Every metadata key looked at: a `{arch}.*` key never looked at may change the math
    /// in llama.cpp, so the file is refused rather than imported without it.
    read: std::cell::RefCell<BTreeSet<String>>,
}

impl<'a> Translator<'a> {
    /// The value of `key`, remembering that it was read.
    fn get(&self, key: &str) -> Option<&'a MetaValue> {
        self.read.borrow_mut().insert(key.to_string());
        self.meta.get(key)
    }

    fn wrong(&self, key: &str, expected: &'static str, v: &MetaValue) -> ImportError {
        ImportError::WrongType {
            file: self.file.to_string(),
            key: key.to_string(),
            expected,
            found: v.describe(),
        }
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ImportError {
        ImportError::Invalid {
            file: self.file.to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn req_str(&self, key: &str) -> Result<&'a str, ImportError> {
        let v = self.get(key).ok_or_else(|| ImportError::MissingKey {
            file: self.file.to_string(),
            key: key.to_string(),
        })?;
        v.as_str().ok_or_else(|| self.wrong(key, "a string", v))
    }

    /// Refuses a file with `{arch}.*` keys this importer never read: llama.cpp reads them,
    /// so they may change what the model computes (a Mixtral written as `llama` with
    /// `llama.expert_count`, a logit scale, a residual multiplier). Keys that only describe
    /// the file are listed in [`INFORMATIONAL`].
    fn refuse_unread(&self) -> Result<(), ImportError> {
        let prefix = format!("{}.", self.arch);
        let read = self.read.borrow();
        let unread: Vec<&str> = self
            .meta
            .keys()
            .filter(|k| k.starts_with(&prefix) && !read.contains(k.as_str()))
            .filter(|k| !INFORMATIONAL.contains(&&k[prefix.len()..]))
            .map(String::as_str)
            .collect();
        match unread.first() {
            None => Ok(()),
            Some(first) => Err(self.invalid(
                first,
                format!(
                    "{} metadata key(s) that archc does not read for architecture {} and that may change the model's math: {}",
                    unread.len(),
                    self.arch,
                    unread.join(", ")
                ),
            )),
        }
    }

    /// `{arch}.{suffix}`.
    fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch)
    }

    fn u64_at(&self, key: &str) -> Result<Option<u64>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Array { .. }) => Err(self.invalid(
                key,
                "per-layer values (an array) are not supported; expected one number",
            )),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a non-negative integer", v)),
        }
    }

    fn f64_at(&self, key: &str) -> Result<Option<f64>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                // NaN or infinity would otherwise become JSON null, which reads as absent,
                // and the default would be used in silence.
                Some(x) if !x.is_finite() => {
                    Err(self.invalid(key, format!("{x} is not a finite number")))
                }
                Some(x) => Ok(Some(x)),
                None => Err(self.wrong(key, "a number", v)),
            },
        }
    }

    fn bool_at(&self, key: &str) -> Result<Option<bool>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "true or false", v)),
        }
    }

    fn str_at(&self, key: &str) -> Result<Option<&'a str>, ImportError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a string", v)),
        }
    }

    /// Sets HF key `hf` (a dotted path for nested objects) to `v`, from GGUF key `from`.
    fn set(&mut self, hf: &str, v: Value, from: &str) {
        self.origin.insert(hf.to_string(), from.to_string());
        let mut map = &mut self.json;
        let mut parts: Vec<&str> = hf.split('.').collect();
        let last = parts.pop().unwrap_or(hf);
        for p in parts {
            let entry = map
                .entry(p.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            match entry {
                Value::Object(m) => map = m,
                _ => return,
            }
        }
        map.insert(last.to_string(), v);
    }

    /// Records where `hf` would come from without setting it (the HF default applies).
    fn note(&mut self, hf: &str, from: &str) {
        self.origin.insert(hf.to_string(), from.to_string());
    }

    /// Copies `{arch}.{suffix}` as an integer into `hf` when present.
    fn copy_u64(&mut self, hf: &str, suffix: &str) -> Result<Option<u64>, ImportError> {
        let key = self.key(suffix);
        let v = self.u64_at(&key)?;
        match v {
            Some(n) => self.set(hf, Value::from(n), &key),
            None => self.note(hf, &key),
        }
        Ok(v)
    }

    /// Copies `{arch}.{suffix}` as a number into `hf` when present.
    fn copy_f64(&mut self, hf: &str, suffix: &str) -> Result<Option<f64>, ImportError> {
        let key = self.key(suffix);
        let v = self.f64_at(&key)?;
        match v {
            Some(x) => self.set(hf, float(x), &key),
            None => self.note(hf, &key),
        }
        Ok(v)
    }

    fn has_tensor(&self, name: &str) -> bool {
        self.tensors.contains(name)
    }

    /// Keys every architecture shares.
    fn common(&mut self) -> Result<(), ImportError> {
        let vocab_key = self.key("vocab_size");
        match self.u64_at(&vocab_key)? {
            Some(v) => self.set("vocab_size", Value::from(v), &vocab_key),
            None => match self.get("tokenizer.ggml.tokens") {
                Some(MetaValue::Array { items, .. }) => {
                    self.set(
                        "vocab_size",
                        Value::from(items.len() as u64),
                        "tokenizer.ggml.tokens",
                    );
                }
                _ => self.note("vocab_size", &vocab_key),
            },
        }
        let hidden = self.copy_u64("hidden_size", "embedding_length")?;
        self.copy_u64("num_hidden_layers", "block_count")?;
        self.copy_u64("max_position_embeddings", "context_length")?;
        self.copy_u64("intermediate_size", "feed_forward_length")?;
        let heads = self.copy_u64("num_attention_heads", "attention.head_count")?;
        // LFM2 gives its KV heads per layer (0 for a convolution layer): read there.
        if self.arch != "lfm2" {
            self.copy_u64("num_key_value_heads", "attention.head_count_kv")?;
        }
        self.copy_f64("rms_norm_eps", "attention.layer_norm_rms_epsilon")?;
        self.copy_f64("rope_theta", "rope.freq_base")?;
        // llama.cpp's default head size is hidden / heads; HF's defaults differ per family
        // (Qwen3: 128), so the head size is always given explicitly.
        let key_len_key = self.key("attention.key_length");
        let head_dim = match self.u64_at(&key_len_key)? {
            Some(d) => Some(d),
            None => match (hidden, heads) {
                (Some(h), Some(n)) if n > 0 && h % n == 0 => Some(h / n),
                _ => None,
            },
        };
        if self.arch != "deepseek2" {
            if let Some(d) = head_dim {
                self.set("head_dim", Value::from(d), &key_len_key);
            }
            let v_key = self.key("attention.value_length");
            if let (Some(v), Some(d)) = (self.u64_at(&v_key)?, head_dim) {
                if v != d {
                    return Err(self.invalid(
                        &v_key,
                        format!("value heads of {v} differ from key heads of {d}; only MLA models may differ"),
                    ));
                }
            }
            // A partial rotary dimension count becomes HF's partial_rotary_factor.
            let rot_key = self.key("rope.dimension_count");
            if let (Some(r), Some(d)) = (self.u64_at(&rot_key)?, head_dim) {
                if r != d && d > 0 {
                    self.set(
                        "partial_rotary_factor",
                        float(r as f64 / d as f64),
                        &rot_key,
                    );
                }
            }
        }
        self.rope_scaling()?;
        self.set(
            "tie_word_embeddings",
            Value::Bool(!self.has_tensor("output.weight")),
            "output.weight (tensor absent: tied to token_embd.weight)",
        );
        let ft_key = "general.file_type";
        // Quantised weights reach the interpreter dequantised to f32, and llama.cpp
        // computes in f32, so a quantised file (or one without a file type) is f32.
        let dtype = match self.u64_at(ft_key)? {
            Some(1) => "float16",
            Some(32) => "bfloat16",
            _ => "float32",
        };
        self.set("torch_dtype", Value::String(dtype.into()), ft_key);
        Ok(())
    }

    /// `{arch}.rope.scaling.*` as an HF `rope_scaling` object.
    fn rope_scaling(&mut self) -> Result<(), ImportError> {
        let type_key = self.key("rope.scaling.type");
        let kind = self.str_at(&type_key)?;
        match kind {
            None | Some("none") => {}
            Some(k @ ("linear" | "yarn")) => {
                self.set("rope_scaling.rope_type", Value::String(k.into()), &type_key);
                self.copy_f64("rope_scaling.factor", "rope.scaling.factor")?;
                if k == "yarn" {
                    self.copy_u64(
                        "rope_scaling.original_max_position_embeddings",
                        "rope.scaling.original_context_length",
                    )?;
                    self.copy_f64("rope_scaling.beta_fast", "rope.scaling.yarn_beta_fast")?;
                    self.copy_f64("rope_scaling.beta_slow", "rope.scaling.yarn_beta_slow")?;
                    self.copy_f64(
                        "rope_scaling.attention_factor",
                        "rope.scaling.yarn_attn_factor",
                    )?;
                    // HF's YaRN has no extrapolation factor: only the neutral 1 is read.
                    let ext_key = self.key("rope.scaling.yarn_ext_factor");
                    if let Some(x) = self.f64_at(&ext_key)? {
                        if x != 1.0 {
                            return Err(self.invalid(
                                &ext_key,
                                format!("{x}: only an extrapolation factor of 1 is supported"),
                            ));
                        }
                    }
                    // llama.cpp stores DeepSeek's `0.1 * mscale_all_dim`.
                    let mul_key = self.key("rope.scaling.yarn_log_multiplier");
                    if let Some(m) = self.f64_at(&mul_key)? {
                        // Times ten rather than over 0.1: 0.08 gives 0.8, not 0.7999999999999999.
                        let all = m * 10.0;
                        self.set("rope_scaling.mscale_all_dim", float(all), &mul_key);
                        self.set("rope_scaling.mscale", float(all), &mul_key);
                    }
                }
            }
            Some(other) => {
                return Err(self.invalid(
                    &type_key,
                    format!("unsupported RoPE scaling \"{other}\" (expected none, linear or yarn)"),
                ))
            }
        }
        Ok(())
    }

    fn llama(&mut self) -> Result<(), ImportError> {
        if self.has_tensor("rope_freqs.weight") {
            return Err(self.invalid(
                "rope_freqs.weight",
                "Llama 3 RoPE frequencies stored as a tensor are not supported",
            ));
        }
        let q_bias = self.has_tensor("blk.0.attn_q.bias");
        self.set(
            "attention_bias",
            Value::Bool(q_bias),
            "blk.0.attn_q.bias (tensor)",
        );
        let mlp_bias = self.has_tensor("blk.0.ffn_up.bias");
        self.set(
            "mlp_bias",
            Value::Bool(mlp_bias),
            "blk.0.ffn_up.bias (tensor)",
        );
        Ok(())
    }

    /// Expert counts shared by the MoE architectures.
    fn experts(&mut self, count_hf: &str) -> Result<(), ImportError> {
        self.copy_u64(count_hf, "expert_count")?;
        self.copy_u64("num_experts_per_tok", "expert_used_count")?;
        Ok(())
    }

    fn qwen3moe(&mut self) -> Result<(), ImportError> {
        self.experts("num_experts")?;
        self.copy_u64("moe_intermediate_size", "expert_feed_forward_length")?;
        // llama.cpp always renormalises Qwen3-MoE's top-k weights.
        let key = self.key("expert_weights_norm");
        let norm = self.bool_at(&key)?.unwrap_or(true);
        self.set("norm_topk_prob", Value::Bool(norm), &key);
        Ok(())
    }

    /// llama.cpp writes OLMo 3 as `olmo2` with a sliding window: a window above zero makes
    /// it OLMo 3, whose sliding layers follow `attention.sliding_window_pattern` (one bool
    /// per layer, or a period whose last layer is full; absent: every fourth layer full).
    fn olmo2(&mut self) -> Result<(), ImportError> {
        let key = self.key("attention.sliding_window");
        let window = match self.u64_at(&key)? {
            Some(w) if w > 0 => w,
            _ => return Ok(()),
        };
        self.json
            .insert("model_type".into(), Value::String("olmo3".into()));
        self.origin.insert("model_type".into(), key.clone());
        self.set("sliding_window", Value::from(window), &key);
        self.window_pattern(4)?;
        // The sliding layers' own RoPE base: HF's OLMo 3 uses `rope_theta` for both kinds.
        let swa_key = self.key("rope.freq_base_swa");
        if let Some(swa) = self.f64_at(&swa_key)? {
            let base = self
                .f64_at(&self.key("rope.freq_base"))?
                .unwrap_or(500_000.0);
            if swa != base {
                return Err(self.invalid(
                    &swa_key,
                    format!("{swa} differs from rope.freq_base {base}; OLMo 3 uses one RoPE base"),
                ));
            }
        }
        Ok(())
    }

    /// `attention.sliding_window_pattern` as HF's `layer_types`, read as llama.cpp reads it:
    /// one bool per layer (true: sliding), or a period whose last layer is full; absent, the
    /// architecture's fixed period `default_period`.
    fn window_pattern(&mut self, default_period: u64) -> Result<(), ImportError> {
        let layers = self.u64_at(&self.key("block_count"))?.unwrap_or(0);
        let pattern_key = self.key("attention.sliding_window_pattern");
        let sliding: Vec<bool> = match self.get(&pattern_key) {
            None => (0..layers).map(|i| (i + 1) % default_period != 0).collect(),
            Some(MetaValue::Array { items, .. }) => {
                let flags: Option<Vec<bool>> = items.iter().map(MetaValue::as_bool).collect();
                let Some(flags) = flags else {
                    return Err(self.wrong(&pattern_key, "an array of bool", &items[0]));
                };
                if flags.len() as u64 != layers {
                    return Err(self.invalid(
                        &pattern_key,
                        format!("has {} entries for {layers} layers", flags.len()),
                    ));
                }
                flags
            }
            Some(v) => {
                let period = v
                    .as_u64()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| self.wrong(&pattern_key, "a period of at least 1", v))?;
                (0..layers).map(|i| (i + 1) % period != 0).collect()
            }
        };
        self.layer_types(&sliding, &pattern_key);
        Ok(())
    }

    /// Sets HF's `layer_types` from one flag per layer (true: sliding).
    fn layer_types(&mut self, sliding: &[bool], from: &str) {
        let types = sliding
            .iter()
            .map(|&s| {
                Value::String(
                    if s {
                        "sliding_attention"
                    } else {
                        "full_attention"
                    }
                    .into(),
                )
            })
            .collect();
        self.set("layer_types", Value::Array(types), from);
    }

    fn gemma3(&mut self) -> Result<(), ImportError> {
        // llama.cpp's Gemma 3 has no sliding layers without a window above zero; with one,
        // every sixth layer is global unless the pattern says otherwise.
        let window_key = self.key("attention.sliding_window");
        match self.u64_at(&window_key)? {
            Some(w) if w > 0 => {
                self.set("sliding_window", Value::from(w), &window_key);
                self.window_pattern(6)?;
            }
            _ => {
                let layers = self.u64_at(&self.key("block_count"))?.unwrap_or(0);
                self.layer_types(&vec![false; layers as usize], &window_key);
            }
        }
        self.copy_f64("rope_local_base_freq", "rope.freq_base_swa")?;
        self.copy_f64("final_logit_softcapping", "final_logit_softcapping")?;
        self.copy_f64("attn_logit_softcapping", "attn_logit_softcapping")?;
        // llama.cpp hard-codes what the metadata does not say: local layers use base
        // 10000, every sixth layer is global, and queries scale by 1/sqrt(head size)
        // (1/sqrt(hidden / heads) for the 62-layer 27B model).
        let layers = self.u64_at(&self.key("block_count"))?;
        let scalar = if layers == Some(62) {
            let h = self.u64_at(&self.key("embedding_length"))?.unwrap_or(0);
            let n = self.u64_at(&self.key("attention.head_count"))?.unwrap_or(1);
            h.checked_div(n)
        } else {
            self.json.get("head_dim").and_then(Value::as_u64)
        };
        if let Some(s) = scalar {
            self.set(
                "query_pre_attn_scalar",
                Value::from(s),
                &self.key("attention.key_length"),
            );
        }
        Ok(())
    }

    fn deepseek2(&mut self) -> Result<(), ImportError> {
        let rope_key = self.key("rope.dimension_count");
        let rope = self.copy_u64("qk_rope_head_dim", "rope.dimension_count")?;
        // Newer conversions split kv_b and store the per-head sizes under *_mla keys.
        let (k_suffix, v_suffix) = if self
            .meta
            .contains_key(&self.key("attention.key_length_mla"))
        {
            ("attention.key_length_mla", "attention.value_length_mla")
        } else {
            ("attention.key_length", "attention.value_length")
        };
        let k_key = self.key(k_suffix);
        if let (Some(k), Some(r)) = (self.u64_at(&k_key)?, rope) {
            let nope = k.checked_sub(r).ok_or_else(|| {
                self.invalid(&k_key, format!("{k} is smaller than {rope_key} ({r})"))
            })?;
            self.set("qk_nope_head_dim", Value::from(nope), &k_key);
        } else {
            self.note("qk_nope_head_dim", &k_key);
        }
        self.copy_u64("v_head_dim", v_suffix)?;
        let q_key = self.key("attention.q_lora_rank");
        match self.u64_at(&q_key)? {
            Some(0) | None => self.set("q_lora_rank", Value::Null, &q_key),
            Some(r) => self.set("q_lora_rank", Value::from(r), &q_key),
        }
        let rank = self.copy_u64("kv_lora_rank", "attention.kv_lora_rank")?;
        if k_suffix == "attention.key_length_mla" {
            // The plain lengths are then those of the absorbed attention llama.cpp runs:
            // the latent (plus the RoPE key), which the spec already implies.
            for (suffix, want) in [
                ("attention.key_length", rank.zip(rope).map(|(k, r)| k + r)),
                ("attention.value_length", rank),
            ] {
                let key = self.key(suffix);
                if let (Some(found), Some(want)) = (self.u64_at(&key)?, want) {
                    if found != want {
                        return Err(self.invalid(
                            &key,
                            format!("{found}, but the absorbed MLA head is {want} (attention.kv_lora_rank plus, for keys, rope.dimension_count)"),
                        ));
                    }
                }
            }
        }
        self.experts("n_routed_experts")?;
        self.copy_u64("moe_intermediate_size", "expert_feed_forward_length")?;
        self.copy_u64("n_shared_experts", "expert_shared_count")?;
        self.copy_u64("first_k_dense_replace", "leading_dense_block_count")?;
        // Absent keys take llama.cpp's defaults, not HF's DeepSeek-V3 ones: no routed
        // scaling, no renormalisation, and softmax scores (the DeepSeek-V2 GGUFs written
        // before the key existed), except for the sigmoid GLM-4.7 Lite it knows by shape.
        let scale_key = self.key("expert_weights_scale");
        let scale = self.f64_at(&scale_key)?.unwrap_or(1.0);
        self.set("routed_scaling_factor", float(scale), &scale_key);
        let norm_key = self.key("expert_weights_norm");
        let norm = self.bool_at(&norm_key)?.unwrap_or(false);
        self.set("norm_topk_prob", Value::Bool(norm), &norm_key);
        self.copy_u64("n_group", "expert_group_count")?;
        self.copy_u64("topk_group", "expert_group_used_count")?;
        let func_key = self.key("expert_gating_func");
        let func = match self.u64_at(&func_key)? {
            Some(f) => f,
            None => {
                let layers = self.u64_at(&self.key("block_count"))?;
                let vocab = self.json.get("vocab_size").and_then(Value::as_u64);
                if !(matches!(layers, Some(47 | 48)) && vocab == Some(154_880)) {
                    return Err(self.invalid(
                        &func_key,
                        "absent, so llama.cpp scores experts with a softmax (DeepSeek-V2); archc's DeepSeek supports sigmoid scores only",
                    ));
                }
                2
            }
        };
        match func {
            1 => self.set("scoring_func", Value::String("softmax".into()), &func_key),
            2 => self.set("scoring_func", Value::String("sigmoid".into()), &func_key),
            other => {
                return Err(self.invalid(
                    &func_key,
                    format!("unknown gating function {other} (expected 1 softmax or 2 sigmoid)"),
                ))
            }
        }
        Ok(())
    }

    fn gpt_oss(&mut self) -> Result<(), ImportError> {
        self.experts("num_local_experts")?;
        let key = self.key("expert_feed_forward_length");
        match self.u64_at(&key)? {
            Some(n) => self.set("intermediate_size", Value::from(n), &key),
            None => self.note("intermediate_size", &key),
        }
        self.copy_u64("sliding_window", "attention.sliding_window")?;
        // GPT-OSS's YaRN does not round its correction range.
        if self.json.contains_key("rope_scaling") {
            let type_key = self.key("rope.scaling.type");
            self.set("rope_scaling.truncate", Value::Bool(false), &type_key);
        }
        Ok(())
    }
}

impl Translator<'_> {
    /// LFM2: `attention.head_count_kv` per layer, 0 for the gated short convolutions (their
    /// `layer_types`), one count for the attention layers; `shortconv.l_cache` the taps;
    /// `feed_forward_length` the feed-forward width as built (so no HF adjustment); the
    /// norm epsilon under LFM2's key; biases where the file holds them.
    fn lfm2(&mut self) -> Result<(), ImportError> {
        let key = self.key("attention.head_count_kv");
        let per_layer: Vec<u64> = match self.get(&key) {
            Some(MetaValue::Array { items, .. }) => items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .ok_or_else(|| self.wrong(&key, "non-negative integers", v))
                })
                .collect::<Result<_, _>>()?,
            Some(v) => vec![v
                .as_u64()
                .ok_or_else(|| self.wrong(&key, "an integer or an array", v))?],
            None => {
                return Err(ImportError::MissingKey {
                    file: self.file.to_string(),
                    key,
                })
            }
        };
        let layers = self.json.get("num_hidden_layers").and_then(Value::as_u64);
        if per_layer.len() != 1 && Some(per_layer.len() as u64) != layers {
            return Err(self.invalid(
                &key,
                format!(
                    "{} entries for {} layers",
                    per_layer.len(),
                    layers.unwrap_or(0)
                ),
            ));
        }
        let kv: Vec<u64> = per_layer.iter().copied().filter(|&n| n > 0).collect();
        if let Some(&first) = kv.first() {
            if kv.iter().any(|&n| n != first) {
                return Err(self.invalid(&key, "attention layers with different KV head counts"));
            }
            self.set("num_key_value_heads", Value::from(first), &key);
        }
        let n = layers.unwrap_or(per_layer.len() as u64) as usize;
        let types: Vec<Value> = (0..n)
            .map(|i| {
                let heads = if per_layer.len() == 1 {
                    per_layer[0]
                } else {
                    per_layer[i]
                };
                Value::String(if heads == 0 { "conv" } else { "full_attention" }.into())
            })
            .collect();
        self.set("layer_types", Value::Array(types), &key);
        self.copy_u64("conv_L_cache", "shortconv.l_cache")?;
        self.copy_f64("norm_eps", "attention.layer_norm_rms_epsilon")?;
        let ff = self.key("feed_forward_length");
        self.set("block_auto_adjust_ff_dim", Value::Bool(false), &ff);
        let bias = (0..n).any(|i| self.has_tensor(&format!("blk.{i}.shortconv.in_proj.bias")));
        self.set(
            "conv_bias",
            Value::Bool(bias),
            "blk.N.shortconv.in_proj.bias",
        );
        Ok(())
    }
}

/// `{arch}.*` keys that describe a file without changing what the model computes.
const INFORMATIONAL: &[&str] = &[
    // The context length is read where the family's importer uses it; a larger or smaller
    // value only bounds how far generation may go.
    "context_length",
    // Tensor-data alignment and quantisation bookkeeping are handled by the reader.
    "quantization_version",
];

/// A JSON number of an f64 (non-finite values become `null`, which reads as absent).
fn float(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}
