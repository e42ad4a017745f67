//! Architecture rules checked by a test, in the manner of rust-analyzer's `tidy.rs`: what
//! ARCHITECTURE.md states about dependencies between modules, the file-size limit and the
//! `//!` header of every file. Each rule lists every offending file at once, with the
//! line, so one run shows everything to fix.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir` (relative to the root), sorted; `target/` and fuzz
/// corpora are not sources.
fn rust_files(dir: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root().join(dir)];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name();
            if p.is_dir() {
                if name != "target" && name != "corpus" && name != "artifacts" {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root())
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", rel(p)))
}

/// The source directories of the workspace.
const SOURCES: [&str; 7] = [
    "spec", "compiler", "runtime", "src", "tests", "fuzz", "tools",
];

fn all_sources() -> Vec<PathBuf> {
    SOURCES.iter().flat_map(|d| rust_files(d)).collect()
}

/// Whether a file is a test (an integration test file or a unit-test module file).
fn is_test(p: &Path) -> bool {
    let r = rel(p);
    r.starts_with("tests/")
        || r.contains("/tests/")
        || r.ends_with("/tests.rs")
        || r.contains("/examples/")
}

/// The lines of `text` before its first `#[cfg(test)]` (a file's unit tests may use
/// whatever they like).
fn non_test_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .map(|(i, l)| (i + 1, l))
}

/// Lines of the non-test code of `files` that contain one of `patterns`, as
/// `file:line: text`.
fn offending_lines(files: &[PathBuf], patterns: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for f in files {
        let text = read(f);
        for (n, line) in non_test_lines(&text) {
            if line.trim_start().starts_with("//") {
                continue;
            }
            if patterns.iter().any(|p| line.contains(p)) {
                out.push(format!("{}:{n}: {}", rel(f), line.trim()));
            }
        }
    }
    out
}

fn assert_none(rule: &str, found: Vec<String>) {
    assert!(found.is_empty(), "{rule}; found:\n  {}", found.join("\n  "));
}

#[test]
fn every_file_starts_with_a_doc_line() {
    let missing: Vec<String> = all_sources()
        .into_iter()
        .filter(|p| !read(p).starts_with("//!"))
        .map(|p| rel(&p))
        .collect();
    assert_none("every .rs file starts with a `//!` line", missing);
}

#[test]
fn no_file_is_over_a_thousand_lines() {
    let long: Vec<String> = all_sources()
        .into_iter()
        .filter_map(|p| {
            let n = read(&p).lines().count();
            (n > 1000).then(|| format!("{}: {n} lines", rel(&p)))
        })
        .collect();
    assert_none("no source file is over 1,000 lines", long);
}

/// Files under `dir` that are not tests.
fn code_in(dir: &str) -> Vec<PathBuf> {
    rust_files(dir)
        .into_iter()
        .filter(|p| !is_test(p))
        .collect()
}

/// The code generators are siblings: the CPU target (`codegen/llvm`), the GPU target
/// (`codegen/ptx`) and the Cranelift tier (`codegen/clif`) share what is target-neutral
/// through `codegen/body` and `codegen/mod.rs`, and never import each other; the body
/// emitter imports none of them.
#[test]
fn targets_do_not_import_each_other() {
    let targets = ["llvm", "ptx", "clif"];
    for t in targets {
        let others: Vec<String> = targets
            .iter()
            .filter(|o| **o != t)
            .flat_map(|o| {
                [
                    format!("codegen::{o}"),
                    format!("super::{o}"),
                    format!("super::super::{o}"),
                ]
            })
            .collect();
        let others: Vec<&str> = others.iter().map(String::as_str).collect();
        let found = offending_lines(&code_in(&format!("compiler/src/codegen/{t}")), &others);
        assert_none(&format!("codegen/{t} imports no other target"), found);
    }
    let body = offending_lines(
        &code_in("compiler/src/codegen/body"),
        &[
            "codegen::llvm",
            "codegen::ptx",
            "codegen::clif",
            "super::llvm",
            "super::ptx",
            "super::clif",
        ],
    );
    assert_none("the body emitter imports no target", body);
}

/// The executors are siblings too: the CUDA executor shares the program analysis with
/// the CPU executor through the compiler crate, not by importing it.
#[test]
fn the_cuda_executor_does_not_import_the_cpu_executor() {
    let found = offending_lines(
        &code_in("runtime/src/exec/cuda"),
        &["exec::cpu", "super::cpu", "super::super::cpu"],
    );
    assert_none("exec/cuda does not import exec/cpu", found);
}

/// Buffer and graph roles are typed (`ir::Io`); their text form lives in `ir/io.rs`
/// only. Nothing else recognises a role by its name.
#[test]
fn roles_are_never_recognised_by_name() {
    let mut files = code_in("compiler/src");
    files.extend(code_in("runtime/src"));
    files.extend(code_in("src"));
    files.retain(|p| !rel(p).ends_with("compiler/src/ir/io.rs"));
    // Tokenizer files are JSON with fields of these names (`"tokens"` of a post-processor's
    // special token); they hold no buffers.
    files.retain(|p| !rel(p).starts_with("runtime/src/tokenize/"));
    let found = offending_lines(
        &files,
        &[
            "\"cache.",
            "starts_with(\"cache",
            "== \"tokens\"",
            "== \"positions\"",
            "== \"logits\"",
            "\"tokens\" =>",
            "\"positions\" =>",
            "\"logits\" =>",
            "(\"tokens\")",
            "(\"positions\")",
            "(\"logits\")",
        ],
    );
    assert_none(
        "roles are matched as `Io` variants, never by buffer or input name",
        found,
    );
}

/// Only the driver puts the compilation stages together: outside `compiler/`, no code
/// lowers a spec, runs the passes, builds kernel programs or generates code itself (it
/// may name their types and errors).
#[test]
fn only_the_driver_assembles_stages() {
    let mut files = code_in("runtime/src");
    files.extend(code_in("src"));
    let mut found = offending_lines(
        &files,
        &[
            "archc_compiler::lower(",
            "lower::lower",
            "lower_with(",
            "passes::",
            "kernel::lower::program",
            "program_with",
            "program_opts(",
            "compile_kernels",
            "emit_llvm_ir",
            "emit_object",
            "emit_kernels",
        ],
    );
    // `use archc_compiler::{lower, ...}` imports the lowering function itself.
    for f in &files {
        let text = read(f);
        for (n, line) in non_test_lines(&text) {
            let l = line.trim();
            if l.starts_with("use archc_compiler::{") {
                let names = l
                    .trim_start_matches("use archc_compiler::{")
                    .trim_end_matches("};");
                if names
                    .split(',')
                    .any(|n| matches!(n.trim(), "lower" | "passes"))
                {
                    found.push(format!("{}:{n}: {l}", rel(f)));
                }
            }
        }
    }
    assert_none(
        "runtime and CLI build graphs and programs through `archc_compiler::driver`",
        found,
    );
}

/// The dependency direction `spec ← compiler ← runtime ← binary`: each crate's manifest
/// names only the crates before it.
#[test]
fn crates_depend_one_way() {
    let manifest = |dir: &str| read(&root().join(dir).join("Cargo.toml"));
    let spec = manifest("spec");
    for other in [
        "archc-compiler",
        "archc-runtime",
        "inkwell",
        "cudarc",
        "memmap2",
    ] {
        assert!(!spec.contains(other), "spec/Cargo.toml depends on {other}");
    }
    let compiler = manifest("compiler");
    for other in ["archc-runtime", "cudarc", "memmap2", "tokenizers"] {
        assert!(
            !compiler.contains(other),
            "compiler/Cargo.toml depends on {other}"
        );
    }
    assert!(
        !manifest("runtime").contains("archc = "),
        "runtime depends on the binary"
    );
}

/// The spec crate knows nothing of the compiler, the runtime, LLVM or CUDA.
#[test]
fn spec_names_no_compiler_or_runtime() {
    let found = offending_lines(
        &code_in("spec/src"),
        &["archc_compiler", "archc_runtime", "inkwell", "cudarc"],
    );
    assert_none("spec/src uses nothing of the compiler or runtime", found);
}
