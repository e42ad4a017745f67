//! Auxiliary tensors that archc leaves unread on purpose, with a note, while any other
//! extra tensor is still an error that lists it:
//! - multi-token-prediction layers, as DeepSeek V3 ships them (`model.layers.{layers}.*`:
//!   a decoder layer, `enorm`, `hnorm`, `eh_proj`, `shared_head.*`, `embed_tokens`); the
//!   logits are HF's (HF itself does not load them) and `stats` counts them apart;
//! - the vision and audio towers of a multimodal checkpoint, whose language model is
//!   bound under its text-checkpoint names.

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

/// A safetensors image of `(name, tensor)` pairs, copied as stored.
fn safetensors_copy(tensors: &[(String, archc_runtime::weights::TensorView<'_>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    for (name, t) in tensors {
        let begin = data.len();
        data.extend_from_slice(t.bytes);
        assert_eq!(t.dtype, archc_runtime::weights::Dtype::F32);
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [begin, data.len()]}),
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

/// The Gemma 3 text fixture laid out as `Gemma3ForConditionalGeneration` saves it: the
/// language model under `model.language_model.` (or the older `language_model.model.`),
/// a vision tower and projector beside it, and a config whose `text_config` is the text
/// model's.
fn multimodal_copy(name: &str, old_layout: bool, extra: &[&str]) -> PathBuf {
    let fixture = common::fixture_root().join("gemma3_text");
    let dir = std::env::temp_dir().join(format!("archc-mm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("config.json")).unwrap())
            .unwrap();
    let config = serde_json::json!({
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "text_config": text,
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 8},
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let file = SafetensorsFile::open(&fixture.join("model.safetensors")).unwrap();
    let mut tensors = Vec::new();
    for n in file.names() {
        let renamed = match (n.strip_prefix("model."), old_layout) {
            (Some(rest), false) => format!("model.language_model.{rest}"),
            (Some(rest), true) => format!("language_model.model.{rest}"),
            (None, true) if n == "lm_head.weight" => "language_model.lm_head.weight".into(),
            (None, _) => n.to_string(),
        };
        tensors.push((renamed, file.get(n).unwrap()));
    }
    let patch = [0f32; 6]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect::<Vec<u8>>();
    let shape = [2usize, 3];
    let tower = |n: &str| {
        (
            n.to_string(),
            archc_runtime::weights::TensorView {
                dtype: archc_runtime::weights::Dtype::F32,
                shape: &shape,
                bytes: &patch,
            },
        )
    };
    tensors.push(tower(if old_layout {
        "vision_tower.vision_model.embeddings.patch_embedding.weight"
    } else {
        "model.vision_tower.vision_model.embeddings.patch_embedding.weight"
    }));
    tensors.push(tower(
        "model.multi_modal_projector.mm_input_projection_weight",
    ));
    for n in extra {
        tensors.push(tower(n));
    }
    std::fs::write(dir.join("model.safetensors"), safetensors_copy(&tensors)).unwrap();
    dir
}

#[test]
fn a_multimodal_checkpoint_runs_its_text_model() {
    let fx = common::fixture("gemma3_text");
    for old_layout in [false, true] {
        let dir = multimodal_copy(&format!("ok{old_layout}"), old_layout, &[]);
        let spec = archc_spec::import::from_path(&dir).unwrap_or_else(|e| panic!("{e}"));
        let weights =
            bind(&spec, Checkpoint::open(&dir).unwrap()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(weights.notes().len(), 1, "{:?}", weights.notes());
        assert!(
            weights.notes()[0].contains("left 2 vision/audio tensor(s)"),
            "{:?}",
            weights.notes()
        );
        for backend in [Backend::Interp, Backend::Llvm] {
            let ours = logits(&spec, &weights, &fx.tokens, Mode::Prefill, backend).unwrap();
            common::check(
                "gemma3 multimodal",
                "prefill",
                &ours,
                &fx.hf,
                fx.vocab,
                1e-4,
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // A stray tensor outside the towers is still an error.
    let dir = multimodal_copy(
        "stray",
        false,
        &["model.language_model.layers.9.extra.weight"],
    );
    let spec = archc_spec::import::from_path(&dir).unwrap();
    let e = bind(&spec, Checkpoint::open(&dir).unwrap())
        .map(|_| ())
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("'model.language_model.layers.9.extra.weight'"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
