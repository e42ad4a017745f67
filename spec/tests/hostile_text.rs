//! Hostile `.arch` text of sizes no person writes: long operator chains, fields that name
//! each other in long or branching chains, files of 100,000 keys and schedules of 100,000
//! selectors. Each must end in located diagnostics that name the limit (or be accepted),
//! never in a crash, and in time linear in the file. Generated here rather than stored,
//! because of their size.

use archc_spec::diagnostics::{render, Diagnostic, MAX_DIAGNOSTICS};
use archc_spec::parse::{MAX_NESTING, MAX_OPERATORS};
use archc_spec::validate::{check_source, MAX_EVAL_DEPTH, MAX_EVAL_STEPS};
use archc_spec::{fmt, Spec};

/// A valid file whose model section also holds `model_extra` (lines of entries).
fn file_with(model_extra: &str) -> String {
    format!(
        "model \"m\" {{\n  vocab = 1000\n  hidden = 64\n  layers = 2\n{model_extra}}}\n\
         block {{\n  attention {{ heads = 4 }}\n  mlp {{ hidden = 128 }}\n}}\n"
    )
}

/// A file whose `embed_scale` is `expr`.
fn with_embed_scale(expr: &str) -> String {
    file_with(&format!("  embed_scale = {expr}\n"))
}

/// The diagnostics of checking `src`; panics if it checks clean.
fn errors(src: &str) -> Vec<Diagnostic> {
    match check_source("t.arch", src) {
        Ok(_) => panic!("expected errors, the file checks clean"),
        Err(d) => d,
    }
}

fn accepted(src: &str) -> Spec {
    check_source("t.arch", src)
        .unwrap_or_else(|d| panic!("expected a valid file:\n{}", render("t.arch", src, &d)))
}

/// `(line, column)`, both from 1, of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// Asserts that `src` is refused with one error, about a too long expression, located at
/// the operator past the limit (`op`, found as the n-th match in the source), and that
/// `fmt` refuses it the same way.
fn assert_too_long(src: &str, op_offset: usize) {
    let d = errors(src);
    assert_eq!(d.len(), 1, "{}", render("t.arch", src, &d));
    let message = &d[0].message;
    assert!(
        message.contains("expression too long") && message.contains(&MAX_OPERATORS.to_string()),
        "the error names the limit: {message}"
    );
    assert_eq!(
        d[0].primary.span.start, op_offset,
        "located at the operator"
    );
    let (line, col) = line_col(src, op_offset);
    let shown = render("t.arch", src, &d);
    assert!(
        shown.starts_with(&format!("t.arch:{line}:{col}: error: expression too long")),
        "{}",
        &shown[..shown.len().min(300)]
    );
    assert_eq!(
        fmt::format_source(src).err(),
        Some(d),
        "fmt refuses it alike"
    );
}

/// Byte offset of the `n`-th (from 0) occurrence of `pat` at or after `from`.
fn nth_offset(src: &str, from: usize, pat: &str, n: usize) -> usize {
    src[from..]
        .match_indices(pat)
        .nth(n)
        .map(|(i, _)| from + i)
        .expect("the pattern occurs often enough")
}

#[test]
fn long_unary_minus_chain_is_refused() {
    let src = with_embed_scale(&format!("{}2", "-".repeat(100_000)));
    let start = src.find("embed_scale = ").expect("field") + "embed_scale = ".len();
    assert_too_long(&src, start + MAX_OPERATORS);
}

#[test]
fn long_power_chain_is_refused() {
    let src = with_embed_scale(&vec!["1"; 100_000].join(" ** "));
    let start = src.find("embed_scale").expect("field");
    assert_too_long(&src, nth_offset(&src, start, "**", MAX_OPERATORS));
}

#[test]
fn long_sum_chain_is_refused() {
    let src = with_embed_scale(&vec!["1"; 100_000].join(" + "));
    let start = src.find("embed_scale").expect("field");
    assert_too_long(&src, nth_offset(&src, start, "+", MAX_OPERATORS));
}

#[test]
fn long_chain_with_a_syntax_error_is_one_syntax_error() {
    // pest parses the chain with loops; the error path parses each item again.
    let src = with_embed_scale(&format!("{} +", vec!["1"; 100_000].join(" + ")));
    let d = errors(&src);
    assert_eq!(d.len(), 1, "{}", render("t.arch", &src, &d));
    let end = src.find(" +\n").expect("the dangling operator") + " +".len();
    assert_eq!(d[0].primary.span.start, end, "{:?}", d[0]);
}

#[test]
fn chain_split_over_parentheses_counts_as_one_expression() {
    // 40 levels of parentheses with 10 operators each: 400 operators in all.
    let mut expr = "1".to_string();
    for _ in 0..40 {
        expr = format!("({expr}){}", " * 1".repeat(10));
    }
    const { assert!(40 < MAX_NESTING) };
    let src = with_embed_scale(&expr);
    let d = errors(&src);
    assert_eq!(d.len(), 1, "{}", render("t.arch", &src, &d));
    assert!(d[0].message.contains("expression too long"), "{d:?}");
}

#[test]
fn chains_at_the_limit_work_everywhere() {
    // MAX_OPERATORS operators of each kind: accepted, evaluated and formatted.
    let negs = format!("{}3", "-".repeat(MAX_OPERATORS));
    let pows = vec!["1"; MAX_OPERATORS + 1].join(" ** ");
    let sums = format!("2{}", " + 0".repeat(MAX_OPERATORS));
    for (expr, value) in [(negs, 3.0), (pows, 1.0), (sums, 2.0)] {
        let src = with_embed_scale(&expr);
        assert_eq!(accepted(&src).embed_scale, Some(value), "{}", &expr[..20]);
        let once = fmt::format_source(&src).expect("fmt accepts it");
        assert_eq!(fmt::format_source(&once).as_ref(), Ok(&once));
        assert_eq!(accepted(&once), accepted(&src));
    }
}

#[test]
fn long_chains_of_named_fields_are_refused() {
    // 100,000 fields, each naming the one before: `k1 = k0 + 1`, ...
    let mut extra = String::from("  k0 = 1\n");
    for i in 1..100_000 {
        extra.push_str(&format!("  k{i} = k{} + 1\n", i - 1));
    }
    let src = file_with(&format!("  embed_scale = k99999\n{extra}"));
    let d = errors(&src);
    assert!(d.len() <= MAX_DIAGNOSTICS + 1);
    assert!(!render("t.arch", &src, &d).is_empty());

    // Fields that are each 200 levels deep reach the depth limit in a few steps, so
    // the error is among the first reported.
    let mut extra = String::from("  d0 = 1\n");
    for i in 1..10 {
        extra.push_str(&format!("  d{i} = {}d{}\n", "-".repeat(200), i - 1));
    }
    let src = file_with(&format!("  embed_scale = d9\n{extra}"));
    let d = errors(&src);
    let deep = d
        .iter()
        .find(|d| d.message.contains("expression too deep"))
        .unwrap_or_else(|| panic!("{}", render("t.arch", &src, &d)));
    assert!(deep.message.contains(&MAX_EVAL_DEPTH.to_string()));
}

#[test]
fn branching_chains_of_named_fields_are_refused() {
    // `b{i} = b{i-1} + b{i-1}`: evaluating b40 naively visits 2^41 nodes.
    let mut extra = String::from("  b0 = 1\n");
    for i in 1..=40 {
        extra.push_str(&format!("  b{i} = b{} + b{}\n", i - 1, i - 1));
    }
    let src = file_with(&format!("  embed_scale = b40\n{extra}"));
    let d = errors(&src);
    let costly = d
        .iter()
        .find(|d| d.message.contains("expression too costly"))
        .unwrap_or_else(|| panic!("{}", render("t.arch", &src, &d)));
    assert!(costly.message.contains(&MAX_EVAL_STEPS.to_string()));
    // Shallow sharing stays well within the budget.
    let src = file_with(
        "  embed_scale = c3 / c3\n  c0 = 1\n  c1 = c0 + c0\n  c2 = c1 * c1\n  c3 = c2 + c2\n",
    );
    assert!(errors(&src)
        .iter()
        .all(|d| d.message.starts_with("unknown key")));
}

#[test]
fn hundred_thousand_unknown_keys_are_reported_briefly() {
    // Every key unknown, each with a trailing comment (comments are attached by the
    // parser, which must not rescan them per entry either).
    let mut extra = String::new();
    for i in 0..100_000 {
        extra.push_str(&format!("  key{i} = {i}  # note {i}\n"));
    }
    let src = file_with(&extra);
    let d = errors(&src);
    assert_eq!(d.len(), MAX_DIAGNOSTICS + 1);
    for (i, diag) in d[..MAX_DIAGNOSTICS].iter().enumerate() {
        assert_eq!(diag.message, format!("unknown key `key{i}` in `model`"));
    }
    let last = &d[MAX_DIAGNOSTICS];
    assert_eq!(
        last.message,
        format!("{} more errors not shown", 100_000 - MAX_DIAGNOSTICS)
    );
    let at = src
        .find(&format!("key{MAX_DIAGNOSTICS} "))
        .expect("the key is in the file");
    assert_eq!(last.primary.span.start, at);
    // fmt keeps every comment of such a file, in place.
    let formatted = fmt::format_source(&src).expect("fmt");
    assert_eq!(formatted.matches("# note").count(), 100_000);
    assert!(formatted.contains("key99999 = 99999  # note 99999\n"));
}

/// A model of `layers` layers with blocks `a` and `b`, and `schedule`.
fn scheduled(layers: usize, schedule: &str) -> String {
    format!(
        "model \"m\" {{\n  vocab = 1000\n  hidden = 64\n  layers = {layers}\n}}\n\
         block a {{\n  attention {{ heads = 4 }}\n  mlp {{ hidden = 128 }}\n}}\n\
         block b : a {{ attention.rope = none }}\n{schedule}\n"
    )
}

#[test]
fn schedules_of_many_selectors_are_reported_briefly() {
    // 100,000 selectors of every layer of the deepest model would be 4 * 10^8 steps if
    // each were walked.
    let layers = archc_spec::validate::MAX_LAYERS as usize;
    let every = vec!["every 1"; 100_000].join(" + ");
    let src = scheduled(
        layers,
        &format!("schedule {{\n  a = {every}\n  b = rest\n}}"),
    );
    let d = errors(&src);
    assert_eq!(d.len(), 1, "{}", render("t.arch", &src, &d));
    assert_eq!(
        d[0].message,
        format!("layers 0..{layers} given to `a` twice")
    );
    // Each layer listed many times: reported once each, in order.
    let list: Vec<String> = (0..100_000)
        .map(|i| ((i * 2) % layers).to_string())
        .collect();
    let src = scheduled(
        layers,
        &format!(
            "schedule {{\n  a = layers [{}]\n  b = rest\n}}",
            list.join(", ")
        ),
    );
    let d = errors(&src);
    assert_eq!(d.len(), 1, "{}", render("t.arch", &src, &d));
    assert!(
        d[0].message.starts_with("layers 0, 2, 4, 6,")
            && d[0].message.ends_with("given to `a` twice"),
        "{}",
        d[0].message
    );
}
