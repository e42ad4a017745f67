//! `archc fmt`: prints an AST in the canonical layout: two-space indent, one entry per
//! line with `=` aligned within a run of consecutive assignments, trailing comments
//! aligned within a run of consecutive commented lines (see `write_lines`), comments and
//! single blank lines kept, numbers as written. Short bodies without comments or sections
//! (`rmsnorm { eps = 1e-6 }`, `mlp { hidden = 3072 }`) stay on one line, and so does a
//! schedule of one entry (`schedule { repeat [local * 5, global] }`).
//! grammar/LANGUAGE.md ("Layout") states the rules for users.
//!
//! **Invariant:** `format(format(x)) == format(x)`, and `format(x)` parses to the same
//! `Spec` as `x` (both tested over every example).

use crate::ast::*;
use crate::diagnostics::Diagnostic;

/// Widest line an inline body may make.
const WIDTH: usize = 80;
/// A section with more entries than this is written on several lines.
const INLINE_SECTION_ENTRIES: usize = 3;

/// Parses and formats source text.
pub fn format_source(src: &str) -> Result<String, Vec<Diagnostic>> {
    Ok(format_file(&crate::parse::parse(src)?))
}

/// Formats a parsed file.
pub fn format_file(file: &File) -> String {
    let mut out = String::new();
    for (i, item) in file.items.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        for c in &item.trivia.leading {
            out.push_str(&c.text);
            out.push('\n');
        }
        match &item.kind {
            ItemKind::Model { name, body, .. } => {
                out.push_str(&format!("model \"{name}\" "));
                item_body(body, &mut out);
            }
            ItemKind::Block {
                name, parent, body, ..
            } => {
                out.push_str("block ");
                if let Some(n) = name {
                    out.push_str(&n.name);
                    if let Some(p) = parent {
                        out.push_str(" : ");
                        out.push_str(&p.name);
                    }
                    out.push(' ');
                }
                item_body(body, &mut out);
            }
            ItemKind::Schedule { body, .. } => {
                out.push_str("schedule ");
                schedule_body(body, &mut out);
            }
        }
        trailing(&item.trivia, &mut out);
        out.push('\n');
    }
    if !file.trailing_comments.is_empty() {
        if !file.items.is_empty() {
            out.push('\n');
        }
        for c in &file.trailing_comments {
            out.push_str(&c.text);
            out.push('\n');
        }
    }
    out
}

fn trailing(trivia: &Trivia, out: &mut String) {
    if let Some(c) = &trivia.trailing {
        out.push_str(&" ".repeat(COMMENT_GAP));
        out.push_str(&c.text);
    }
}

/// Spaces between code and a trailing comment, at least.
const COMMENT_GAP: usize = 2;

/// One entry of a body as it is written: its leading comments, its code (several lines
/// for a section or value written out) and its trailing comment.
struct Line<'a> {
    code: String,
    trivia: &'a Trivia,
}

impl<'a> Line<'a> {
    fn new(code: String, trivia: &'a Trivia) -> Line<'a> {
        Line { code, trivia }
    }

    /// Whether the entry takes part in aligning trailing comments: one line of code
    /// with a comment after it.
    fn aligns(&self) -> bool {
        self.trivia.trailing.is_some() && !self.code.contains('\n')
    }

    /// Whether the entry continues the comment run of the entry before it: nothing is
    /// written between them, neither a blank line nor a comment line.
    fn continues_run(&self) -> bool {
        self.aligns() && !self.trivia.blank_before && self.trivia.leading.is_empty()
    }
}

/// Writes the entries of a body at `indent`. Trailing comments are aligned the way gofmt
/// aligns them: a run of consecutive one-line entries with trailing comments puts every
/// comment of the run at one column, `COMMENT_GAP` spaces after the longest code of the
/// run; a blank line, a comment line, an entry without a trailing comment or one written
/// over several lines ends the run.
fn write_lines(lines: &[Line], indent: usize, out: &mut String) {
    let mut columns = vec![0usize; lines.len()];
    let mut i = 0;
    while i < lines.len() {
        let mut j = i;
        if lines[i].aligns() {
            while j + 1 < lines.len() && lines[j + 1].continues_run() {
                j += 1;
            }
            let widest = (i..=j).map(|k| lines[k].code.chars().count()).max();
            for slot in &mut columns[i..=j] {
                *slot = widest.unwrap_or(0) + COMMENT_GAP;
            }
        }
        i = j + 1;
    }
    for (k, line) in lines.iter().enumerate() {
        if k > 0 && line.trivia.blank_before {
            out.push('\n');
        }
        for c in &line.trivia.leading {
            out.push_str(&pad(indent));
            out.push_str(&c.text);
            out.push('\n');
        }
        out.push_str(&pad(indent));
        out.push_str(&line.code);
        if let Some(c) = &line.trivia.trailing {
            let gap = if line.aligns() {
                columns[k] - line.code.chars().count()
            } else {
                COMMENT_GAP
            };
            out.push_str(&" ".repeat(gap));
            out.push_str(&c.text);
        }
        out.push('\n');
    }
}

fn item_body(body: &Body, out: &mut String) {
    if body.entries.is_empty() && !body.has_comments() {
        out.push_str("{}");
    } else {
        block_body(body, 1, out);
    }
}

fn pad(indent: usize) -> String {
    "  ".repeat(indent)
}

/// `{`, the entries one per line at `indent`, and `}` at `indent - 1`.
fn block_body(body: &Body, indent: usize, out: &mut String) {
    out.push('{');
    if let Some(c) = &body.open_comment {
        out.push_str("  ");
        out.push_str(&c.text);
    }
    out.push('\n');
    let lines: Vec<(String, Option<String>)> = body
        .entries
        .iter()
        .map(|e| match &e.kind {
            EntryKind::Assign { path, value } => {
                let p: Vec<&str> = path.iter().map(|i| i.name.as_str()).collect();
                let p = p.join(".");
                let v = value_text(value, indent, p.len() + 3);
                (p, Some(v))
            }
            EntryKind::Section { path, body } => {
                let p: Vec<&str> = path.iter().map(|i| i.name.as_str()).collect();
                let mut s = format!("{} ", p.join("."));
                let inline = inline_body(body).filter(|t| {
                    body.entries.len() <= INLINE_SECTION_ENTRIES
                        && indent * 2 + s.len() + t.len() <= WIDTH
                });
                match inline {
                    Some(t) => s.push_str(&t),
                    None => block_body(body, indent + 1, &mut s),
                }
                (s, None)
            }
        })
        .collect();
    // Alignment runs: consecutive single-line assignments without a blank line between.
    let mut widths = vec![0usize; lines.len()];
    let mut i = 0;
    while i < lines.len() {
        let mut j = i;
        let single = |k: usize| matches!(&lines[k].1, Some(v) if !v.contains('\n'));
        if single(i) {
            while j + 1 < lines.len() && single(j + 1) && !body.entries[j + 1].trivia.blank_before {
                j += 1;
            }
            let w = (i..=j).map(|k| lines[k].0.len()).max().unwrap_or(0);
            for slot in &mut widths[i..=j] {
                *slot = w;
            }
        }
        i = j + 1;
    }
    let codes: Vec<Line> = body
        .entries
        .iter()
        .zip(&lines)
        .enumerate()
        .map(|(k, (entry, (key, value)))| {
            let code = match value {
                Some(v) => {
                    let w = if v.contains('\n') {
                        key.len()
                    } else {
                        widths[k]
                    };
                    format!("{key:<w$} = {v}")
                }
                None => key.clone(),
            };
            Line::new(code, &entry.trivia)
        })
        .collect();
    write_lines(&codes, indent, out);
    for c in &body.closing_comments {
        out.push_str(&pad(indent));
        out.push_str(&c.text);
        out.push('\n');
    }
    out.push_str(&pad(indent.saturating_sub(1)));
    out.push('}');
}

/// A body on one line, when it has no comments and no sections.
fn inline_body(body: &Body) -> Option<String> {
    if body.has_comments() {
        return None;
    }
    if body.entries.is_empty() {
        return Some("{ }".to_string());
    }
    let mut parts = Vec::new();
    for e in &body.entries {
        match &e.kind {
            EntryKind::Assign { path, value } => {
                let p: Vec<&str> = path.iter().map(|i| i.name.as_str()).collect();
                parts.push(format!("{} = {}", p.join("."), inline_value(value)?));
            }
            EntryKind::Section { .. } => return None,
        }
    }
    Some(format!("{{ {} }}", parts.join(", ")))
}

/// A value at `indent`, `used` columns after the indentation.
fn value_text(v: &Value, indent: usize, used: usize) -> String {
    if let ValueKind::Tagged { tag, body } = &v.kind {
        let head = format!("{} ", tag.name);
        if let Some(t) = inline_body(body) {
            if indent * 2 + used + head.len() + t.len() <= WIDTH {
                return head + &t;
            }
        }
        let mut s = head;
        block_body(body, indent + 1, &mut s);
        return s;
    }
    inline_value(v).unwrap_or_default()
}

/// A value on one line; `None` for a tagged value whose body cannot be inline.
fn inline_value(v: &Value) -> Option<String> {
    Some(match &v.kind {
        ValueKind::Number { raw, .. } => raw.clone(),
        ValueKind::Word(w) => w.clone(),
        ValueKind::Bool(b) => b.to_string(),
        ValueKind::None => "none".to_string(),
        ValueKind::Str(s) => format!("\"{s}\""),
        ValueKind::List(items) => {
            let parts: Option<Vec<String>> = items.iter().map(inline_value).collect();
            format!("[{}]", parts?.join(", "))
        }
        ValueKind::Tagged { tag, body } => format!("{} {}", tag.name, inline_body(body)?),
        ValueKind::Neg(e) => format!("-{}", inline_value(e)?),
        ValueKind::Binary { op, lhs, rhs } => {
            format!(
                "{} {} {}",
                inline_value(lhs)?,
                op.as_str(),
                inline_value(rhs)?
            )
        }
        ValueKind::Call { func, args } => {
            let parts: Option<Vec<String>> = args.iter().map(inline_value).collect();
            format!("{}({})", func.name, parts?.join(", "))
        }
        ValueKind::Paren(e) => format!("({})", inline_value(e)?),
    })
}

fn schedule_body(body: &ScheduleBody, out: &mut String) {
    if body.entries.is_empty() && body.open_comment.is_none() && body.closing_comments.is_empty() {
        out.push_str("{}");
        return;
    }
    let width = body
        .entries
        .iter()
        .filter_map(|e| match &e.kind {
            ScheduleEntryKind::Rule { block, .. } => Some(block.name.len()),
            ScheduleEntryKind::Repeat(_) => None,
        })
        .max()
        .unwrap_or(0);
    let lines: Vec<Line> = body
        .entries
        .iter()
        .map(|e| {
            let code = match &e.kind {
                ScheduleEntryKind::Rule { block, selectors } => {
                    let sels: Vec<String> = selectors.iter().map(selector_text).collect();
                    format!("{:<width$} = {}", block.name, sels.join(" + "))
                }
                ScheduleEntryKind::Repeat(items) => {
                    let parts: Vec<String> = items
                        .iter()
                        .map(|i| match &i.count {
                            Some(n) => format!("{} * {}", i.block.name, n.raw),
                            None => i.block.name.clone(),
                        })
                        .collect();
                    format!("repeat [{}]", parts.join(", "))
                }
            };
            Line::new(code, &e.trivia)
        })
        .collect();
    // One entry and no comments: on one line, as a short body is.
    if let [only] = lines.as_slice() {
        let quiet = body.open_comment.is_none()
            && body.closing_comments.is_empty()
            && only.trivia.leading.is_empty()
            && only.trivia.trailing.is_none();
        if quiet && "schedule { ".len() + only.code.len() + " }".len() <= WIDTH {
            out.push_str(&format!("{{ {} }}", only.code));
            return;
        }
    }
    out.push('{');
    if let Some(c) = &body.open_comment {
        out.push_str("  ");
        out.push_str(&c.text);
    }
    out.push('\n');
    write_lines(&lines, 1, out);
    for c in &body.closing_comments {
        out.push_str(&format!("  {}\n", c.text));
    }
    out.push('}');
}

fn selector_text(s: &Selector) -> String {
    match &s.kind {
        SelectorKind::First(n) => format!("first {}", n.raw),
        SelectorKind::Last(n) => format!("last {}", n.raw),
        SelectorKind::Every { step, from } => match from {
            Some(f) => format!("every {} from {}", step.raw, f.raw),
            None => format!("every {}", step.raw),
        },
        SelectorKind::List(items) => {
            let parts: Vec<&str> = items.iter().map(|i| i.raw.as_str()).collect();
            format!("layers [{}]", parts.join(", "))
        }
        SelectorKind::Range(a, b) => format!("layers {}..{}", a.raw, b.raw),
        SelectorKind::Rest => "rest".to_string(),
    }
}
