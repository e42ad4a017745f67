//! The bounds on what a chat template may do: how many instructions it runs, how deep it
//! recurses, how large a value it builds and how many bytes it writes in all, and the
//! template functions that enforce them where minijinja has no limit of its own.
//!
//! A template is code from a model file. minijinja bounds instructions (fuel) and recursion
//! but not memory: `~`, `+` and `*` and several filters can double a string or a list on
//! every step. `rewrite.rs` routes those operators to the functions here, which compute a
//! result's size before they build it, checks every value a call, a capture or a literal
//! produces, and sends all output through the formatter here, which counts what it writes.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt::{self, Write as _};

use minijinja::value::{Rest, Value, ValueKind};
use minijinja::{Error, ErrorKind, Output, State};

/// The largest chat template source accepted, in bytes. Real templates are a few KiB (the
/// largest known ones some tens of KiB).
pub const MAX_TEMPLATE_BYTES: usize = 1 << 20;

/// Instructions one render may run (minijinja's fuel). A real template spends a few dozen
/// per message, so this covers conversations of many thousand turns, and a render that
/// runs out stops within a second or so.
pub const TEMPLATE_FUEL: u64 = 10_000_000;

/// minijinja's recursion limit for a render: nested blocks and loops count one level each,
/// a macro call ten.
pub const TEMPLATE_RECURSION_LIMIT: usize = 200;

/// The largest value a template may build, in bytes: a string's length, or what a list or
/// map would print as (its items' sizes summed, a string counted by its length). The
/// rendered prompt is such a value too; 16 MiB is a few million tokens.
pub const MAX_VALUE_BYTES: usize = 16 << 20;

/// The most items a template may put in one list (by `+`, `*` or a filter).
pub const MAX_LIST_ITEMS: usize = 1 << 20;

/// Bytes one render may build and write in all: every string an operator or a checked
/// filter makes and every byte of output, captured output included. This bounds the
/// memory a render can hold and the copying it can do.
pub const MAX_RENDER_BYTES: usize = 256 << 20;

/// Items of lists and maps one render may walk to measure the values it checks.
pub const MAX_MEASURE_STEPS: usize = 1 << 24;

/// Lists and maps nest at most this deep in a value a template builds.
pub const MAX_VALUE_DEPTH: usize = 64;

/// What one render has spent, kept per thread: minijinja renders on the caller's thread,
/// and the template functions find the render they serve here.
#[derive(Debug, Clone, Copy)]
struct Spent {
    bytes: usize,
    steps: usize,
}

thread_local! {
    static SPENT: Cell<Option<Spent>> = const { Cell::new(None) };
}

/// Opens a render's account on this thread; the previous one (if any) comes back on drop.
#[derive(Debug)]
pub struct RenderGuard {
    previous: Option<Spent>,
}

impl RenderGuard {
    pub fn enter() -> Self {
        let previous = SPENT.with(|s| s.replace(Some(Spent { bytes: 0, steps: 0 })));
        Self { previous }
    }
}

impl Drop for RenderGuard {
    fn drop(&mut self) {
        SPENT.with(|s| s.set(self.previous));
    }
}

fn bound_error(message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, message)
}

/// Spends `bytes` of the render's byte budget.
pub(super) fn spend_bytes(bytes: usize) -> Result<(), Error> {
    SPENT.with(|s| {
        let Some(mut spent) = s.get() else {
            return Err(bound_error(
                "chat template function called outside a bounded render".to_owned(),
            ));
        };
        spent.bytes = spent.bytes.saturating_add(bytes);
        s.set(Some(spent));
        if spent.bytes > MAX_RENDER_BYTES {
            return Err(bound_error(format!(
                "the template built or wrote more than {MAX_RENDER_BYTES} bytes in all \
                 (the bound of one render)"
            )));
        }
        Ok(())
    })
}

fn spend_steps(steps: usize) -> Result<(), Error> {
    SPENT.with(|s| {
        let Some(mut spent) = s.get() else {
            return Err(bound_error(
                "chat template function called outside a bounded render".to_owned(),
            ));
        };
        spent.steps = spent.steps.saturating_add(steps);
        s.set(Some(spent));
        if spent.steps > MAX_MEASURE_STEPS {
            return Err(bound_error(format!(
                "the template's values took more than {MAX_MEASURE_STEPS} steps to measure \
                 (the bound of one render)"
            )));
        }
        Ok(())
    })
}

fn too_large(what: &str, size: usize) -> Error {
    bound_error(format!(
        "{what} would be {size} bytes or more, over the bound of {MAX_VALUE_BYTES}"
    ))
}

/// The size of `v` as it would print, counted up to `limit`: `Err(size)` with a size over
/// `limit` as soon as the count passes it.
fn measure(v: &Value, limit: usize) -> Result<usize, Error> {
    fn walk(
        v: &Value,
        depth: usize,
        acc: &mut usize,
        steps: &mut usize,
        limit: usize,
    ) -> Result<(), Error> {
        *steps += 1;
        match v.kind() {
            ValueKind::String => *acc += v.as_str().map_or(0, str::len) + 2,
            ValueKind::Seq | ValueKind::Iterable | ValueKind::Map => {
                if depth >= MAX_VALUE_DEPTH {
                    return Err(bound_error(format!(
                        "a value nests lists or maps more than {MAX_VALUE_DEPTH} deep"
                    )));
                }
                let is_map = v.kind() == ValueKind::Map;
                for item in v.try_iter()? {
                    *acc += 2;
                    walk(&item, depth + 1, acc, steps, limit)?;
                    if is_map {
                        walk(&v.get_item(&item)?, depth + 1, acc, steps, limit)?;
                    }
                    if *acc > limit || *steps > MAX_MEASURE_STEPS {
                        return Ok(());
                    }
                }
            }
            // Numbers, booleans, none, undefined, callables: a short printed form.
            _ => *acc += 24,
        }
        Ok(())
    }
    let mut acc = 0;
    let mut steps = 0;
    let result = walk(v, 0, &mut acc, &mut steps, limit);
    spend_steps(steps)?;
    result.map(|()| acc)
}

/// Checks that `v`, a value the template just made, is within [`MAX_VALUE_BYTES`].
fn check_value(v: &Value) -> Result<(), Error> {
    match v.kind() {
        ValueKind::String => {
            let len = v.as_str().map_or(0, str::len);
            if len > MAX_VALUE_BYTES {
                return Err(too_large("a string", len));
            }
        }
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map => {
            if v.len().is_some_and(|n| n > MAX_LIST_ITEMS) {
                return Err(bound_error(format!(
                    "a list or map would have more than {MAX_LIST_ITEMS} items"
                )));
            }
            let size = measure(v, MAX_VALUE_BYTES)?;
            if size > MAX_VALUE_BYTES {
                return Err(too_large("a list or map", size));
            }
        }
        _ => {}
    }
    Ok(())
}

/// `__archc_checked(v)`: `v`, once it is known to be within the bounds.
pub fn checked(v: Value) -> Result<Value, Error> {
    check_value(&v)?;
    Ok(v)
}

/// A `fmt::Write` that refuses to grow past `limit` bytes.
struct Capped {
    text: String,
    limit: usize,
}

impl fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.text.len() + s.len() > self.limit {
            return Err(fmt::Error);
        }
        self.text.push_str(s);
        Ok(())
    }
}

/// `v` as it prints (minijinja's `Display`), refused past `limit` bytes.
fn display_capped<'a>(v: &'a Value, limit: usize, what: &str) -> Result<Cow<'a, str>, Error> {
    if let Some(s) = v.as_str() {
        if s.len() > limit {
            return Err(too_large(what, s.len()));
        }
        return Ok(Cow::Borrowed(s));
    }
    let mut out = Capped {
        text: String::new(),
        limit,
    };
    write!(out, "{v}").map_err(|_| too_large(what, limit + 1))?;
    Ok(Cow::Owned(out.text))
}

/// `a ~ b`: both printed and joined, within the bounds.
pub fn concat(a: Value, b: Value) -> Result<Value, Error> {
    let left = display_capped(&a, MAX_VALUE_BYTES, "a string made by `~`")?;
    let right = display_capped(&b, MAX_VALUE_BYTES - left.len(), "a string made by `~`")?;
    spend_bytes(left.len() + right.len())?;
    Ok(Value::from([left.as_ref(), right.as_ref()].concat()))
}

/// Evaluates `a OP b` with minijinja's own operator, for the cases that cannot grow.
fn delegate(state: &State, op: &str, a: Value, b: Value) -> Result<Value, Error> {
    state
        .env()
        .compile_expression(&format!("a {op} b"))?
        .eval(minijinja::context! { a => a, b => b })
}

fn is_list(v: &Value) -> bool {
    matches!(v.kind(), ValueKind::Seq | ValueKind::Iterable)
}

/// `a + b`: lists are joined and strings concatenated within the bounds; numbers are
/// added by minijinja.
pub fn add(state: &State, a: Value, b: Value) -> Result<Value, Error> {
    if is_list(&a) && is_list(&b) {
        let mut items = Vec::new();
        for side in [&a, &b] {
            for item in side.try_iter()? {
                if items.len() == MAX_LIST_ITEMS {
                    return Err(bound_error(format!(
                        "a list made by `+` would have more than {MAX_LIST_ITEMS} items"
                    )));
                }
                items.push(item);
            }
        }
        spend_bytes(items.len() * std::mem::size_of::<Value>())?;
        return checked(Value::from(items));
    }
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        let len = x.len().saturating_add(y.len());
        if len > MAX_VALUE_BYTES {
            return Err(too_large("a string made by `+`", len));
        }
        spend_bytes(len)?;
        return Ok(Value::from([x, y].concat()));
    }
    delegate(state, "+", a, b)
}

/// `a * b`: a string or list repeated within the bounds; numbers multiplied by minijinja.
pub fn mul(state: &State, a: Value, b: Value) -> Result<Value, Error> {
    let (repeated, count) = if a.kind() == ValueKind::Number {
        (&b, &a)
    } else {
        (&a, &b)
    };
    if let (Some(s), Some(n)) = (repeated.as_str(), count.as_usize()) {
        let len = s.len().saturating_mul(n);
        if len > MAX_VALUE_BYTES {
            return Err(too_large("a string made by `*`", len));
        }
        spend_bytes(len)?;
    } else if let (true, Some(n)) = (is_list(repeated), count.as_usize()) {
        let Some(len) = repeated.len() else {
            return delegate(state, "*", a, b);
        };
        // An empty list repeated a huge number of times still takes that long to iterate.
        if n > MAX_LIST_ITEMS || len.saturating_mul(n) > MAX_LIST_ITEMS {
            return Err(bound_error(format!(
                "a list made by `*` would have more than {MAX_LIST_ITEMS} items"
            )));
        }
        let size = measure(repeated, MAX_VALUE_BYTES)?.saturating_mul(n);
        if size > MAX_VALUE_BYTES {
            return Err(too_large("a list made by `*`", size));
        }
        spend_bytes(len * n * std::mem::size_of::<Value>())?;
    }
    delegate(state, "*", a, b)
}

/// The formatter of `{{ ... }}` and of template text: writes what minijinja writes without
/// auto-escaping, counted against the render's bytes.
pub fn format(out: &mut Output, _state: &State, value: &Value) -> Result<(), Error> {
    let text = display_capped(value, MAX_VALUE_BYTES, "a value written out")?;
    spend_bytes(text.len())?;
    out.write_str(&text).map_err(Error::from)
}

/// A filter (or method) argument as text, as minijinja's string arguments take it.
fn text_arg<'a>(args: &'a [Value], i: usize, what: &str) -> Result<Cow<'a, str>, Error> {
    match args.get(i) {
        Some(v) if !v.is_kwargs() => display_capped(v, MAX_VALUE_BYTES, what),
        _ => Ok(Cow::Borrowed("")),
    }
}

/// The size `s.replace(old, new)` would have (for at most `count` replacements).
fn replaced_len(s: &str, old: &str, new: &str, count: Option<usize>) -> usize {
    let found = if old.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(old).count()
    };
    let found = count.map_or(found, |c| c.min(found));
    s.len()
        .saturating_add(found.saturating_mul(new.len()))
        .saturating_sub(found.saturating_mul(old.len()))
}

/// The size a join of `items` with `sep` would have, refused past the bound.
fn check_join(items: &Value, sep: &str) -> Result<(), Error> {
    let n = items.len().unwrap_or(0);
    let size = measure(items, MAX_VALUE_BYTES)?.saturating_add(n.saturating_mul(sep.len()));
    if size > MAX_VALUE_BYTES {
        return Err(too_large("a joined string", size));
    }
    spend_bytes(size)
}

/// Every run of digits in a format string (widths and precisions) within the bound.
fn check_format_widths(spec: &str) -> Result<(), Error> {
    for run in spec.split(|c: char| !c.is_ascii_digit()) {
        if run.len() > 8 || run.parse::<usize>().is_ok_and(|w| w > MAX_VALUE_BYTES) {
            return Err(bound_error(format!(
                "a format width or precision of {run} is over the bound of {MAX_VALUE_BYTES}"
            )));
        }
    }
    Ok(())
}

/// A number argument as a count: a number that is not a `usize` counts as too large.
fn as_count(v: &Value) -> usize {
    match v.as_usize() {
        Some(n) => n,
        None if v.kind() == ValueKind::Number => usize::MAX,
        None => 0,
    }
}

/// The largest whole number among a filter's arguments after its input, keyword arguments
/// included: an upper bound on any width or count it was given.
fn largest_number(args: &[Value]) -> Result<usize, Error> {
    let mut largest = 0;
    for v in args.iter().skip(1) {
        if v.is_kwargs() {
            for key in v.try_iter()? {
                largest = largest.max(as_count(&v.get_item(&key)?));
            }
        } else {
            largest = largest.max(as_count(v));
        }
    }
    Ok(largest)
}

/// A filter that multiplies its input by a number argument: checks the result's size
/// before minijinja's filter runs.
pub fn guarded_filter(name: &'static str) -> impl Fn(&State, Rest<Value>) -> Result<Value, Error> {
    let original = match name {
        "replace" => Value::from_function(minijinja::filters::replace),
        "join" => Value::from_function(minijinja::filters::join),
        "indent" => Value::from_function(minijinja::filters::indent),
        "batch" => Value::from_function(minijinja::filters::batch),
        "slice" => Value::from_function(minijinja::filters::slice),
        _ => Value::from_function(minijinja::filters::format),
    };
    move |state: &State, args: Rest<Value>| {
        let number = largest_number(&args)?;
        match name {
            "replace" => {
                let s = text_arg(&args, 0, "the string to replace in")?;
                let old = text_arg(&args, 1, "the text to replace")?;
                let new = text_arg(&args, 2, "the replacement")?;
                let count = args
                    .get(3)
                    .filter(|v| !v.is_kwargs())
                    .and_then(Value::as_usize);
                let len = replaced_len(&s, &old, &new, count);
                if len > MAX_VALUE_BYTES {
                    return Err(too_large("the result of `replace`", len));
                }
                spend_bytes(len)?;
            }
            "join" => {
                let sep = text_arg(&args, 1, "the separator of `join`")?;
                check_join(args.first().unwrap_or(&Value::UNDEFINED), &sep)?;
            }
            "indent" => {
                let s = text_arg(&args, 0, "the string to indent")?;
                let lines = s.lines().count() + 1;
                let size = s.len().saturating_add(lines.saturating_mul(number));
                if size > MAX_VALUE_BYTES {
                    return Err(too_large("the result of `indent`", size));
                }
            }
            "batch" | "slice" => {
                if number > MAX_LIST_ITEMS {
                    return Err(bound_error(format!(
                        "`{name}` of {number} is over the bound of {MAX_LIST_ITEMS} items"
                    )));
                }
            }
            _ => check_format_widths(&text_arg(&args, 0, "a format string")?)?,
        }
        original.call(state, &args)
    }
}

/// The filters [`guarded_filter`] wraps.
pub const GUARDED_FILTERS: [&str; 6] = ["replace", "join", "indent", "batch", "slice", "format"];

/// The Python string methods templates call (`minijinja_contrib::pycompat`), with the ones
/// that can multiply their input checked first.
pub fn unknown_method(
    state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if let Some(s) = value.as_str() {
        match method {
            "replace" => {
                let old = text_arg(args, 0, "the text to replace")?;
                let new = text_arg(args, 1, "the replacement")?;
                let count = args.get(2).and_then(|v| {
                    v.as_i64()
                        .filter(|&c| c >= 0)
                        .and_then(|c| usize::try_from(c).ok())
                });
                let len = replaced_len(s, &old, &new, count);
                if len > MAX_VALUE_BYTES {
                    return Err(too_large("the result of `replace`", len));
                }
                spend_bytes(len)?;
            }
            "join" => check_join(args.first().unwrap_or(&Value::UNDEFINED), s)?,
            "format" => check_format_widths(s)?,
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_len_counts_every_match() {
        assert_eq!(replaced_len("abcabc", "b", "xyz", None), 10);
        assert_eq!(replaced_len("abcabc", "b", "xyz", Some(1)), 8);
        assert_eq!(replaced_len("ab", "", "-", None), 5);
    }

    #[test]
    fn functions_refuse_to_run_outside_a_render() {
        let err = concat(Value::from("a"), Value::from("b")).unwrap_err();
        assert!(
            err.to_string().contains("outside a bounded render"),
            "{err}"
        );
    }
}
