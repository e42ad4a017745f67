//! Fuzz target: any bytes as an HF `tokenizer.json` (and, after a NUL byte, a
//! `tokenizer_config.json`) must build a tokenizer or fail with an error naming the file,
//! never panic or allocate without bound; a tokenizer that builds encodes and decodes a
//! fixed text, and every id it gives detokenizes. Run with `tools/fuzz.sh`.
#![no_main]

use archc_runtime::tokenize::Tokenizer;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

/// Text with spaces, digits, punctuation, multi-byte characters and chat markers.
const TEXT: &str = "Hello, world! 123 héllo  <|im_start|>user\n日本語 \u{2581}x\t<s></s>";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (tokenizer_json, config) = match text.split_once('\0') {
        Some((t, c)) => (t, Some(c)),
        None => (text, None),
    };
    let files = |name: &str| -> std::io::Result<Option<String>> {
        Ok(match name {
            "tokenizer.json" => Some(tokenizer_json.to_owned()),
            "tokenizer_config.json" => config.map(str::to_owned),
            _ => None,
        })
    };
    let tokenizer = match Tokenizer::from_hf_files(Path::new("fuzz"), &files) {
        Ok(t) => t,
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("fuzz"),
                "the error names no file: {message}"
            );
            return;
        }
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
        let mut stream = tokenizer.decoder(false);
        for &id in &ids {
            let _ = stream.push(id);
        }
        let _ = stream.finish();
    }
    let _ = tokenizer.decode(&[0, 1, u32::MAX], false, true);
});
