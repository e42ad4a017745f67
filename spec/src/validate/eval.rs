//! Typed reading of table entries: numbers (evaluating expressions with name lookup
//! through the enclosing sections and the model), integers, booleans and words, each
//! with an error that says what was expected and what was found.

use super::tree::{Node, NodeValue, Table};
use crate::ast::{BinOp, Ident, Span, Value, ValueKind};
use crate::diagnostics::{did_you_mean, one_of, Diagnostic};

/// A section being read: its table, the enclosing tables for name lookup (innermost
/// first, the section itself included) and its name for messages.
pub(crate) struct Sect<'t> {
    pub table: &'t Table,
    pub chain: Vec<&'t Table>,
    pub name: String,
    /// The keys this section accepts, once `check_keys` has run.
    known: std::cell::Cell<&'static [&'static str]>,
}

/// Receives the diagnostics of a validation run.
pub(crate) type Diags = Vec<Diagnostic>;

impl<'t> Sect<'t> {
    pub fn root(table: &'t Table, name: &str) -> Sect<'t> {
        Sect {
            table,
            chain: vec![table],
            name: name.to_string(),
            known: std::cell::Cell::new(&[]),
        }
    }

    /// A nested section's reader.
    pub fn child(&self, table: &'t Table, name: &str) -> Sect<'t> {
        let mut chain = vec![table];
        chain.extend(self.chain.iter().copied());
        Sect {
            table,
            chain,
            name: name.to_string(),
            known: std::cell::Cell::new(&[]),
        }
    }

    pub fn get(&self, key: &str) -> Option<&'t Node> {
        self.table.get(key)
    }

    /// Reports every key not in `known`, with a suggestion.
    pub fn check_keys(&self, known: &'static [&'static str], d: &mut Diags) {
        self.known.set(known);
        let mut takes = None;
        for (key, node) in &self.table.entries {
            if known.contains(&key.as_str()) {
                continue;
            }
            let mut diag = Diagnostic::error(
                node.key_span,
                format!("unknown key `{key}` in {}", self.name),
            )
            .label("unknown key");
            if let Some(s) = did_you_mean(key, known.iter().copied()) {
                diag = diag.hint(format!("did you mean `{s}`?"));
            }
            // The same for every unknown key of the section: built once.
            let takes = takes.get_or_insert_with(|| {
                let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
                format!("{} takes {}", self.name, one_of(&list))
            });
            diags_push(d, diag.note(takes.clone()));
        }
    }

    pub fn missing(&self, key: &str, d: &mut Diags) {
        // A misspelt key is already reported with "did you mean"; do not report the
        // field it was meant to be as missing too.
        if self.table.entries.iter().any(|(k, _)| {
            !self.known.get().contains(&k.as_str()) && did_you_mean(k, [key]).is_some()
        }) {
            return;
        }
        d.push(
            Diagnostic::error(
                self.table.span,
                format!("missing required field `{key}` in {}", self.name),
            )
            .label(format!("`{key}` is not given"))
            .hint(format!("add `{key} = ...`")),
        );
    }

    /// The leaf value of a key, or a type error for a section.
    pub fn leaf(&self, key: &str, what: &str, d: &mut Diags) -> Option<&'t Value> {
        let node = self.get(key)?;
        match &node.value {
            NodeValue::Leaf(v) => Some(v),
            NodeValue::Table(t) => {
                d.push(
                    Diagnostic::error(
                        t.span,
                        format!("expected {what} for `{key}`, found a section"),
                    )
                    .label(format!("expected {what}")),
                );
                None
            }
            NodeValue::Tagged { span, tag, .. } => {
                d.push(
                    Diagnostic::error(
                        *span,
                        format!(
                            "expected {what} for `{key}`, found `{} {{ ... }}`",
                            tag.name
                        ),
                    )
                    .label(format!("expected {what}")),
                );
                None
            }
        }
    }

    /// A number (any expression).
    pub fn f64(&self, key: &str, d: &mut Diags) -> Option<f64> {
        let v = self.leaf(key, "a number", d)?;
        self.number(v, "a number", d)
    }

    pub fn f64_or(&self, key: &str, default: f64, d: &mut Diags) -> f64 {
        self.f64(key, d).unwrap_or(default)
    }

    /// A number, or `none`.
    pub fn opt_f64(&self, key: &str, d: &mut Diags) -> Option<f64> {
        let v = self.leaf(key, "a number or `none`", d)?;
        if matches!(v.kind, ValueKind::None) {
            return None;
        }
        self.number(v, "a number or `none`", d)
    }

    /// A positive number, or `none`.
    pub fn opt_positive(&self, key: &str, d: &mut Diags) -> Option<f64> {
        let x = self.opt_f64(key, d)?;
        if x <= 0.0 {
            if let Some(v) = self.leaf(key, "", &mut Vec::new()) {
                d.push(positive_error(key, v.span, x));
            }
            return None;
        }
        Some(x)
    }

    pub fn positive_or(&self, key: &str, default: f64, d: &mut Diags) -> f64 {
        match self.f64(key, d) {
            Some(x) if x > 0.0 => x,
            Some(x) => {
                if let Some(v) = self.leaf(key, "", &mut Vec::new()) {
                    d.push(positive_error(key, v.span, x));
                }
                default
            }
            None => default,
        }
    }

    /// A non-negative integer.
    pub fn u64(&self, key: &str, d: &mut Diags) -> Option<u64> {
        let v = self.leaf(key, "an integer", d)?;
        self.integer(v, d)
    }

    /// A size: an integer of at least 1.
    pub fn size(&self, key: &str, d: &mut Diags) -> Option<u64> {
        let n = self.u64(key, d)?;
        if n == 0 {
            let v = self.leaf(key, "", &mut Vec::new())?;
            d.push(
                Diagnostic::error(v.span, format!("`{key}` must be at least 1, found 0"))
                    .label("zero is not a valid size"),
            );
            return None;
        }
        Some(n)
    }

    /// A required size; reports it missing.
    pub fn req_size(&self, key: &str, d: &mut Diags) -> Option<u64> {
        if self.get(key).is_none() {
            self.missing(key, d);
            return None;
        }
        self.size(key, d)
    }

    /// A size or `none`; zero is an error that says `none` turns the feature off.
    pub fn opt_size(&self, key: &str, d: &mut Diags) -> Option<u64> {
        let v = self.leaf(key, "an integer or `none`", d)?;
        if matches!(v.kind, ValueKind::None) {
            return None;
        }
        let n = self.integer(v, d)?;
        if n == 0 {
            d.push(
                Diagnostic::error(v.span, format!("`{key}` of zero is not valid"))
                    .label("must be at least 1")
                    .hint(format!("write `{key} = none` to turn it off")),
            );
            return None;
        }
        Some(n)
    }

    pub fn bool_or(&self, key: &str, default: bool, d: &mut Diags) -> bool {
        let Some(v) = self.leaf(key, "`true` or `false`", d) else {
            return default;
        };
        match v.kind {
            ValueKind::Bool(b) => b,
            _ => {
                d.push(type_error(v, "`true` or `false`"));
                default
            }
        }
    }

    /// One of a set of words; unknown words list the valid ones.
    pub fn word(&self, key: &str, options: &[&str], d: &mut Diags) -> Option<(String, Span)> {
        let what = format!("one of {}", quoted(options));
        let v = self.leaf(key, &what, d)?;
        word_of(v, key, options, d)
    }

    pub fn number(&self, v: &Value, what: &str, d: &mut Diags) -> Option<f64> {
        // A field's own name inside its value means the enclosing field of that name
        // (`mlp { hidden = 4 * hidden }`), so the field starts out as being evaluated.
        let mut run = Run {
            stack: Vec::new(),
            steps: 0,
        };
        for (key, node) in &self.table.entries {
            if matches!(&node.value, NodeValue::Leaf(leaf) if std::ptr::eq(leaf, v)) {
                run.stack.push((self.table as *const Table, key.clone()));
            }
        }
        match eval(v, &self.chain, &mut run, 0, what) {
            Ok(x) if x.is_finite() => Some(x),
            Ok(x) => {
                d.push(
                    Diagnostic::error(
                        v.span,
                        format!("this evaluates to {x}, not a finite number"),
                    )
                    .label("not a finite number"),
                );
                None
            }
            Err(e) => {
                d.push(*e);
                None
            }
        }
    }

    pub fn integer(&self, v: &Value, d: &mut Diags) -> Option<u64> {
        let x = self.number(v, "an integer", d)?;
        if x < 0.0 {
            d.push(
                Diagnostic::error(
                    v.span,
                    format!("expected a non-negative integer, found {x}"),
                )
                .label("negative"),
            );
            return None;
        }
        if x.fract() == 0.0 && x > super::limits::MAX_SIZE as f64 {
            d.push(
                Diagnostic::error(
                    v.span,
                    format!(
                        "{x} is more than the largest supported size, {} (2^32)",
                        super::limits::MAX_SIZE
                    ),
                )
                .label("too large"),
            );
            return None;
        }
        if x.fract() != 0.0 {
            let msg = if matches!(v.kind, ValueKind::Number { .. }) {
                format!("expected an integer, found {}", v.describe())
            } else {
                format!("expected an integer, but this evaluates to {x}")
            };
            d.push(Diagnostic::error(v.span, msg).label("not an integer"));
            return None;
        }
        Some(x as u64)
    }
}

fn diags_push(d: &mut Diags, diag: Diagnostic) {
    d.push(diag);
}

fn positive_error(key: &str, span: Span, x: f64) -> Diagnostic {
    Diagnostic::error(span, format!("`{key}` must be positive, found {x}")).label("not positive")
}

pub(crate) fn quoted(options: &[&str]) -> String {
    let list: Vec<String> = options.iter().map(|o| format!("`{o}`")).collect();
    one_of(&list)
}

/// A word value among `options`.
pub(crate) fn word_of(
    v: &Value,
    key: &str,
    options: &[&str],
    d: &mut Diags,
) -> Option<(String, Span)> {
    match &v.kind {
        ValueKind::Word(w) if options.contains(&w.as_str()) => Some((w.clone(), v.span)),
        ValueKind::None if options.contains(&"none") => Some(("none".to_string(), v.span)),
        ValueKind::Bool(b) if options.contains(&if *b { "true" } else { "false" }) => {
            Some((b.to_string(), v.span))
        }
        ValueKind::Word(w) => {
            let mut diag = Diagnostic::error(v.span, format!("unknown {key} `{w}`"))
                .label(format!("not a valid `{key}`"))
                .note(format!("valid values: {}", options.join(", ")));
            if let Some(s) = did_you_mean(w, options.iter().copied()) {
                diag = diag.hint(format!("did you mean `{s}`?"));
            }
            d.push(diag);
            None
        }
        _ => {
            d.push(type_error(v, &format!("one of {}", quoted(options))));
            None
        }
    }
}

pub(crate) fn type_error(v: &Value, expected: &str) -> Diagnostic {
    Diagnostic::error(
        v.span,
        format!("expected {expected}, found {}", v.describe()),
    )
    .label(format!("expected {expected}"))
}

/// How deep evaluation may go, counting every level of every expression it passes
/// through, the fields it names included. One expression is at most a few hundred levels
/// deep (`parse::MAX_OPERATORS`, `parse::MAX_NESTING`); this bounds chains of fields
/// that name each other (`a = b + 1`, `b = c + 1`, ...), which would otherwise recurse
/// once per field.
pub const MAX_EVAL_DEPTH: usize = 1000;

/// How many expression nodes evaluating one field may visit, a named field counted anew
/// at each use: fields that each use the previous one twice would otherwise take time
/// exponential in their number.
pub const MAX_EVAL_STEPS: usize = 10_000;

/// The state of evaluating one field.
struct Run {
    /// The fields being evaluated, outermost first: a name that refers to one of them
    /// is looked up further out.
    stack: Vec<(*const Table, String)>,
    /// Nodes visited so far.
    steps: usize,
}

/// Evaluates an expression `depth` levels into the evaluation of a field. Names look up
/// numeric fields in `chain` (innermost first); a field being evaluated is skipped, so
/// `hidden = 4 * hidden` in a section reads the enclosing `hidden`, and a cycle ends in
/// "unknown name" instead of recursing forever.
///
/// This and `lookup` are the recursive path, so they keep small frames: everything that
/// builds a message lives in functions of its own.
fn eval(
    v: &Value,
    chain: &[&Table],
    run: &mut Run,
    depth: usize,
    what: &str,
) -> Result<f64, Box<Diagnostic>> {
    run.steps += 1;
    if depth > MAX_EVAL_DEPTH || run.steps > MAX_EVAL_STEPS {
        return Err(too_much(v, depth));
    }
    let depth = depth + 1;
    Ok(match &v.kind {
        ValueKind::Number { value, .. } => *value,
        ValueKind::Paren(e) => eval(e, chain, run, depth, what)?,
        ValueKind::Neg(e) => -eval(e, chain, run, depth, what)?,
        ValueKind::Binary { op, lhs, rhs } => {
            let a = eval(lhs, chain, run, depth, what)?;
            let b = eval(rhs, chain, run, depth, what)?;
            match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div if b == 0.0 => return Err(division_by_zero(rhs)),
                BinOp::Div => a / b,
                BinOp::Pow => a.powf(b),
            }
        }
        ValueKind::Call { func, args } => return call(v, func, args, chain, run, depth, what),
        ValueKind::Word(name) => return lookup(name, v, chain, run, depth, what),
        _ => return Err(Box::new(type_error(v, what))),
    })
}

/// `sqrt(x)`, `min(a, b)`, `max(a, b)`.
#[inline(never)]
fn call(
    v: &Value,
    func: &Ident,
    args: &[Value],
    chain: &[&Table],
    run: &mut Run,
    depth: usize,
    what: &str,
) -> Result<f64, Box<Diagnostic>> {
    let want = match func.name.as_str() {
        "sqrt" => 1,
        "min" | "max" => 2,
        other => {
            let mut diag = Diagnostic::error(func.span, format!("unknown function `{other}`"))
                .label("not a function")
                .note("functions: sqrt(x), min(a, b), max(a, b)");
            if let Some(s) = did_you_mean(other, ["sqrt", "min", "max"]) {
                diag = diag.hint(format!("did you mean `{s}`?"));
            }
            return Err(Box::new(diag));
        }
    };
    if args.len() != want {
        return Err(Box::new(
            Diagnostic::error(
                v.span,
                format!(
                    "`{}` takes {want} argument{}, found {}",
                    func.name,
                    if want == 1 { "" } else { "s" },
                    args.len()
                ),
            )
            .label("wrong number of arguments"),
        ));
    }
    let mut xs = Vec::new();
    for a in args {
        xs.push(eval(a, chain, run, depth, what)?);
    }
    Ok(match func.name.as_str() {
        "sqrt" => {
            if xs[0] < 0.0 {
                return Err(Box::new(
                    Diagnostic::error(args[0].span, "square root of a negative number")
                        .label("negative"),
                ));
            }
            xs[0].sqrt()
        }
        "min" => xs[0].min(xs[1]),
        _ => xs[0].max(xs[1]),
    })
}

/// The error for an evaluation past `MAX_EVAL_DEPTH` or `MAX_EVAL_STEPS`.
#[cold]
#[inline(never)]
fn too_much(v: &Value, depth: usize) -> Box<Diagnostic> {
    Box::new(if depth > MAX_EVAL_DEPTH {
        Diagnostic::error(
            v.span,
            format!("expression too deep: more than {MAX_EVAL_DEPTH} levels"),
        )
        .label("evaluation reaches this deep, counting the fields it names")
        .hint("do not chain fields that name each other so far")
    } else {
        Diagnostic::error(
            v.span,
            format!("expression too costly: more than {MAX_EVAL_STEPS} steps"),
        )
        .label("evaluation had taken that many steps when it reached here")
        .hint("a field that names other fields counts their expressions at every use")
    })
}

#[cold]
#[inline(never)]
fn division_by_zero(rhs: &Value) -> Box<Diagnostic> {
    Box::new(Diagnostic::error(rhs.span, "division by zero").label("this is zero"))
}

fn lookup(
    name: &str,
    v: &Value,
    chain: &[&Table],
    run: &mut Run,
    depth: usize,
    what: &str,
) -> Result<f64, Box<Diagnostic>> {
    for (i, table) in chain.iter().enumerate() {
        let table_id = *table as *const Table;
        if run.stack.iter().any(|(t, k)| *t == table_id && k == name) {
            continue;
        }
        let Some(node) = table.get(name) else {
            continue;
        };
        let NodeValue::Leaf(field) = &node.value else {
            return Err(not_a_number(name, v));
        };
        run.stack.push((table_id, name.to_string()));
        let r = eval(field, &chain[i..], run, depth, "a number");
        run.stack.pop();
        return r.map_err(|e| used_here(e, name, v, field));
    }
    Err(unknown_name(name, v, chain, what))
}

#[cold]
#[inline(never)]
fn not_a_number(name: &str, v: &Value) -> Box<Diagnostic> {
    Box::new(
        Diagnostic::error(v.span, format!("`{name}` is a section, not a number"))
            .label("not a number"),
    )
}

/// Points an error in a named field's own value back at where the name is used.
#[inline(never)]
fn used_here(e: Box<Diagnostic>, name: &str, v: &Value, field: &Value) -> Box<Diagnostic> {
    if e.primary.span == field.span {
        Box::new((*e).secondary(v.span, format!("`{name}` used here")))
    } else {
        e
    }
}

#[cold]
#[inline(never)]
fn unknown_name(name: &str, v: &Value, chain: &[&Table], what: &str) -> Box<Diagnostic> {
    // Every numeric field in reach, each name once, innermost first.
    let mut seen = std::collections::HashSet::new();
    let names = chain.iter().flat_map(|t| {
        t.entries
            .iter()
            .filter(|(_, n)| matches!(n.value, NodeValue::Leaf(_)))
            .map(|(k, _)| k.as_str())
    });
    let names = names.filter(|k| seen.insert(*k));
    let mut diag = Diagnostic::error(v.span, format!("expected {what}, found the word `{name}`"))
        .label(format!(
            "no numeric field `{name}` is given here or in an enclosing section"
        ));
    if let Some(s) = did_you_mean(name, names) {
        diag = diag.hint(format!("did you mean `{s}`?"));
    }
    Box::new(diag)
}
