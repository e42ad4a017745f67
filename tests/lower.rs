//! `archc lower` snapshots: the Graph IR text of every examples/*.arch (prefill) and of
//! every tests/data/lower/*.arch (prefill and decode), or the error a user sees. Every
//! lowered graph is verified and its parameters must be exactly the canonical tensor list.
//!
//! Bless with `INSTA_UPDATE=always cargo test --test lower`, then read the snapshots.

use archc_compiler::{lower, verify, Mode};
use std::path::{Path, PathBuf};
use std::process::Command;

fn arch_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .collect();
    files.sort();
    files
}

/// What a user sees from `archc lower FILE --mode MODE`: the graph, or the exit status
/// and the error output.
fn lower_cli(file: &Path, mode: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_archc"))
        .arg("lower")
        .arg(file)
        .args(["--mode", mode])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("archc runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        assert!(
            stderr.is_empty(),
            "{}: unexpected stderr: {stderr}",
            file.display()
        );
        stdout.into_owned()
    } else {
        format!("exit status: {:?}\n{stderr}", out.status.code())
    }
}

fn relative(path: &Path) -> PathBuf {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .to_path_buf()
}

fn check(snap_dir: &Path, name: &str, text: &str) {
    insta::with_settings!({snapshot_path => snap_dir, prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = arch_files(&root.join("examples"));
    assert!(!files.is_empty(), "no examples found");
    for file in files {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name")
            .to_string();
        check(
            &root.join("tests/data/lower/examples"),
            &name,
            &lower_cli(&relative(&file), "prefill"),
        );
    }
}

#[test]
fn inputs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lower");
    for file in arch_files(&dir) {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name")
            .to_string();
        let rel = relative(&file);
        let text = format!(
            "## archc lower --mode prefill\n{}\n## archc lower --mode decode\n{}",
            lower_cli(&rel, "prefill"),
            lower_cli(&rel, "decode")
        );
        check(&dir, &name, &text);
    }
}

/// Every graph that lowers verifies, and its parameters are exactly
/// `archc_spec::tensors::tensors(spec)`: same names, same shapes.
#[test]
fn params_are_the_canonical_tensors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = arch_files(&root.join("examples"));
    files.extend(arch_files(&root.join("tests/data/lower")));
    let mut lowered = 0;
    for file in files {
        let src = std::fs::read_to_string(&file).expect("readable");
        let Ok(spec) = archc_spec::validate::check_source(&file.display().to_string(), &src) else {
            continue;
        };
        let mut want: Vec<(String, Vec<u64>)> = archc_spec::tensors::tensors(&spec)
            .into_iter()
            .map(|t| (t.name, t.shape))
            .collect();
        want.sort();
        for mode in [Mode::Prefill, Mode::Decode] {
            let Ok(graph) = lower(&spec, mode) else {
                continue;
            };
            verify(&graph).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let mut got: Vec<(String, Vec<u64>)> = graph
                .params
                .iter()
                .map(|p| (p.name.clone(), p.shape.clone()))
                .collect();
            got.sort();
            assert_eq!(
                got,
                want,
                "{}: graph parameters differ from the tensor list",
                file.display()
            );
            lowered += 1;
        }
    }
    assert!(lowered >= 2 * 20, "only {lowered} graphs lowered");
}
