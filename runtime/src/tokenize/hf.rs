//! Building a tokenizer from an HF model directory: `tokenizer.json` runs as HF defines it;
//! `tokenizer_config.json` and `generation_config.json` supply special tokens, EOS ids and
//! the chat template.

use std::path::Path;

use serde_json::Value;

use super::{
    decode, finish_special, partition, PieceStyle, Result, SpecialIds, TokenAttr, TokenizeError,
    Tokenizer, TokenizerKind,
};

/// Reads one file of an HF model directory by name: `Ok(None)` when it is absent.
pub type ReadFile<'a> = &'a dyn Fn(&str) -> std::io::Result<Option<String>>;

fn read_json(read: ReadFile<'_>, dir: &Path, name: &str) -> Result<Option<Value>> {
    let path = dir.join(name);
    let Some(text) = read(name).map_err(|source| TokenizeError::Read {
        path: path.clone(),
        source,
    })?
    else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| TokenizeError::Parse { path, source })
}

/// A special token in `tokenizer_config.json`: a string or `{"content": ...}`.
fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// Every `"type"` in a decoder's JSON, depth first, and whether a space prefix is stripped.
fn decoder_style(decoder: &Value) -> (PieceStyle, bool) {
    fn walk(v: &Value, types: &mut Vec<String>, strip_prefix: &mut bool) {
        match v {
            Value::Object(o) => {
                if let Some(t) = o.get("type").and_then(Value::as_str) {
                    types.push(t.to_owned());
                    match t {
                        "Metaspace" => {
                            let scheme = o.get("prepend_scheme").and_then(Value::as_str);
                            let legacy = o.get("add_prefix_space").and_then(Value::as_bool);
                            if scheme.map_or(legacy.unwrap_or(true), |s| s != "never") {
                                *strip_prefix = true;
                            }
                        }
                        "Strip" if o.get("start").and_then(Value::as_u64).unwrap_or(0) > 0 => {
                            *strip_prefix = true;
                        }
                        "Replace" => {
                            let pattern =
                                o.get("pattern").map(Value::to_string).unwrap_or_default();
                            if pattern.contains('\u{2581}') {
                                types.push("Metaspace".to_owned());
                            }
                        }
                        _ => {}
                    }
                }
                for child in o.values() {
                    walk(child, types, strip_prefix);
                }
            }
            Value::Array(items) => {
                for child in items {
                    walk(child, types, strip_prefix);
                }
            }
            _ => {}
        }
    }
    let mut types = Vec::new();
    let mut strip = false;
    walk(decoder, &mut types, &mut strip);
    let style = if types.iter().any(|t| t == "ByteLevel") {
        PieceStyle::ByteLevel
    } else if types.iter().any(|t| t == "Metaspace") {
        PieceStyle::Metaspace
    } else {
        PieceStyle::Raw
    };
    (style, strip && style == PieceStyle::Metaspace)
}

pub(crate) fn build(dir: &Path) -> Result<Tokenizer> {
    build_with(dir, &|name| match std::fs::read_to_string(dir.join(name)) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    })
}

/// `build` over files read by `read`; `dir` names them in errors.
pub(crate) fn build_with(dir: &Path, read: ReadFile<'_>) -> Result<Tokenizer> {
    let tj_path = dir.join("tokenizer.json");
    let tj_text = read("tokenizer.json")
        .and_then(|t| {
            t.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
        })
        .map_err(|source| TokenizeError::Read {
            path: tj_path.clone(),
            source,
        })?;
    let inner: tokenizers::Tokenizer = tj_text.parse().map_err(|source| TokenizeError::Load {
        path: tj_path.clone(),
        source,
    })?;
    let tj: Value = serde_json::from_str(&tj_text).map_err(|source| TokenizeError::Parse {
        path: tj_path.clone(),
        source,
    })?;
    let config = read_json(read, dir, "tokenizer_config.json")?.unwrap_or(Value::Null);
    let generation = read_json(read, dir, "generation_config.json")?.unwrap_or(Value::Null);

    // The id -> text table over model and added tokens.
    let vocab = inner.get_vocab(true);
    let n = vocab.values().max().map_or(0, |&m| m as usize + 1);
    let mut tokens = vec![String::new(); n];
    for (text, &id) in &vocab {
        tokens[id as usize] = text.clone();
    }
    let (style, add_space_prefix) = decoder_style(tj.get("decoder").unwrap_or(&Value::Null));
    let byte_fallback = tj
        .pointer("/model/byte_fallback")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut attrs: Vec<TokenAttr> = tokens
        .iter()
        .map(|t| {
            if t.is_empty() {
                TokenAttr::Undefined
            } else if byte_fallback && decode::hex_byte(t).is_some() {
                TokenAttr::Byte
            } else {
                TokenAttr::Normal
            }
        })
        .collect();
    for (id, added) in inner.get_added_tokens_decoder() {
        if let Some(attr) = attrs.get_mut(id as usize) {
            *attr = if added.special {
                TokenAttr::Control
            } else {
                TokenAttr::UserDefined
            };
        }
    }

    let id_of = |name: &str| token_string(config.get(name)).and_then(|t| inner.token_to_id(&t));
    let mut special = SpecialIds {
        bos: id_of("bos_token"),
        eos: id_of("eos_token"),
        unk: id_of("unk_token"),
        pad: id_of("pad_token"),
        sep: id_of("sep_token"),
        ..SpecialIds::default()
    };
    let gen_ids = |key: &str| -> Vec<u32> {
        match generation.get(key) {
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .into_iter()
                .collect(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_u64().and_then(|x| u32::try_from(x).ok()))
                .collect(),
            _ => Vec::new(),
        }
    };
    let gen_eos = gen_ids("eos_token_id");
    if special.eos.is_none() {
        special.eos = gen_eos.first().copied();
    }
    if special.bos.is_none() {
        special.bos = gen_ids("bos_token_id").first().copied();
    }
    let mut eog = finish_special(&tokens, &mut attrs, &mut special);
    eog.extend(gen_eos.into_iter().filter(|&id| (id as usize) < n));

    // Whether the post-processor adds BOS/EOS: ask it.
    let probe = inner
        .encode("", true)
        .map_err(|source| TokenizeError::Probe {
            path: tj_path.clone(),
            source,
        })?;
    let probe = probe.get_ids();
    let add_bos = special.bos.is_some() && probe.first().copied() == special.bos;
    let add_eos = special.eos.is_some()
        && probe.last().copied() == special.eos
        && probe.len() > usize::from(add_bos);

    let mut plain = inner.clone();
    plain.set_encode_special_tokens(true);

    let chat_template = match read("chat_template.jinja").ok().flatten() {
        Some(t) => Some(t),
        None => match config.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(items)) => items
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or_else(|| items.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        },
    };

    let partition_order = partition::order(&tokens, &attrs);
    let pieces = decode::pieces(&tokens, &attrs, style);
    Ok(Tokenizer {
        kind: TokenizerKind::HfJson,
        inner,
        inner_plain: Some(plain),
        tokens,
        attrs,
        pieces,
        partition_order,
        special,
        eog,
        add_bos,
        add_eos,
        add_space_prefix,
        clean_spaces: config
            .get("clean_up_tokenization_spaces")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        chat_template,
    })
}
