//! Schedule resolution: `repeat [...]` patterns and named rules with selectors become
//! one block index per layer; layers covered twice or not at all are errors that name
//! the layers.

use super::eval::Diags;
use crate::ast::{Int, ScheduleBody, ScheduleEntryKind, SelectorKind, Span};
use crate::diagnostics::{did_you_mean, Diagnostic};

/// A declared block: its name and header span.
pub(crate) struct Declared<'a> {
    pub name: &'a str,
    pub span: Span,
}

/// What the schedule says: the block (index into the declared list) of every layer,
/// when it could be resolved, and which declared blocks it names.
pub(crate) struct Resolved {
    pub layers: Option<Vec<usize>>,
    pub referenced: Vec<bool>,
}

/// Largest `repeat` expansion accepted (a typo like `a * 1_000_000_000` should not
/// allocate gigabytes).
const MAX_PATTERN: u64 = 1 << 20;

pub(crate) fn resolve(
    body: Option<(&ScheduleBody, Span)>,
    blocks: &[Declared<'_>],
    layers: Option<u64>,
    d: &mut Diags,
) -> Resolved {
    let mut referenced = vec![false; blocks.len()];
    let Some((body, keyword)) = body else {
        if blocks.len() == 1 {
            referenced[0] = true;
            return Resolved {
                layers: layers.map(|n| vec![0; n as usize]),
                referenced,
            };
        }
        if let Some(second) = blocks.get(1) {
            d.push(
                Diagnostic::error(second.span, "several blocks but no `schedule`")
                    .label("a second block")
                    .hint("add `schedule { ... }` to say which layer runs which block"),
            );
        }
        return Resolved {
            layers: None,
            referenced,
        };
    };
    let find = |name: &str, span: Span, d: &mut Diags| -> Option<usize> {
        let i = blocks.iter().position(|b| b.name == name);
        if i.is_none() {
            let mut diag = Diagnostic::error(span, format!("no block named `{name}`"))
                .label("not a declared block");
            if let Some(s) = did_you_mean(name, blocks.iter().map(|b| b.name)) {
                diag = diag.hint(format!("did you mean `{s}`?"));
            } else {
                let names: Vec<String> = blocks.iter().map(|b| format!("`{}`", b.name)).collect();
                diag = diag.note(format!("declared blocks: {}", names.join(", ")));
            }
            d.push(diag);
        }
        i
    };
    if body.entries.is_empty() {
        d.push(
            Diagnostic::error(body.span, "the schedule is empty")
                .label("no rules")
                .hint("write `repeat [...]` or rules such as `NAME = rest`"),
        );
        return Resolved {
            layers: None,
            referenced,
        };
    }
    let repeats = body
        .entries
        .iter()
        .filter(|e| matches!(e.kind, ScheduleEntryKind::Repeat(_)))
        .count();
    if repeats > 0 && body.entries.len() > 1 {
        let second = &body.entries[1];
        d.push(
            Diagnostic::error(second.span, "`repeat` must be the only entry of a schedule")
                .label("a second entry")
                .hint("either a `repeat [...]` pattern or named rules, not both"),
        );
        return Resolved {
            layers: None,
            referenced,
        };
    }
    if let ScheduleEntryKind::Repeat(items) = &body.entries[0].kind {
        let mut pattern = Vec::new();
        let mut ok = true;
        for item in items {
            let idx = find(&item.block.name, item.block.span, d);
            let count = match &item.count {
                None => Some(1),
                Some(n) => int_value(n, d),
            };
            match (idx, count) {
                (Some(i), Some(c)) => {
                    referenced[i] = true;
                    if c == 0 {
                        d.push(
                            Diagnostic::error(item.span, "a repeat count of zero")
                                .label("must be at least 1"),
                        );
                        ok = false;
                    } else if pattern.len() as u64 + c > MAX_PATTERN {
                        d.push(
                            Diagnostic::error(item.span, "the repeat pattern is too long")
                                .label(format!("more than {MAX_PATTERN} entries")),
                        );
                        ok = false;
                    } else {
                        pattern.extend(std::iter::repeat_n(i, c as usize));
                    }
                }
                _ => ok = false,
            }
        }
        if items.is_empty() {
            d.push(
                Diagnostic::error(body.entries[0].span, "`repeat` needs at least one block")
                    .label("empty pattern"),
            );
            ok = false;
        }
        let layers = match layers {
            Some(n) if ok && !pattern.is_empty() => Some(
                (0..n as usize)
                    .map(|i| pattern[i % pattern.len()])
                    .collect(),
            ),
            _ => None,
        };
        return Resolved { layers, referenced };
    }

    // Named rules: first the explicit selectors, then `rest`.
    let n = layers.unwrap_or(0) as usize;
    let check_layers = layers.is_some();
    let mut owner: Vec<Option<usize>> = vec![None; n];
    // (first owner, second owner, span of the second rule) -> layers covered twice.
    let mut twice: Vec<(usize, usize, Span, Vec<usize>)> = Vec::new();
    let mut rest_rule: Option<(usize, Span)> = None;
    let mut ok = true;
    // Layers handed out so far. Past 2n, at least n of them were given twice and are
    // reported; later selectors only have their numbers checked, so that many selectors
    // of all layers (`every 1 + every 1 + ...`) cost time linear in the file.
    let mut handed = 0usize;
    for entry in &body.entries {
        let ScheduleEntryKind::Rule { block, selectors } = &entry.kind else {
            continue;
        };
        let idx = find(&block.name, block.span, d);
        if let Some(i) = idx {
            referenced[i] = true;
        } else {
            ok = false;
        }
        for sel in selectors {
            let mut chosen: Vec<usize> = Vec::new();
            let total = n as u64;
            let n = if handed > n.saturating_mul(2) { 0 } else { n };
            let bound = |x: &Int, limit: u64, what: &str, d: &mut Diags| -> Option<u64> {
                let v = int_value(x, d)?;
                if check_layers && v > limit {
                    d.push(
                        Diagnostic::error(x.span, format!("{what} {v} is out of range"))
                            .label(format!("the model has {total} layers")),
                    );
                    return None;
                }
                Some(v)
            };
            match &sel.kind {
                SelectorKind::Rest => {
                    if let Some((_, first)) = rest_rule {
                        d.push(
                            Diagnostic::error(sel.span, "`rest` is used twice")
                                .label("second `rest`")
                                .secondary(first, "first `rest`"),
                        );
                        ok = false;
                    } else if let Some(i) = idx {
                        rest_rule = Some((i, sel.span));
                    }
                    continue;
                }
                SelectorKind::First(k) => match bound(k, total, "`first`", d) {
                    Some(k) => chosen.extend(0..(k as usize).min(n)),
                    None => ok = false,
                },
                SelectorKind::Last(k) => match bound(k, total, "`last`", d) {
                    Some(k) => chosen.extend(n.saturating_sub(k as usize)..n),
                    None => ok = false,
                },
                SelectorKind::Every { step, from } => {
                    let step_v = int_value(step, d);
                    let from_v = match from {
                        Some(f) => bound(f, total.saturating_sub(1), "layer", d),
                        None => Some(0),
                    };
                    match (step_v, from_v) {
                        (Some(0), _) => {
                            d.push(
                                Diagnostic::error(step.span, "`every 0` selects nothing")
                                    .label("must be at least 1"),
                            );
                            ok = false;
                        }
                        (Some(s), Some(f)) => {
                            chosen.extend((f as usize..n).step_by(s.min(n as u64 + 1) as usize))
                        }
                        _ => ok = false,
                    }
                }
                SelectorKind::List(items) => {
                    for x in items {
                        match bound(x, total.saturating_sub(1), "layer", d) {
                            Some(v) => chosen.push(v as usize),
                            None => ok = false,
                        }
                    }
                }
                SelectorKind::Range(a, b) => {
                    match (bound(a, total, "layer", d), bound(b, total, "layer", d)) {
                        (Some(a), Some(b)) if a < b => {
                            chosen.extend((a as usize).min(n)..(b as usize).min(n))
                        }
                        (Some(_), Some(_)) => {
                            d.push(
                                Diagnostic::error(sel.span, "an empty layer range")
                                    .label("the start must be below the end (the end is excluded)"),
                            );
                            ok = false;
                        }
                        _ => ok = false,
                    }
                }
            }
            let (Some(i), true) = (idx, check_layers) else {
                continue;
            };
            handed = handed.saturating_add(chosen.len());
            for layer in chosen {
                if layer >= owner.len() {
                    continue;
                }
                match owner[layer] {
                    None => owner[layer] = Some(i),
                    Some(prev) => match twice.iter_mut().find(|t| t.0 == prev && t.1 == i) {
                        // Repeats are removed when the list is reported.
                        Some(t) => t.3.push(layer),
                        None => twice.push((prev, i, sel.span, vec![layer])),
                    },
                }
            }
        }
    }
    for (a, b, span, layers) in &mut twice {
        layers.sort_unstable();
        layers.dedup();
        let (a, b) = (&*a, &*b);
        let msg = if a == b {
            format!(
                "{} given to `{}` twice",
                layer_list(layers),
                blocks[*a].name
            )
        } else {
            format!(
                "{} given to both `{}` and `{}`",
                layer_list(layers),
                blocks[*a].name,
                blocks[*b].name
            )
        };
        d.push(
            Diagnostic::error(*span, msg)
                .label("covers layers already taken")
                .hint("every layer must run exactly one block"),
        );
        ok = false;
    }
    if let Some((i, _)) = rest_rule {
        for o in owner.iter_mut() {
            if o.is_none() {
                *o = Some(i);
            }
        }
    }
    let uncovered: Vec<usize> = (0..n).filter(|&l| owner[l].is_none()).collect();
    if check_layers && !uncovered.is_empty() && ok {
        d.push(
            Diagnostic::error(keyword, format!("{} run no block", layer_list(&uncovered)))
                .label("the schedule leaves layers uncovered")
                .hint("add a rule for them, or give one block `rest`"),
        );
        ok = false;
    }
    let layers = if ok && check_layers {
        owner.into_iter().collect::<Option<Vec<usize>>>()
    } else {
        None
    };
    Resolved { layers, referenced }
}

fn int_value(x: &Int, d: &mut Diags) -> Option<u64> {
    if x.value.is_none() {
        d.push(Diagnostic::error(x.span, "this number is too large").label("too large"));
    }
    x.value
}

/// `layer 3`, `layers 3, 7, 11`, `layers 10..13` (runs of three or more as ranges).
pub(crate) fn layer_list(layers: &[usize]) -> String {
    let mut sorted = layers.to_vec();
    sorted.sort_unstable();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        if j - i >= 2 {
            parts.push(format!("{}..{}", sorted[i], sorted[j] + 1));
        } else {
            for l in &sorted[i..=j] {
                parts.push(l.to_string());
            }
        }
        i = j + 1;
    }
    if parts.len() > 12 {
        parts.truncate(12);
        parts.push("...".to_string());
    }
    if sorted.len() == 1 {
        format!("layer {}", parts.join(", "))
    } else {
        format!("layers {}", parts.join(", "))
    }
}
