//! Diagnostics: what went wrong, where (byte spans), and a hint, rendered for people as
//! `FILE:LINE:COL: error: message` followed by the source lines with carets.
//!
//! Rendering is plain text so snapshots and pipes see exactly what a terminal sees;
//! `render_colored` adds ANSI colour for terminals.

use crate::ast::Span;
use codespan_reporting::files::{Files, SimpleFile};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// A message attached to a span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

/// One problem in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    /// Where the problem is; its message says what is wrong right there.
    pub primary: Label,
    /// Other places that explain the problem ("first given here").
    pub secondary: Vec<Label>,
    /// How to fix it.
    pub hint: Option<String>,
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn error(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            primary: Label {
                span,
                message: String::new(),
            },
            secondary: Vec::new(),
            hint: None,
            notes: Vec::new(),
        }
    }

    pub fn warning(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(span, message)
        }
    }

    /// Sets the message under the primary span.
    pub fn label(mut self, message: impl Into<String>) -> Diagnostic {
        self.primary.message = message.into();
        self
    }

    pub fn secondary(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.secondary.push(Label {
            span,
            message: message.into(),
        });
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Renders diagnostics as plain text, in the order given, separated by blank lines.
pub fn render(file_name: &str, src: &str, diagnostics: &[Diagnostic]) -> String {
    render_impl(file_name, src, diagnostics, false)
}

/// Like [`render`], with ANSI colours for a terminal.
pub fn render_colored(file_name: &str, src: &str, diagnostics: &[Diagnostic]) -> String {
    render_impl(file_name, src, diagnostics, true)
}

fn render_impl(file_name: &str, src: &str, diagnostics: &[Diagnostic], color: bool) -> String {
    let file = SimpleFile::new(file_name, src);
    let mut out = String::new();
    for (i, d) in diagnostics.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_one(&file, src, d, color, &mut out);
    }
    out
}

/// Line (0-based), column (1-based, in characters) and the line's byte range.
fn locate(
    file: &SimpleFile<&str, &str>,
    src: &str,
    offset: usize,
) -> (usize, usize, std::ops::Range<usize>) {
    let offset = clamp_to_char(src, offset.min(src.len()));
    let line = file.line_index((), offset).unwrap_or(0);
    let range = file.line_range((), line).unwrap_or(0..src.len());
    let col = src[range.start..offset].chars().count() + 1;
    (line, col, range)
}

/// Moves a byte offset back to the nearest char boundary (spans from byte mutations
/// of the source may point into a multi-byte character).
fn clamp_to_char(src: &str, mut offset: usize) -> usize {
    while offset > 0 && !src.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

fn paint(text: &str, code: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn render_one(
    file: &SimpleFile<&str, &str>,
    src: &str,
    d: &Diagnostic,
    color: bool,
    out: &mut String,
) {
    let (line, col, _) = locate(file, src, d.primary.span.start);
    let (sev_code, mark) = match d.severity {
        Severity::Error => ("1;31", '^'),
        Severity::Warning => ("1;33", '^'),
    };
    out.push_str(&format!(
        "{}:{}:{}: {}: {}\n",
        file.name(),
        line + 1,
        col,
        paint(d.severity.as_str(), sev_code, color),
        paint(&d.message, "1", color)
    ));
    // Every label, primary first, shown in line order.
    let mut labels: Vec<(&Label, bool)> = vec![(&d.primary, true)];
    labels.extend(d.secondary.iter().map(|l| (l, false)));
    labels.sort_by_key(|(l, primary)| (l.span.start, !*primary));
    let last_line = labels
        .iter()
        .map(|(l, _)| locate(file, src, l.span.start).0 + 1)
        .max()
        .unwrap_or(1);
    let width = last_line.to_string().len();
    let gutter = format!("{} |", " ".repeat(width));
    out.push_str(&paint(&gutter, "1;34", color));
    out.push('\n');
    let mut previous_line: Option<usize> = None;
    for (label, primary) in labels {
        let (line, _, range) = locate(file, src, label.span.start);
        let text = src[range.clone()].trim_end_matches(['\n', '\r']);
        if let Some(prev) = previous_line {
            if line > prev + 1 {
                out.push_str(&paint("...", "1;34", color));
                out.push('\n');
            }
        }
        if previous_line != Some(line) {
            let number = format!("{:>width$} |", line + 1);
            out.push_str(&paint(&number, "1;34", color));
            if !text.is_empty() {
                out.push(' ');
                out.push_str(&text.replace('\t', " "));
            }
            out.push('\n');
        }
        previous_line = Some(line);
        let start = clamp_to_char(src, label.span.start.clamp(range.start, range.end));
        let line_end = range.start + text.len();
        let end = clamp_to_char(src, label.span.end.clamp(start, line_end.max(start)));
        let pad = src[range.start..start.min(line_end).max(range.start)]
            .chars()
            .count();
        let len = src[start..end.max(start)].chars().count().max(1);
        let marker = if primary { mark } else { '-' };
        let underline = marker.to_string().repeat(len);
        let code = if primary { sev_code } else { "1;34" };
        let mut row = format!(
            "{} {}{}",
            paint(&gutter, "1;34", color),
            " ".repeat(pad),
            paint(&underline, code, color)
        );
        if !label.message.is_empty() {
            row.push(' ');
            row.push_str(&paint(&label.message, code, color));
        }
        out.push_str(&row);
        out.push('\n');
    }
    let pad = " ".repeat(width);
    if let Some(hint) = &d.hint {
        out.push_str(&format!("{pad} = {} {hint}\n", paint("hint:", "1", color)));
    }
    for note in &d.notes {
        out.push_str(&format!("{pad} = {} {note}\n", paint("note:", "1", color)));
    }
}

/// The most diagnostics one file reports; a hostile file can have hundreds of thousands
/// of errors, and nobody reads past the first screenfuls.
pub const MAX_DIAGNOSTICS: usize = 100;

/// Keeps the first `MAX_DIAGNOSTICS` diagnostics and, when there were more, adds one that
/// says how many were left out, at the first of them.
pub(crate) fn cap(diags: &mut Vec<Diagnostic>) {
    if diags.len() <= MAX_DIAGNOSTICS {
        return;
    }
    let omitted = diags.len() - MAX_DIAGNOSTICS;
    let at = diags[MAX_DIAGNOSTICS].primary.span;
    diags.truncate(MAX_DIAGNOSTICS);
    diags.push(
        Diagnostic::error(at, format!("{omitted} more errors not shown"))
            .label("the first of them is here")
            .note(format!(
                "at most {MAX_DIAGNOSTICS} errors of a file are shown; fix these and check again"
            )),
    );
}

/// `a`, `a or b`, `a, b or c`.
pub(crate) fn one_of(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// The closest candidate to `word`, if one is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
