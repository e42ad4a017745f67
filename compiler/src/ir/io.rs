//! The runtime inputs and outputs of a forward pass, typed: token ids, positions, the
//! logits, each layer's KV cache and recurrent state. Every consumer (interpreter, kernel
//! programs, executors) matches on these variants; the text form (`tokens`, `cache.3.k`)
//! is only how people and the IR text read them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One runtime input or output of a graph (and of the kernel program made from it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "io")]
pub enum Io {
    /// Token ids of the new tokens, `[seq]` i32.
    Tokens,
    /// Absolute positions of the new tokens, `past..past + seq`, `[seq]` i32.
    Positions,
    /// The logits, `[seq, vocab]` (or `[1, vocab]` for the last position only).
    Logits,
    /// A layer's KV cache: `[past, ...]` as an input, `[past + seq, ...]` as an output.
    Kv { layer: u32, part: KvPart },
    /// A layer's recurrent state: the same fixed shape as an input and as an output.
    State { layer: u32, part: StatePart },
    /// A named activation with no role in a model: small test graphs and file tests feed
    /// and read values by name. The model executors refuse programs that have one.
    Value { name: String },
}

/// Which tensor of a layer's KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvPart {
    /// Keys, `[past, kv_heads, head_dim]`.
    K,
    /// Values, `[past, kv_heads, v_head_dim]`.
    V,
    /// MLA's compressed latent rows, `[past, kv_rank + rope_dim]`.
    Latent,
}

/// Which tensor of a layer's recurrent state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatePart {
    /// The last inputs of a short causal convolution, `[conv - 1, channels]`.
    Conv,
    /// The recurrent matrix state of a linear-attention or state-space mixer.
    Recurrent,
}

impl Io {
    pub fn kv(layer: u32, part: KvPart) -> Io {
        Io::Kv { layer, part }
    }

    pub fn state(layer: u32, part: StatePart) -> Io {
        Io::State { layer, part }
    }

    pub fn value(name: impl Into<String>) -> Io {
        Io::Value { name: name.into() }
    }

    /// Whether the value is carried from one call to the next (KV cache or state).
    pub fn is_carried(&self) -> bool {
        matches!(self, Io::Kv { .. } | Io::State { .. })
    }
}

impl KvPart {
    pub fn as_str(self) -> &'static str {
        match self {
            KvPart::K => "k",
            KvPart::V => "v",
            KvPart::Latent => "kv",
        }
    }
}

impl StatePart {
    pub fn as_str(self) -> &'static str {
        match self {
            StatePart::Conv => "conv",
            StatePart::Recurrent => "state",
        }
    }
}

impl fmt::Display for Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Io::Tokens => f.write_str("tokens"),
            Io::Positions => f.write_str("positions"),
            Io::Logits => f.write_str("logits"),
            Io::Kv { layer, part } => write!(f, "cache.{layer}.{}", part.as_str()),
            Io::State { layer, part } => write!(f, "cache.{layer}.{}", part.as_str()),
            Io::Value { name } => f.write_str(name),
        }
    }
}

/// Why a name is not an [`Io`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoError(pub String);

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IoError {}

impl FromStr for Io {
    type Err = IoError;

    /// The text form back: `tokens`, `positions`, `logits`, `cache.{layer}.{k|v|kv|conv|
    /// state}`, or any other identifier (letters, digits, `_`, starting with a letter or
    /// `_`) as a named value.
    fn from_str(s: &str) -> Result<Io, IoError> {
        match s {
            "tokens" => return Ok(Io::Tokens),
            "positions" => return Ok(Io::Positions),
            "logits" => return Ok(Io::Logits),
            _ => {}
        }
        if let Some(rest) = s.strip_prefix("cache.") {
            let (layer, part) = rest
                .split_once('.')
                .ok_or_else(|| IoError(format!("`{s}`: expected cache.<layer>.<part>")))?;
            let layer: u32 = layer
                .parse()
                .map_err(|_| IoError(format!("`{s}`: `{layer}` is not a layer number")))?;
            return match part {
                "k" => Ok(Io::kv(layer, KvPart::K)),
                "v" => Ok(Io::kv(layer, KvPart::V)),
                "kv" => Ok(Io::kv(layer, KvPart::Latent)),
                "conv" => Ok(Io::state(layer, StatePart::Conv)),
                "state" => Ok(Io::state(layer, StatePart::Recurrent)),
                other => Err(IoError(format!(
                    "`{s}`: unknown cache part `{other}` (expected k, v, kv, conv or state)"
                ))),
            };
        }
        let mut chars = s.chars();
        let ok_start = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if ok_start && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            Ok(Io::value(s))
        } else {
            Err(IoError(format!("`{s}` is not an input or output name")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for io in [
            Io::Tokens,
            Io::Positions,
            Io::Logits,
            Io::kv(0, KvPart::K),
            Io::kv(12, KvPart::V),
            Io::kv(3, KvPart::Latent),
            Io::state(7, StatePart::Conv),
            Io::state(7, StatePart::Recurrent),
            Io::value("x"),
        ] {
            assert_eq!(io.to_string().parse::<Io>(), Ok(io));
        }
        assert!("cache.x.k".parse::<Io>().is_err());
        assert!("cache.1.q".parse::<Io>().is_err());
        assert!("1x".parse::<Io>().is_err());
    }
}
