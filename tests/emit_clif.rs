//! `archc emit --stage clif`: the CLIF the Cranelift tier compiles, for every example in
//! both modes, as what `run --backend cranelift` builds (the generation options). A whole
//! program is hundreds of kilobytes of CLIF, so each snapshot (`tests/data/emit/clif/`) is
//! one digest line per kernel — its symbol, instructions, vector instructions, helper
//! calls and the FNV-1a hash of its text — and the full text of kernels is read in the file
//! tests (`compiler/tests/filetests/clif/`). The output is checked to be the same on two
//! runs, and `-o DIR` to write `kernels.clif` with the same bytes.
//!
//! Bless with `INSTA_UPDATE=always cargo test --test emit_clif`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn archc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("archc runs")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One line per CLIF function: its symbol, instructions (indented lines that are not
/// declarations or value aliases), vector instructions (`x4` types), calls, text hash.
fn digest(clif: &str) -> String {
    let mut out = String::from(
        "; one line per kernel: instructions, on vectors, calls, FNV-1a hash of its CLIF\n",
    );
    let mut functions = 0;
    for f in clif.split("\nfunction ").skip(1) {
        functions += 1;
        let name = f.split('(').next().unwrap_or("?").trim_start_matches('%');
        let body: Vec<&str> = f
            .lines()
            .filter(|l| l.starts_with("    ") && !l.contains(" -> ") && !l.contains("= sig"))
            .filter(|l| !l.trim_start().starts_with("ss") && !l.trim_start().starts_with("fn"))
            .collect();
        let vector = body.iter().filter(|l| l.contains("x4")).count();
        let calls = body.iter().filter(|l| l.contains(" call ")).count();
        out.push_str(&format!(
            "{name}: {} instructions, {vector} on vectors, {calls} calls, {:016x}\n",
            body.len(),
            fnv1a(f.as_bytes())
        ));
    }
    assert!(functions > 0, "no function in the CLIF");
    out
}

fn examples() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".arch")?.to_string())
        })
        .collect();
    names.sort();
    names
}

#[test]
fn clif_of_every_example() {
    let snaps = root().join("tests/data/emit/clif");
    for name in examples() {
        for mode in ["prefill", "decode"] {
            let file = format!("examples/{name}.arch");
            let args = ["emit", &file, "--stage", "clif", "--mode", mode];
            let first = archc(&args);
            let second = archc(&args);
            assert_eq!(first.stdout, second.stdout, "{name} {mode}: output differs");
            let view = if first.status.success() {
                digest(&String::from_utf8_lossy(&first.stdout))
            } else {
                // The linear-attention examples have no kernels yet: the error, as shown.
                format!(
                    "exit {:?}\n{}",
                    first.status.code(),
                    String::from_utf8_lossy(&first.stderr)
                )
            };
            insta::with_settings!({snapshot_path => &snaps, prepend_module_to_snapshot => false, omit_expression => true}, {
                insta::assert_snapshot!(format!("{name}.{mode}"), view);
            });
        }
    }
}

#[test]
fn clif_stage_writes_kernels_clif() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("build");
    let file = "examples/qwen3-0.6b.arch";
    let printed = archc(&["emit", file, "--stage", "clif", "--mode", "decode"]);
    assert!(printed.status.success());
    let o = out.to_str().expect("utf-8");
    let written = archc(&["emit", file, "--stage", "clif", "--mode", "decode", "-o", o]);
    assert!(written.status.success(), "{:?}", written);
    let text = std::fs::read(Path::new(o).join("kernels.clif")).expect("kernels.clif");
    assert_eq!(text, printed.stdout);
    // The matvec tiles run on f32x4, and the math goes through the interpreter's helpers.
    let clif = String::from_utf8_lossy(&text);
    assert!(clif.contains("f32x4"), "no vector code");
    assert!(clif.contains("%archc_expf"), "no exp helper");
}
