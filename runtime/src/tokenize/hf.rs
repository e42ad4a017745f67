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

/// The largest tokenizer file (`tokenizer.json`, its configs, the chat template) read from
/// a model directory. Real `tokenizer.json` files are at most a few tens of MiB.
pub const MAX_TOKENIZER_FILE_BYTES: u64 = 128 << 20;

/// The largest token id a `tokenizer.json` may use. Ids index the tokenizer's tables, and
/// the largest real vocabularies have a few hundred thousand tokens.
pub const MAX_TOKEN_ID: u32 = (1 << 22) - 1;

/// Ids may leave gaps, but a vocabulary of `n` tokens may use ids only below
/// `2 * n + VOCAB_GAP_ALLOWANCE`, so a small file cannot make the tables large.
pub const VOCAB_GAP_ALLOWANCE: usize = 1024;

/// Reads `path` as UTF-8 text of at most [`MAX_TOKENIZER_FILE_BYTES`]: `Ok(None)` when it
/// does not exist.
fn read_bounded(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if file.metadata()?.is_dir() {
        return Err(std::io::Error::other("a directory, not a file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_TOKENIZER_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_TOKENIZER_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_TOKENIZER_FILE_BYTES} bytes"
        )));
    }
    String::from_utf8(bytes).map(Some).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text ({e})"),
        )
    })
}

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

/// Checks what the `tokenizers` crate trusts in a `post_processor` and indexes its tables
/// with, panicking on a miss: every special token a template (`single`, `pair`) names is
/// in its `special_tokens`, each of those has one token per id, and `single` uses only the
/// first sequence. Every id a post-processor adds must also be a token of the `vocab`
/// tokens, so that encoding never gives an id outside the vocabulary. Processors are
/// recognised by their keys, as the crate's untagged deserializer does, at any depth.
fn check_post_processor(post: &Value, vocab: usize) -> std::result::Result<(), String> {
    let Value::Object(o) = post else {
        if let Value::Array(items) = post {
            return items
                .iter()
                .try_for_each(|p| check_post_processor(p, vocab));
        }
        return Ok(());
    };
    let check_id = |what: &str, id: &Value| match id.as_u64() {
        Some(id) if id < vocab as u64 => Ok(()),
        _ => Err(format!(
            "{what} has id {id}, outside the vocabulary of {vocab} tokens"
        )),
    };
    for key in ["sep", "cls"] {
        if let Some(Value::Array(pair)) = o.get(key) {
            if let Some(id) = pair.get(1) {
                check_id(&format!("`{key}`"), id)?;
            }
        }
    }
    let specials = o.get("special_tokens").and_then(Value::as_object);
    if let Some(specials) = specials {
        for (name, token) in specials {
            let ids = token.get("ids").and_then(Value::as_array);
            let tokens = token.get("tokens").and_then(Value::as_array);
            if let (Some(ids), Some(tokens)) = (ids, tokens) {
                if ids.len() != tokens.len() {
                    return Err(format!(
                        "special token {name:?} has {} ids but {} tokens",
                        ids.len(),
                        tokens.len()
                    ));
                }
                for id in ids {
                    check_id(&format!("special token {name:?}"), id)?;
                }
            }
        }
    }
    for template in ["single", "pair"] {
        let Some(Value::Array(pieces)) = o.get(template) else {
            continue;
        };
        for piece in pieces {
            if let Some(name) = piece.pointer("/SpecialToken/id").and_then(Value::as_str) {
                if !specials.is_some_and(|s| s.contains_key(name)) {
                    return Err(format!(
                        "the `{template}` template names special token {name:?}, which \
                         `special_tokens` does not define"
                    ));
                }
            }
            let sequence = piece.pointer("/Sequence/id").and_then(Value::as_str);
            if template == "single" && sequence == Some("B") {
                return Err("the `single` template uses sequence B".to_owned());
            }
        }
    }
    o.values().try_for_each(|v| check_post_processor(v, vocab))
}

pub(crate) fn build(dir: &Path) -> Result<Tokenizer> {
    build_with(dir, &|name| read_bounded(&dir.join(name)))
}

/// The chat template of an HF directory: `chat_template.jinja`, else `tokenizer_config.json`'s
/// `chat_template` (a string, or a list of `{name, template}` of which `default` or the first
/// is taken). Absent is `None`; present but unreadable or of another type is an error.
fn chat_template(read: ReadFile<'_>, dir: &Path, config: &Value) -> Result<Option<String>> {
    const FILE: &str = "chat_template.jinja";
    match read(FILE) {
        Ok(Some(text)) => return Ok(Some(text)),
        Ok(None) => {}
        Err(e) => {
            return Err(TokenizeError::ChatTemplate {
                path: dir.join(FILE),
                problem: format!("cannot be read: {e}"),
            })
        }
    }
    let bad = |problem: String| TokenizeError::ChatTemplate {
        path: dir.join("tokenizer_config.json"),
        problem,
    };
    let shown = |v: &Value| {
        let mut text = v.to_string();
        if text.len() > 60 {
            let mut cut = 60;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("...");
        }
        text
    };
    match config.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(items)) => {
            let chosen = items
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or_else(|| items.first())
                .ok_or_else(|| bad("`chat_template` is an empty list".to_owned()))?;
            match chosen.get("template") {
                Some(Value::String(s)) => Ok(Some(s.clone())),
                _ => Err(bad(format!(
                    "`chat_template` entry {} has no string `template`",
                    shown(chosen)
                ))),
            }
        }
        Some(other) => Err(bad(format!(
            "`chat_template` is {}, expected a string or a list of {{name, template}}",
            shown(other)
        ))),
    }
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
    // JSON first: the `tokenizers` crate panics on a syntax error inside `decoder` (an
    // `expect` in its decoder deserializer), so it only ever sees well-formed JSON.
    let tj: Value = serde_json::from_str(&tj_text).map_err(|source| TokenizeError::Parse {
        path: tj_path.clone(),
        source,
    })?;
    let inner: tokenizers::Tokenizer = tj_text.parse().map_err(|source| TokenizeError::Load {
        path: tj_path.clone(),
        source,
    })?;
    let config = read_json(read, dir, "tokenizer_config.json")?.unwrap_or(Value::Null);
    let generation = read_json(read, dir, "generation_config.json")?.unwrap_or(Value::Null);

    // The id -> text table over model and added tokens, which the ids size: refuse ids
    // past the bounds before allocating it.
    let vocab = inner.get_vocab(true);
    let limit = (2 * vocab.len() + VOCAB_GAP_ALLOWANCE).min(MAX_TOKEN_ID as usize + 1);
    if let Some((text, &id)) = vocab
        .iter()
        .filter(|(_, id)| **id as usize >= limit)
        .min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))
    {
        return Err(TokenizeError::TokenIdTooLarge {
            path: tj_path.clone(),
            token: text.clone(),
            id,
            tokens: vocab.len(),
            limit,
        });
    }
    let n = vocab.values().max().map_or(0, |&m| m as usize + 1);
    let mut tokens = vec![String::new(); n];
    for (text, &id) in &vocab {
        tokens[id as usize] = text.clone();
    }
    if let Some(post) = tj.get("post_processor") {
        check_post_processor(post, n).map_err(|problem| TokenizeError::PostProcessor {
            path: tj_path.clone(),
            problem,
        })?;
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
    // Ids outside the vocabulary are ignored, as llama.cpp ignores them in GGUF metadata.
    if special.eos.is_none() {
        special.eos = gen_eos.iter().copied().find(|&id| (id as usize) < n);
    }
    if special.bos.is_none() {
        special.bos = gen_ids("bos_token_id")
            .into_iter()
            .find(|&id| (id as usize) < n);
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

    let chat_template = chat_template(read, dir, &config)?;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A `tokenizer.json` of a BPE model with `vocab` and `added` tokens.
    fn tokenizer_json(vocab: Value, added: Value) -> String {
        serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
                "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": []},
        })
        .to_string()
    }

    /// A model directory with a small tokenizer and `files` beside it.
    fn dir_with(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let tj = tokenizer_json(serde_json::json!({"a": 0, "b": 1}), serde_json::json!([]));
        std::fs::write(dir.path().join("tokenizer.json"), tj).unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        dir
    }

    fn load_error(dir: &Path) -> String {
        build(dir).map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn unreadable_chat_templates_are_errors() {
        let dir = dir_with(&[("chat_template.jinja", b"{{ x }}\xff\xfe")]);
        let err = load_error(dir.path());
        assert!(err.contains("chat_template.jinja"), "{err}");
        assert!(err.contains("UTF-8"), "{err}");

        let dir = dir_with(&[("tokenizer_config.json", br#"{"chat_template": "{{ x }}"}"#)]);
        std::fs::create_dir(dir.path().join("chat_template.jinja")).unwrap();
        let err = load_error(dir.path());
        assert!(err.contains("chat_template.jinja"), "{err}");
        assert!(err.contains("directory"), "{err}");

        let dir = dir_with(&[("tokenizer_config.json", br#"{"chat_template": 5}"#)]);
        let err = load_error(dir.path());
        assert!(err.contains("tokenizer_config.json"), "{err}");
        assert!(err.contains("`chat_template` is 5"), "{err}");

        let dir = dir_with(&[(
            "tokenizer_config.json",
            br#"{"chat_template": [{"name": "default", "template": 7}]}"#,
        )]);
        let err = load_error(dir.path());
        assert!(err.contains("no string `template`"), "{err}");
    }

    #[test]
    fn absent_chat_templates_still_fall_back() {
        let dir = dir_with(&[]);
        assert_eq!(build(dir.path()).unwrap().chat_template(), None);
        let dir = dir_with(&[(
            "tokenizer_config.json",
            br#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#,
        )]);
        assert_eq!(build(dir.path()).unwrap().chat_template(), Some("D"));
        let dir = dir_with(&[
            ("tokenizer_config.json", br#"{"chat_template": "C"}"#),
            ("chat_template.jinja", b"J"),
        ]);
        assert_eq!(build(dir.path()).unwrap().chat_template(), Some("J"));
    }

    fn id_error(vocab: Value, added: Value) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tokenizer.json"),
            tokenizer_json(vocab, added),
        )
        .unwrap();
        load_error(dir.path())
    }

    #[test]
    fn huge_token_ids_are_refused() {
        for id in [2_000_000_000u32, 4_000_000_000] {
            let err = id_error(serde_json::json!({"a": 0, "b": id}), serde_json::json!([]));
            assert!(err.contains("tokenizer.json"), "{err}");
            assert!(err.contains(&format!("token \"b\" has id {id}")), "{err}");
        }
        // The `tokenizers` crate numbers a new added token after the vocabulary, whatever
        // id the file gives it; one that names a vocabulary token takes that token's id.
        let added = serde_json::json!([{"id": 4_000_000_000u32, "content": "<x>",
            "single_word": false, "lstrip": false, "rstrip": false, "normalized": false,
            "special": true}]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tokenizer.json"),
            tokenizer_json(serde_json::json!({"a": 0, "b": 1}), added),
        )
        .unwrap();
        let tk = build(dir.path()).unwrap();
        assert_eq!(tk.vocab_size(), 3);
        assert_eq!(tk.token_text(2), Some("<x>"));
        // A vocabulary with gaps, but not mostly gaps, loads.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tokenizer.json"),
            tokenizer_json(
                serde_json::json!({"a": 0, "b": 1000}),
                serde_json::json!([]),
            ),
        )
        .unwrap();
        assert_eq!(build(dir.path()).unwrap().vocab_size(), 1001);
    }

    /// The error of building from `tokenizer.json` text alone.
    fn error_of_text(text: &str) -> String {
        let read = |name: &str| Ok((name == "tokenizer.json").then(|| text.to_owned()));
        build_with(Path::new("fuzz"), &read)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn malformed_json_inside_the_decoder_is_an_error() {
        // Found by the `tokenizer_json` fuzz target: the `tokenizers` crate panicked on the
        // syntax error inside `decoder` ("Helper").
        let text = include_str!(
            "../../../tests/data/fuzz/tokenizer_json/crash-ce0a0f31d0312a1685b76d37409231b36f087a94"
        );
        let err = error_of_text(text);
        assert!(err.starts_with("parsing fuzz/tokenizer.json: "), "{err}");
        assert!(err.contains("expected `:`"), "{err}");
        let err = error_of_text(r#"{"decoder": {"type": "Fuse" "x"}}"#);
        assert!(err.starts_with("parsing fuzz/tokenizer.json: "), "{err}");
    }

    /// `tokenizer_json(...)` with `post_processor` set to `post`.
    fn with_post_processor(post: Value) -> String {
        let mut tj: Value = serde_json::from_str(&tokenizer_json(
            serde_json::json!({"a": 0, "b": 1, "<s>": 2}),
            serde_json::json!([]),
        ))
        .unwrap();
        tj["post_processor"] = post;
        tj.to_string()
    }

    #[test]
    fn post_processors_that_would_panic_are_errors() {
        // Found by the `tokenizer_json` fuzz target: a template naming a special token
        // that `special_tokens` lacks panicked in the `tokenizers` crate at the first encode.
        let text = include_str!(
            "../../../tests/data/fuzz/tokenizer_json/crash-16f3e462c2b7672f15b400b7a85aeb9c75c4f68f"
        );
        assert_eq!(
            error_of_text(text),
            "fuzz/tokenizer.json: `post_processor`: the `single` template names special token \
             \"<'d\", which `special_tokens` does not define"
        );
        let template = |single: Value, ids: Value, tokens: Value| {
            serde_json::json!({"type": "TemplateProcessing", "single": single,
                "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<s>": {"id": "<s>", "ids": ids, "tokens": tokens}}})
        };
        let bos_then_a = serde_json::json!([{"SpecialToken": {"id": "<s>", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}}]);
        let cases = [
            (
                template(
                    serde_json::json!([{"Sequence": {"id": "B", "type_id": 0}}]),
                    serde_json::json!([2]),
                    serde_json::json!(["<s>"]),
                ),
                "the `single` template uses sequence B",
            ),
            (
                template(
                    bos_then_a.clone(),
                    serde_json::json!([2, 2]),
                    serde_json::json!(["<s>"]),
                ),
                "special token \"<s>\" has 2 ids but 1 tokens",
            ),
            (
                template(
                    bos_then_a.clone(),
                    serde_json::json!([7]),
                    serde_json::json!(["<s>"]),
                ),
                "special token \"<s>\" has id 7, outside the vocabulary of 3 tokens",
            ),
            (
                serde_json::json!({"type": "Sequence", "processors": [
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                        "use_regex": true},
                    {"type": "BertProcessing", "sep": ["<s>", 2], "cls": ["a", 1000]}]}),
                "`cls` has id 1000, outside the vocabulary of 3 tokens",
            ),
        ];
        for (post, problem) in cases {
            let err = error_of_text(&with_post_processor(post));
            assert_eq!(
                err,
                format!("fuzz/tokenizer.json: `post_processor`: {problem}")
            );
        }
        // A well-formed template still loads and adds its token.
        let text = with_post_processor(template(
            bos_then_a,
            serde_json::json!([2]),
            serde_json::json!(["<s>"]),
        ));
        let read = |name: &str| Ok((name == "tokenizer.json").then(|| text.clone()));
        let tk = build_with(Path::new("fuzz"), &read).unwrap();
        assert_eq!(tk.encode("ab", true, true).unwrap(), vec![2, 0, 1]);
    }

    #[test]
    fn generation_config_ids_outside_the_vocabulary_are_ignored() {
        let dir = dir_with(&[(
            "generation_config.json",
            br#"{"bos_token_id": 4000000000, "eos_token_id": [3000000000, 1]}"#,
        )]);
        let tk = build(dir.path()).unwrap();
        assert_eq!(tk.special_ids().bos, None);
        assert_eq!(tk.special_ids().eos, Some(1));
    }
}
