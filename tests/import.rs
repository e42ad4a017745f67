//! `archc import` suite: every real-model config under `tests/data/configs/` is imported
//! and snapshotted, its parameter counts are checked against the HF transformers counts
//! recorded beside it (`hf_counts.json`, from `tools/reference/hf_counts.py`), and bad
//! configs under `tests/data/import/errors/` snapshot their error messages.
//!
//! Bless with `INSTA_UPDATE=always cargo test --test import`, then read the snapshots.

use std::path::{Path, PathBuf};

use archc_spec::import::{from_config_json, from_path, ImportError};
use archc_spec::{Ffn, Mixer, Moe, Norm, NormKind, Placement, QkNorm, Spec};

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
        let json = serde_json::to_string_pretty(&spec).expect("a spec serializes");
        snapshot(&data("import"), name, &json);
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
fn count_params(s: &Spec) -> (u64, u64) {
    fn norm(n: &Norm, h: u64) -> u64 {
        h + if n.kind == NormKind::LayerNorm && n.bias {
            h
        } else {
            0
        }
    }
    fn mlp(h: u64, i: u64, gated: bool, bias: bool) -> u64 {
        let mats = if gated { 3 } else { 2 };
        mats * h * i + if bias { (mats - 1) * i + h } else { 0 }
    }
    fn expert(m: &Moe, h: u64) -> u64 {
        mlp(h, m.hidden, m.gated, m.bias)
    }
    let h = s.hidden;
    let mut total = s.vocab * h * if s.tied { 1 } else { 2 };
    total += s.learned_positions.unwrap_or(0) * h;
    total += s.final_norm.as_ref().map_or(0, |n| norm(n, h));
    let mut inactive = 0;
    for &index in &s.schedule {
        let b = &s.blocks[index];
        let norms = if b.placement == Placement::Sandwich {
            4
        } else {
            2
        };
        total += norms * norm(&b.norm, h);
        total += match &b.mixer {
            Mixer::Attention(a) => match &a.mla {
                Some(m) => {
                    let qk = a.heads * (m.nope_dim + m.rope_dim);
                    let q = m.q_rank.map_or(h * qk, |r| h * r + r + r * qk);
                    let kv = h * (m.kv_rank + m.rope_dim)
                        + m.kv_rank
                        + m.kv_rank * a.heads * (m.nope_dim + m.v_dim);
                    q + kv + a.heads * m.v_dim * h
                }
                None => {
                    let gate = if a.gate { 2 } else { 1 };
                    let (q, k, v, o) = (
                        a.heads * a.head_dim,
                        a.kv_heads * a.head_dim,
                        a.kv_heads * a.v_head_dim,
                        a.heads * a.v_head_dim,
                    );
                    let mut n = h * (gate * q + k + v) + o * h;
                    n += [
                        (a.bias.q, gate * q),
                        (a.bias.k, k),
                        (a.bias.v, v),
                        (a.bias.o, h),
                    ]
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, size)| size)
                    .sum::<u64>();
                    n += match a.qk_norm {
                        QkNorm::PerHead(_) => 2 * a.head_dim,
                        QkNorm::Full(_) => q + k,
                        QkNorm::None | QkNorm::L2 { .. } => 0,
                    };
                    n + if a.sinks { a.heads } else { 0 }
                }
            },
            // HF Qwen3-Next: qkvz and ba projections, depthwise conv over q, k, v, per-head
            // dt bias and decay, a gated norm over the value head dim, the output projection.
            Mixer::GatedDeltaNet(d) => {
                let (k, v) = (d.k_heads * d.k_head_dim, d.v_heads * d.v_head_dim);
                h * (2 * k + 2 * v)
                    + h * 2 * d.v_heads
                    + (2 * k + v) * d.conv
                    + 2 * d.v_heads
                    + d.v_head_dim
                    + v * h
            }
            // HF Kimi Linear: q, k, v projections and their depthwise conv, the low-rank
            // forget gate (with dt bias and decay), beta, the low-rank output gate, the
            // gated output norm and the output projection.
            Mixer::KimiDelta(d) => {
                let q = d.heads * d.head_dim;
                3 * h * q
                    + 3 * q * d.conv
                    + (h * d.head_dim + d.head_dim * q + q + d.heads)
                    + h * d.heads
                    + (h * d.head_dim + d.head_dim * q)
                    + d.head_dim
                    + q * h
            }
        };
        total += match &b.ffn {
            Ffn::Mlp(m) => mlp(h, m.hidden, m.gated, m.bias),
            Ffn::Moe(m) => {
                inactive += (m.experts - m.top_k) * expert(m, h);
                let router = m.experts * h + if m.router.bias { m.experts } else { 0 };
                let shared = m.shared.map_or(0, |sh| {
                    mlp(h, sh.count * sh.hidden, true, false) + if sh.gate { h } else { 0 }
                });
                router + m.experts * expert(m, h) + shared
            }
        };
    }
    (total, total - inactive)
}

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
        let got = count_params(&spec);
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
