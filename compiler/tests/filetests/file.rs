//! The layout of one file test: a header of directives and `;` comments, the input IR,
//! the separator line, and the expected output; reading it, and writing it back with a
//! new expected section (what blessing does).

/// The line between the input and the expected output. It starts with `;`, which neither
/// IR text form uses, so no input can contain it; the expected section is everything
/// after its first occurrence.
pub const SEPARATOR: &str = "; ---- expected ----";

/// A requirement on the output beyond equality with the expected section. Blessing
/// checks it too, so that a rewrite cannot silently drop what the file is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `check: TEXT`: the output contains `TEXT`.
    Contains(String),
    /// `check-not: TEXT`: the output does not contain `TEXT`.
    Absent(String),
}

impl Check {
    /// `None` when the output meets the requirement, else why not.
    pub fn failure(&self, output: &str) -> Option<String> {
        match self {
            Check::Contains(t) if !output.contains(t.as_str()) => {
                Some(format!("`check: {t}`: the output does not contain it"))
            }
            Check::Absent(t) if output.contains(t.as_str()) => {
                Some(format!("`check-not: {t}`: the output contains it"))
            }
            _ => None,
        }
    }
}

/// A parsed file test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestFile {
    /// The words of the `test` line after `test`: the command, then its options.
    pub command: Vec<String>,
    /// The line number (from 1) of the `test` line, for errors about the command.
    pub command_line: usize,
    pub checks: Vec<Check>,
    /// The input IR as the parser reads it: from the first line that is not part of
    /// the header up to the separator (or the end of the file).
    pub input: String,
    /// The line of the file (from 1) where the input starts: parse errors count lines
    /// from there.
    pub input_line: usize,
    /// Everything before the separator line, byte for byte: blessing keeps it as it is.
    pub head: String,
    /// The expected section; `None` when the file has no separator yet.
    pub expected: Option<String>,
}

/// Reads a file test. Errors are `LINE: message`.
pub fn parse(text: &str) -> Result<TestFile, String> {
    let (head, expected) = match find_separator(text) {
        Some(at) => {
            let rest = &text[at + SEPARATOR.len()..];
            let rest = rest.strip_prefix("\r\n").unwrap_or(rest);
            let rest = rest.strip_prefix('\n').unwrap_or(rest);
            (&text[..at], Some(rest.to_string()))
        }
        None => (text, None),
    };
    let mut command: Option<(Vec<String>, usize)> = None;
    let mut checks = Vec::new();
    let mut input_start = head.len();
    let mut input_line = head.lines().count() + 1;
    let mut offset = 0;
    for (n, line) in head.split_inclusive('\n').enumerate() {
        let number = n + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with(';') {
            offset += line.len();
            continue;
        }
        if let Some(rest) = t.strip_prefix("test ").or((t == "test").then_some("")) {
            if let Some((_, first)) = &command {
                return Err(format!(
                    "{number}: a second `test` line (the first is line {first}); a file tests one command"
                ));
            }
            let words: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
            if words.is_empty() {
                return Err(format!("{number}: `test` names no command"));
            }
            command = Some((words, number));
        } else if let Some(rest) = t.strip_prefix("check-not:") {
            checks.push(Check::Absent(non_empty(rest, number)?));
        } else if let Some(rest) = t.strip_prefix("check:") {
            checks.push(Check::Contains(non_empty(rest, number)?));
        } else {
            input_start = offset;
            input_line = number;
            break;
        }
        offset += line.len();
    }
    let Some((command, command_line)) = command else {
        return Err("1: no `test` line: the header names the command (`test pass cse`)".into());
    };
    let input = &head[input_start..];
    if input.trim().is_empty() {
        return Err(format!("{input_line}: no input after the header"));
    }
    Ok(TestFile {
        command,
        command_line,
        checks,
        input: input.to_string(),
        input_line,
        head: head.to_string(),
        expected,
    })
}

fn non_empty(rest: &str, number: usize) -> Result<String, String> {
    let t = rest.trim();
    if t.is_empty() {
        Err(format!("{number}: a check without text"))
    } else {
        Ok(t.to_string())
    }
}

/// The byte offset of the separator line, which must be a whole line.
fn find_separator(text: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == SEPARATOR {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

/// The form in which outputs are compared and written: trailing spaces of every line
/// and trailing blank lines dropped, one final newline. Editors that strip trailing
/// whitespace then leave a file test passing.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 1);
    for line in text.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let kept = out.trim_end().len();
    out.truncate(kept);
    out.push('\n');
    out
}

/// The file with `output` as its expected section: the head kept byte for byte (with one
/// blank line before the separator when it has none), then the separator and the output.
pub fn with_expected(file: &TestFile, output: &str) -> String {
    let mut text = file.head.clone();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    if !text.ends_with("\n\n") {
        text.push('\n');
    }
    text.push_str(SEPARATOR);
    text.push('\n');
    text.push_str(&normalize(output));
    text
}
