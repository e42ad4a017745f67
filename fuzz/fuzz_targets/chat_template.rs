//! Fuzz target: any bytes as a chat template must compile or fail with an error, and a
//! template that compiles renders a small fixed conversation or fails with an error,
//! within the bounds of `runtime/src/chat/bounds.rs`: never a panic, a hang or unbounded
//! memory. Run with `tools/fuzz.sh`.
#![no_main]

use archc_runtime::chat::{ChatTemplate, Message, MAX_VALUE_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(template) = ChatTemplate::new(source, "<s>", "</s>") else {
        return;
    };
    let messages = [
        Message::new("system", "Be brief."),
        Message::new("user", "What is 2 + 2?"),
        Message::new("assistant", "4"),
        Message::new("user", "Thanks! é 日本"),
    ];
    for add_generation_prompt in [true, false] {
        if let Ok(text) = template.render(&messages, add_generation_prompt) {
            assert!(text.len() <= MAX_VALUE_BYTES, "{} bytes", text.len());
        }
    }
});
