//! Running file tests: one file against its expected section (a diff on a mismatch), or
//! blessing it (the expected section rewritten in place), and every file of a folder.

use super::commands::{canonical, Command};
use super::file::{self, TestFile};
use std::path::{Path, PathBuf};

/// What to do when the output differs from the expected section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fail with a diff.
    Check,
    /// Rewrite the expected section.
    Bless,
}

impl Mode {
    /// `Bless` under `ARCHC_BLESS=1` or `INSTA_UPDATE=always` (how the project's insta
    /// suites are blessed, so one command blesses both), else `Check`.
    pub fn from_env() -> Mode {
        let bless = std::env::var("ARCHC_BLESS").is_ok_and(|v| v == "1")
            || std::env::var("INSTA_UPDATE").is_ok_and(|v| v == "always");
        if bless {
            Mode::Bless
        } else {
            Mode::Check
        }
    }
}

/// What a passing file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Matched,
    Blessed,
}

const BLESS_HINT: &str = "bless with `ARCHC_BLESS=1 cargo test -p archc-compiler --test filetests`";

/// Runs one file test. The error names the file and says what failed: a header or input
/// error (with its line), a failed command, a failed `check`, or the diff from the
/// expected section to the output.
pub fn run_file(path: &Path, mode: Mode) -> Result<Outcome, String> {
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    let test = file::parse(&text).map_err(|e| format!("{name}:{e}"))?;
    let command =
        Command::parse(&test.command).map_err(|e| format!("{name}:{}: {e}", test.command_line))?;
    if let Some(folder) = category_of(path) {
        if folder != command.category() {
            return Err(format!(
                "{name}:{}: a `{}` test belongs in `{}/`, not `{folder}/`",
                test.command_line,
                test.command[0],
                command.category()
            ));
        }
    }
    check_canonical(&test).map_err(|e| format!("{name}: {e}"))?;
    let output = command.run(&test.input).map_err(|e| {
        format!(
            "{name}: {e}\n(the input starts at line {} of the file; parse errors count from there)",
            test.input_line
        )
    })?;
    let output = file::normalize(&output);
    let failed: Vec<String> = test
        .checks
        .iter()
        .filter_map(|c| c.failure(&output))
        .collect();
    if !failed.is_empty() {
        return Err(format!(
            "{name}: {}\n---- output\n{output}",
            failed.join("\n")
        ));
    }
    let expected = test.expected.as_deref().map(file::normalize);
    if expected.as_deref() == Some(output.as_str()) {
        return Ok(Outcome::Matched);
    }
    match mode {
        Mode::Bless => {
            std::fs::write(path, file::with_expected(&test, &output))
                .map_err(|e| format!("{name}: writing the blessed file: {e}"))?;
            Ok(Outcome::Blessed)
        }
        Mode::Check => match expected {
            None => Err(format!(
                "{name}: no `{}` line and expected output; {BLESS_HINT}\n---- output\n{output}",
                file::SEPARATOR
            )),
            Some(expected) => Err(format!(
                "{name}: the output differs from the expected section; {BLESS_HINT}\n{}",
                diff(&expected, &output)
            )),
        },
    }
}

/// The input must be in the printers' form, so that every file reads alike and what a
/// reviewer sees is what the compiler prints. Inputs that do not parse are left to the
/// command, which reports the parse error with its position (or, for `verify`, prints it).
fn check_canonical(test: &TestFile) -> Result<(), String> {
    let Some(printed) = canonical(&test.input) else {
        return Ok(());
    };
    let want = file::normalize(&printed);
    let have = file::normalize(&test.input);
    if want == have {
        Ok(())
    } else {
        Err(format!(
            "the input is not in the printer's form (write it as the diff's `+` lines):\n{}",
            diff(&have, &want)
        ))
    }
}

/// A unified diff from `expected` to `actual`, by lines.
pub fn diff(expected: &str, actual: &str) -> String {
    similar::TextDiff::from_lines(expected, actual)
        .unified_diff()
        .context_radius(3)
        .header("expected", "actual")
        .to_string()
}

/// The folder under `filetests/` that holds `path` (its parent's name).
fn category_of(path: &Path) -> Option<String> {
    path.parent()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

/// Every `.test` file under `dir`, recursively, sorted.
pub fn test_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "test") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs every file of `dir` in `mode`; panics listing every failure. With
/// `ARCHC_FILETEST=TEXT` only the files whose path contains `TEXT` run.
pub fn run_dir(dir: &Path, mode: Mode) {
    let files = test_files(dir);
    assert!(!files.is_empty(), "no file tests in {}", dir.display());
    let only = std::env::var("ARCHC_FILETEST").ok();
    let mut failures = Vec::new();
    let mut blessed = Vec::new();
    for f in &files {
        if only
            .as_deref()
            .is_some_and(|o| !f.to_string_lossy().contains(o))
        {
            continue;
        }
        match run_file(f, mode) {
            Ok(Outcome::Matched) => {}
            Ok(Outcome::Blessed) => blessed.push(f.display().to_string()),
            Err(e) => failures.push(e),
        }
    }
    for b in &blessed {
        eprintln!("blessed {b}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} file tests failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}
