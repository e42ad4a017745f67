//! Detokenization: per-token byte pieces, llama.cpp's space clean-up, and a streaming
//! decoder that yields text only once its UTF-8 is complete.

use super::{PieceStyle, Result, TokenAttr, Tokenizer};

/// GPT-2's byte-to-unicode table: bytes that are printable stay themselves, the others map
/// to code points from U+0100 up, in byte order. Returns the inverse (char -> byte).
pub(crate) fn byte_level_inverse() -> std::collections::HashMap<char, u8> {
    let mut map = std::collections::HashMap::with_capacity(256);
    let mut next = 256u32;
    for b in 0u32..=255 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let c = if printable {
            b
        } else {
            let c = next;
            next += 1;
            c
        };
        if let Some(ch) = char::from_u32(c) {
            map.insert(ch, b as u8);
        }
    }
    map
}

/// The byte of a `<0xXX>` token.
pub(crate) fn hex_byte(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The bytes each token renders to (control tokens included), as llama.cpp's
/// `token_to_piece` with `special = true`.
pub(crate) fn pieces(tokens: &[String], attrs: &[TokenAttr], style: PieceStyle) -> Vec<Vec<u8>> {
    let inverse = byte_level_inverse();
    tokens
        .iter()
        .zip(attrs)
        .map(|(text, attr)| match attr {
            TokenAttr::Control | TokenAttr::Unknown | TokenAttr::UserDefined => {
                text.as_bytes().to_vec()
            }
            TokenAttr::Normal => match style {
                PieceStyle::ByteLevel => byte_level_decode(text, &inverse),
                PieceStyle::Metaspace => text.replace('\u{2581}', " ").into_bytes(),
                PieceStyle::Raw => text.as_bytes().to_vec(),
            },
            TokenAttr::Byte => match hex_byte(text) {
                Some(b) => vec![b],
                None => byte_level_decode(text, &inverse),
            },
            TokenAttr::Unused | TokenAttr::Undefined => Vec::new(),
        })
        .collect()
}

/// Map byte-level characters back to bytes. A character outside the table is written the way
/// llama.cpp writes it (`[UNK_BYTE_0x..]` followed by the token text), so output stays comparable.
fn byte_level_decode(text: &str, inverse: &std::collections::HashMap<char, u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for ch in text.chars() {
        match inverse.get(&ch) {
            Some(&b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in ch.encode_utf8(&mut buf).as_bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// llama.cpp's `clean_up_tokenization_spaces`: drop the space before `?!.,`, around a lone
/// `'`, and before the contractions `'s`, `'m`, `'re`, `'ve`. Written as llama.cpp's in-place
/// passes over one buffer, so edge cases (runs of quotes) come out the same.
pub(crate) fn clean_spaces(text: &[u8]) -> Vec<u8> {
    let mut t = text.to_vec();
    // First pass: " ?", " !", " .", " ,".
    let n = t.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = t[i];
        if t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        t[total] = x;
        total += 1;
    }
    // Second pass: " ' " becomes "'".
    let n = total;
    total = usize::from(n > 0);
    let mut i = 1;
    while i < n {
        let x = t[i];
        if x == b'\'' && i + 1 < n && t[i - 1] == b' ' && t[i + 1] == b' ' {
            total -= 1;
            i += 1;
            t[i] = 0;
        }
        t[total] = x;
        total += 1;
        i += 1;
    }
    // Third pass: " 's", " 'm", " 're", " 've".
    let n = total;
    total = usize::from(n > 0);
    for i in 1..n {
        let x = t[i];
        if t[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = t[i + 1];
            let contraction = matches!(x1, b's' | b'm')
                || (i + 2 < n && matches!((x1, t[i + 2]), (b'r', b'e') | (b'v', b'e')));
            if contraction {
                total -= 1;
            }
        }
        t[total] = x;
        total += 1;
    }
    t.truncate(total);
    t
}

/// Streaming detokenization: push ids as they are generated and get back the text whose
/// UTF-8 is complete; a character split across tokens comes out with its last byte.
///
/// Pieces are written as they are, as llama.cpp does while generating: a SentencePiece
/// token's leading space is kept (the stream continues a prompt), unlike
/// [`Tokenizer::decode_bytes`], which drops the space its encoder prefixed.
#[derive(Debug)]
pub struct Decoder<'t> {
    tokenizer: &'t Tokenizer,
    render_special: bool,
    pending: Vec<u8>,
}

impl<'t> Decoder<'t> {
    pub(crate) fn new(tokenizer: &'t Tokenizer, render_special: bool) -> Self {
        Self {
            tokenizer,
            render_special,
            pending: Vec::new(),
        }
    }

    /// Add one id; returns the text that became complete (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        let piece = self.tokenizer.token_piece(id, self.render_special)?;
        self.pending.extend_from_slice(piece);
        Ok(self.take_complete())
    }

    /// Bytes received but not yet returned (an incomplete UTF-8 sequence).
    pub fn pending_bytes(&self) -> &[u8] {
        &self.pending
    }

    /// End the stream: whatever is still pending comes out, invalid bytes as U+FFFD.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }

    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    // The prefix up to `valid` was just checked to be UTF-8.
                    out.push_str(&String::from_utf8_lossy(&self.pending[start..valid]));
                    match e.error_len() {
                        // An invalid sequence can never complete: replace it and go on.
                        Some(n) => {
                            out.push('\u{FFFD}');
                            start = valid + n;
                        }
                        // An incomplete sequence at the end: wait for more bytes.
                        None => {
                            start = valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_is_a_bijection() {
        let inv = byte_level_inverse();
        assert_eq!(inv.len(), 256);
        assert_eq!(inv[&'\u{120}'], b' ');
        assert_eq!(inv[&'\u{10A}'], b'\n');
        assert_eq!(inv[&'a'], b'a');
    }

    #[test]
    fn clean_spaces_matches_llama_cpp_rules() {
        assert_eq!(clean_spaces(b"a , b ?"), b"a, b?".to_vec());
        assert_eq!(
            clean_spaces(b"it 's we 're I 'll"),
            b"it's we're I 'll".to_vec()
        );
        assert_eq!(clean_spaces(b"a ' b"), b"a'b".to_vec());
    }

    #[test]
    fn hex_bytes() {
        assert_eq!(hex_byte("<0x0A>"), Some(10));
        assert_eq!(hex_byte("<0xZZ>"), None);
        assert_eq!(hex_byte("a"), None);
    }
}
