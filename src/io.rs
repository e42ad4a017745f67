//! The binary's own input and output: bounded reads of the `.arch` files a user names
//! (a bad byte is a located diagnostic, exit 1), and writes to stdout that report a full
//! disk or a closed pipe as an error of the verb (exit 2) instead of panicking.

use crate::failure::Failure;
use archc_spec::source::{decode, read_bounded, read_limited, MAX_SPEC_BYTES};
use std::io::Write;
use std::path::Path;

/// The text of the `.arch` file at `path`. A read error is exit 2 with `cannot read NAME:
/// why`; a file that is not UTF-8 has its diagnostic printed and is exit 1.
pub fn read_arch(path: &Path) -> Result<String, Failure> {
    let name = path.display().to_string();
    let bytes = read_bounded(path, MAX_SPEC_BYTES)
        .map_err(|e| Failure::new(format!("cannot read {name}: {e}")))?;
    decode_named(&name, bytes)
}

/// The `.arch` text on stdin, read as [`read_arch`] reads a file (shown as `<stdin>`).
pub fn read_arch_stdin() -> Result<String, Failure> {
    let bytes = read_limited(std::io::stdin().lock(), MAX_SPEC_BYTES, 0)
        .map_err(|e| Failure::new(format!("cannot read stdin: {e}")))?;
    decode_named("<stdin>", bytes)
}

fn decode_named(name: &str, bytes: Vec<u8>) -> Result<String, Failure> {
    decode(bytes).map_err(|(text, diag)| {
        crate::cmd::load::print_diagnostics(name, &text, &[diag]);
        Failure::invalid(format!("{name}: 1 error"))
    })
}

/// Writes `text` to stdout and flushes it.
pub fn print(text: &str) -> Result<(), Failure> {
    write_all(&mut std::io::stdout().lock(), text.as_bytes())
}

/// Writes `bytes` to `out` (stdout, in the binary) and flushes; a failure names stdout.
pub fn write_all(out: &mut impl Write, bytes: &[u8]) -> Result<(), Failure> {
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Failure::new(format!("cannot write to stdout: {e}")))
}
