//! Fuzz target: any bytes as a GGUF file (when they start with its magic) or as a JSON
//! extract of its `tokenizer.*` metadata must build a tokenizer or fail with an error,
//! never panic or allocate without bound; a tokenizer that builds encodes and decodes a
//! fixed text. Run with `tools/fuzz.sh`.
#![no_main]

use archc_runtime::tokenize::{Tokenizer, TokenizerMetadata};
use archc_runtime::weights::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

/// Text with spaces, digits, punctuation, multi-byte characters and chat markers.
const TEXT: &str = "Hello, world! 123 héllo  <|im_start|>user\n日本語 \u{2581}x\t<s></s>";

fuzz_target!(|data: &[u8]| {
    let built = if data.starts_with(b"GGUF") {
        let Ok(file) = GgufFile::from_bytes(Path::new("fuzz.gguf"), data.to_vec()) else {
            return;
        };
        Tokenizer::from_gguf(&file)
    } else {
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
            return;
        };
        TokenizerMetadata::from_json(&json).and_then(|m| Tokenizer::from_gguf_metadata(&m))
    };
    let Ok(tokenizer) = built else {
        return;
    };
    for (add_special, parse_special) in [(true, true), (false, false)] {
        let Ok(ids) = tokenizer.encode(TEXT, add_special, parse_special) else {
            continue;
        };
        for &id in &ids {
            assert!(
                tokenizer.token_piece(id, true).is_ok(),
                "encode gave id {id} outside a vocabulary of {}",
                tokenizer.vocab_size()
            );
        }
        let _ = tokenizer.decode(&ids, true, false);
        let mut stream = tokenizer.decoder(true);
        for &id in &ids {
            let _ = stream.push(id);
        }
        let _ = stream.finish();
    }
});
