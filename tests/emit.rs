//! `archc emit` snapshots: the fused graph (`--stage fused`) of every examples/*.arch, or
//! the error a user sees (linear-attention examples are not lowered yet). Each run is
//! repeated to check that the output is byte-for-byte deterministic.
//!
//! Bless with `INSTA_UPDATE=always cargo test --test emit`, then read the snapshots.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn archc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("archc runs")
}

/// What a user sees: stdout on success, else the exit status and stderr.
fn shown(out: &Output) -> String {
    if out.status.success() {
        assert!(out.stderr.is_empty(), "unexpected stderr");
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        format!(
            "exit status: {:?}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .collect();
    files.sort();
    files
}

#[test]
fn fused_graph_of_every_example() {
    let snaps = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/emit");
    let files = examples();
    assert!(!files.is_empty(), "no examples");
    for file in files {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name");
        let rel = format!("examples/{name}.arch");
        let first = archc(&["emit", &rel, "--stage", "fused"]);
        let second = archc(&["emit", &rel, "--stage", "fused"]);
        assert_eq!(
            first.stdout, second.stdout,
            "{name}: output differs between runs"
        );
        assert_eq!(
            first.stderr, second.stderr,
            "{name}: errors differ between runs"
        );
        insta::with_settings!({snapshot_path => &snaps, prepend_module_to_snapshot => false, omit_expression => true}, {
            insta::assert_snapshot!(name, shown(&first));
        });
    }
}

/// `--stage graph` is exactly what `archc lower` prints, in both modes.
#[test]
fn graph_stage_is_the_lowered_graph() {
    for mode in ["prefill", "decode"] {
        let emit = archc(&[
            "emit",
            "tests/data/lower/tiny-llama.arch",
            "--stage",
            "graph",
            "--mode",
            mode,
        ]);
        let lower = archc(&["lower", "tests/data/lower/tiny-llama.arch", "--mode", mode]);
        assert!(emit.status.success() && lower.status.success());
        assert_eq!(emit.stdout, lower.stdout);
    }
}

#[test]
fn out_dir_receives_the_stage_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("build");
    let out = archc(&[
        "emit",
        "tests/data/lower/tiny-llama.arch",
        "--stage",
        "fused",
        "--mode",
        "decode",
        "-o",
        out_dir.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "{}", shown(&out));
    assert!(out.stdout.is_empty());
    let written = std::fs::read_to_string(out_dir.join("fused.txt")).expect("fused.txt written");
    let printed = archc(&[
        "emit",
        "tests/data/lower/tiny-llama.arch",
        "--stage",
        "fused",
        "--mode",
        "decode",
    ]);
    assert_eq!(written.as_bytes(), printed.stdout.as_slice());
    assert!(written.starts_with("graph \"tiny-llama\" decode\n"));
    // Only the stage file is left: no temporary files.
    let names: Vec<String> = std::fs::read_dir(&out_dir)
        .expect("listable")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(names, ["fused.txt"]);
}

#[test]
fn later_stages_are_not_accepted_yet() {
    let out = archc(&[
        "emit",
        "tests/data/lower/tiny-llama.arch",
        "--stage",
        "llvm",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value 'llvm'"),
        "unexpected error: {err}"
    );
}

/// `--stage kernel`: the kernel IR program of every example (or the error a user sees),
/// byte-for-byte the same on a second run.
#[test]
fn kernel_program_of_every_example() {
    let snaps = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/emit/kernel");
    let files = examples();
    assert!(!files.is_empty(), "no examples");
    for file in files {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name");
        let rel = format!("examples/{name}.arch");
        let first = archc(&["emit", &rel, "--stage", "kernel"]);
        let second = archc(&["emit", &rel, "--stage", "kernel"]);
        assert_eq!(
            first.stdout, second.stdout,
            "{name}: output differs between runs"
        );
        assert_eq!(
            first.stderr, second.stderr,
            "{name}: errors differ between runs"
        );
        insta::with_settings!({snapshot_path => &snaps, prepend_module_to_snapshot => false, omit_expression => true}, {
            insta::assert_snapshot!(name, shown(&first));
        });
    }
}

/// The decode program of a small model: one token, the cache grown by one.
#[test]
fn kernel_stage_in_decode_mode() {
    let out = archc(&[
        "emit",
        "tests/data/lower/tiny-llama.arch",
        "--stage",
        "kernel",
        "--mode",
        "decode",
    ]);
    assert!(out.status.success(), "{}", shown(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("program tiny-llama.decode\n"), "{text}");
    assert!(text.contains("buffer logits: f32[1, "), "{text}");
    assert!(text.contains("output\n"), "{text}");
}
