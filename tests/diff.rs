//! Snapshots of `archc diff`. Each `tests/data/diff/<name>.pair` names two models (paths
//! from the repository root, `.arch` files or HF configs) and optionally `--all`; the report
//! is snapshotted as `<name>.snap` beside it. `tiny-broken.arch` checks what the command
//! line prints and returns for an invalid input.
//!
//! Bless with `INSTA_UPDATE=always cargo test --test diff`, then read the snapshots.

use archc_spec::Spec;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn data_dir() -> PathBuf {
    root().join("tests/data/diff")
}

/// Load one side the way the command line does: `.arch` files are checked, anything else
/// is imported as an HF config.
fn load(relative: &str) -> Spec {
    let path = root().join(relative);
    if path.extension().is_some_and(|e| e == "arch") {
        let src = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"));
        archc_spec::validate::check_source(relative, &src).unwrap_or_else(|diags| {
            panic!(
                "{relative} does not check:\n{}",
                archc_spec::diagnostics::render(relative, &src, &diags)
            )
        })
    } else {
        archc_spec::import::from_path(&path)
            .unwrap_or_else(|e| panic!("cannot import {relative}: {e}"))
    }
}

fn snapshot(name: &str, text: &str) {
    insta::with_settings!({
        snapshot_path => data_dir(),
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, text);
    });
}

/// The report for one `.pair` file: `LEFT RIGHT [--all]`.
fn check_pair(pair: &Path) {
    let name = pair
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("pair files have UTF-8 names");
    let line = std::fs::read_to_string(pair).expect("pair file is readable");
    let words: Vec<&str> = line.split_whitespace().collect();
    let (left, right, all) = match words.as_slice() {
        [l, r] => (*l, *r, false),
        [l, r, "--all"] => (*l, *r, true),
        _ => panic!("{name}.pair: expected `LEFT RIGHT [--all]`, found {line:?}"),
    };
    let report = archc_spec::diff::report(&load(left), &load(right), all);
    snapshot(name, &format!("archc diff {line}\n{report}"));
}

#[test]
fn pairs() {
    let mut pairs: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .expect("tests/data/diff is readable")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pair"))
        .collect();
    pairs.sort();
    assert!(pairs.len() >= 4, "the reference pairs are missing");
    for pair in &pairs {
        check_pair(pair);
    }
}

#[test]
fn equal_rows_are_omitted_unless_asked() {
    let a = load("examples/gpt-oss-20b.arch");
    let b = load("examples/gpt-oss-120b.arch");
    let some = archc_spec::diff::diff(&a, &b, [None, None], false);
    let all = archc_spec::diff::diff(&a, &b, [None, None], true);
    let labels: Vec<&str> = some.iter().map(|r| r.label).collect();
    assert_eq!(labels, ["layers", "experts"]);
    assert!(all.len() > some.len());
    assert!(all
        .iter()
        .any(|r| r.label == "sinks" && r.left == "yes" && !r.differs()));
}

#[test]
fn command_line_reports_invalid_and_missing_inputs() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_archc"))
            .arg("diff")
            .args(args)
            .current_dir(root())
            .output()
            .expect("archc runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&[
        "tests/data/diff/tiny-broken.arch",
        "tests/data/diff/tiny-dense.arch",
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(stdout, "");
    snapshot("tiny-broken", &stderr);

    let (code, stdout, stderr) = run(&["tests/data/diff/absent.arch", "examples/gpt2.arch"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.starts_with("archc diff: cannot read tests/data/diff/absent.arch:"));

    let (code, stdout, _) = run(&["examples/gpt2.arch", "examples/smollm2-135m.arch"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        stdout,
        archc_spec::diff::report(
            &load("examples/gpt2.arch"),
            &load("examples/smollm2-135m.arch"),
            false
        )
    );
}
