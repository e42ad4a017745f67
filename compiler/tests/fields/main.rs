//! No dead fields: every field of the `.arch` language, changed in a small valid spec in
//! which it applies, changes what the model computes or is refused.
//!
//! Each row of `rows::ROWS` names a field, a template spec with one `$` slot, the slot's
//! text before and after the change, and what the change must do: change the lowered
//! Graph IR (prefill and decode text, parameters included), change only the checkpoint
//! bindings of the parameter tensors, change only a statistic `archc stats` reports,
//! or be refused by the validator with an error located in the changed text. Every key
//! the validator accepts (its `check_keys` lists) and every keyword of the grammar must
//! have a row, so a new field fails this test until it has one.

mod rows;

use archc_compiler::{lower, verify, Mode};
use archc_spec::diagnostics::{render, Diagnostic};
use archc_spec::stats::{stats, Options};
use archc_spec::tensors::tensors;
use archc_spec::validate::check_source;
use archc_spec::Spec;
use rows::{Expect, Row, ROWS};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The template with its slot filled.
fn fill(row: &Row, text: &str) -> String {
    assert_eq!(
        row.base.matches('$').count(),
        1,
        "{}: a template has exactly one `$` slot",
        row.key
    );
    row.base.replacen('$', text, 1)
}

fn check(src: &str) -> Result<Spec, Vec<Diagnostic>> {
    check_source("field.arch", src)
}

fn valid(which: &str, src: &str) -> Result<Spec, String> {
    check(src).map_err(|d| {
        format!(
            "the {which} spec does not check:\n{}",
            render("field.arch", src, &d)
        )
    })
}

/// The prefill and decode graphs' text, each verified.
fn graphs(spec: &Spec) -> Result<String, String> {
    let mut text = String::new();
    for mode in [Mode::Prefill, Mode::Decode] {
        let g = lower(spec, mode).map_err(|e| format!("lowering ({mode:?}) fails: {e}"))?;
        verify(&g).map_err(|e| format!("the {mode:?} graph does not verify: {e:?}"))?;
        text.push_str(&g.to_string());
    }
    Ok(text)
}

/// Checks one row; returns what is wrong with it.
fn check_row(row: &Row) -> Result<(), String> {
    let base_src = fill(row, row.from);
    let changed_src = fill(row, row.to);
    let base = valid("base", &base_src)?;
    let base_graphs = graphs(&base)?;
    let slot = row.base.find('$').expect("one slot");
    let changed_at = slot..slot + row.to.len();
    let result = check(&changed_src);
    let changed = match (&row.expect, result) {
        (Expect::Refused(message), Err(diags)) => {
            let located = diags.iter().any(|d| {
                d.is_error()
                    && d.message.contains(message)
                    && changed_at.contains(&d.primary.span.start)
                    && d.primary.span.end <= changed_at.end
            });
            return if located {
                Ok(())
            } else {
                Err(format!(
                    "expected an error containing {message:?} at the changed text `{}`, got:\n{}",
                    row.to,
                    render("field.arch", &changed_src, &diags)
                ))
            };
        }
        (Expect::Refused(message), Ok(_)) => {
            return Err(format!(
                "expected the error {message:?}, but the changed spec checks clean"
            ))
        }
        (_, Err(diags)) => {
            return Err(format!(
                "the changed spec does not check:\n{}",
                render("field.arch", &changed_src, &diags)
            ))
        }
        (_, Ok(changed)) => changed,
    };
    let same_graphs = graphs(&changed)? == base_graphs;
    match row.expect {
        Expect::Graph if same_graphs => Err("the lowered graphs did not change".to_string()),
        Expect::Graph => Ok(()),
        Expect::Refused(_) => unreachable!("handled above"),
        // The rows below claim the graph stays the same: say so if it does not, so the
        // row is moved to `Graph`.
        _ if !same_graphs => Err("the graphs changed; the row should expect `Graph`".into()),
        Expect::Bindings if tensors(&base) == tensors(&changed) => {
            Err("neither the graphs nor the tensors' checkpoint bindings changed".into())
        }
        Expect::Bindings => Ok(()),
        Expect::Stats(key) => {
            // What `archc stats --json` prints.
            let stat = |s: &Spec| stats(s, Options::for_spec(s)).to_json().get(key).cloned();
            match (stat(&base), stat(&changed)) {
                (None, _) | (_, None) => Err(format!("`archc stats` reports no `{key}`")),
                (a, b) if a == b => Err(format!(
                    "neither the graphs nor the `{key}` that `archc stats` reports changed"
                )),
                _ => Ok(()),
            }
        }
    }
}

#[test]
fn every_field_changes_the_computation_or_is_refused() {
    let problems: Vec<String> = ROWS
        .iter()
        .filter_map(|row| {
            check_row(row).err().map(|e| {
                format!(
                    "{} (`{}` -> `{}`): {e}",
                    row.key,
                    row.from.replace('\n', " "),
                    row.to.replace('\n', " ")
                )
            })
        })
        .collect();
    assert!(
        problems.is_empty(),
        "{} of {} rows fail:\n\n{}",
        problems.len(),
        ROWS.len(),
        problems.join("\n\n")
    );
}

fn spec_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/src/validate")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The string literals of a `[ ... ]` list that starts at `text[at..]`.
fn list_at(text: &str, at: usize) -> Vec<String> {
    let rest = &text[at..];
    let end = rest.find(']').expect("a key list ends with `]`");
    rest[..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Every list of keys the validator accepts, with the file it is in: the literal lists
/// and the named constants that `check_keys` is called with.
fn validator_key_lists() -> Vec<(String, Vec<String>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(spec_dir())
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", spec_dir().display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|p| {
            let name = p
                .file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned());
            (name, read(p))
        })
        .collect();
    let constant = |name: &str| -> Vec<String> {
        let decl = format!("const {name}: &[&str] = &[");
        sources
            .iter()
            .find_map(|(_, text)| text.find(&decl).map(|at| list_at(text, at + decl.len())))
            .unwrap_or_else(|| panic!("no `{decl}` in the validator"))
    };
    let mut lists = Vec::new();
    for (file, text) in &sources {
        for (at, _) in text.match_indices("check_keys(") {
            let args = text[at + "check_keys(".len()..].trim_start();
            if args.starts_with("&self") {
                // The definition of `check_keys` itself.
                continue;
            }
            let keys = match args.strip_prefix("&[") {
                Some(_) => list_at(args, 2),
                None => {
                    let name: String = args
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    constant(&name)
                }
            };
            assert!(!keys.is_empty(), "{file}: an empty key list at byte {at}");
            lists.push((file.clone(), keys));
        }
    }
    lists
}

#[test]
fn every_key_of_the_validator_has_a_row() {
    let lists = validator_key_lists();
    // The sections the validator reads with `check_keys`: model, block, attention, mla,
    // temperature, qk_norm bodies, rope and its scalings, positions, norms, the mixers,
    // mlp, moe, shared, router, groups and the clamped SwiGLU.
    assert!(lists.len() >= 20, "only {} key lists found", lists.len());
    let keys: BTreeSet<&str> = ROWS.iter().map(|r| r.key).collect();
    let sections: BTreeSet<&str> = keys
        .iter()
        .filter_map(|k| k.rsplit_once('.').map(|(s, _)| s))
        .collect();
    let mut problems = Vec::new();
    for (file, list) in &lists {
        // Some section of the table has a row for every key of the list.
        let missing = |section: &str| -> Vec<&str> {
            list.iter()
                .map(String::as_str)
                .filter(|k| !keys.contains(format!("{section}.{k}").as_str()))
                .collect()
        };
        let best = sections
            .iter()
            .map(|&s| (missing(s), s))
            .min_by_key(|(m, _)| m.len());
        match best {
            Some((m, _)) if m.is_empty() => {}
            Some((m, s)) => problems.push(format!(
                "{file}: the keys {list:?} have no section of rows; closest is `{s}`, \
                 which lacks rows for {m:?}"
            )),
            None => problems.push(format!("{file}: no rows at all for {list:?}")),
        }
    }
    assert!(
        problems.is_empty(),
        "add a row to compiler/tests/fields/rows.rs for each new field:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_schedule_keyword_has_a_row() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../grammar/arch.pest");
    let grammar = read(&path);
    // The grammar's words that are not schedule selectors: items, literals and the
    // exponent of a number.
    const NOT_FIELDS: &[&str] = &["model", "block", "schedule", "true", "false", "none", "e"];
    // Every literal `"word"` of lowercase letters (escaped quotes make splitting at
    // every `"` unreliable).
    let words: BTreeSet<&str> = grammar
        .match_indices('"')
        .filter_map(|(at, _)| {
            let rest = &grammar[at + 1..];
            let len = rest.find(|c: char| !c.is_ascii_lowercase())?;
            (len > 0 && rest[len..].starts_with('"')).then(|| &rest[..len])
        })
        .filter(|w| !NOT_FIELDS.contains(w))
        .collect();
    assert!(words.contains("repeat"), "grammar words: {words:?}");
    let missing: Vec<&str> = words
        .iter()
        .copied()
        .filter(|w| {
            !ROWS
                .iter()
                .any(|r| r.key.starts_with("schedule.") && r.key.rsplit('.').next() == Some(*w))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "grammar keywords without a `schedule.*` row in compiler/tests/fields/rows.rs: {missing:?}"
    );
}
