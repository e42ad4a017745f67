//! Checkpoints with multi-token-prediction layers, as DeepSeek V3 ships them: the MTP
//! tensors (`model.layers.{layers}.*`: a decoder layer, `enorm`, `hnorm`, `eh_proj`,
//! `shared_head.*`, `embed_tokens`) are left unread with a note, the logits are HF's
//! (HF itself does not load them), `stats` counts them apart, and any other extra tensor
//! is still an error that lists it.

mod common;

use archc_runtime::bind::bind;
use archc_runtime::exec::{logits, Backend, Mode};
use archc_runtime::weights::{Checkpoint, SafetensorsFile};
use std::path::PathBuf;

/// A safetensors image of 1-D f32 tensors of the given sizes (values 0.5).
fn safetensors_of(tensors: &[(String, u64)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    for (name, n) in tensors {
        let begin = data.len();
        data.extend(std::iter::repeat_n(0.5f32.to_le_bytes(), *n as usize).flatten());
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": [n], "data_offsets": [begin, data.len()]}),
        );
    }
    let mut text = serde_json::Value::Object(header).to_string();
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&data);
    out
}

/// The DeepSeek-V3 fixture (config: one MTP layer) with a second shard holding `extra`,
/// joined by an index, in a fresh folder.
fn with_shard(name: &str, extra: &[(String, u64)]) -> PathBuf {
    let fixture = common::fixture_root().join("deepseek_v3_qlora");
    let dir = std::env::temp_dir().join(format!("archc-mtp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture.join("config.json"), dir.join("config.json")).unwrap();
    std::fs::copy(
        fixture.join("model.safetensors"),
        dir.join("model-00001-of-00002.safetensors"),
    )
    .unwrap();
    std::fs::write(
        dir.join("model-00002-of-00002.safetensors"),
        safetensors_of(extra),
    )
    .unwrap();
    let main = SafetensorsFile::open(&fixture.join("model.safetensors")).unwrap();
    let mut map = serde_json::Map::new();
    for n in main.names() {
        map.insert(n.to_string(), "model-00001-of-00002.safetensors".into());
    }
    for (n, _) in extra {
        map.insert(n.clone(), "model-00002-of-00002.safetensors".into());
    }
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({ "weight_map": map }).to_string(),
    )
    .unwrap();
    dir
}

fn mtp_shard(spec: &archc_spec::Spec) -> Vec<(String, u64)> {
    archc_spec::mtp::mtp_tensors(spec)
        .into_iter()
        .map(|t| (t.name, t.params))
        .collect()
}

#[test]
fn mtp_tensors_are_left_unread_and_the_logits_are_hfs() {
    let fx = common::fixture("deepseek_v3_qlora");
    assert_eq!(
        fx.spec.mtp, 1,
        "the fixture's config has num_nextn_predict_layers 1"
    );
    let extra = mtp_shard(&fx.spec);
    assert!(extra
        .iter()
        .any(|(n, _)| n == "model.layers.3.eh_proj.weight"));
    assert!(extra
        .iter()
        .any(|(n, _)| n == "model.layers.3.mlp.experts.7.down_proj.weight"));
    let dir = with_shard("ok", &extra);
    let weights = bind(&fx.spec, Checkpoint::open(&dir).unwrap()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(weights.notes().len(), 1, "{:?}", weights.notes());
    assert!(weights.notes()[0].contains(&format!("left {} multi-token-prediction", extra.len())));
    for backend in [Backend::Interp, Backend::Llvm] {
        let ours = logits(&fx.spec, &weights, &fx.tokens, Mode::Prefill, backend).unwrap();
        common::check(
            "deepseek_v3_qlora+mtp",
            "prefill",
            &ours,
            &fx.hf,
            fx.vocab,
            1e-4,
        );
    }
    // `stats` counts exactly these parameters apart, and not in the model's total.
    let opts = archc_spec::stats::Options::for_spec(&fx.spec);
    let with = archc_spec::stats::stats(&fx.spec, opts);
    let mut no_mtp = fx.spec.clone();
    no_mtp.mtp = 0;
    let without = archc_spec::stats::stats(&no_mtp, opts);
    assert_eq!(with.mtp_params, extra.iter().map(|(_, n)| n).sum::<u64>());
    assert_eq!(without.mtp_params, 0);
    assert_eq!(with.params_total, without.params_total);
    assert!(with.render().contains("MTP layers (not run)"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn extra_tensors_beside_the_mtp_layer_are_still_errors() {
    let fx = common::fixture("deepseek_v3_qlora");
    // A second MTP layer the config does not declare, and a stray tensor.
    let mut extra = mtp_shard(&fx.spec);
    extra.push(("model.layers.4.eh_proj.weight".into(), 4));
    extra.push(("vision_tower.patch_embed.weight".into(), 4));
    let dir = with_shard("extra", &extra);
    let e = bind(&fx.spec, Checkpoint::open(&dir).unwrap())
        .map(|_| ())
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("unexpected tensors: 2 checkpoint tensor(s)"),
        "{e}"
    );
    assert!(e.contains("'model.layers.4.eh_proj.weight'"), "{e}");
    assert!(e.contains("'vision_tower.patch_embed.weight'"), "{e}");
    // Without `mtp`, the MTP layer's tensors are unexpected too.
    let mut spec = fx.spec.clone();
    spec.mtp = 0;
    let dir2 = with_shard("none", &mtp_shard(&fx.spec));
    let e = bind(&spec, Checkpoint::open(&dir2).unwrap())
        .map(|_| ())
        .expect_err("refused")
        .to_string();
    assert!(e.contains("'model.layers.3.enorm.weight'"), "{e}");
    for d in [dir, dir2] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn the_cli_prints_the_note_and_stats_the_count() {
    let fx = common::fixture("deepseek_v3_qlora");
    let dir = with_shard("cli", &mtp_shard(&fx.spec));
    let tokens: Vec<String> = fx.tokens.iter().map(|t| t.to_string()).collect();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_archc"))
        .arg("logits")
        .arg(&dir)
        .args(["--tokens", &tokens.join(","), "--out"])
        .arg(dir.join("l.npy"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("note: ") && err.contains("multi-token-prediction"),
        "{err}"
    );
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(["import"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("mtp"));
    std::fs::remove_dir_all(&dir).unwrap();
}
