//! `archc import` suite: every real-model config under `tests/data/configs/` is imported
//! and snapshotted, its parameter counts are checked against the HF transformers counts
//! recorded beside it (`hf_counts.json`, from `tools/reference/hf_counts.py`), and bad
//! configs under `tests/data/import/errors/` snapshot their error messages.
//!
//! Bless with `INSTA_UPDATE=always cargo test --test import`, then read the snapshots.

use std::path::{Path, PathBuf};

use archc_spec::import::{from_config_json, from_path, ImportError};
use archc_spec::stats::{stats, Options};
use archc_spec::Spec;

fn data(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(dir)
}

/// Every fixture model directory, sorted by name.
fn config_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(data("configs"))
        .expect("tests/data/configs exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.join("config.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn snapshot(dir: &Path, name: &str, text: &str) {
    insta::with_settings!({
        snapshot_path => dir,
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, text);
    });
}

fn import(dir: &Path) -> Spec {
    from_path(dir).unwrap_or_else(|e| panic!("import of {} failed: {e}", dir.display()))
}

#[test]
fn imported_specs_match_snapshots() {
    let dirs = config_dirs();
    assert!(
        dirs.len() >= 25,
        "expected the 25 real-model fixtures, found {}",
        dirs.len()
    );
    for dir in dirs {
        let spec = import(&dir);
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 fixture name");
        assert_eq!(spec.name, name);
        assert_eq!(
            spec.schedule.len() as u64,
            spec.layers,
            "{name}: one schedule entry per layer"
        );
        let text = archc_spec::print::to_arch(&spec);
        snapshot(&data("import"), name, &text);
        // What `archc import` writes reads back as the same Spec.
        match archc_spec::validate::check_source(name, &text) {
            Ok(back) => assert_eq!(
                back, spec,
                "{name}: the printed .arch reads back differently"
            ),
            Err(d) => panic!(
                "{name}: the printed .arch does not check:\n{}",
                archc_spec::diagnostics::render(name, &text, &d)
            ),
        }
    }
}

/// Every HF fixture config (saved by transformers 5.23, newer key spellings) imports and
/// round-trips through the printer too.
#[test]
fn fixture_configs_import_and_round_trip() {
    let root = data("fixtures");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("fixtures dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("config.json").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 16,
        "expected the HF fixtures, found {}",
        dirs.len()
    );
    for dir in dirs {
        let spec = import(&dir);
        let text = archc_spec::print::to_arch(&spec);
        let back = archc_spec::validate::check_source(&spec.name, &text).unwrap_or_else(|d| {
            panic!(
                "{}: the printed .arch does not check:\n{}",
                spec.name,
                archc_spec::diagnostics::render(&spec.name, &text, &d)
            )
        });
        assert_eq!(back, spec, "{}: round trip", spec.name);
    }
}

/// The multimodal Gemma 3 config (minimal `text_config`, HF defaults for the rest) and the
/// full text config describe the same language model.
#[test]
fn gemma3_multimodal_text_part_equals_text_config() {
    let text = import(&data("configs").join("gemma-3-27b"));
    let mut multimodal = import(&data("configs").join("gemma-3-27b-multimodal"));
    multimodal.name = text.name.clone();
    assert_eq!(multimodal, text);
}

/// A parameter count derived from the canonical tensor shapes, independent of the
/// importer: `(total, active)`, tied embeddings counted once, inactive routed experts
/// subtracted from `active`.
#[test]
fn parameter_counts_match_hf_transformers() {
    let mut report = Vec::new();
    for dir in config_dirs() {
        let spec = import(&dir);
        let counts_path = dir.join("hf_counts.json");
        let counts: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&counts_path)
                .unwrap_or_else(|e| panic!("{}: {e}", counts_path.display())),
        )
        .expect("hf_counts.json is JSON");
        let want = (
            counts["params_total"].as_u64().expect("params_total"),
            counts["params_active"].as_u64().expect("params_active"),
        );
        let st = stats(&spec, Options::for_spec(&spec));
        let got = (st.params_total, st.params_active);
        if got != want {
            report.push(format!(
                "{}: (total, active) {got:?}, HF says {want:?}",
                spec.name
            ));
        }
    }
    assert!(
        report.is_empty(),
        "parameter counts differ from HF:\n{}",
        report.join("\n")
    );
}

#[test]
fn import_errors_match_snapshots() {
    let dir = data("import/errors");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/data/import/errors exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty());
    for input in inputs {
        let file = input
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name")
            .to_string();
        let stem = input
            .file_stem()
            .and_then(|n| n.to_str())
            .expect("utf-8 name")
            .to_string();
        let text = std::fs::read_to_string(&input).expect("readable input");
        let err = match from_config_json(&text, &file) {
            Ok(_) => panic!("{file}: expected an import error"),
            Err(e) => e,
        };
        snapshot(&dir, &stem, &err.to_string());
    }
}

#[test]
fn directory_without_config_is_an_io_error() {
    // The error fixtures directory holds no config.json.
    match from_path(&data("import/errors")) {
        Err(ImportError::Io { path, .. }) => assert!(path.ends_with("config.json"), "{path}"),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}
