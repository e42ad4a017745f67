//! Reading text inputs that a user names (a `.arch` file, a `config.json`): bounded in size,
//! refused when they are not plain readable things, and decoded as UTF-8 with the place of
//! the first bad byte, so `archc check /dev/zero` stops at the bound instead of reading
//! gigabytes and a Latin-1 `.arch` gets a located diagnostic instead of an I/O error.

use crate::ast::Span;
use crate::diagnostics::Diagnostic;
use std::io::Read;
use std::path::Path;

/// The largest `.arch` source archc reads: far above any real spec (the largest shipped
/// example is a few kilobytes), far below what would strain memory.
pub const MAX_SPEC_BYTES: u64 = 16 << 20;

/// The largest JSON side file (`config.json`, `tokenizer_config.json`, an index) archc reads.
pub const MAX_JSON_BYTES: u64 = 64 << 20;

/// Why a text input could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The operating system refused (missing file, no permission, a directory).
    Io(std::io::Error),
    /// More than `limit` bytes: a device such as `/dev/zero`, or not a text file at all.
    TooLarge { limit: u64 },
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::TooLarge { limit } => write!(
                f,
                "larger than {} MiB, the most archc reads of a text input",
                limit >> 20
            ),
        }
    }
}

impl std::error::Error for ReadError {}

/// Reads at most `limit` bytes of `path`; a directory, or more bytes than `limit`, is an
/// error. FIFOs and character devices are read (`archc check <(gen)` is a pipe), but only
/// up to the bound.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if meta.is_dir() {
        return Err(ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "is a directory",
        )));
    }
    let hint = if meta.is_file() { meta.len() } else { 0 };
    read_limited(file, limit, hint)
}

/// Reads `reader` to its end, refusing more than `limit` bytes; `hint` is the expected
/// size (reserved up front, never beyond `limit`).
pub fn read_limited(reader: impl Read, limit: u64, hint: u64) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::with_capacity(hint.min(limit) as usize);
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(bytes)
}

/// `bytes` as text, or the text with U+FFFD in place of each bad sequence and a diagnostic
/// that points at the first one (its line and column are those of the replaced text,
/// which agree with the bytes up to that point).
#[allow(clippy::result_large_err)]
pub fn decode(bytes: Vec<u8>) -> Result<String, (String, Diagnostic)> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let bad_len = match String::from_utf8(bytes[at..].to_vec()) {
                Err(rest) => rest.utf8_error().error_len().unwrap_or(bytes.len() - at),
                Ok(_) => 1,
            };
            let shown: Vec<String> = bytes[at..at + bad_len]
                .iter()
                .map(|b| format!("0x{b:02x}"))
                .collect();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            // In the lossy text the bad bytes became one U+FFFD (3 bytes) at the same offset.
            let diag = Diagnostic::error(
                Span::new(at, at + '\u{fffd}'.len_utf8()),
                format!(
                    "the file is not UTF-8: byte {} at offset {at}",
                    shown.join(" ")
                ),
            )
            .label("not valid UTF-8")
            .hint("save the file as UTF-8");
            Err((text, diag))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bytes_are_located_on_their_line() {
        let (text, diag) = decode(b"model x {\n  layers = 2 \xff\xfe\n}".to_vec()).unwrap_err();
        let shown = crate::diagnostics::render("x.arch", &text, &[diag]);
        assert!(shown.starts_with("x.arch:2:14: error: the file is not UTF-8: byte 0xff"));
        assert_eq!(decode(b"ok \xc3\xa9".to_vec()).unwrap(), "ok é");
    }

    #[test]
    fn reads_stop_at_the_bound() {
        let dir = std::env::temp_dir().join(format!("archc-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("big.arch");
        std::fs::write(&file, vec![b' '; 100]).unwrap();
        assert_eq!(read_bounded(&file, 100).unwrap().len(), 100);
        assert!(matches!(
            read_bounded(&file, 99),
            Err(ReadError::TooLarge { limit: 99 })
        ));
        let e = read_bounded(&dir, 99).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        if Path::new("/dev/zero").exists() {
            let e = read_bounded(Path::new("/dev/zero"), 1 << 20).unwrap_err();
            assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
