//! The example architectures under `examples/`: each one checks clean, has exactly the
//! parameter counts HF reports for its checkpoint (`tests/data/configs/<name>/hf_counts.json`),
//! and describes the same model as its imported `config.json`, layer by layer.

use archc_spec::stats::{stats, Options};
use archc_spec::Spec;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Every example, by file stem; each has a config directory of the same name.
const EXAMPLES: [&str; 20] = [
    "gpt2",
    "llama-3.2-1b",
    "llama-3.1-8b",
    "olmo-2-7b",
    "gemma-3-27b",
    "mistral-small-3.1-24b",
    "llama-4-maverick",
    "qwen3-0.6b",
    "qwen3-235b-a22b",
    "deepseek-v3",
    "kimi-k2",
    "smollm2-135m",
    "smollm3-3b",
    "gpt-oss-20b",
    "gpt-oss-120b",
    "glm-4.5",
    "qwen3-next-80b-a3b",
    "minimax-m2",
    "kimi-linear-48b-a3b",
    "lfm2-1.2b",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example_path(name: &str) -> PathBuf {
    root().join("examples").join(format!("{name}.arch"))
}

fn config_dir(name: &str) -> PathBuf {
    root().join("tests/data/configs").join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Parse and validate an example, failing with the rendered diagnostics.
fn load(name: &str) -> Spec {
    let path = example_path(name);
    let shown = format!("examples/{name}.arch");
    let src = read(&path);
    archc_spec::validate::check_source(&shown, &src).unwrap_or_else(|diags| {
        panic!(
            "{shown} does not check:\n{}",
            archc_spec::diagnostics::render(&shown, &src, &diags)
        )
    })
}

fn import(name: &str) -> Spec {
    let path = config_dir(name).join("config.json");
    archc_spec::import::from_path(&path)
        .unwrap_or_else(|e| panic!("cannot import {}: {e}", path.display()))
}

#[test]
fn every_example_is_listed() {
    // A new example must join the list, so that the checks below cover it.
    let mut found: Vec<String> = std::fs::read_dir(root().join("examples"))
        .expect("examples/ is readable")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    found.sort();
    let mut listed: Vec<String> = EXAMPLES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed);
}

#[test]
fn every_example_checks_clean() {
    for name in EXAMPLES {
        let spec = load(name);
        assert_eq!(
            spec.name, name,
            "examples/{name}.arch names its model differently"
        );
        assert_eq!(spec.schedule.len() as u64, spec.layers, "{name}");
    }
}

#[test]
fn parameter_counts_match_hf() {
    let mut wrong = Vec::new();
    for name in EXAMPLES {
        let spec = load(name);
        let counts_path = config_dir(name).join("hf_counts.json");
        let counts: Value = serde_json::from_str(&read(&counts_path))
            .unwrap_or_else(|e| panic!("{}: {e}", counts_path.display()));
        let expected = |key: &str| {
            counts[key]
                .as_u64()
                .unwrap_or_else(|| panic!("{}: no integer `{key}`", counts_path.display()))
        };
        let s = stats(&spec, Options::for_spec(&spec));
        let (total, active) = (expected("params_total"), expected("params_active"));
        if (s.params_total, s.params_active) != (total, active) {
            wrong.push(format!(
                "{name}: total {} active {}, HF {total} / {active}",
                s.params_total, s.params_active
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "parameter counts differ:\n{}",
        wrong.join("\n")
    );
}

/// Whether the config (or its `text_config`) gives any of `keys`.
fn config_gives(config: &Value, keys: &[&str]) -> bool {
    let has = |v: &Value| keys.iter().any(|k| v.get(k).is_some_and(|x| !x.is_null()));
    has(config) || config.get("text_config").is_some_and(has)
}

/// The example with what its config cannot know made equal to the import: the model name,
/// the names of the layer variants (the import names them after what they are), the context
/// when the config gives none, and the dtype when the config gives none.
fn comparable(example: &Spec, imported: &Spec, config: &Value) -> (Spec, Spec) {
    let mut a = example.clone();
    let mut b = imported.clone();
    a.name.clone_from(&b.name);
    if !config_gives(
        config,
        &["max_position_embeddings", "n_positions", "model_max_length"],
    ) {
        a.context = b.context;
    }
    if !config_gives(config, &["torch_dtype", "dtype", "quantization_config"]) {
        a.dtype = b.dtype;
    }
    for spec in [&mut a, &mut b] {
        for block in &mut spec.blocks {
            block.name.clear();
        }
    }
    (a, b)
}

#[test]
fn examples_equal_their_imported_configs() {
    let mut wrong = Vec::new();
    for name in EXAMPLES {
        let config: Value = serde_json::from_str(&read(&config_dir(name).join("config.json")))
            .unwrap_or_else(|e| panic!("{name}/config.json: {e}"));
        let (a, b) = comparable(&load(name), &import(name), &config);
        // Block order and naming are the author's choice: compare what each layer runs.
        let same_layers =
            a.layers == b.layers && (0..a.schedule.len()).all(|i| a.block(i) == b.block(i));
        let same_globals = Spec {
            blocks: vec![],
            schedule: vec![],
            ..a.clone()
        } == Spec {
            blocks: vec![],
            schedule: vec![],
            ..b.clone()
        };
        if !(same_layers && same_globals) {
            let rows = archc_spec::diff::diff(&a, &b, [None, None], false);
            let mut text = archc_spec::diff::render("example", "imported", &rows);
            if let Some(i) =
                (0..a.schedule.len().min(b.schedule.len())).find(|&i| a.block(i) != b.block(i))
            {
                text.push_str(&format!(
                    "first differing layer {i}:\n  example:  {:?}\n  imported: {:?}\n",
                    a.block(i),
                    b.block(i)
                ));
            }
            wrong.push(format!("{name}:\n{text}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "examples differ from their configs:\n{}",
        wrong.join("\n")
    );
}
