//! Fuzz target: any bytes through parse, validate, diagnostics rendering and fmt must
//! never panic. Run with `tools/fuzz.sh`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data);
    match archc_spec::validate::check_source("fuzz.arch", &src) {
        Ok(spec) => {
            // A valid file prints back to a file with the same meaning.
            let text = archc_spec::print::to_arch(&spec);
            let _ = archc_spec::validate::check_source("printed.arch", &text);
        }
        Err(diags) => {
            let _ = archc_spec::diagnostics::render("fuzz.arch", &src, &diags);
        }
    }
    if let Ok(text) = archc_spec::fmt::format_source(&src) {
        let _ = archc_spec::fmt::format_source(&text);
    }
});
