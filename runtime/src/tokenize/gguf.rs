//! Building a tokenizer from GGUF `tokenizer.*` metadata, with llama.cpp's defaults for the
//! `gpt2` (byte-level BPE) and `llama` (SentencePiece) models and its pre-tokenizer regexes.

use std::collections::BTreeMap;

use archc_spec::import::gguf::MetaValue;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

use super::{
    decode, finish_special, partition, MetadataOrigin, PieceStyle, Result, SpecialIds, TokenAttr,
    TokenizeError, Tokenizer, TokenizerKind,
};

/// The `tokenizer.*` part of a GGUF file's metadata, as explicit inputs. Field names follow
/// the GGUF keys (`tokenizer.ggml.<field>`); absent keys are `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenizerMetadata {
    /// `tokenizer.ggml.model`: `gpt2` or `llama`.
    pub model: String,
    /// `tokenizer.ggml.pre`: names the pre-tokenizer regexes (`smollm`, `llama3`, `qwen2`, ...).
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`, GGUF token types (see [`TokenAttr::from_gguf_type`]).
    pub token_types: Option<Vec<i64>>,
    /// `tokenizer.ggml.scores` (SentencePiece merge priorities).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.merges`, each `"left right"`.
    pub merges: Option<Vec<String>>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub eot_token_id: Option<u32>,
    pub eom_token_id: Option<u32>,
    pub unknown_token_id: Option<u32>,
    pub padding_token_id: Option<u32>,
    pub seperator_token_id: Option<u32>,
    pub add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

fn key_err(key: &str, expected: &'static str, found: &serde_json::Value) -> TokenizeError {
    let mut shown = found.to_string();
    if shown.len() > 60 {
        // Cut at a character boundary at or before 60 bytes.
        let mut cut = 60;
        while !shown.is_char_boundary(cut) {
            cut -= 1;
        }
        shown.truncate(cut);
        shown.push_str("...");
    }
    TokenizeError::KeyType {
        origin: MetadataOrigin::Json,
        key: key.to_string(),
        expected,
        found: shown,
    }
}

impl TokenizerMetadata {
    /// Read from a GGUF file's metadata map (`GgufFile::metadata()`); other keys are ignored.
    pub fn from_gguf(map: &BTreeMap<String, MetaValue>) -> Result<Self> {
        let mismatch =
            |k: &str, expected: &'static str, found: &MetaValue| TokenizeError::KeyType {
                origin: MetadataOrigin::Gguf,
                key: k.to_string(),
                expected,
                found: found.describe(),
            };
        let string = |k: &str| -> Result<Option<String>> {
            map.get(k)
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| mismatch(k, "a string", v))
                })
                .transpose()
        };
        let id = |k: &str| -> Result<Option<u32>> {
            map.get(k)
                .map(|v| {
                    v.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| mismatch(k, "a token id", v))
                })
                .transpose()
        };
        let flag = |k: &str| -> Result<Option<bool>> {
            map.get(k)
                .map(|v| v.as_bool().ok_or_else(|| mismatch(k, "a boolean", v)))
                .transpose()
        };
        let items = |k: &str| -> Result<Option<&[MetaValue]>> {
            map.get(k)
                .map(|v| v.as_array().ok_or_else(|| mismatch(k, "an array", v)))
                .transpose()
        };
        let strings = |k: &str| -> Result<Option<Vec<String>>> {
            items(k)?
                .map(|xs| {
                    xs.iter()
                        .map(|v| {
                            v.as_str()
                                .map(str::to_owned)
                                .ok_or_else(|| mismatch(k, "an array of strings", v))
                        })
                        .collect()
                })
                .transpose()
        };
        const TYPES: &str = "tokenizer.ggml.token_type";
        const SCORES: &str = "tokenizer.ggml.scores";
        Ok(Self {
            model: string("tokenizer.ggml.model")?.ok_or(TokenizeError::MissingKey {
                origin: MetadataOrigin::Gguf,
                key: "tokenizer.ggml.model",
            })?,
            pre: string("tokenizer.ggml.pre")?,
            tokens: strings("tokenizer.ggml.tokens")?.ok_or(TokenizeError::MissingKey {
                origin: MetadataOrigin::Gguf,
                key: "tokenizer.ggml.tokens",
            })?,
            token_types: items(TYPES)?
                .map(|xs| {
                    xs.iter()
                        .map(|v| match *v {
                            MetaValue::I32(t) => Ok(i64::from(t)),
                            _ => v
                                .as_u64()
                                .and_then(|t| i64::try_from(t).ok())
                                .ok_or_else(|| mismatch(TYPES, "an array of integers", v)),
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?,
            scores: items(SCORES)?
                .map(|xs| {
                    xs.iter()
                        .map(|v| match *v {
                            MetaValue::F32(x) => Ok(x),
                            _ => v
                                .as_f64()
                                .map(|x| x as f32)
                                .ok_or_else(|| mismatch(SCORES, "an array of numbers", v)),
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?,
            merges: strings("tokenizer.ggml.merges")?,
            bos_token_id: id("tokenizer.ggml.bos_token_id")?,
            eos_token_id: id("tokenizer.ggml.eos_token_id")?,
            eot_token_id: id("tokenizer.ggml.eot_token_id")?,
            eom_token_id: id("tokenizer.ggml.eom_token_id")?,
            unknown_token_id: id("tokenizer.ggml.unknown_token_id")?,
            padding_token_id: id("tokenizer.ggml.padding_token_id")?,
            seperator_token_id: id("tokenizer.ggml.seperator_token_id")?,
            add_bos_token: flag("tokenizer.ggml.add_bos_token")?,
            add_eos_token: flag("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix")?,
            chat_template: string("tokenizer.chat_template")?,
        })
    }

    /// Read from a JSON object whose keys are the GGUF keys (`tokenizer.ggml.tokens`, ...),
    /// as in a metadata extract; other keys are ignored.
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        let obj = value.as_object().ok_or(TokenizeError::NotAnObject)?;
        let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
        let string = |k: &str| -> Result<Option<String>> {
            get(k)
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| key_err(k, "a string", v))
                })
                .transpose()
        };
        let id = |k: &str| -> Result<Option<u32>> {
            get(k)
                .map(|v| {
                    v.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| key_err(k, "a token id", v))
                })
                .transpose()
        };
        let flag = |k: &str| -> Result<Option<bool>> {
            get(k)
                .map(|v| v.as_bool().ok_or_else(|| key_err(k, "a boolean", v)))
                .transpose()
        };
        let list = |k: &str| -> Result<Option<&Vec<serde_json::Value>>> {
            get(k)
                .map(|v| v.as_array().ok_or_else(|| key_err(k, "an array", v)))
                .transpose()
        };
        let strings = |k: &str| -> Result<Option<Vec<String>>> {
            list(k)?
                .map(|items| {
                    items
                        .iter()
                        .map(|v| {
                            v.as_str()
                                .map(str::to_owned)
                                .ok_or_else(|| key_err(k, "an array of strings", v))
                        })
                        .collect()
                })
                .transpose()
        };
        Ok(Self {
            model: string("tokenizer.ggml.model")?.ok_or(TokenizeError::MissingKey {
                origin: MetadataOrigin::Json,
                key: "tokenizer.ggml.model",
            })?,
            pre: string("tokenizer.ggml.pre")?,
            tokens: strings("tokenizer.ggml.tokens")?.ok_or(TokenizeError::MissingKey {
                origin: MetadataOrigin::Json,
                key: "tokenizer.ggml.tokens",
            })?,
            token_types: list("tokenizer.ggml.token_type")?
                .map(|items| {
                    items
                        .iter()
                        .map(|v| {
                            v.as_i64().ok_or_else(|| {
                                key_err("tokenizer.ggml.token_type", "an array of integers", v)
                            })
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?,
            scores: list("tokenizer.ggml.scores")?
                .map(|items| {
                    items
                        .iter()
                        .map(|v| {
                            v.as_f64().map(|x| x as f32).ok_or_else(|| {
                                key_err("tokenizer.ggml.scores", "an array of numbers", v)
                            })
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?,
            merges: strings("tokenizer.ggml.merges")?,
            bos_token_id: id("tokenizer.ggml.bos_token_id")?,
            eos_token_id: id("tokenizer.ggml.eos_token_id")?,
            eot_token_id: id("tokenizer.ggml.eot_token_id")?,
            eom_token_id: id("tokenizer.ggml.eom_token_id")?,
            unknown_token_id: id("tokenizer.ggml.unknown_token_id")?,
            padding_token_id: id("tokenizer.ggml.padding_token_id")?,
            seperator_token_id: id("tokenizer.ggml.seperator_token_id")?,
            add_bos_token: flag("tokenizer.ggml.add_bos_token")?,
            add_eos_token: flag("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix")?,
            chat_template: string("tokenizer.chat_template")?,
        })
    }
}

/// GPT-2's split regex as llama.cpp writes it (HF's adds a final `|\s+`, which matches
/// nothing this one leaves unmatched-and-separate).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What `tokenizer.ggml.pre` selects: regexes applied in sequence (each splits the pieces the
/// previous one left, keeping matches and gaps), and the flags llama.cpp ties to the name.
struct PreConfig {
    regexes: &'static [&'static str],
    ignore_merges: bool,
    add_bos: bool,
    clean_spaces: bool,
}

fn pre_config(pre: Option<&str>) -> Result<PreConfig> {
    let cfg = |regexes, ignore_merges, add_bos, clean_spaces| PreConfig {
        regexes,
        ignore_merges,
        add_bos,
        clean_spaces,
    };
    Ok(match pre.unwrap_or("default") {
        "default" => cfg(
            &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
            false,
            false,
            true,
        ),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" => cfg(&[LLAMA3], true, true, true),
        "dbrx" | "smaug-bpe" => cfg(&[LLAMA3], false, false, true),
        "qwen2" | "deepseek-r1-qwen" => cfg(&[QWEN2], false, false, false),
        "stablelm2" => cfg(&[QWEN2], false, false, true),
        "smollm" | "command-r" => cfg(&[r"\p{N}", GPT2], false, false, false),
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva" => {
            cfg(&[r"\p{N}", GPT2], false, false, true)
        }
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "mpt" | "olmo" | "jais" | "roberta-bpe" | "jina-v1-en" | "jina-v2-code" => {
            cfg(&[GPT2], false, false, true)
        }
        "falcon" => cfg(
            &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
            false,
            false,
            true,
        ),
        other => {
            return Err(TokenizeError::UnsupportedPre {
                pre: other.to_string(),
            })
        }
    })
}

/// llama.cpp ignores an out-of-range special id (with a warning) rather than failing to load.
fn check_id(id: Option<u32>, n: usize) -> Option<u32> {
    id.filter(|&i| (i as usize) < n)
}

/// The most merges a SentencePiece vocabulary may make (every way to split a token into
/// two tokens); real vocabularies of 256k tokens make one or two million.
pub const MAX_SPM_MERGES: usize = 1 << 22;

/// The most bytes of merge text a SentencePiece vocabulary may make.
pub const MAX_SPM_MERGE_BYTES: usize = 256 << 20;

pub(crate) fn build(meta: &TokenizerMetadata) -> Result<Tokenizer> {
    let n = meta.tokens.len();
    if n == 0 {
        return Err(TokenizeError::EmptyVocab);
    }
    // Ids are `u32` indices into tables of `n` entries.
    let max = super::MAX_TOKEN_ID as usize + 1;
    if n > max {
        return Err(TokenizeError::TooManyTokens { found: n, max });
    }
    let mut attrs: Vec<TokenAttr> = match &meta.token_types {
        Some(types) if types.len() == n => types
            .iter()
            .map(|&t| TokenAttr::from_gguf_type(t))
            .collect(),
        Some(types) => {
            return Err(TokenizeError::PerTokenCount {
                key: "tokenizer.ggml.token_type",
                found: types.len(),
                expected: n,
            })
        }
        None => vec![TokenAttr::Normal; n],
    };

    // Defaults per model, as llama.cpp sets them before reading the metadata keys.
    let (kind, mut special, mut add_bos, mut clean_spaces, mut add_space_prefix, style) =
        match meta.model.as_str() {
            "gpt2" => (
                TokenizerKind::Bpe,
                SpecialIds {
                    bos: Some(11),
                    eos: Some(11),
                    ..SpecialIds::default()
                },
                false,
                true,
                false,
                PieceStyle::ByteLevel,
            ),
            "llama" => (
                TokenizerKind::Spm,
                SpecialIds {
                    bos: Some(1),
                    eos: Some(2),
                    unk: Some(0),
                    ..SpecialIds::default()
                },
                true,
                false,
                true,
                PieceStyle::Metaspace,
            ),
            other => {
                return Err(TokenizeError::UnsupportedModel {
                    model: other.to_string(),
                })
            }
        };
    for id in [&mut special.bos, &mut special.eos, &mut special.unk] {
        *id = check_id(*id, n);
    }

    let mut vocab = Vocab::with_capacity(n);
    for (i, t) in meta.tokens.iter().enumerate() {
        // The last occurrence wins when a text repeats, as in llama.cpp's text-to-id map.
        vocab.insert(t.clone(), i as u32);
    }

    let inner = match kind {
        TokenizerKind::Bpe => {
            let pre = pre_config(meta.pre.as_deref())?;
            add_bos = pre.add_bos;
            clean_spaces = pre.clean_spaces;
            let merges =
                parse_merges(meta.merges.as_deref().ok_or(TokenizeError::ModelNeedsKey {
                    model: "gpt2",
                    key: "tokenizer.ggml.merges",
                })?)?;
            let model = BPE::builder()
                .vocab_and_merges(vocab.clone(), merges)
                .ignore_merges(pre.ignore_merges)
                .build()
                .map_err(TokenizeError::BuildBpe)?;
            let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
            for re in pre.regexes {
                let split = Split::new(
                    SplitPattern::Regex((*re).to_owned()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|source| TokenizeError::PreRegex { regex: re, source })?;
                steps.push(split.into());
            }
            steps.push(ByteLevel::new(false, false, false).into());
            let mut tk = tokenizers::Tokenizer::new(model);
            tk.with_pre_tokenizer(Some(Sequence::new(steps)));
            tk
        }
        _ => {
            let scores = meta.scores.as_deref().ok_or(TokenizeError::ModelNeedsKey {
                model: "llama (SentencePiece)",
                key: "tokenizer.ggml.scores",
            })?;
            if scores.len() != n {
                return Err(TokenizeError::PerTokenCount {
                    key: "tokenizer.ggml.scores",
                    found: scores.len(),
                    expected: n,
                });
            }
            let merges = spm_merges(&meta.tokens, scores, &vocab)?;
            let mut builder = BPE::builder()
                .vocab_and_merges(vocab.clone(), merges)
                .byte_fallback(true);
            if let Some(unk) = meta.unknown_token_id.or(special.unk) {
                if let Some(t) = meta.tokens.get(unk as usize) {
                    builder = builder.unk_token(t.clone());
                }
            }
            let model = builder.build().map_err(TokenizeError::BuildBpe)?;
            tokenizers::Tokenizer::new(model)
        }
    };

    // Metadata keys override the defaults.
    let overrides = [
        (&mut special.bos, meta.bos_token_id),
        (&mut special.eos, meta.eos_token_id),
        (&mut special.eot, meta.eot_token_id),
        (&mut special.eom, meta.eom_token_id),
        (&mut special.unk, meta.unknown_token_id),
        (&mut special.pad, meta.padding_token_id),
        (&mut special.sep, meta.seperator_token_id),
    ];
    for (slot, value) in overrides {
        if let Some(id) = check_id(value, n) {
            *slot = Some(id);
        }
    }
    if let Some(v) = meta.add_bos_token {
        add_bos = v;
    }
    let add_eos = meta.add_eos_token.unwrap_or(false);
    if let Some(v) = meta.add_space_prefix {
        add_space_prefix = v;
    }

    let eog = finish_special(&meta.tokens, &mut attrs, &mut special);
    let partition_order = partition::order(&meta.tokens, &attrs);
    let pieces = decode::pieces(&meta.tokens, &attrs, style);
    Ok(Tokenizer {
        kind,
        inner,
        inner_plain: None,
        tokens: meta.tokens.clone(),
        attrs,
        pieces,
        partition_order,
        special,
        eog,
        add_bos,
        add_eos,
        add_space_prefix,
        clean_spaces,
        chat_template: meta.chat_template.clone(),
    })
}

/// Split `"left right"` merges at the first space after the first character, as llama.cpp does.
fn parse_merges(merges: &[String]) -> Result<Vec<(String, String)>> {
    merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let first_len = m.chars().next().map_or(0, char::len_utf8);
            match m[first_len..].find(' ') {
                Some(p) => {
                    let p = first_len + p;
                    Ok((m[..p].to_owned(), m[p + 1..].to_owned()))
                }
                None => Err(TokenizeError::BadMerge {
                    index: i,
                    merge: m.clone(),
                }),
            }
        })
        .collect()
}

/// SentencePiece merges for a BPE model: every way to write a token as two tokens, ranked
/// by the merged token's score (higher first), which is the order llama.cpp's SentencePiece
/// tokenizer merges bigrams in. Ties (equal scores) rank by the merged token's id, then by
/// the split point. Refused past [`MAX_SPM_MERGES`] merges or [`MAX_SPM_MERGE_BYTES`] bytes:
/// long tokens whose every prefix and suffix is a token make quadratically many.
fn spm_merges(tokens: &[String], scores: &[f32], vocab: &Vocab) -> Result<Vec<(String, String)>> {
    let mut found: Vec<(f32, u32, usize, String, String)> = Vec::new();
    let mut bytes = 0usize;
    for (id, text) in tokens.iter().enumerate() {
        for (split, _) in text.char_indices().skip(1) {
            let (left, right) = text.split_at(split);
            if vocab.contains_key(left) && vocab.contains_key(right) {
                bytes += text.len();
                if found.len() == MAX_SPM_MERGES || bytes > MAX_SPM_MERGE_BYTES {
                    return Err(TokenizeError::TooManySpmMerges {
                        max_merges: MAX_SPM_MERGES,
                        max_bytes: MAX_SPM_MERGE_BYTES,
                    });
                }
                found.push((
                    scores[id],
                    id as u32,
                    split,
                    left.to_owned(),
                    right.to_owned(),
                ));
            }
        }
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    Ok(found.into_iter().map(|(_, _, _, l, r)| (l, r)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama(tokens: Vec<String>) -> TokenizerMetadata {
        let n = tokens.len();
        TokenizerMetadata {
            model: "llama".to_owned(),
            tokens,
            scores: Some(vec![0.0; n]),
            ..TokenizerMetadata::default()
        }
    }

    #[test]
    fn too_many_tokens_are_refused() {
        let n = crate::tokenize::MAX_TOKEN_ID as usize + 2;
        let err = build(&llama(vec![String::new(); n]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("has {n} tokens")), "{err}");
    }

    /// Tokens `a`, `aa`, `aaa`, ...: every prefix and suffix of each is a token, so the
    /// SentencePiece merges grow with the cube of the longest.
    #[test]
    fn quadratic_spm_merges_are_refused() {
        let tokens = (1..=1200).map(|k| "a".repeat(k)).collect();
        let err = build(&llama(tokens)).unwrap_err().to_string();
        assert!(err.contains("SentencePiece"), "{err}");
        assert!(err.contains(&MAX_SPM_MERGE_BYTES.to_string()), "{err}");
    }
}
