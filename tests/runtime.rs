//! The runtime as a user meets it: the safetensors reader on hand-built (and broken)
//! files, binding errors, and `archc logits` end to end on a model directory generated
//! here (`.npy` files: `tests/npy.rs`).

use archc_runtime::bind::bind;
use archc_runtime::npy;
use archc_runtime::weights::{bf16_to_f32, f16_to_f32, Checkpoint, Dtype, SafetensorsFile};
use archc_spec::tensors::{tensors, Source};
use archc_spec::Spec;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn snapshot(name: &str, text: &str) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/runtime");
    insta::with_settings!({snapshot_path => dir, prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!(name, text);
    });
}

/// One tensor to write: name, safetensors dtype string, shape and raw bytes.
struct Raw {
    name: String,
    dtype: &'static str,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn f32_tensor(name: &str, shape: &[usize], values: &[f32]) -> Raw {
    Raw {
        name: name.to_string(),
        dtype: "F32",
        shape: shape.to_vec(),
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// A well-formed safetensors image: header padded with spaces to a multiple of 8.
fn safetensors_bytes(tensors: &[Raw], metadata: Option<&[(&str, &str)]>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if let Some(meta) = metadata {
        let m: serde_json::Map<String, serde_json::Value> = meta
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(m));
    }
    let mut data = Vec::new();
    for t in tensors {
        let begin = data.len();
        data.extend_from_slice(&t.bytes);
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [begin, data.len()]}),
        );
    }
    let mut text = serde_json::Value::Object(header).to_string();
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    raw_file(&text, &data)
}

/// A file of a given header text and data section, with a correct length prefix.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write test file");
    p
}

/// Error text with the temporary directory replaced, so snapshots are stable.
fn scrub(text: &str, dir: &Path) -> String {
    text.replace(&dir.display().to_string(), "<dir>")
}

fn spec_of(src: &str) -> Spec {
    match archc_spec::validate::check_source("test.arch", src) {
        Ok(spec) => spec,
        Err(d) => panic!(
            "test spec does not validate:\n{}",
            archc_spec::diagnostics::render("test.arch", src, &d)
        ),
    }
}

/// A small deterministic generator (the tests must not depend on a crate's RNG stream).
struct Lcg(u64);

impl Lcg {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

// ---------------------------------------------------------------------------------------
// Safetensors reader
// ---------------------------------------------------------------------------------------

#[test]
fn safetensors_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = safetensors_bytes(
        &[
            f32_tensor("a", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            f32_tensor("b.scalar", &[], &[-7.5]),
            f32_tensor("empty", &[0, 4], &[]),
        ],
        Some(&[("format", "pt")]),
    );
    let path = write(dir.path(), "model.safetensors", &bytes);
    let f = SafetensorsFile::open(&path).unwrap();
    assert_eq!(f.names().collect::<Vec<_>>(), ["a", "b.scalar", "empty"]);
    assert_eq!(f.metadata().get("format").map(String::as_str), Some("pt"));
    let a = f.get("a").unwrap();
    assert_eq!(a.dtype, Dtype::F32);
    assert_eq!(a.shape, &[2, 3]);
    assert_eq!(a.to_f32().unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(f.get("b.scalar").unwrap().to_f32().unwrap(), [-7.5]);
    assert_eq!(f.get("empty").unwrap().numel(), 0);
    // The directory form finds the same file.
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ck.len(), 3);
    assert_eq!(ck.get("a").unwrap().to_f32().unwrap()[5], 6.0);
}

#[test]
fn f16_and_bf16_convert_exactly() {
    let f16_cases: [(u16, f32); 9] = [
        (0x3c00, 1.0),
        (0xc000, -2.0),
        (0x7bff, 65504.0),
        (0x0400, 6.103_515_6e-5),
        (0x0001, 5.960_464_5e-8),
        (0x03ff, 1023.0 / 16_777_216.0), // the largest subnormal, 1023 * 2^-24
        (0x3555, 0.333_251_95),
        (0x7c00, f32::INFINITY),
        (0xfc00, f32::NEG_INFINITY),
    ];
    for (bits, want) in f16_cases {
        assert_eq!(f16_to_f32(bits), want, "f16 bits {bits:#06x}");
    }
    assert!(f16_to_f32(0x7e00).is_nan());
    assert!(f16_to_f32(0x8000).is_sign_negative() && f16_to_f32(0x8000) == 0.0);
    let bf16_cases: [(u16, f32); 5] = [
        (0x3f80, 1.0),
        (0xc040, -3.0),
        (0x3eab, 0.333_984_38),
        (0x0001, f32::from_bits(1 << 16)), // the subnormal 2^-133
        (0xff80, f32::NEG_INFINITY),
    ];
    for (bits, want) in bf16_cases {
        assert_eq!(bf16_to_f32(bits), want, "bf16 bits {bits:#06x}");
    }
    // Through a file: the same bits stored as F16 and BF16 tensors.
    let dir = tempfile::tempdir().unwrap();
    let half = |bits: &[u16]| {
        bits.iter()
            .flat_map(|b| b.to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let bytes = safetensors_bytes(
        &[
            Raw {
                name: "h".into(),
                dtype: "F16",
                shape: vec![3],
                bytes: half(&[0x3c00, 0xc000, 0x3555]),
            },
            Raw {
                name: "b".into(),
                dtype: "BF16",
                shape: vec![3],
                bytes: half(&[0x3f80, 0xc040, 0x3eab]),
            },
        ],
        None,
    );
    let f = SafetensorsFile::open(&write(dir.path(), "x.safetensors", &bytes)).unwrap();
    assert_eq!(
        f.get("h").unwrap().to_f32().unwrap(),
        [1.0, -2.0, 0.333_251_95]
    );
    assert_eq!(
        f.get("b").unwrap().to_f32().unwrap(),
        [1.0, -3.0, 0.333_984_38]
    );
}

/// Every way a file can be broken, with the message a user sees for each.
#[test]
fn safetensors_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = safetensors_bytes(&[f32_tensor("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0])], None);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated_length", vec![16, 0, 0]),
        ("truncated_data", good[..good.len() - 3].to_vec()),
        ("header_beyond_file", {
            let mut b = good.clone();
            b[..8].copy_from_slice(&10_000u64.to_le_bytes());
            b
        }),
        ("header_length_huge", {
            let mut b = good.clone();
            b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            b
        }),
        ("bad_json", raw_file("{\"w\": {\"dtype\": ", &[])),
        ("not_an_object", raw_file("[1, 2]", &[])),
        (
            "offsets_outside_data",
            raw_file(
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                &[0; 4],
            ),
        ),
        (
            "begin_after_end",
            raw_file(
                r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#,
                &[0; 8],
            ),
        ),
        (
            "size_mismatch",
            raw_file(
                r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
        ),
        (
            "shape_overflow",
            raw_file(
                r#"{"w":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
        ),
        (
            "negative_dim",
            raw_file(
                r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}"#,
                &[],
            ),
        ),
        (
            "unknown_dtype",
            raw_file(
                r#"{"w":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,1]}}"#,
                &[0],
            ),
        ),
        (
            "missing_offsets",
            raw_file(r#"{"w":{"dtype":"F32","shape":[1]}}"#, &[0; 4]),
        ),
        (
            "three_offsets",
            raw_file(
                r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#,
                &[0; 8],
            ),
        ),
        (
            "unknown_field",
            raw_file(
                r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}}"#,
                &[0; 4],
            ),
        ),
        (
            "metadata_not_strings",
            raw_file(r#"{"__metadata__":{"format":1}}"#, &[]),
        ),
    ];
    // An unsupported (but known) dtype opens, and fails when the tensor is read.
    cases.sort_by_key(|c| c.0);
    let mut out = String::new();
    for (name, bytes) in &cases {
        let path = write(dir.path(), &format!("{name}.safetensors"), bytes);
        let msg = match SafetensorsFile::open(&path) {
            Ok(_) => "opened without error".to_string(),
            Err(e) => e.to_string(),
        };
        writeln!(out, "{name}:\n  {}", scrub(&msg, dir.path())).unwrap();
    }
    let i64_file = raw_file(
        r#"{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#,
        &[0; 16],
    );
    let path = write(dir.path(), "i64.safetensors", &i64_file);
    let f = SafetensorsFile::open(&path).unwrap();
    assert_eq!(f.info("ids").unwrap().dtype, Dtype::I64);
    let msg = f.get("ids").unwrap_err().to_string();
    writeln!(
        out,
        "unsupported_dtype (on read):\n  {}",
        scrub(&msg, dir.path())
    )
    .unwrap();
    let missing = SafetensorsFile::open(&dir.path().join("nope.safetensors"))
        .unwrap_err()
        .to_string();
    let missing = missing
        .split(": cannot open")
        .next()
        .unwrap_or("")
        .to_string();
    writeln!(
        out,
        "no_such_file:\n  {}: cannot open: ...",
        scrub(&missing, dir.path())
    )
    .unwrap();
    snapshot("safetensors_errors", &out);
}

#[test]
fn sharded_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "model-00001-of-00002.safetensors",
        &safetensors_bytes(&[f32_tensor("a", &[2], &[1.0, 2.0])], None),
    );
    write(
        d,
        "model-00002-of-00002.safetensors",
        &safetensors_bytes(&[f32_tensor("b", &[1], &[3.0])], None),
    );
    let index = |map: serde_json::Value| {
        let text =
            serde_json::json!({"metadata": {"total_size": 12}, "weight_map": map}).to_string();
        write(d, "model.safetensors.index.json", text.as_bytes());
    };
    index(serde_json::json!({
        "a": "model-00001-of-00002.safetensors",
        "b": "model-00002-of-00002.safetensors",
    }));
    let ck = Checkpoint::open(d).unwrap();
    assert_eq!(ck.names().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(ck.get("b").unwrap().to_f32().unwrap(), [3.0]);

    let mut out = String::new();
    let mut case = |name: &str, map: serde_json::Value| {
        index(map);
        let msg = match Checkpoint::open(d) {
            Ok(_) => "opened without error".to_string(),
            Err(e) => e.to_string(),
        };
        writeln!(out, "{name}:\n  {}", scrub(&msg, d)).unwrap();
    };
    case(
        "missing_shard",
        serde_json::json!({"a": "model-00001-of-00002.safetensors", "b": "model-00003-of-00003.safetensors"}),
    );
    case(
        "wrong_shard",
        serde_json::json!({"a": "model-00002-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}),
    );
    write(
        d,
        "extra.safetensors",
        &safetensors_bytes(
            &[f32_tensor("b", &[1], &[3.0]), f32_tensor("c", &[1], &[4.0])],
            None,
        ),
    );
    case(
        "not_listed",
        serde_json::json!({"a": "model-00001-of-00002.safetensors", "b": "extra.safetensors"}),
    );
    case(
        "in_another_shard",
        serde_json::json!({"a": "model-00001-of-00002.safetensors", "b": "extra.safetensors", "c": "model-00001-of-00002.safetensors"}),
    );
    case(
        "path_outside_directory",
        serde_json::json!({"a": "../model-00001-of-00002.safetensors"}),
    );
    case("no_weight_map", serde_json::json!(null));
    std::fs::remove_file(d.join("model.safetensors.index.json")).unwrap();
    let msg = Checkpoint::open(d).unwrap_err().to_string();
    writeln!(out, "empty_directory:\n  {}", scrub(&msg, d)).unwrap();
    snapshot("sharded_errors", &out);
}

// ---------------------------------------------------------------------------------------
// Binding
// ---------------------------------------------------------------------------------------

const TINY_LLAMA: &str = r#"
model "tiny" {
  family  = llama
  vocab   = 16
  hidden  = 8
  layers  = 1
  context = 64
  dtype   = f32
}
block {
  attention { heads = 2, kv_heads = 1, head_dim = 4 }
  mlp { hidden = 12 }
}
"#;

/// The checkpoint tensors of a family whose bindings are all `Plain`, with values.
fn plain_checkpoint(spec: &Spec, rng: &mut Lcg) -> Vec<Raw> {
    tensors(spec)
        .iter()
        .map(|t| {
            let Some(Source::Plain { name }) = &t.hf else {
                panic!("{} is not bound plainly: {:?}", t.name, t.hf);
            };
            let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|_| rng.next() * 0.5).collect();
            f32_tensor(name, &shape, &values)
        })
        .collect()
}

fn bind_message(spec: &Spec, raws: &[Raw]) -> String {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "model.safetensors",
        &safetensors_bytes(raws, None),
    );
    let ck = Checkpoint::open(dir.path()).unwrap();
    match bind(spec, ck) {
        Ok(_) => "bound without error".to_string(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bind_plain_is_zero_copy() {
    let spec = spec_of(TINY_LLAMA);
    let raws = plain_checkpoint(&spec, &mut Lcg(1));
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "model.safetensors",
        &safetensors_bytes(&raws, None),
    );
    let bound = bind(&spec, Checkpoint::open(dir.path()).unwrap()).unwrap();
    assert_eq!(bound.len(), tensors(&spec).len());
    let q = bound.get("layers.0.attn.q.weight").unwrap();
    assert_eq!(q.shape, &[8, 8]);
    assert!(bound.is_zero_copy("layers.0.attn.q.weight"));
    let stored = raws
        .iter()
        .find(|r| r.name == "model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    assert_eq!(q.bytes, stored.bytes.as_slice());
}

#[test]
fn bind_errors() {
    let spec = spec_of(TINY_LLAMA);
    let good = plain_checkpoint(&spec, &mut Lcg(2));
    let mut out = String::new();
    let mut case = |name: &str, raws: Vec<Raw>| {
        writeln!(out, "{name}:\n{}\n", bind_message(&spec, &raws)).unwrap();
    };
    let without = |skip: &str| -> Vec<Raw> {
        plain_checkpoint(&spec, &mut Lcg(2))
            .into_iter()
            .filter(|r| r.name != skip)
            .collect()
    };
    assert_eq!(bind_message(&spec, &good), "bound without error");
    case("missing", without("model.layers.0.mlp.up_proj.weight"));
    let mut extra = without("");
    extra.push(f32_tensor(
        "model.layers.0.self_attn.rotary_emb.inv_freq",
        &[2],
        &[1.0, 0.1],
    ));
    extra.push(f32_tensor(
        "model.layers.1.mlp.up_proj.weight",
        &[1],
        &[0.0],
    ));
    extra.push(f32_tensor("model.mtp.weight", &[1], &[0.0]));
    case("extra", extra);
    let mut shape = without("model.norm.weight");
    shape.push(f32_tensor("model.norm.weight", &[7], &[1.0; 7]));
    case("wrong_shape", shape);
    let mut dtype = without("model.norm.weight");
    dtype.push(Raw {
        name: "model.norm.weight".into(),
        dtype: "I64",
        shape: vec![8],
        bytes: vec![0; 64],
    });
    case("wrong_dtype", dtype);
    // Everything at once: the user sees every problem in one report.
    let mut all = without("model.layers.0.mlp.up_proj.weight");
    all.retain(|r| r.name != "model.norm.weight" && r.name != "lm_head.weight");
    all.push(f32_tensor("model.norm.weight", &[2, 4], &[1.0; 8]));
    all.push(Raw {
        name: "lm_head.weight".into(),
        dtype: "U8",
        shape: vec![16, 8],
        bytes: vec![0; 128],
    });
    all.push(f32_tensor("model.layers.0.mlp.extra.weight", &[1], &[0.0]));
    case("all_at_once", all);
    snapshot("bind_errors", &out);
}

const TINY_GPT2: &str = r#"
model "tiny-gpt2" {
  family    = gpt2
  vocab     = 16
  hidden    = 8
  layers    = 1
  context   = 32
  dtype     = f32
  tied      = true
  positions = learned
  norm      = layernorm { eps = 1e-5 }
}
block {
  attention { heads = 2, bias = true }
  mlp { hidden = 32, act = gelu_tanh, gated = false, bias = true }
}
"#;

/// GPT-2's fused, Conv1D-layout `c_attn` ([in, 3*out]) becomes three [out, in] projections.
#[test]
fn bind_materialises_slices_and_transposes() {
    let spec = spec_of(TINY_GPT2);
    let h = 8usize;
    let mut rng = Lcg(3);
    let mut raws = Vec::new();
    let mut c_attn = Vec::new();
    for t in tensors(&spec) {
        for stored in t.hf.as_ref().map(Source::names).unwrap_or_default() {
            if raws.iter().any(|r: &Raw| r.name == stored) {
                continue;
            }
            // Stored shape: canonical for plain tensors, [in, out] for Conv1D weights,
            // and [8, 24] / [24] for the fused c_attn.
            let shape: Vec<usize> = if stored.ends_with("c_attn.weight") {
                vec![h, 3 * h]
            } else if stored.ends_with("c_attn.bias") {
                vec![3 * h]
            } else if matches!(t.hf, Some(Source::Transposed { .. })) {
                t.shape.iter().rev().map(|&d| d as usize).collect()
            } else {
                t.shape.iter().map(|&d| d as usize).collect()
            };
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|_| rng.next()).collect();
            if stored.ends_with("c_attn.weight") {
                c_attn = values.clone();
            }
            raws.push(f32_tensor(&stored, &shape, &values));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "model.safetensors",
        &safetensors_bytes(&raws, None),
    );
    let bound = match bind(&spec, Checkpoint::open(dir.path()).unwrap()) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    };
    for (part, name) in ["q", "k", "v"].iter().enumerate() {
        let w = bound
            .get(&format!("layers.0.attn.{name}.weight"))
            .unwrap()
            .to_f32()
            .unwrap();
        assert!(!bound.is_zero_copy(&format!("layers.0.attn.{name}.weight")));
        for o in 0..h {
            for i in 0..h {
                assert_eq!(
                    w[o * h + i],
                    c_attn[i * 3 * h + part * h + o],
                    "attn.{name}.weight[{o}, {i}]"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// `archc logits` end to end
// ---------------------------------------------------------------------------------------

/// A random tiny Llama written as an HF directory (config.json + model.safetensors).
fn tiny_llama_dir(dir: &Path) {
    let (vocab, hidden, inter, layers, heads, kv_heads) = (32usize, 16usize, 40usize, 2, 4, 2);
    let head_dim = hidden / heads;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": false,
        "attention_bias": false,
        "mlp_bias": false,
        "torch_dtype": "float32",
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut rng = Lcg(42);
    let mut raws = Vec::new();
    let mut mat = |name: &str, shape: &[usize], scale: f32, offset: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| offset + scale * rng.next()).collect();
        raws.push(f32_tensor(name, shape, &v));
    };
    mat("model.embed_tokens.weight", &[vocab, hidden], 1.0, 0.0);
    let s = 1.0 / (hidden as f32).sqrt();
    for i in 0..layers {
        let p = format!("model.layers.{i}.");
        mat(&format!("{p}input_layernorm.weight"), &[hidden], 0.2, 1.0);
        mat(
            &format!("{p}self_attn.q_proj.weight"),
            &[heads * head_dim, hidden],
            s,
            0.0,
        );
        mat(
            &format!("{p}self_attn.k_proj.weight"),
            &[kv_heads * head_dim, hidden],
            s,
            0.0,
        );
        mat(
            &format!("{p}self_attn.v_proj.weight"),
            &[kv_heads * head_dim, hidden],
            s,
            0.0,
        );
        mat(
            &format!("{p}self_attn.o_proj.weight"),
            &[hidden, heads * head_dim],
            s,
            0.0,
        );
        mat(
            &format!("{p}post_attention_layernorm.weight"),
            &[hidden],
            0.2,
            1.0,
        );
        mat(
            &format!("{p}mlp.gate_proj.weight"),
            &[inter, hidden],
            s,
            0.0,
        );
        mat(&format!("{p}mlp.up_proj.weight"), &[inter, hidden], s, 0.0);
        mat(
            &format!("{p}mlp.down_proj.weight"),
            &[hidden, inter],
            1.0 / (inter as f32).sqrt(),
            0.0,
        );
    }
    mat("model.norm.weight", &[hidden], 0.2, 1.0);
    mat("lm_head.weight", &[vocab, hidden], s * 2.0, 0.0);
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors_bytes(&raws, None),
    )
    .unwrap();
}

fn archc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(args)
        .output()
        .expect("run archc")
}

#[test]
fn logits_cli_prefill_matches_decode() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    tiny_llama_dir(&model);
    let tokens = "3,1,4,1,5,9,2,6,5,31,0,7";
    let n_tokens = 12;
    let model_s = model.to_str().unwrap();
    let mut results = Vec::new();
    for mode in ["prefill", "decode"] {
        let out = dir.path().join(format!("{mode}.npy"));
        let o = archc(&[
            "logits",
            model_s,
            "--tokens",
            tokens,
            "--mode",
            mode,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "archc logits --mode {mode} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let a = npy::read(&out).unwrap();
        assert_eq!(a.shape, [n_tokens, 32]);
        assert!(a.data.iter().all(|v| v.is_finite()));
        results.push(a.data);
    }
    let max_diff = results[0]
        .iter()
        .zip(&results[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_diff <= 1e-4, "prefill vs decode differ by {max_diff}");
    // The logits vary by token and position: a constant output would pass the check above.
    let first_row = &results[0][..32];
    let last_row = &results[0][32 * (n_tokens - 1)..];
    assert!(first_row
        .iter()
        .zip(last_row)
        .any(|(a, b)| (a - b).abs() > 1e-3));
}

/// The tiny Llama of `tiny_llama_dir`, written as a `.arch` file.
const TINY_LLAMA_ARCH: &str = r#"
model "tiny-llama" {
  family  = llama
  vocab   = 32
  hidden  = 16
  layers  = 2
  context = 128
  dtype   = f32
  norm    = rmsnorm { eps = 1e-5 }
}
block {
  attention {
    heads    = 4
    kv_heads = 2
    rope { theta = 10_000 }
  }
  mlp { hidden = 40 }
}
"#;

/// `--spec` with the same architecture gives the same logits as importing config.json.
#[test]
fn logits_cli_with_spec_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    tiny_llama_dir(&model);
    let arch = write(dir.path(), "tiny.arch", TINY_LLAMA_ARCH.as_bytes());
    let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
    let m = model.to_str().unwrap();
    let tokens = "0,5,10,15,20,25,30";
    let o = archc(&[
        "logits",
        m,
        "--tokens",
        tokens,
        "--out",
        a.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = archc(&[
        "logits",
        m,
        "--tokens",
        tokens,
        "--spec",
        arch.to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (npy::read(&a).unwrap(), npy::read(&b).unwrap());
    assert_eq!(a.shape, [7, 32]);
    assert_eq!(a, b);
}

#[test]
fn logits_cli_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    tiny_llama_dir(&model);
    let out = dir.path().join("x.npy");
    let (m, o) = (model.to_str().unwrap(), out.to_str().unwrap());
    let mut text = String::new();
    let mut case = |name: &str, args: &[&str]| {
        let r = archc(args);
        let stderr = scrub(&String::from_utf8_lossy(&r.stderr), dir.path());
        writeln!(
            text,
            "{name}: exit {:?}\n{}",
            r.status.code(),
            stderr.trim_end()
        )
        .unwrap();
    };
    case(
        "token_out_of_vocab",
        &["logits", m, "--tokens", "1,32", "--out", o],
    );
    case(
        "token_not_a_number",
        &["logits", m, "--tokens", "1,x", "--out", o],
    );
    case("no_tokens", &["logits", m, "--tokens", "", "--out", o]);
    let missing = dir.path().join("nothing");
    case(
        "no_model_dir",
        &[
            "logits",
            missing.to_str().unwrap(),
            "--tokens",
            "1",
            "--out",
            o,
        ],
    );
    let bad_arch = write(
        dir.path(),
        "bad.arch",
        TINY_LLAMA_ARCH
            .replace("heads    = 4", "heads    = 3")
            .as_bytes(),
    );
    case(
        "arch_with_errors",
        &[
            "logits",
            m,
            "--tokens",
            "1",
            "--spec",
            bad_arch.to_str().unwrap(),
            "--out",
            o,
        ],
    );
    let wrong_arch = write(
        dir.path(),
        "wrong.arch",
        TINY_LLAMA_ARCH
            .replace("hidden = 40", "hidden = 48")
            .as_bytes(),
    );
    case(
        "arch_does_not_match_weights",
        &[
            "logits",
            m,
            "--tokens",
            "1",
            "--spec",
            wrong_arch.to_str().unwrap(),
            "--out",
            o,
        ],
    );
    std::fs::write(model.join("config.json"), "{\"model_type\": \"llama\"").unwrap();
    case("bad_config", &["logits", m, "--tokens", "1", "--out", o]);
    std::fs::remove_file(model.join("model.safetensors")).unwrap();
    case(
        "no_weights",
        &[
            "logits",
            m,
            "--tokens",
            "1",
            "--spec",
            wrong_arch.to_str().unwrap(),
            "--out",
            o,
        ],
    );
    assert!(!out.exists(), "a failed run must not leave an output file");
    snapshot("logits_errors", &text);
}
