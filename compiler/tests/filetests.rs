//! File tests in the style of Cranelift's `filetests`: small IR inputs under
//! `compiler/tests/filetests/<category>/*.test`, each with the command that runs on it and
//! the expected output in the same file, one file per thing under test.
//!
//! A file is a header, the input and the expected output:
//!
//! ```text
//! ; What the file shows, in `;` comment lines (anywhere in the header).
//! test pass fuse_glu            -- the command and its options (exactly one `test` line)
//! check: linear{                -- optional: the output must contain this text
//! check-not: silu               -- optional: the output must not contain this text
//!
//! graph "glu" prefill           -- the input: from the first other line up to the
//! ...                              separator, read by `ir::parse` or the kernel parsers
//!
//! ; ---- expected ----          -- the separator
//! graph "glu" prefill           -- the expected output, to the end of the file
//! ...
//! ```
//!
//! The input must be in the printers' form (`print(parse(input)) == input`); the runner
//! shows the difference when it is not. Outputs are compared line by line, trailing
//! spaces and trailing blank lines aside.
//!
//! Commands (the folder of a file is its command's: `passes/` holds `pass` and `passes`):
//! - `pass NAME`: graph → the graph after that pass of `passes::PIPELINE` (verified), or
//!   `unchanged` when the pass returns its input.
//! - `passes`: graph → the graph after `passes::optimize_verified`.
//! - `kernel [bf16] [append] [gpu] [schedule=rowtiles|blocked|lanes] [format NAME=FMT]...`:
//!   graph → kernel program, via `kernel::lower::program_with` with bf16 activations,
//!   in-place KV appends, `Schedule::gpu()`, a forced matmul schedule, and parameter
//!   `NAME` (canonical, without `@`) stored as `q8_0`, `q4_0`, `q4_1`, `q4_k`, `q5_k`,
//!   `q6_k`, `bf16`, `f16` or `f32`.
//! - `llvm [target=x86_64|znver4|aarch64] [optimized]`: a kernel, or a program's kernels →
//!   `codegen::llvm::emit_llvm_ir` for that CPU (x86-64-v4 by default), after `O3` with
//!   `optimized`.
//! - `ptx [sm=80|90]`: a kernel, or a program's kernels → each kernel's launch shape and
//!   PTX (`codegen::ptx::emit_kernel`, sm_90 by default). Every kernel is assembled by
//!   ptxas (`ARCHC_PTXAS` or PATH) where it is installed; without it the assembly is
//!   skipped with a note, and fails the test under `CI=true`.
//! - `clif`: a kernel, or a program's kernels → `codegen::clif::emit_clif`, the CLIF the
//!   Cranelift tier compiles for this machine (x86-64 System V here).
//! - `verify`: a graph, a program or a kernel → `ok`, `error: ...` from its verifier, or
//!   `parse error: LINE:COL: ...`.
//!
//! A mismatch fails with the file's path and a diff. To bless (rewrite every differing
//! expected section in place, header and input untouched):
//! `ARCHC_BLESS=1 cargo test -p archc-compiler --test filetests` (`INSTA_UPDATE=always`
//! works too); `ARCHC_FILETEST=TEXT` runs only the files whose path contains `TEXT`.
//! Blessing still fails on a `check` that the output breaks, and never hides a failed
//! command. `compiler/tests/filetests/README.md` tells how to write a new file.

mod filetests {
    pub mod commands;
    pub mod file;
    pub mod runner;
}

use filetests::file::{self, SEPARATOR};
use filetests::runner::{run_dir, run_file, test_files, Mode, Outcome};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests")
}

/// The folders of file tests, one per command (`passes/` for both pass commands); each
/// has its test below, so that the suites run in parallel.
const CATEGORIES: [&str; 6] = ["passes", "kernel", "llvm", "ptx", "clif", "verify"];

#[test]
fn passes() {
    run_dir(&root().join("passes"), Mode::from_env());
}

#[test]
fn kernel() {
    run_dir(&root().join("kernel"), Mode::from_env());
}

#[test]
fn llvm() {
    run_dir(&root().join("llvm"), Mode::from_env());
}

#[test]
fn ptx() {
    run_dir(&root().join("ptx"), Mode::from_env());
}

#[test]
fn clif() {
    run_dir(&root().join("clif"), Mode::from_env());
}

#[test]
fn verify() {
    run_dir(&root().join("verify"), Mode::from_env());
}

/// No file test sits where no test runs it.
#[test]
fn every_file_is_in_a_category() {
    let all = test_files(&root());
    assert!(all.len() >= 40, "only {} file tests", all.len());
    for f in &all {
        let folder = f.parent().and_then(Path::file_name);
        assert!(
            folder.is_some_and(|n| CATEGORIES.iter().any(|c| n == *c)),
            "{} is outside the folders {CATEGORIES:?}",
            f.display()
        );
    }
}

/// Every pass of the pipeline has a file showing it at work.
#[test]
fn every_pass_has_a_file() {
    let mut tested = std::collections::BTreeSet::new();
    for f in test_files(&root().join("passes")) {
        let text = std::fs::read_to_string(&f).expect("reads");
        let t = file::parse(&text).unwrap_or_else(|e| panic!("{}:{e}", f.display()));
        if let [cmd, pass] = t.command.as_slice() {
            if cmd == "pass" {
                tested.insert(pass.clone());
            }
        }
    }
    let missing: Vec<&str> = archc_compiler::passes::PIPELINE
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !tested.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "passes without a file test: {missing:?}"
    );
}

// ---------------------------------------------------------------- the runner itself

/// A copy of `passes/cse.test` in a temporary `passes/` folder, with `expected` (or no
/// expected section) in place of its own.
fn cse_copy(expected: Option<&str>) -> (tempfile::TempDir, PathBuf, String) {
    let original = std::fs::read_to_string(root().join("passes/cse.test")).expect("cse.test");
    let head = &original[..original.find(SEPARATOR).expect("a separator")];
    let text = match expected {
        Some(e) => format!("{head}{SEPARATOR}\n{e}"),
        None => head.to_string(),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("passes")).expect("folder");
    let path = dir.path().join("passes/cse.test");
    std::fs::write(&path, text).expect("writes");
    (dir, path, original)
}

#[test]
fn a_wrong_expected_section_fails_with_a_diff_and_bless_rewrites_it() {
    let (_dir, path, original) = cse_copy(Some("graph \"wrong\" prefill\n"));
    let e = run_file(&path, Mode::Check).expect_err("a wrong expected section fails");
    assert!(e.starts_with(&path.display().to_string()), "{e}");
    assert!(e.contains("-graph \"wrong\" prefill"), "{e}");
    assert!(e.contains("+graph \"cse\" prefill"), "{e}");
    assert!(e.contains("ARCHC_BLESS=1"), "{e}");
    assert_eq!(run_file(&path, Mode::Bless), Ok(Outcome::Blessed));
    assert_eq!(std::fs::read_to_string(&path).expect("reads"), original);
    assert_eq!(run_file(&path, Mode::Check), Ok(Outcome::Matched));
}

#[test]
fn bless_writes_a_missing_expected_section() {
    let (_dir, path, original) = cse_copy(None);
    let e = run_file(&path, Mode::Check).expect_err("no expected section fails");
    assert!(e.contains("no `; ---- expected ----` line"), "{e}");
    assert_eq!(run_file(&path, Mode::Bless), Ok(Outcome::Blessed));
    assert_eq!(std::fs::read_to_string(&path).expect("reads"), original);
}

/// Writes `text` as `dir/<folder>/t.test` and runs it.
fn run_text(folder: &str, text: &str, mode: Mode) -> Result<Outcome, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join(folder)).expect("folder");
    let path = dir.path().join(folder).join("t.test");
    std::fs::write(&path, text).expect("writes");
    run_file(&path, mode)
}

const TINY: &str = "graph \"g\" prefill\n%0 = input x : [seq, 4] f32\n%1 = silu %0 : [seq, 4] f32\noutput y = %1\n";

#[test]
fn header_and_input_errors_name_the_line() {
    let cases = [
        (
            "passes",
            format!("test pass nope\n\n{TINY}"),
            "t.test:1: unknown pass `nope`",
        ),
        (
            "passes",
            format!("; c\ntest frobnicate\n{TINY}"),
            "t.test:2: unknown command",
        ),
        (
            "passes",
            format!("test passes\ntest passes\n{TINY}"),
            "t.test:2: a second `test` line",
        ),
        ("passes", TINY.to_string(), "t.test:1: no `test` line"),
        ("passes", "test passes\n".to_string(), "t.test:2: no input"),
        (
            "kernel",
            format!("test passes\n{TINY}"),
            "belongs in `passes/`",
        ),
        (
            "passes",
            format!("test pass cse\n{TINY}").replace("= silu", "=  silu"),
            "not in the printer's form",
        ),
        (
            "passes",
            format!("test pass cse\n{TINY}").replace("silu %0", "silu %7"),
            "does not parse",
        ),
        (
            "kernel",
            format!("test kernel schedule=fast\n{TINY}"),
            "unknown `kernel` option `schedule=fast`",
        ),
        (
            "kernel",
            format!("test kernel format x=iq2_xxs\n{TINY}"),
            "unknown format `iq2_xxs`",
        ),
    ];
    for (folder, text, want) in cases {
        for mode in [Mode::Check, Mode::Bless] {
            let e = run_text(folder, &text, mode).expect_err(want);
            assert!(e.contains(want), "want `{want}` in: {e}");
        }
    }
}

#[test]
fn checks_hold_when_blessing() {
    let text = format!("test pass cse\ncheck: relu\n\n{TINY}");
    let e = run_text("passes", &text, Mode::Bless).expect_err("the check fails");
    assert!(
        e.contains("`check: relu`: the output does not contain it"),
        "{e}"
    );
    let text = format!("test pass cse\ncheck-not: unchanged\n\n{TINY}");
    let e = run_text("passes", &text, Mode::Bless).expect_err("the check fails");
    assert!(
        e.contains("`check-not: unchanged`: the output contains it"),
        "{e}"
    );
    let text = format!("test pass cse\ncheck: unchanged\n\n{TINY}\n{SEPARATOR}\nunchanged\n");
    assert_eq!(run_text("passes", &text, Mode::Check), Ok(Outcome::Matched));
}

#[test]
fn outputs_compare_without_trailing_spaces() {
    assert_eq!(file::normalize("a  \nb\n\n\n"), "a\nb\n");
    let text = format!("test pass cse\n\n{TINY}\n{SEPARATOR}\nunchanged   \n\n");
    assert_eq!(run_text("passes", &text, Mode::Check), Ok(Outcome::Matched));
}
