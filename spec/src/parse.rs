//! Source text to AST: runs the pest grammar (grammar/arch.pest), turns its syntax
//! errors into readable diagnostics, and attaches comments to the nodes they belong to.
//!
//! Each top-level item is also parsed on its own when the file fails to parse, so a
//! file with several broken items reports one syntax error per broken item.

use crate::ast::*;
use crate::diagnostics::{one_of, Diagnostic};
use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser as _;
use std::sync::OnceLock;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/arch.pest"]
struct ArchParser;

/// Deeper bracket nesting than this is rejected before parsing, so that no recursive
/// step (pest's or ours) can exhaust the stack on hostile input.
pub const MAX_NESTING: usize = 64;

/// The most operators (`+ - * / **` and unary minus) one expression may have, counting
/// those inside its parentheses and function arguments. Expression trees are as deep as
/// their operator chains, and everything that walks them (building, evaluating, printing,
/// dropping) recurses; with this bound and `MAX_NESTING` no tree is deeper than a few
/// hundred levels, whatever the file.
pub const MAX_OPERATORS: usize = 256;

pub use crate::validate::check_source;

/// Parses a whole file. On failure, returns every syntax error found (at most one per
/// top-level item).
pub fn parse(src: &str) -> Result<File, Vec<Diagnostic>> {
    pest::set_error_detail(true);
    if let Some(d) = check_nesting(src) {
        return Err(vec![d]);
    }
    match ArchParser::parse(Rule::file, src) {
        Ok(mut pairs) => {
            let file = pairs.next().map(|p| p.into_inner());
            let mut builder = Builder::new(src);
            let items: Vec<Pair<Rule>> = file
                .into_iter()
                .flatten()
                .filter(|p| p.as_rule() != Rule::EOI)
                .collect();
            let file = builder.file(items);
            if builder.errors.is_empty() {
                Ok(file)
            } else {
                crate::diagnostics::cap(&mut builder.errors);
                Err(builder.errors)
            }
        }
        Err(whole) => {
            let mut diags = Vec::new();
            for (start, end) in split_items(src) {
                if let Err(e) = ArchParser::parse(Rule::item_only, &src[start..end]) {
                    diags.push(syntax_error(src, start, &e));
                }
            }
            if diags.is_empty() {
                diags.push(syntax_error(src, 0, &whole));
            }
            crate::diagnostics::cap(&mut diags);
            Err(diags)
        }
    }
}

// ---- Syntax errors --------------------------------------------------------------

/// Rejects bracket nesting deeper than `MAX_NESTING`.
fn check_nesting(src: &str) -> Option<Diagnostic> {
    let mut depth = 0usize;
    for (i, c) in code_chars(src) {
        match c {
            '{' | '[' | '(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(
                        Diagnostic::error(Span::new(i, i + 1), "brackets nested too deeply")
                            .label(format!("more than {MAX_NESTING} levels deep")),
                    );
                }
            }
            '}' | ']' | ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The characters of the source outside comments and strings, with byte offsets.
fn code_chars(src: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut in_comment = false;
    let mut in_string = false;
    src.char_indices().filter(move |&(_, c)| {
        if in_comment {
            if c == '\n' {
                in_comment = false;
            }
            return false;
        }
        if in_string {
            if c == '"' || c == '\n' {
                in_string = false;
            }
            return false;
        }
        match c {
            '#' => {
                in_comment = true;
                false
            }
            '"' => {
                in_string = true;
                false
            }
            _ => true,
        }
    })
}

/// Byte ranges of the top-level items: each runs from its first character to the brace
/// that closes its first top-level `{`.
fn split_items(src: &str) -> Vec<(usize, usize)> {
    let mut items = Vec::new();
    let mut start: Option<usize> = None;
    let mut depth = 0usize;
    for (i, c) in code_chars(src) {
        if start.is_none() {
            if c.is_whitespace() {
                continue;
            }
            start = Some(i);
        }
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    if let Some(s) = start.take() {
                        items.push((s, i + 1));
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        items.push((s, src.len()));
    }
    items
}

/// What a grammar rule is called in an error message.
fn rule_name(r: Rule) -> Option<&'static str> {
    Some(match r {
        Rule::value | Rule::expr | Rule::tagged | Rule::list | Rule::paren | Rule::call => {
            "a value"
        }
        Rule::number | Rule::digits => "a number",
        Rule::int => "an integer",
        Rule::boolean | Rule::none | Rule::word => "a value",
        Rule::string | Rule::string_text => "a quoted name",
        Rule::ident | Rule::path | Rule::section | Rule::assign => "a key",
        Rule::block_name => "a block name",
        Rule::parent_name => "a parent block name",
        Rule::body | Rule::schedule_body => "`{`",
        Rule::kw_model | Rule::kw_block | Rule::kw_schedule | Rule::model | Rule::block => {
            "`model`, `block` or `schedule`"
        }
        Rule::schedule => "`model`, `block` or `schedule`",
        Rule::sched_rule | Rule::repeat => "a schedule rule (`NAME = selector`) or `repeat [...]`",
        Rule::first
        | Rule::last
        | Rule::every
        | Rule::layer_range
        | Rule::layer_list
        | Rule::rest => "a selector (`first N`, `last N`, `every N`, `layers ...`, `rest`)",
        Rule::repeat_item => "a block name",
        Rule::add | Rule::sub | Rule::mul | Rule::div | Rule::pow => "an operator",
        Rule::neg => "a value",
        Rule::EOI => "end of file",
        _ => return None,
    })
}

/// What a literal token is called in an error message.
fn token_name(token: &str) -> String {
    match token {
        "\n" => "a new line".to_string(),
        "," => "`,`".to_string(),
        "+" | "-" | "*" | "/" | "**" => "an operator".to_string(),
        "0..9" | "a..z" | "A..Z" | "_" => "a value".to_string(),
        t => format!("`{t}`"),
    }
}

/// Describes what stands at `pos` ("`}`", "end of line", "end of file").
fn found_at(src: &str, pos: usize) -> String {
    let rest = &src[pos.min(src.len())..];
    match rest.chars().next() {
        None => "end of file".to_string(),
        Some('\n') | Some('\r') => "end of line".to_string(),
        Some('#') => "a comment".to_string(),
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .take(30)
                .collect();
            format!("`{word}`")
        }
        Some(c) => format!("`{}`", c.escape_debug()),
    }
}

fn syntax_error(src: &str, offset: usize, e: &pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let local = match e.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    // The furthest point any attempt reached is where the text stopped making sense.
    let furthest = e.parse_attempts().map_or(local, |a| a.max_position);
    let pos = offset + local.max(furthest);
    let mut expected: Vec<String> = Vec::new();
    let push = |expected: &mut Vec<String>, s: &str| {
        if !expected.iter().any(|e| e == s) {
            expected.push(s.to_string());
        }
    };
    // Pest reports the low-level rules and literals it tried; fold them into the few
    // things a person would name: a value, a key, a quoted name, a closing brace.
    let (mut value_like, mut quoted, mut ident) = (false, false, false);
    let mut rules: Vec<&str> = Vec::new();
    if let ErrorVariant::ParsingError { positives, .. } = &e.variant {
        for r in positives {
            match r {
                Rule::ident | Rule::path => ident = true,
                Rule::string | Rule::string_text => quoted = true,
                Rule::number
                | Rule::boolean
                | Rule::none
                | Rule::neg
                | Rule::paren
                | Rule::word
                | Rule::tagged
                | Rule::list
                | Rule::call
                | Rule::expr
                | Rule::value => value_like = true,
                other => {
                    if let Some(name) = rule_name(*other) {
                        rules.push(name);
                    }
                }
            }
        }
    }
    let tokens: Vec<String> = e
        .parse_attempts()
        .map(|a| a.expected_tokens().iter().map(|t| t.to_string()).collect())
        .unwrap_or_default();
    let selector = rules.iter().any(|r| r.starts_with("a selector"));
    if value_like {
        push(&mut expected, "a value");
    } else if quoted {
        push(&mut expected, "a quoted name");
    } else if ident {
        let closing = tokens.iter().any(|t| t == "}");
        push(&mut expected, if closing { "a key" } else { "a name" });
    }
    for r in rules {
        push(&mut expected, r);
    }
    let mut separators = false;
    for t in &tokens {
        match t.as_str() {
            " " | "\t" | "\r" | "" | "#" | "_" | "." | "e" | "E" | "\"" => {}
            "\n" | "," => separators = true,
            "(" | "[" | "-" | "false" | "none" | "true" if value_like => {}
            "first" | "last" | "every" | "layers" | "rest" if selector => {}
            t if t.contains("..") || t == "BUILTIN_RULE" => {}
            t => push(&mut expected, &token_name(t)),
        }
    }
    let main: Vec<String> = expected
        .iter()
        .filter(|s| s.as_str() != "an operator")
        .cloned()
        .collect();
    let main = if main.is_empty() {
        expected.clone()
    } else {
        main
    };
    let found = found_at(src, pos);
    // The last significant character before the error gives the context.
    let before = src[..pos.min(src.len())]
        .trim_end_matches([' ', '\t', '\r'])
        .chars()
        .last();
    let wants_value = main.iter().any(|s| s == "a value");
    let message = if wants_value && before == Some('=') {
        format!("expected a value after `=`, found {found}")
    } else if main.is_empty() {
        format!("unexpected {found}")
    } else {
        format!("expected {}, found {found}", one_of(&main))
    };
    // Underline the whole word found, or one character.
    let rest = &src[pos.min(src.len())..];
    let word_len: usize = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .map(char::len_utf8)
        .sum();
    let end = if word_len > 0 {
        pos + word_len
    } else {
        rest.chars()
            .next()
            .filter(|c| *c != '\n')
            .map_or(pos, |c| pos + c.len_utf8())
    };
    let mut d =
        Diagnostic::error(Span::new(pos, end.max(pos)), message).label(if main.is_empty() {
            "unexpected here".to_string()
        } else {
            format!("expected {}", one_of(&main))
        });
    if found == "end of file" && main.iter().any(|s| s == "`}`") {
        d = d.hint("a `{` is not closed");
    } else if wants_value && before == Some('=') {
        d = d.hint("write a number, a word, `true`/`false`, `none`, a string or a list");
    } else if main.iter().any(|s| s == "`}`")
        && separators
        && rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
    {
        d = d.hint("separate entries with a new line or a comma");
    }
    d
}

// ---- AST construction -----------------------------------------------------------

fn pratt() -> &'static PrattParser<Rule> {
    static PRATT: OnceLock<PrattParser<Rule>> = OnceLock::new();
    PRATT.get_or_init(|| {
        PrattParser::new()
            .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
            .op(Op::infix(Rule::mul, Assoc::Left) | Op::infix(Rule::div, Assoc::Left))
            .op(Op::prefix(Rule::neg))
            .op(Op::infix(Rule::pow, Assoc::Right))
    })
}

/// The operators `MAX_OPERATORS` counts.
fn is_operator(r: Rule) -> bool {
    matches!(
        r,
        Rule::add | Rule::sub | Rule::mul | Rule::div | Rule::pow | Rule::neg
    )
}

fn span_of(p: &Pair<Rule>) -> Span {
    Span::new(p.as_span().start(), p.as_span().end())
}

fn ident_of(p: &Pair<Rule>) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: span_of(p),
    }
}

/// Turns pairs into AST nodes, handing out comments by position as it goes.
struct Builder<'s> {
    src: &'s str,
    /// Every comment in source order; `None` once attached. Attaching looks comments up
    /// by binary search over `all_comments`, so a file of n commented entries takes
    /// O(n log n), not O(n^2).
    comments: Vec<Option<Comment>>,
    /// Every comment's span, attached or not, in source order (so also ordered by end:
    /// comments do not overlap).
    all_comments: Vec<Span>,
    /// Expressions over the size limits (the grammar cannot bound them).
    errors: Vec<Diagnostic>,
}

impl<'s> Builder<'s> {
    fn new(src: &'s str) -> Builder<'s> {
        let mut comments = Vec::new();
        let mut current: Option<usize> = None;
        let mut in_string = false;
        for (i, c) in src.char_indices() {
            if let Some(start) = current {
                if c == '\n' {
                    comments.push(Comment {
                        text: src[start..i].trim_end().to_string(),
                        span: Span::new(start, i),
                    });
                    current = None;
                }
                continue;
            }
            if in_string {
                if c == '"' || c == '\n' {
                    in_string = false;
                }
                continue;
            }
            match c {
                '#' => current = Some(i),
                '"' => in_string = true,
                _ => {}
            }
        }
        if let Some(start) = current {
            comments.push(Comment {
                text: src[start..].trim_end().to_string(),
                span: Span::new(start, src.len()),
            });
        }
        let all_comments = comments.iter().map(|c| c.span).collect();
        Builder {
            src,
            comments: comments.into_iter().map(Some).collect(),
            all_comments,
            errors: Vec::new(),
        }
    }

    /// A pair's span without the whitespace and comments pest includes at the end of
    /// rules that close with an optional or repeated part.
    fn trimmed(&self, p: &Pair<Rule>) -> Span {
        let mut span = span_of(p);
        loop {
            let text = &self.src[span.start..span.end];
            let trimmed = text.trim_end_matches([' ', '\t', '\r', '\n']);
            span.end = span.start + trimmed.len();
            let k = self.all_comments.partition_point(|c| c.end < span.end);
            match self
                .all_comments
                .get(k)
                .filter(|c| c.end == span.end && c.start >= span.start)
            {
                Some(c) => span.end = c.start,
                None => return span,
            }
        }
    }

    /// The index of the first comment that starts at or after `at`.
    fn first_from(&self, at: usize) -> usize {
        self.all_comments.partition_point(|c| c.start < at)
    }

    /// Removes and returns the comments not yet attached that start in `start..end`.
    fn take_range(&mut self, start: usize, end: usize) -> Vec<Comment> {
        let (lo, hi) = (self.first_from(start), self.first_from(end));
        self.comments[lo..hi.max(lo)]
            .iter_mut()
            .filter_map(Option::take)
            .collect()
    }

    /// Removes and returns a comment on the same line after `end`, with only spaces
    /// and commas in between.
    fn take_trailing(&mut self, end: usize) -> Option<Comment> {
        let from = self.first_from(end);
        let slot = self.comments[from..].iter_mut().find(|c| c.is_some())?;
        let start = slot.as_ref()?.span.start;
        let between = &self.src[end..start];
        if between
            .chars()
            .all(|ch| ch == ' ' || ch == '\t' || ch == ',' || ch == '\r')
        {
            slot.take()
        } else {
            None
        }
    }

    /// Whether the text in `from..to` (before a node or its leading comments) contains
    /// a blank line.
    fn blank_between(&self, from: usize, to: usize) -> bool {
        let text = &self.src[from.min(to)..to];
        text.matches('\n').count() >= 2
    }

    fn trivia_before(&mut self, prev_end: usize, start: usize) -> Trivia {
        let leading = self.take_range(prev_end, start);
        let first = leading.first().map_or(start, |c| c.span.start);
        Trivia {
            blank_before: self.blank_between(prev_end, first),
            leading,
            trailing: None,
        }
    }

    fn file(&mut self, pairs: Vec<Pair<Rule>>) -> File {
        let mut items = Vec::new();
        let mut prev_end = 0;
        for p in pairs {
            let span = span_of(&p);
            let mut trivia = self.trivia_before(prev_end, span.start);
            let kind = self.item(p);
            trivia.leading.extend(self.take_range(span.start, span.end));
            trivia.trailing = self.take_trailing(span.end);
            prev_end = trivia.trailing.as_ref().map_or(span.end, |c| c.span.end);
            items.push(Item { kind, trivia, span });
        }
        let trailing_comments = self.comments.iter_mut().filter_map(Option::take).collect();
        File {
            items,
            trailing_comments,
        }
    }

    fn item(&mut self, p: Pair<Rule>) -> ItemKind {
        let kind = p.as_rule();
        let mut inner = p.into_inner();
        let keyword = inner.next().map(|k| span_of(&k)).unwrap_or_default();
        match kind {
            Rule::model => {
                let mut name = String::new();
                let mut name_span = Span::default();
                let mut body = None;
                for q in inner {
                    match q.as_rule() {
                        Rule::string => {
                            name_span = span_of(&q);
                            name = q
                                .into_inner()
                                .next()
                                .map(|s| s.as_str())
                                .unwrap_or("")
                                .to_string();
                        }
                        Rule::body => body = Some(self.body(q)),
                        _ => {}
                    }
                }
                ItemKind::Model {
                    keyword,
                    name,
                    name_span,
                    body: body.unwrap_or_else(|| empty_body(keyword)),
                }
            }
            Rule::block => {
                let mut name = None;
                let mut parent = None;
                let mut body = None;
                for q in inner {
                    match q.as_rule() {
                        Rule::block_name => name = q.into_inner().next().map(|i| ident_of(&i)),
                        Rule::parent_name => parent = q.into_inner().next().map(|i| ident_of(&i)),
                        Rule::body => body = Some(self.body(q)),
                        _ => {}
                    }
                }
                ItemKind::Block {
                    keyword,
                    name,
                    parent,
                    body: body.unwrap_or_else(|| empty_body(keyword)),
                }
            }
            _ => {
                let body = inner
                    .next()
                    .map(|b| self.schedule_body(b))
                    .unwrap_or_else(|| ScheduleBody {
                        entries: Vec::new(),
                        open_comment: None,
                        closing_comments: Vec::new(),
                        span: keyword,
                    });
                ItemKind::Schedule { keyword, body }
            }
        }
    }

    fn body(&mut self, p: Pair<Rule>) -> Body {
        let span = span_of(&p);
        let open_comment = self.take_trailing(span.start + 1);
        let mut prev_end = open_comment.as_ref().map_or(span.start + 1, |c| c.span.end);
        let mut entries = Vec::new();
        for e in p.into_inner() {
            let espan = self.trimmed(&e);
            let mut trivia = self.trivia_before(prev_end, espan.start);
            let kind = match e.as_rule() {
                Rule::section => {
                    let mut inner = e.into_inner();
                    let path: Vec<Ident> = inner
                        .next()
                        .map(|p| p.into_inner().map(|i| ident_of(&i)).collect())
                        .unwrap_or_default();
                    let body = inner.next().map(|b| self.body(b));
                    match body {
                        Some(body) if !path.is_empty() => EntryKind::Section { path, body },
                        _ => continue,
                    }
                }
                _ => {
                    let mut inner = e.into_inner();
                    let path = inner
                        .next()
                        .map(|p| p.into_inner().map(|i| ident_of(&i)).collect())
                        .unwrap_or_default();
                    let value = match inner.next() {
                        Some(v) => self.value(v),
                        None => continue,
                    };
                    EntryKind::Assign { path, value }
                }
            };
            trivia
                .leading
                .extend(self.take_range(espan.start, espan.end));
            trivia.trailing = self.take_trailing(espan.end);
            prev_end = trivia.trailing.as_ref().map_or(espan.end, |c| c.span.end);
            entries.push(Entry {
                kind,
                trivia,
                span: espan,
            });
        }
        let closing_comments = self.take_range(prev_end, span.end);
        Body {
            entries,
            open_comment,
            closing_comments,
            span,
        }
    }

    /// `value` wraps exactly one of tagged, list, string or expr.
    fn value(&mut self, p: Pair<Rule>) -> Value {
        let span = span_of(&p);
        let Some(inner) = p.into_inner().next() else {
            return Value {
                kind: ValueKind::None,
                span,
            };
        };
        let span = span_of(&inner);
        let kind = match inner.as_rule() {
            Rule::tagged => {
                let mut q = inner.into_inner();
                let tag = q.next().map(|i| ident_of(&i));
                let body = q.next().map(|b| self.body(b));
                match (tag, body) {
                    (Some(tag), Some(body)) => ValueKind::Tagged { tag, body },
                    _ => ValueKind::None,
                }
            }
            Rule::list => ValueKind::List(inner.into_inner().map(|v| self.value(v)).collect()),
            Rule::string => ValueKind::Str(
                inner
                    .into_inner()
                    .next()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
            ),
            _ => return self.expr(inner),
        };
        Value { kind, span }
    }

    fn expr(&mut self, p: Pair<Rule>) -> Value {
        // Counted before the Pratt parser runs: it recurses once per prefix and per
        // right-associative operator.
        let too_many = p
            .clone()
            .into_inner()
            .flatten()
            .filter(|q| is_operator(q.as_rule()))
            .nth(MAX_OPERATORS);
        if let Some(op) = too_many {
            self.errors.push(
                Diagnostic::error(
                    span_of(&op),
                    format!("expression too long: more than {MAX_OPERATORS} operators"),
                )
                .label(format!("operator {} of this expression", MAX_OPERATORS + 1))
                .hint("split the computation over several fields"),
            );
            return Value {
                kind: ValueKind::None,
                span: span_of(&p),
            };
        }
        pratt()
            .map_primary(|q| self.primary(q))
            .map_prefix(|op, rhs| Value {
                span: span_of(&op).to(rhs.span),
                kind: ValueKind::Neg(Box::new(rhs)),
            })
            .map_infix(|lhs, op, rhs| {
                let op = match op.as_rule() {
                    Rule::add => BinOp::Add,
                    Rule::sub => BinOp::Sub,
                    Rule::mul => BinOp::Mul,
                    Rule::div => BinOp::Div,
                    _ => BinOp::Pow,
                };
                Value {
                    span: lhs.span.to(rhs.span),
                    kind: ValueKind::Binary {
                        op,
                        lhs: Box::new(lhs),
                        rhs: Box::new(rhs),
                    },
                }
            })
            .parse(p.into_inner())
    }

    fn primary(&mut self, p: Pair<Rule>) -> Value {
        let span = span_of(&p);
        let kind = match p.as_rule() {
            Rule::number => {
                let raw = p.as_str().to_string();
                let value = raw.replace('_', "").parse::<f64>().unwrap_or(f64::NAN);
                ValueKind::Number { value, raw }
            }
            Rule::boolean => ValueKind::Bool(p.as_str() == "true"),
            Rule::none => ValueKind::None,
            Rule::word => ValueKind::Word(p.as_str().to_string()),
            Rule::paren => match p.into_inner().next() {
                Some(e) => ValueKind::Paren(Box::new(self.expr(e))),
                None => ValueKind::None,
            },
            Rule::call => {
                let mut inner = p.into_inner();
                match inner.next() {
                    Some(f) => ValueKind::Call {
                        func: ident_of(&f),
                        args: inner.map(|a| self.expr(a)).collect(),
                    },
                    None => ValueKind::None,
                }
            }
            Rule::expr => return self.expr(p),
            _ => ValueKind::None,
        };
        Value { kind, span }
    }

    fn schedule_body(&mut self, p: Pair<Rule>) -> ScheduleBody {
        let span = span_of(&p);
        let open_comment = self.take_trailing(span.start + 1);
        let mut prev_end = open_comment.as_ref().map_or(span.start + 1, |c| c.span.end);
        let mut entries = Vec::new();
        for e in p.into_inner() {
            let espan = self.trimmed(&e);
            let mut trivia = self.trivia_before(prev_end, espan.start);
            let kind = match e.as_rule() {
                Rule::sched_rule => {
                    let mut inner = e.into_inner();
                    let Some(block) = inner.next().map(|i| ident_of(&i)) else {
                        continue;
                    };
                    ScheduleEntryKind::Rule {
                        block,
                        selectors: inner.map(|q| selector(self.trimmed(&q), q)).collect(),
                    }
                }
                _ => ScheduleEntryKind::Repeat(
                    e.into_inner()
                        .filter_map(|item| {
                            let span = span_of(&item);
                            let mut q = item.into_inner();
                            let block = ident_of(&q.next()?);
                            Some(RepeatItem {
                                block,
                                count: q.next().map(|n| int(&n)),
                                span,
                            })
                        })
                        .collect(),
                ),
            };
            trivia
                .leading
                .extend(self.take_range(espan.start, espan.end));
            trivia.trailing = self.take_trailing(espan.end);
            prev_end = trivia.trailing.as_ref().map_or(espan.end, |c| c.span.end);
            entries.push(ScheduleEntry {
                kind,
                trivia,
                span: espan,
            });
        }
        let closing_comments = self.take_range(prev_end, span.end);
        ScheduleBody {
            entries,
            open_comment,
            closing_comments,
            span,
        }
    }
}

fn empty_body(at: Span) -> Body {
    Body {
        entries: Vec::new(),
        open_comment: None,
        closing_comments: Vec::new(),
        span: at,
    }
}

fn int(p: &Pair<Rule>) -> Int {
    let raw = p.as_str().to_string();
    Int {
        value: raw.replace('_', "").parse().ok(),
        raw,
        span: span_of(p),
    }
}

fn selector(span: Span, p: Pair<Rule>) -> Selector {
    let kind = p.as_rule();
    let ints: Vec<Int> = p.into_inner().map(|q| int(&q)).collect();
    let missing = || Int {
        value: None,
        raw: String::new(),
        span,
    };
    let at = |i: usize| ints.get(i).cloned().unwrap_or_else(missing);
    let kind = match kind {
        Rule::first => SelectorKind::First(at(0)),
        Rule::last => SelectorKind::Last(at(0)),
        Rule::every => SelectorKind::Every {
            step: at(0),
            from: ints.get(1).cloned(),
        },
        Rule::layer_range => SelectorKind::Range(at(0), at(1)),
        Rule::layer_list => SelectorKind::List(ints.clone()),
        _ => SelectorKind::Rest,
    };
    Selector { kind, span }
}
