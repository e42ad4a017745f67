//! Error messages are part of the interface: every `tests/data/diagnostics/*.arch` is an
//! invalid file whose rendered diagnostics (exactly as `archc check` prints them) are
//! snapshotted as `<name>.snap` beside it.
//!
//! Bless with `INSTA_UPDATE=always cargo test --test diagnostics`, then read the snapshots.

use archc_spec::diagnostics::render;
use archc_spec::validate::check_source;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/diagnostics")
}

#[test]
fn diagnostics() {
    let dir = dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 35,
        "expected at least 35 bad inputs, found {}",
        files.len()
    );
    for path in files {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let src = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let file_name = format!("{name}.arch");
        let text = match check_source(&file_name, &src) {
            Ok(_) => panic!("{file_name} should be invalid but checks"),
            Err(diags) => {
                assert!(diags.iter().any(|d| d.is_error()), "{file_name}: no error");
                render(&file_name, &src, &diags)
            }
        };
        insta::with_settings!({
            snapshot_path => &dir,
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(name, text);
        });
    }
}

/// `archc check` exit codes: 0 valid, 1 invalid, 2 unreadable.
#[test]
fn check_exit_codes() {
    let bin = env!("CARGO_BIN_EXE_archc");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let run = |args: &[&str]| {
        std::process::Command::new(bin)
            .arg("check")
            .args(args)
            .current_dir(&root)
            .output()
            .expect("archc runs")
    };
    let ok = run(&["tests/data/lang/minimal.arch"]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = run(&[
        "tests/data/lang/minimal.arch",
        "tests/data/diagnostics/unknown_key.arch",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("tests/data/diagnostics/unknown_key.arch:7:15: error: unknown key `haeds`"),
        "{stderr}"
    );
    let missing = run(&["tests/data/does-not-exist.arch"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

/// `archc fmt --check` names an unformatted file and exits 1; `-` formats stdin.
#[test]
fn fmt_cli() {
    use std::io::Write;
    let bin = env!("CARGO_BIN_EXE_archc");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(bin)
        .args(["fmt", "--check", "tests/data/fmt/messy.arch"])
        .current_dir(&root)
        .output()
        .expect("archc runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("messy.arch would be reformatted"));

    let mut child = std::process::Command::new(bin)
        .args(["fmt", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("archc runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"model \"x\" {vocab=1,hidden=2,layers=1}\n")
        .expect("write");
    let out = child.wait_with_output().expect("archc exits");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "model \"x\" {\n  vocab  = 1\n  hidden = 2\n  layers = 1\n}\n"
    );

    // In place: a copy in a temporary directory is rewritten and then checks clean.
    let tmp = std::env::temp_dir().join(format!("archc-fmt-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let copy = tmp.join("messy.arch");
    std::fs::copy(root.join("tests/data/fmt/messy.arch"), &copy).expect("copy");
    let status = std::process::Command::new(bin)
        .arg("fmt")
        .arg(&copy)
        .status()
        .expect("archc runs");
    assert!(status.success());
    let status = std::process::Command::new(bin)
        .args(["fmt", "--check"])
        .arg(&copy)
        .status()
        .expect("archc runs");
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&tmp);
}
