//! Tokenizer and chat-template tests: SmolLM2's GGUF tokenizer (built from a committed
//! metadata extract) against llama.cpp's recorded tokenization, detokenization and chat
//! prompts; chat-template snapshots; streaming decode of characters split across tokens;
//! and the SentencePiece (`llama`) and `tokenizer.json` paths on small hand-built vocabularies.

use std::path::{Path, PathBuf};

use archc_runtime::chat::{ChatTemplate, Conversation, Message};
use archc_runtime::tokenize::{TokenAttr, Tokenizer, TokenizerKind, TokenizerMetadata};
use serde_json::Value;

fn data_dir(suite: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
        .join(suite)
}

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn smollm2() -> Tokenizer {
    let meta = read_json(&data_dir("tokenize").join("smollm2_tokenizer.json"));
    let meta = TokenizerMetadata::from_json(&meta).expect("metadata extract parses");
    Tokenizer::from_gguf_metadata(&meta).expect("SmolLM2 tokenizer builds")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an id list")
        .iter()
        .map(|x| u32::try_from(x.as_u64().expect("an id")).expect("id fits u32"))
        .collect()
}

fn opt_id(v: &Value) -> Option<u32> {
    v.as_u64().map(|x| u32::try_from(x).expect("id fits u32"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn snapshot(name: &str, text: &str) {
    insta::with_settings!({snapshot_path => data_dir("tokenize"), prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn smollm2_special_tokens_match_llama_cpp() {
    let tk = smollm2();
    let reference = read_json(&data_dir("llamacpp").join("smollm2_tokenize.json"));
    let special = &reference["special"];
    assert_eq!(tk.kind(), TokenizerKind::Bpe);
    assert_eq!(tk.vocab_size(), 49152);
    assert_eq!(tk.special_ids().bos, opt_id(&special["bos"]));
    assert_eq!(tk.special_ids().eos, opt_id(&special["eos"]));
    // llama.cpp picks the end-of-turn token by scanning a hash map for known texts, so with
    // both `<|endoftext|>` and `<|im_end|>` present its pick is arbitrary; archc prefers the
    // chat one. Both are end-of-generation tokens either way.
    assert_eq!(tk.special_ids().eot, Some(2));
    let llama_eot = opt_id(&special["eot"]).expect("llama.cpp has an EOT");
    assert!(tk.is_eog(llama_eot));
    assert_eq!(tk.special_ids().pad, opt_id(&special["pad"]));
    assert_eq!(Some(tk.add_bos()), special["add_bos"].as_bool());
    assert_eq!(Some(tk.add_eos()), special["add_eos"].as_bool());
    let eog: Vec<u32> = tk.eog_ids().iter().copied().collect();
    assert_eq!(eog, ids(&special["eog"]), "end-of-generation ids");
    assert_eq!(tk.token_attr(1), Some(TokenAttr::Control));
    assert_eq!(tk.token_text(2), Some("<|im_end|>"));
    assert!(tk.is_eog(2) && !tk.is_eog(1));
}

#[test]
fn smollm2_tokenization_matches_llama_cpp() {
    let tk = smollm2();
    let reference = read_json(&data_dir("llamacpp").join("smollm2_tokenize.json"));
    let cases = reference["cases"].as_array().expect("cases");
    assert!(cases.len() >= 25, "the reference covers a varied text set");
    let mut mismatches = Vec::new();
    for case in cases {
        let text = case["text"].as_str().expect("text");
        for add in [false, true] {
            for parse in [false, true] {
                let key = format!("ids_add{}_parse{}", u8::from(add), u8::from(parse));
                let expected = ids(&case[&key]);
                let got = tk.encode(text, add, parse).expect("encode");
                if got != expected {
                    mismatches.push(format!(
                        "{text:?} {key}:\n  llama.cpp {expected:?}\n  archc     {got:?}"
                    ));
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn smollm2_detokenization_matches_llama_cpp() {
    let tk = smollm2();
    let reference = read_json(&data_dir("llamacpp").join("smollm2_tokenize.json"));
    for case in reference["cases"].as_array().expect("cases") {
        let text = case["text"].as_str().expect("text");
        let all = ids(&case["ids_add1_parse1"]);
        let plain = tk.decode_bytes(&all, true, false).expect("decode");
        assert_eq!(
            hex(&plain),
            case["detok_remove1_render0_hex"].as_str().expect("hex"),
            "{text:?}: detokenize without special tokens"
        );
        let rendered = tk.decode_bytes(&all, false, true).expect("decode");
        assert_eq!(
            hex(&rendered),
            case["detok_remove0_render1_hex"].as_str().expect("hex"),
            "{text:?}: detokenize rendering special tokens"
        );
        // Byte-level BPE is lossless: tokenizing special text as plain text decodes back.
        let ids = tk.encode(text, false, false).expect("encode");
        assert_eq!(tk.decode(&ids, false, true).expect("decode"), text);
    }
}

#[test]
fn smollm2_chat_prompts_match_llama_cpp_reference() {
    let tk = smollm2();
    let template = ChatTemplate::from_tokenizer(&tk)
        .expect("template compiles")
        .expect("SmolLM2 ships a chat template");
    let reference = read_json(&data_dir("llamacpp").join("smollm2_greedy.json"));
    let runs = reference["runs"].as_array().expect("runs");
    assert!(runs.len() >= 5);
    let mut chat_runs = 0;
    for run in runs {
        let name = run["name"].as_str().expect("name");
        let text = run["prompt_text"].as_str().expect("prompt text");
        let expected = ids(&run["prompt_ids"]);
        if run["chat"].as_bool() == Some(true) {
            chat_runs += 1;
            let messages: Vec<Message> =
                serde_json::from_value(run["messages"].clone()).expect("messages");
            let rendered = template.render(&messages, true).expect("render");
            assert_eq!(rendered, text, "{name}: chat template rendering");
            assert_eq!(
                tk.encode(&rendered, true, true).expect("encode"),
                expected,
                "{name}"
            );
        } else {
            assert_eq!(
                tk.encode(text, true, false).expect("encode"),
                expected,
                "{name}"
            );
        }
        // Every generated id decodes, and the streaming decoder agrees with whole decoding.
        let generated = ids(&run["generated_ids"]);
        let whole = tk.decode(&generated, false, true).expect("decode");
        let mut dec = tk.decoder(true);
        let mut streamed = String::new();
        for &id in &generated {
            streamed.push_str(&dec.push(id).expect("push"));
        }
        streamed.push_str(&dec.finish());
        assert_eq!(streamed, whole, "{name}: streaming decode");
    }
    assert!(chat_runs >= 3);
}

/// Chat rendering snapshots: each `chat_*.json` under tests/data/tokenize/ is a conversation
/// (`messages`, `add_generation_prompt`) rendered with SmolLM2's template.
#[test]
fn chat_template_snapshots() {
    let tk = smollm2();
    let template = ChatTemplate::from_tokenizer(&tk)
        .expect("template compiles")
        .expect("SmolLM2 ships a chat template");
    let dir = data_dir("tokenize");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/data/tokenize")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("chat_"))
        })
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 3, "chat snapshot inputs");
    for path in inputs {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_owned();
        let input = read_json(&path);
        let messages: Vec<Message> =
            serde_json::from_value(input["messages"].clone()).expect("messages");
        let add = input["add_generation_prompt"].as_bool().unwrap_or(true);
        let rendered = template.render(&messages, add).expect("render");
        let ids = tk.encode(&rendered, true, true).expect("encode");
        let text = format!("{rendered}\n---\n{} ids: {ids:?}\n", ids.len());
        snapshot(&name, &text);
    }
}

#[test]
fn conversation_accumulates_turns() {
    let tk = smollm2();
    let template = ChatTemplate::from_tokenizer(&tk).unwrap().unwrap();
    let mut conv = Conversation::with_system("Be brief.");
    conv.user("Hi");
    let first = conv.prompt(&template).unwrap();
    assert!(first.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"));
    conv.assistant("Hello!").user("Bye");
    let second = conv.prompt(&template).unwrap();
    assert!(second.starts_with(&conv.transcript(&template).unwrap()));
    assert!(second.starts_with("<|im_start|>system\nBe brief.<|im_end|>\n"));
    assert_eq!(second.matches("<|im_start|>").count(), 5);
}

#[test]
fn streaming_decoder_holds_back_split_characters() {
    let tk = smollm2();
    // Characters that SmolLM2's vocabulary spells with more than one token each.
    let text = "日本語 😀👍🏽 한국어";
    let ids = tk.encode(text, false, false).unwrap();
    let mut dec = tk.decoder(false);
    let mut out = String::new();
    let mut held = 0;
    for &id in &ids {
        let piece = dec.push(id).unwrap();
        if piece.is_empty() && !dec.pending_bytes().is_empty() {
            held += 1;
        }
        out.push_str(&piece);
    }
    assert!(held > 0, "some token ended inside a character: {ids:?}");
    assert!(dec.pending_bytes().is_empty());
    out.push_str(&dec.finish());
    assert_eq!(out, text);

    // A stream cut inside a character flushes it as U+FFFD at the end.
    let emoji = tk.encode("😀", false, false).unwrap();
    assert!(emoji.len() > 1, "😀 is several byte tokens: {emoji:?}");
    let mut dec = tk.decoder(false);
    assert_eq!(dec.push(emoji[0]).unwrap(), "");
    assert_eq!(dec.finish(), "\u{FFFD}");
}

#[test]
fn bad_ids_are_errors() {
    let tk = smollm2();
    let err = tk.decode(&[49152], false, false).unwrap_err().to_string();
    assert!(err.contains("49152") && err.contains("outside"), "{err}");
    let mut dec = tk.decoder(false);
    assert!(dec.push(u32::MAX).is_err());
}

/// A small SentencePiece vocabulary: `<unk> <s> </s>`, 256 byte tokens, then pieces with scores.
fn tiny_spm(add_space_prefix: Option<bool>) -> Tokenizer {
    let mut tokens = vec!["<unk>".to_owned(), "<s>".to_owned(), "</s>".to_owned()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0f32, 0.0, 0.0];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    let pieces = [
        ("▁", -1.0),
        ("h", -2.0),
        ("e", -2.0),
        ("l", -2.0),
        ("o", -2.0),
        ("w", -2.0),
        ("r", -2.0),
        ("d", -2.0),
        ("he", -3.0),
        ("ll", -3.5),
        ("hell", -4.0),
        ("hello", -4.5),
        ("▁hello", -5.0),
        ("▁w", -6.0),
        ("or", -6.5),
        ("▁wor", -7.0),
        ("▁world", -7.5),
        ("ld", -8.0),
        ("wor", -9.0),
    ];
    for (p, s) in pieces {
        tokens.push(p.to_owned());
        types.push(1);
        scores.push(s);
    }
    let meta = TokenizerMetadata {
        model: "llama".to_owned(),
        tokens,
        token_types: Some(types),
        scores: Some(scores),
        add_space_prefix,
        ..TokenizerMetadata::default()
    };
    Tokenizer::from_gguf_metadata(&meta).expect("tiny SentencePiece tokenizer builds")
}

#[test]
fn sentencepiece_space_prefix_byte_fallback_and_bos() {
    let tk = tiny_spm(None);
    assert_eq!(tk.kind(), TokenizerKind::Spm);
    let id = |t: &str| tk.token_id(t).unwrap();
    // BOS is added by default, a space is prefixed, spaces become ▁.
    let got = tk.encode("hello world", true, false).unwrap();
    assert_eq!(got, vec![1, id("▁hello"), id("▁world")]);
    // Characters outside the vocabulary fall back to their UTF-8 bytes.
    let got = tk.encode("hello 日", false, false).unwrap();
    assert_eq!(
        got,
        vec![
            id("▁hello"),
            id("▁"),
            id("<0xE6>"),
            id("<0x97>"),
            id("<0xA5>")
        ]
    );
    // Decoding drops the prefixed space and renders bytes. As in llama.cpp, removing a
    // leading BOS keeps the space (llama_detokenize clears its strip flag in that case).
    assert_eq!(
        tk.decode(&[id("▁hello"), id("▁world")], false, false)
            .unwrap(),
        "hello world"
    );
    assert_eq!(
        tk.decode(&[1, id("▁hello"), id("▁world")], true, false)
            .unwrap(),
        " hello world"
    );
    assert_eq!(
        tk.decode(&[1, id("▁hello")], false, true).unwrap(),
        "<s> hello"
    );
    assert_eq!(tk.decode(&got, false, false).unwrap(), "hello 日");
    // `<s>` in text is a control token only when special tokens are parsed; text after a
    // special token gets a space prefix again.
    let parsed = tk.encode("<s>hello", false, true).unwrap();
    assert_eq!(parsed, vec![1, id("▁hello")]);
    let unparsed = tk.encode("<s>", false, false).unwrap();
    assert!(!unparsed.contains(&1), "{unparsed:?}");
    // The streaming decoder holds the three bytes of 日 until the last one arrives.
    // Streaming keeps every piece's space: the stream continues a prompt.
    let mut dec = tk.decoder(false);
    assert_eq!(dec.push(id("▁hello")).unwrap(), " hello");
    assert_eq!(dec.push(id("▁")).unwrap(), " ");
    assert_eq!(dec.push(id("<0xE6>")).unwrap(), "");
    assert_eq!(dec.push(id("<0x97>")).unwrap(), "");
    assert_eq!(dec.push(id("<0xA5>")).unwrap(), "日");

    let no_prefix = tiny_spm(Some(false));
    assert_eq!(
        no_prefix.encode("hello", false, false).unwrap(),
        vec![no_prefix.token_id("hello").unwrap()]
    );
}

#[test]
fn metadata_errors_name_the_key() {
    let err = TokenizerMetadata::from_json(&serde_json::json!({"tokenizer.ggml.model": "gpt2"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer.ggml.tokens"), "{err}");
    let err = TokenizerMetadata::from_json(&serde_json::json!({
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": ["a", 3],
    }))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("tokenizer.ggml.tokens") && err.contains("3"),
        "{err}"
    );
    let meta = TokenizerMetadata {
        model: "gpt2".to_owned(),
        pre: Some("no-such-pre".to_owned()),
        tokens: vec!["a".to_owned()],
        merges: Some(Vec::new()),
        ..TokenizerMetadata::default()
    };
    let err = Tokenizer::from_gguf_metadata(&meta)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-pre"), "{err}");
    let meta = TokenizerMetadata {
        model: "wordpiece".to_owned(),
        tokens: vec!["a".to_owned()],
        ..TokenizerMetadata::default()
    };
    let err = Tokenizer::from_gguf_metadata(&meta)
        .unwrap_err()
        .to_string();
    assert!(err.contains("wordpiece"), "{err}");
}

/// An HF directory whose tokenizer.json is written from the SmolLM2 metadata the way HF
/// describes that tokenizer (digits split, byte-level BPE); it must tokenize like the GGUF path.
#[test]
fn hf_dir_matches_gguf_path() {
    let meta = read_json(&data_dir("tokenize").join("smollm2_tokenizer.json"));
    let tokens: Vec<&str> = meta["tokenizer.ggml.tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| ((*t).to_owned(), Value::from(i)))
        .collect();
    let added: Vec<Value> = tokens
        .iter()
        .enumerate()
        .take(17)
        .map(|(i, t)| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer_json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": meta["tokenizer.ggml.merges"]},
    });
    let config = serde_json::json!({
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "chat_template": meta["tokenizer.chat_template"],
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokenizer.json"),
        tokenizer_json.to_string(),
    )
    .unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    let hf = Tokenizer::from_hf_dir(dir.path()).expect("HF tokenizer loads");
    assert_eq!(hf.kind(), TokenizerKind::HfJson);
    assert_eq!(hf.special_ids().eos, Some(2));
    assert!(!hf.add_bos());
    assert!(hf.chat_template().is_some());
    let gguf = smollm2();
    let reference = read_json(&data_dir("llamacpp").join("smollm2_tokenize.json"));
    for case in reference["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        for parse in [false, true] {
            assert_eq!(
                hf.encode(text, false, parse).unwrap(),
                gguf.encode(text, false, parse).unwrap(),
                "{text:?} parse_special={parse}"
            );
        }
        let ids = gguf.encode(text, false, true).unwrap();
        assert_eq!(
            hf.decode(&ids, false, true).unwrap(),
            gguf.decode(&ids, false, true).unwrap()
        );
    }
}

/// Write a metadata-only GGUF (version 3, no tensors) holding the JSON extract's keys with
/// the types SmolLM2's file uses.
fn gguf_image(meta: &Value) -> Vec<u8> {
    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let obj = meta.as_object().unwrap();
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(obj.len() as u64).to_le_bytes());
    for (key, value) in obj {
        put_str(&mut out, key);
        match value {
            Value::String(s) => {
                out.extend_from_slice(&8u32.to_le_bytes());
                put_str(&mut out, s);
            }
            Value::Bool(b) => {
                out.extend_from_slice(&7u32.to_le_bytes());
                out.push(u8::from(*b));
            }
            Value::Number(n) => {
                out.extend_from_slice(&4u32.to_le_bytes());
                out.extend_from_slice(&(n.as_u64().unwrap() as u32).to_le_bytes());
            }
            Value::Array(items) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                let strings = items.first().is_some_and(Value::is_string);
                out.extend_from_slice(&(if strings { 8u32 } else { 5u32 }).to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for item in items {
                    match item {
                        Value::String(s) => put_str(&mut out, s),
                        other => {
                            out.extend_from_slice(&(other.as_i64().unwrap() as i32).to_le_bytes())
                        }
                    }
                }
            }
            other => panic!("unexpected metadata value {other}"),
        }
    }
    while out.len() % 32 != 0 {
        out.push(0);
    }
    out
}

#[test]
fn gguf_file_metadata_builds_the_same_tokenizer() {
    let meta = read_json(&data_dir("tokenize").join("smollm2_tokenizer.json"));
    let file = archc_runtime::weights::gguf::GgufFile::from_bytes(
        Path::new("smollm2-tokenizer-only.gguf"),
        gguf_image(&meta),
    )
    .expect("metadata-only GGUF parses");
    let from_file = TokenizerMetadata::from_gguf(file.metadata()).expect("metadata reads");
    let from_json = TokenizerMetadata::from_json(&meta).unwrap();
    assert_eq!(from_file, from_json);
    let tk = Tokenizer::from_gguf(&file).expect("tokenizer builds from the file");
    assert_eq!(
        tk.encode("Hello 123 <|im_end|>", false, true).unwrap(),
        smollm2()
            .encode("Hello 123 <|im_end|>", false, true)
            .unwrap()
    );
}
