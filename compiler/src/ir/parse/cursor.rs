//! The reading position shared by the Graph IR and kernel IR parsers: byte offsets into
//! the text, whitespace and token helpers, a nesting-depth guard, and [`ParseError`] with
//! its `LINE:COL` position (computed only when an error is made, so reading stays cheap).

use std::fmt;

/// Why a text is not a valid IR text: where (1-based line and column, the column counted
/// in characters) and what was expected against what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

impl std::error::Error for ParseError {}

/// How deeply blocks and expressions may nest. Printed IR stays far below it; the bound
/// keeps hostile text from exhausting the stack of the parser or of any later pass that
/// walks the tree recursively.
pub(crate) const MAX_DEPTH: usize = 500;

/// A position in the text being parsed. Every advance stops on an ASCII byte or at the
/// end, so `pos` is always a character boundary.
#[derive(Debug)]
pub(crate) struct Cursor<'a> {
    pub text: &'a str,
    pub pos: usize,
    depth: usize,
}

pub(crate) type Result<T> = std::result::Result<T, ParseError>;

/// Bytes of identifiers: ASCII letters, digits and `_`.
pub(crate) fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl<'a> Cursor<'a> {
    pub fn new(text: &'a str) -> Cursor<'a> {
        Cursor {
            text,
            pos: 0,
            depth: 0,
        }
    }

    /// An error at byte offset `pos`.
    pub fn error_at(&self, pos: usize, message: impl Into<String>) -> ParseError {
        let mut pos = pos.min(self.text.len());
        while !self.text.is_char_boundary(pos) {
            pos -= 1;
        }
        let before = &self.text[..pos];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        ParseError {
            line: before.bytes().filter(|&b| b == b'\n').count() + 1,
            col: before[line_start..].chars().count() + 1,
            message: message.into(),
        }
    }

    /// An error at the current position.
    pub fn error(&self, message: impl Into<String>) -> ParseError {
        self.error_at(self.pos, message)
    }

    /// "expected `what`, found ..." at the next token.
    pub fn expected(&mut self, what: &str) -> ParseError {
        self.spaces();
        let found = self.found();
        self.error(format!("expected {what}, found {found}"))
    }

    /// What the next token is, for messages: `` `word` ``, `end of line` or `end of input`.
    pub fn found(&self) -> String {
        let rest = &self.text[self.pos..];
        let Some(first) = rest.chars().next() else {
            return "end of input".into();
        };
        if first == '\n' || rest.starts_with("\r\n") {
            return "end of line".into();
        }
        let word: String = if first.is_ascii_alphanumeric() || first == '_' {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .take(24)
                .collect()
        } else {
            first.to_string()
        };
        format!("`{}`", word.escape_debug())
    }

    pub fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    pub fn peek_at(&self, offset: usize) -> Option<u8> {
        self.text.as_bytes().get(self.pos + offset).copied()
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    pub fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    /// Skips spaces, tabs and carriage returns (never a newline).
    pub fn spaces(&mut self) {
        while let Some(b' ' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Whether only spaces remain before the end of the line or of the text.
    pub fn at_line_end(&mut self) -> bool {
        self.spaces();
        matches!(self.peek(), None | Some(b'\n'))
    }

    /// The end of the current line (spaces allowed before it).
    pub fn end_line(&mut self, after: &str) -> Result<()> {
        self.spaces();
        match self.peek() {
            None => Ok(()),
            Some(b'\n') => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(self.expected(&format!("the end of the line after {after}"))),
        }
    }

    /// Skips lines that hold only spaces.
    pub fn blank_lines(&mut self) {
        loop {
            let start = self.pos;
            self.spaces();
            if self.peek() == Some(b'\n') {
                self.pos += 1;
            } else {
                self.pos = start;
                return;
            }
        }
    }

    /// The rest of the current line, without its newline; the cursor stops on the newline.
    pub fn line_rest(&mut self) -> &'a str {
        let rest = self.rest();
        let end = rest.find('\n').unwrap_or(rest.len());
        self.pos += end;
        let line = &rest[..end];
        line.strip_suffix('\r').unwrap_or(line)
    }

    /// Consumes `s` if the text continues with it (no spaces skipped).
    pub fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    /// Consumes the word `w` if the text continues with it and no identifier byte follows.
    pub fn eat_word(&mut self, w: &str) -> bool {
        let rest = self.rest().as_bytes();
        if rest.starts_with(w.as_bytes()) && !rest.get(w.len()).copied().is_some_and(is_ident) {
            self.pos += w.len();
            true
        } else {
            false
        }
    }

    /// Skips spaces, then requires `s`.
    pub fn lit(&mut self, s: &str) -> Result<()> {
        self.spaces();
        if self.eat(s) {
            Ok(())
        } else {
            Err(self.expected(&format!("`{s}`")))
        }
    }

    /// Skips spaces, then requires the word `w`.
    pub fn word(&mut self, w: &str) -> Result<()> {
        self.spaces();
        if self.eat_word(w) {
            Ok(())
        } else {
            Err(self.expected(&format!("`{w}`")))
        }
    }

    /// The longest run of bytes satisfying `keep` (possibly empty).
    pub fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() && keep(bytes[self.pos]) {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    /// An identifier-like word (`[A-Za-z0-9_]+`), after spaces.
    pub fn ident(&mut self, what: &str) -> Result<&'a str> {
        self.spaces();
        let w = self.take_while(is_ident);
        if w.is_empty() {
            Err(self.expected(what))
        } else {
            Ok(w)
        }
    }

    /// An unsigned decimal number, after spaces.
    pub fn u64(&mut self, what: &str) -> Result<u64> {
        self.spaces();
        let start = self.pos;
        let digits = self.take_while(|b| b.is_ascii_digit());
        if digits.is_empty() {
            return Err(self.expected(what));
        }
        digits.parse::<u64>().map_err(|_| {
            self.error_at(start, format!("{what}: `{digits}` does not fit in 64 bits"))
        })
    }

    /// An unsigned decimal number that fits in 32 bits, after spaces.
    pub fn u32(&mut self, what: &str) -> Result<u32> {
        self.spaces();
        let start = self.pos;
        let n = self.u64(what)?;
        u32::try_from(n)
            .map_err(|_| self.error_at(start, format!("{what}: {n} does not fit in 32 bits")))
    }

    /// A float in Rust's text form (`0.125`, `1e-6`, `-inf`, `NaN`), after spaces.
    pub fn f64(&mut self, what: &str) -> Result<f64> {
        self.spaces();
        let start = self.pos;
        let tok = self.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'));
        if tok.is_empty() {
            return Err(self.expected(what));
        }
        tok.parse::<f64>()
            .map_err(|_| self.error_at(start, format!("expected {what}, found `{tok}`")))
    }

    /// Enters one level of nesting, refusing text nested deeper than [`MAX_DEPTH`].
    pub fn enter(&mut self) -> Result<()> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(format!("nested more than {MAX_DEPTH} levels deep")));
        }
        self.depth += 1;
        Ok(())
    }

    pub fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_point_at_lines_and_character_columns() {
        let c = Cursor::new("ab\nçd x\n");
        let e = c.error_at(7, "bad");
        assert_eq!((e.line, e.col), (2, 4));
        assert_eq!(e.to_string(), "2:4: bad");
        // An offset inside a multi-byte character is moved back to its start.
        let e = c.error_at(4, "bad");
        assert_eq!((e.line, e.col), (2, 1));
    }

    #[test]
    fn numbers_report_overflow() {
        let mut c = Cursor::new("99999999999999999999");
        let e = c.u64("a size").unwrap_err();
        assert_eq!(
            e.message,
            "a size: `99999999999999999999` does not fit in 64 bits"
        );
        let mut c = Cursor::new("4294967296");
        assert!(c.u32("a register").is_err());
    }

    #[test]
    fn depth_is_bounded() {
        let mut c = Cursor::new("");
        for _ in 0..MAX_DEPTH {
            c.enter().unwrap();
        }
        assert!(c.enter().is_err());
        c.leave();
        assert!(c.enter().is_ok());
    }
}
