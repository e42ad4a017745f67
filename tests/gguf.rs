//! GGUF: the reader (every metadata type, alignment, offsets, lying files), reference
//! dequantisation of every tensor type against the `gguf` Python package, import from
//! metadata for every supported architecture, binding, and logits parity of a tiny Llama
//! converted to GGUF against HF.
//!
//! Fixtures come from `tools/reference/make_gguf_fixtures.py`; lying files are built here.

use archc_runtime::bind::bind_gguf;
use archc_runtime::exec::{logits, Backend, Mode};
use archc_runtime::npy;
use archc_runtime::quant::{self, GgmlType};
use archc_runtime::weights::gguf::GgufFile;
use archc_spec::import::gguf::{from_gguf_metadata, MetaType, MetaValue};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf")
}

fn snapshot(dir: &Path, name: &str, text: &str) {
    insta::with_settings!({snapshot_path => dir, prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!(name, text);
    });
}

fn open(path: &Path) -> GgufFile {
    GgufFile::open(path).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------
// Dequantisation against gguf.quants.dequantize, bit for bit.

#[test]
fn every_type_dequantises_exactly_as_the_reference() {
    for ty in GgmlType::ALL {
        let file = open(&data().join(format!("types/{}.gguf", ty.name())));
        let info = file.info("t").expect("tensor t");
        assert_eq!(info.ty, ty);
        assert_eq!(info.shape, [2, 512], "{ty}");
        assert_eq!(info.ne, [512, 2], "{ty}");
        let ours = file.dequantize("t").unwrap_or_else(|e| panic!("{e}"));
        let expected = npy::read(&data().join(format!("types/{}.npy", ty.name())))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(expected.shape, [2, 512]);
        let mismatches: Vec<usize> = (0..ours.len())
            .filter(|&i| ours[i].to_bits() != expected.data[i].to_bits())
            .collect();
        assert!(
            mismatches.is_empty(),
            "{ty}: {} of 1024 values differ, first at {}: ours {} reference {}",
            mismatches.len(),
            mismatches[0],
            ours[mismatches[0]],
            expected.data[mismatches[0]]
        );
        // The fixtures hold a spread of values, not a constant.
        let distinct: BTreeSet<u32> = ours.iter().map(|v| v.to_bits()).collect();
        assert!(distinct.len() > 10, "{ty}: degenerate fixture");
    }
}

// ---------------------------------------------------------------------------------------
// The reader on a well-formed file with every value type.

fn dump(file: &GgufFile) -> String {
    let h = file.header();
    let mut s = String::new();
    let _ = writeln!(s, "version {}", h.version);
    let _ = writeln!(s, "alignment {}", h.alignment);
    let _ = writeln!(s, "data_start {}", h.data_start);
    for (k, v) in &h.metadata {
        let _ = writeln!(s, "{k}: {} = {v}", v.ty().name());
    }
    for t in &h.tensors {
        let values = file.dequantize(&t.name).unwrap_or_default();
        let _ = writeln!(
            s,
            "tensor {:?} {} ne {:?} shape {:?} offset {} bytes {}..{} values {values:?}",
            t.name, t.ty, t.ne, t.shape, t.offset, t.begin, t.end
        );
    }
    s
}

#[test]
fn reads_every_metadata_type_alignment_and_offsets() {
    let file = open(&data().join("metadata/all_types.gguf"));
    let h = file.header();
    assert_eq!(h.alignment, 64);
    assert_eq!(h.data_start % 64, 0);
    for t in &h.tensors {
        assert_eq!(t.offset % 64, 0, "{}", t.name);
    }
    snapshot(&data().join("metadata"), "all_types", &dump(&file));
}

// ---------------------------------------------------------------------------------------
// Lying files, built byte by byte.

/// A GGUF image under construction.
#[derive(Default, Clone)]
struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    fn u32(mut self, v: u32) -> Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn raw(mut self, b: &[u8]) -> Self {
        self.bytes.extend_from_slice(b);
        self
    }
    fn str(self, s: &str) -> Self {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    fn header(self, tensors: u64, kvs: u64) -> Self {
        self.raw(b"GGUF").u32(3).u64(tensors).u64(kvs)
    }
    /// A tensor info entry.
    fn tensor(self, name: &str, ne: &[u64], ty: u32, offset: u64) -> Self {
        let mut w = self.str(name).u32(ne.len() as u32);
        for &n in ne {
            w = w.u64(n);
        }
        w.u32(ty).u64(offset)
    }
    /// Pads to the 32-byte default alignment, then appends `n` data bytes.
    fn data(mut self, n: usize) -> Self {
        while self.bytes.len() % 32 != 0 {
            self.bytes.push(0);
        }
        self.bytes.extend((0..n).map(|i| i as u8));
        self
    }
}

/// A valid file: one string key, one u32 array, two F32 tensors.
fn valid() -> Vec<u8> {
    Writer::default()
        .header(2, 2)
        .str("general.architecture")
        .u32(8)
        .str("llama")
        .str("x.list")
        .u32(9)
        .u32(4)
        .u64(2)
        .u32(7)
        .u32(9)
        .tensor("a", &[4], 0, 0)
        .tensor("b", &[2, 2], 0, 32)
        .data(48)
        .bytes
}

fn parse_err(bytes: Vec<u8>) -> String {
    match GgufFile::from_bytes(Path::new("lie.gguf"), bytes) {
        Ok(_) => "accepted".to_string(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_valid_handmade_file_opens() {
    let file =
        GgufFile::from_bytes(Path::new("ok.gguf"), valid()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file.tensors().len(), 2);
    let b = file.info("b").expect("b");
    assert_eq!((b.offset, b.end - b.begin), (32, 16));
}

#[test]
fn every_truncation_is_an_error() {
    let full = valid();
    let mut fields = BTreeSet::new();
    for n in 0..full.len() {
        let e = GgufFile::from_bytes(Path::new("t.gguf"), full[..n].to_vec())
            .err()
            .unwrap_or_else(|| panic!("a file cut to {n} bytes was accepted"));
        fields.insert(e.field());
    }
    let text: Vec<String> = fields.into_iter().collect();
    snapshot(
        &data().join("hostile"),
        "truncated_fields",
        &text.join("\n"),
    );
}

#[test]
fn lying_files_get_errors_naming_the_field() {
    let w = Writer::default;
    let one_tensor = |ne: &[u64], ty: u32, offset: u64, data: usize| {
        w().header(1, 0)
            .tensor("w", ne, ty, offset)
            .data(data)
            .bytes
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad magic", w().raw(b"GGML").u32(3).u64(0).u64(0).bytes),
        ("version 1", w().raw(b"GGUF").u32(1).u64(0).u64(0).bytes),
        (
            "big-endian",
            w().raw(b"GGUF").u32(3u32.swap_bytes()).u64(0).u64(0).bytes,
        ),
        ("tensor count beyond the file", w().header(1 << 40, 0).bytes),
        ("kv count beyond the file", w().header(0, u64::MAX).bytes),
        (
            "key length 2^63",
            w().header(0, 1).u64(1 << 63).raw(&[0; 32]).bytes,
        ),
        (
            "string value length 2^63",
            w().header(0, 1).str("k").u32(8).u64(1 << 63).bytes,
        ),
        (
            "unknown value type",
            w().header(0, 1).str("k").u32(13).u32(0).bytes,
        ),
        (
            "array count beyond the file",
            w().header(0, 1).str("k").u32(9).u32(4).u64(1 << 60).bytes,
        ),
        (
            "bool byte 2",
            w().header(0, 1).str("k").u32(7).raw(&[2]).bytes,
        ),
        ("duplicate key", {
            let w = w().header(0, 2).str("k").u32(4).u32(1);
            w.str("k").u32(4).u32(2).bytes
        }),
        (
            "key not UTF-8",
            w().header(0, 1)
                .u64(2)
                .raw(&[0xff, 0xfe])
                .u32(4)
                .u32(0)
                .bytes,
        ),
        (
            "string value not UTF-8 (a chat template, say)",
            w().header(0, 1)
                .str("tokenizer.chat_template")
                .u32(8)
                .u64(3)
                .raw(&[b'h', 0xff, b'i'])
                .bytes,
        ),
        ("arrays nested too deep", {
            let mut w = w().header(0, 1).str("k");
            w = w.u32(9);
            for _ in 0..9 {
                w = w.u32(9).u64(1);
            }
            w.u32(4).u64(1).u32(0).bytes
        }),
        (
            "alignment not a power of two",
            w().header(0, 1)
                .str("general.alignment")
                .u32(4)
                .u32(48)
                .bytes,
        ),
        (
            "alignment of the wrong type",
            w().header(0, 1)
                .str("general.alignment")
                .u32(10)
                .u64(32)
                .bytes,
        ),
        ("rank 0", one_tensor(&[], 0, 0, 0)),
        ("rank 5", one_tensor(&[1, 1, 1, 1, 1], 0, 0, 4)),
        ("extent above 2^63", one_tensor(&[1 << 63], 0, 0, 0)),
        (
            "element count overflow",
            one_tensor(&[1 << 32, 1 << 32, 1 << 32], 0, 0, 0),
        ),
        ("byte size overflow", one_tensor(&[1 << 62], 0, 0, 0)),
        ("unknown tensor type", one_tensor(&[4], 99, 0, 16)),
        ("unsupported tensor type", one_tensor(&[256], 16, 0, 66)),
        ("row not whole blocks", one_tensor(&[33], 8, 0, 64)),
        ("offset outside the data", one_tensor(&[4], 0, 64, 16)),
        ("size past the end", one_tensor(&[8], 0, 0, 16)),
        (
            "offset near u64::MAX",
            one_tensor(&[4], 0, u64::MAX - 31, 16),
        ),
        ("misaligned offset", one_tensor(&[4], 0, 4, 32)),
        (
            "duplicate tensor names",
            w().header(2, 0)
                .tensor("w", &[4], 0, 0)
                .tensor("w", &[4], 0, 32)
                .data(48)
                .bytes,
        ),
        (
            "overlapping tensors",
            w().header(2, 0)
                .tensor("a", &[16], 0, 0)
                .tensor("b", &[4], 0, 32)
                .data(64)
                .bytes,
        ),
        (
            "data section past the end",
            w().header(1, 0).tensor("w", &[4], 0, 0).bytes,
        ),
    ];
    let mut text = String::new();
    for (name, bytes) in cases {
        let _ = writeln!(text, "{name}:\n  {}", parse_err(bytes));
    }
    snapshot(&data().join("hostile"), "lying_files", &text);
}

#[test]
fn a_file_without_tensors_needs_no_data_section() {
    let bytes = Writer::default().header(0, 1).str("k").u32(5).u32(0).bytes;
    let file =
        GgufFile::from_bytes(Path::new("meta.gguf"), bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file.metadata().get("k"), Some(&MetaValue::I32(0)));
}

#[test]
fn dequantise_refuses_partial_blocks() {
    let e = quant::dequantize(GgmlType::Q6K, &[0; 211]).expect_err("211 bytes");
    assert_eq!(
        e.to_string(),
        "211 bytes of Q6_K data is not a whole number of 210-byte blocks"
    );
}

// ---------------------------------------------------------------------------------------
// Import from metadata.

fn import_file(path: &Path) -> archc_spec::Spec {
    let file = open(path);
    from_gguf_metadata(file.metadata(), &file.names(), &path.display().to_string())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn imports_the_smollm2_metadata_extract() {
    let spec = import_file(&data().join("smollm2_meta.gguf"));
    let text = archc_spec::print::to_arch(&spec);
    snapshot(&data(), "smollm2_meta", &text);
    // Published SmolLM2-135M: 134,515,008 parameters (tied embeddings).
    assert_eq!(archc_spec::tensors::params(&spec), 134_515_008);
}

#[test]
fn imports_the_tiny_llama() {
    let spec = import_file(&data().join("tiny_llama/f32.gguf"));
    snapshot(
        &data().join("tiny_llama"),
        "import",
        &archc_spec::print::to_arch(&spec),
    );
}

fn u(v: u32) -> MetaValue {
    MetaValue::U32(v)
}
fn f(v: f32) -> MetaValue {
    MetaValue::F32(v)
}
fn s(v: &str) -> MetaValue {
    MetaValue::Str(v.to_string())
}

/// Metadata of `arch` from `(suffix, value)` pairs under the `{arch}.` prefix.
fn meta(arch: &str, keys: &[(&str, MetaValue)]) -> BTreeMap<String, MetaValue> {
    let mut m = BTreeMap::new();
    m.insert("general.architecture".to_string(), s(arch));
    m.insert("general.file_type".to_string(), u(7));
    for (k, v) in keys {
        let key = if k.starts_with("general.") || k.starts_with("tokenizer.") {
            k.to_string()
        } else {
            format!("{arch}.{k}")
        };
        m.insert(key, v.clone());
    }
    m
}

/// Published configurations, written as llama.cpp's converter writes their metadata.
fn real_models() -> Vec<(&'static str, BTreeMap<String, MetaValue>, Vec<&'static str>)> {
    vec![
        (
            "qwen2.5-0.5b",
            meta(
                "qwen2",
                &[
                    ("vocab_size", u(151_936)),
                    ("context_length", u(32_768)),
                    ("embedding_length", u(896)),
                    ("block_count", u(24)),
                    ("feed_forward_length", u(4864)),
                    ("attention.head_count", u(14)),
                    ("attention.head_count_kv", u(2)),
                    ("rope.freq_base", f(1_000_000.0)),
                    ("attention.layer_norm_rms_epsilon", f(1e-6)),
                ],
            ),
            vec![],
        ),
        (
            "qwen3-0.6b",
            meta(
                "qwen3",
                &[
                    ("vocab_size", u(151_936)),
                    ("context_length", u(40_960)),
                    ("embedding_length", u(1024)),
                    ("block_count", u(28)),
                    ("feed_forward_length", u(3072)),
                    ("attention.head_count", u(16)),
                    ("attention.head_count_kv", u(8)),
                    ("attention.key_length", u(128)),
                    ("attention.value_length", u(128)),
                    ("rope.freq_base", f(1_000_000.0)),
                    ("attention.layer_norm_rms_epsilon", f(1e-6)),
                ],
            ),
            vec![],
        ),
        (
            "qwen3-30b-a3b",
            meta(
                "qwen3moe",
                &[
                    ("vocab_size", u(151_936)),
                    ("context_length", u(40_960)),
                    ("embedding_length", u(2048)),
                    ("block_count", u(48)),
                    ("feed_forward_length", u(6144)),
                    ("attention.head_count", u(32)),
                    ("attention.head_count_kv", u(4)),
                    ("attention.key_length", u(128)),
                    ("attention.value_length", u(128)),
                    ("rope.freq_base", f(1_000_000.0)),
                    ("attention.layer_norm_rms_epsilon", f(1e-6)),
                    ("expert_count", u(128)),
                    ("expert_used_count", u(8)),
                    ("expert_feed_forward_length", u(768)),
                ],
            ),
            vec!["output.weight"],
        ),
        (
            "gemma-3-1b",
            meta(
                "gemma3",
                &[
                    ("vocab_size", u(262_144)),
                    ("context_length", u(32_768)),
                    ("embedding_length", u(1152)),
                    ("block_count", u(26)),
                    ("feed_forward_length", u(6912)),
                    ("attention.head_count", u(4)),
                    ("attention.head_count_kv", u(1)),
                    ("attention.key_length", u(256)),
                    ("attention.value_length", u(256)),
                    ("attention.sliding_window", u(512)),
                    ("rope.freq_base", f(1_000_000.0)),
                    ("attention.layer_norm_rms_epsilon", f(1e-6)),
                ],
            ),
            vec![],
        ),
        (
            "deepseek-v3",
            meta(
                "deepseek2",
                &[
                    ("vocab_size", u(129_280)),
                    ("context_length", u(163_840)),
                    ("embedding_length", u(7168)),
                    ("block_count", u(61)),
                    ("feed_forward_length", u(18_432)),
                    ("attention.head_count", u(128)),
                    ("attention.head_count_kv", u(128)),
                    ("attention.key_length", u(192)),
                    ("attention.value_length", u(128)),
                    ("attention.q_lora_rank", u(1536)),
                    ("attention.kv_lora_rank", u(512)),
                    ("rope.dimension_count", u(64)),
                    ("rope.freq_base", f(10_000.0)),
                    ("rope.scaling.type", s("yarn")),
                    ("rope.scaling.factor", f(40.0)),
                    ("rope.scaling.original_context_length", u(4096)),
                    ("rope.scaling.yarn_log_multiplier", f(0.1)),
                    ("attention.layer_norm_rms_epsilon", f(1e-6)),
                    ("leading_dense_block_count", u(3)),
                    ("expert_count", u(256)),
                    ("expert_used_count", u(8)),
                    ("expert_shared_count", u(1)),
                    ("expert_feed_forward_length", u(2048)),
                    ("expert_weights_scale", f(2.5)),
                    ("expert_weights_norm", MetaValue::Bool(true)),
                    ("expert_gating_func", u(2)),
                    ("expert_group_count", u(8)),
                    ("expert_group_used_count", u(4)),
                ],
            ),
            vec!["output.weight"],
        ),
        (
            "gpt-oss-20b",
            meta(
                "gpt-oss",
                &[
                    ("vocab_size", u(201_088)),
                    ("context_length", u(131_072)),
                    ("embedding_length", u(2880)),
                    ("block_count", u(24)),
                    ("feed_forward_length", u(2880)),
                    ("attention.head_count", u(64)),
                    ("attention.head_count_kv", u(8)),
                    ("attention.key_length", u(64)),
                    ("attention.value_length", u(64)),
                    ("attention.sliding_window", u(128)),
                    ("rope.freq_base", f(150_000.0)),
                    ("rope.scaling.type", s("yarn")),
                    ("rope.scaling.factor", f(32.0)),
                    ("rope.scaling.original_context_length", u(4096)),
                    ("attention.layer_norm_rms_epsilon", f(1e-5)),
                    ("expert_count", u(32)),
                    ("expert_used_count", u(4)),
                    ("expert_feed_forward_length", u(2880)),
                ],
            ),
            vec!["output.weight"],
        ),
        (
            "olmo-2-1b",
            meta(
                "olmo2",
                &[
                    ("vocab_size", u(100_352)),
                    ("context_length", u(4096)),
                    ("embedding_length", u(2048)),
                    ("block_count", u(16)),
                    ("feed_forward_length", u(8192)),
                    ("attention.head_count", u(16)),
                    ("attention.head_count_kv", u(16)),
                    ("rope.freq_base", f(500_000.0)),
                    ("attention.layer_norm_rms_epsilon", f(1e-6)),
                ],
            ),
            vec!["output.weight"],
        ),
        (
            // llama.cpp writes OLMo 3 as `olmo2` with a sliding window and its pattern.
            "olmo-3-7b",
            meta(
                "olmo2",
                &[
                    ("vocab_size", u(100_278)),
                    ("context_length", u(65_536)),
                    ("embedding_length", u(4096)),
                    ("block_count", u(32)),
                    ("feed_forward_length", u(11_008)),
                    ("attention.head_count", u(32)),
                    ("attention.head_count_kv", u(32)),
                    ("rope.freq_base", f(500_000.0)),
                    ("attention.layer_norm_rms_epsilon", f(1e-6)),
                    ("attention.sliding_window", u(4096)),
                    (
                        "attention.sliding_window_pattern",
                        MetaValue::Array {
                            elem: MetaType::Bool,
                            items: (0..32).map(|i| MetaValue::Bool((i + 1) % 4 != 0)).collect(),
                        },
                    ),
                    ("rope.scaling.type", s("yarn")),
                    ("rope.scaling.factor", f(8.0)),
                    ("rope.scaling.original_context_length", u(8192)),
                    ("rope.scaling.yarn_attn_factor", f(1.207_944_2)),
                    ("rope.scaling.yarn_beta_fast", f(32.0)),
                    ("rope.scaling.yarn_beta_slow", f(1.0)),
                ],
            ),
            vec!["output.weight"],
        ),
    ]
}

#[test]
fn imports_every_supported_architecture() {
    let dir = data().join("import");
    for (name, m, tensors) in real_models() {
        let tensors: BTreeSet<String> = tensors.into_iter().map(str::to_string).collect();
        let spec = from_gguf_metadata(&m, &tensors, &format!("{name}.gguf"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = format!(
            "{}\n# parameters: {}\n",
            archc_spec::print::to_arch(&spec),
            archc_spec::tensors::params(&spec)
        );
        snapshot(&dir, name, &text);
    }
}

#[test]
fn import_errors_name_the_gguf_key() {
    let base = || real_models().remove(1).1;
    let none = BTreeSet::new();
    let mut cases: Vec<(&str, BTreeMap<String, MetaValue>)> = Vec::new();
    let mut m = base();
    m.remove("qwen3.block_count");
    cases.push(("missing block count", m));
    let mut m = base();
    m.insert("qwen3.embedding_length".into(), s("big"));
    cases.push(("string for a size", m));
    let mut m = base();
    m.insert("qwen3.attention.head_count_kv".into(), u(5));
    cases.push(("kv heads not dividing heads", m));
    let mut m = base();
    m.insert(
        "qwen3.attention.head_count".into(),
        MetaValue::Array {
            elem: MetaType::U32,
            items: vec![u(16); 28],
        },
    );
    cases.push(("per-layer head counts", m));
    let mut m = base();
    m.insert("general.architecture".into(), s("mamba"));
    cases.push(("unknown architecture", m));
    let mut m = base();
    m.insert("qwen3.rope.scaling.type".into(), s("longrope"));
    cases.push(("unknown rope scaling", m));
    let mut m = base();
    m.insert("qwen3.block_count".into(), u(1 << 20));
    cases.push(("too many layers", m));
    // NaN and infinity are refused, not replaced by the default.
    let mut m = base();
    m.insert("qwen3.rope.freq_base".into(), f(f32::NAN));
    cases.push(("NaN RoPE base", m));
    let mut m = base();
    m.insert(
        "qwen3.attention.layer_norm_rms_epsilon".into(),
        f(f32::INFINITY),
    );
    cases.push(("infinite norm epsilon", m));
    let mut m = base();
    m.insert("qwen3.rope.scaling.type".into(), s("yarn"));
    m.insert("qwen3.rope.scaling.factor".into(), f(4.0));
    m.insert("qwen3.rope.scaling.yarn_ext_factor".into(), f(0.5));
    cases.push(("YaRN extrapolation factor", m));
    let olmo3 = || {
        real_models()
            .into_iter()
            .find(|(n, _, _)| *n == "olmo-3-7b")
            .unwrap()
            .1
    };
    let mut m = olmo3();
    m.insert(
        "olmo2.attention.sliding_window_pattern".into(),
        MetaValue::Array {
            elem: MetaType::Bool,
            items: vec![MetaValue::Bool(true); 31],
        },
    );
    cases.push(("OLMo 3 window pattern of the wrong length", m));
    let mut m = olmo3();
    m.insert("olmo2.rope.freq_base_swa".into(), f(10_000.0));
    cases.push(("OLMo 3 sliding RoPE base of its own", m));
    // A key llama.cpp reads but this importer does not: refused, not ignored.
    let mut m = base();
    m.insert("qwen3.expert_count".into(), u(8));
    m.insert("qwen3.expert_used_count".into(), u(2));
    cases.push(("experts on a dense architecture", m));
    let mut m = base();
    m.insert("qwen3.logit_scale".into(), f(0.5));
    cases.push(("a logit scale", m));
    let mut m = real_models().remove(1).1;
    m.insert("qwen3.context_length".into(), u(8192));
    m.insert("general.quantization_version".into(), u(2));
    cases.push(("informational keys only", m));
    let mut text = String::new();
    for (name, m) in cases {
        let e = match from_gguf_metadata(&m, &none, "x.gguf") {
            Ok(_) => "accepted".to_string(),
            Err(e) => e.to_string(),
        };
        let _ = writeln!(text, "{name}:\n  {e}");
    }
    snapshot(&data().join("import"), "errors", &text);
}

// ---------------------------------------------------------------------------------------
// Binding and parity.

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (x - y).abs();
            if d.is_nan() {
                f32::INFINITY
            } else {
                d
            }
        })
        .fold(0.0, f32::max)
}

fn parity(kind: &str, tolerance: f32) {
    let dir = data().join("tiny_llama");
    let path = dir.join(format!("{kind}.gguf"));
    let spec = import_file(&path);
    let weights = bind_gguf(&spec, open(&path)).unwrap_or_else(|e| panic!("{kind}: {e}"));
    let tokens: Vec<u32> = serde_json::from_str(
        &std::fs::read_to_string(dir.join("tokens.json")).expect("tokens.json"),
    )
    .expect("a list of token ids");
    let hf = npy::read(&dir.join(format!("logits_{kind}.npy"))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hf.shape, [tokens.len(), spec.vocab as usize]);
    for mode in [Mode::Prefill, Mode::Decode] {
        let ours = logits(&spec, &weights, &tokens, mode, Backend::Interp)
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let d = max_diff(&ours, &hf.data);
        eprintln!("{kind} {mode:?}: max |ours - HF| = {d:e}");
        assert!(
            d <= tolerance,
            "{kind} {mode:?}: max |ours - HF| = {d:e} > {tolerance:e}"
        );
    }
}

#[test]
fn tiny_llama_f32_matches_hf() {
    parity("f32", 1e-4);
}

/// HF ran with the same f16-rounded weights in f32; the Spec says f16, so the
/// interpreter follows HF's f16 arithmetic where it rounds (embedding scale only here).
#[test]
fn tiny_llama_f16_matches_hf_on_the_same_weights() {
    parity("f16", 1e-4);
}

/// HF ran on the Q8_0-dequantised weights: the only difference left is arithmetic order.
#[test]
fn tiny_llama_q8_0_matches_hf_on_the_dequantised_weights() {
    parity("q8_0", 1e-4);
}

#[test]
fn quantised_blocks_are_exposed_in_canonical_row_order() {
    let path = data().join("tiny_llama/q8_0.gguf");
    let spec = import_file(&path);
    let weights = bind_gguf(&spec, open(&path)).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = BTreeMap::new();
    for name in weights.names() {
        let view = weights.get(name).expect("bound");
        let values = view.to_f32().expect("f32");
        if let Some(q) = weights.quantized(name) {
            assert_eq!(q.shape, view.shape, "{name}");
            let from_raw = quant::dequantize(q.ty, q.bytes).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                from_raw, values,
                "{name}: raw blocks disagree with the f32 view"
            );
            *seen.entry(q.ty.name()).or_insert(0) += 1;
        }
    }
    // 7 projections per layer and the two embeddings are Q8_0; norms are F32.
    assert_eq!(seen.get("Q8_0"), Some(&16));
    assert_eq!(seen.get("F32"), Some(&5));
    assert!(weights.is_zero_copy("layers.0.attn_norm.weight"));
    assert!(!weights.is_zero_copy("layers.0.attn.q.weight"));
}

#[test]
fn binding_reports_missing_and_unexpected_tensors() {
    // The tiny Llama's file bound to a model with a third layer and an MLP that is too wide.
    let path = data().join("tiny_llama/f32.gguf");
    let mut spec = import_file(&path);
    spec.layers = 3;
    spec.schedule.push(0);
    if let archc_spec::Ffn::Mlp(m) = &mut spec.blocks[0].ffn {
        m.hidden = 96;
    }
    let e = bind_gguf(&spec, open(&path)).expect_err("mismatched");
    snapshot(&data().join("tiny_llama"), "bind_errors", &e.to_string());
}

// ---------------------------------------------------------------------------------------
// The CLI.

#[test]
fn cli_import_and_logits_of_a_gguf_file() {
    let dir = data().join("tiny_llama");
    let out = Command::new(env!("CARGO_BIN_EXE_archc"))
        .arg("import")
        .arg(dir.join("f32.gguf"))
        .output()
        .expect("archc runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spec = import_file(&dir.join("f32.gguf"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        archc_spec::print::to_arch(&spec)
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let npy_path = tmp.path().join("l.npy");
    let tokens = std::fs::read_to_string(dir.join("tokens.json")).expect("tokens");
    let tokens = tokens
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .replace(' ', "");
    let out = Command::new(env!("CARGO_BIN_EXE_archc"))
        .arg("logits")
        .arg(dir.join("q8_0.gguf"))
        .args(["--tokens", &tokens, "--out"])
        .arg(&npy_path)
        .output()
        .expect("archc runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = npy::read(&npy_path).unwrap_or_else(|e| panic!("{e}"));
    let hf = npy::read(&dir.join("logits_q8_0.npy")).unwrap_or_else(|e| panic!("{e}"));
    assert!(max_diff(&ours.data, &hf.data) <= 1e-4);
}

#[test]
fn cli_import_of_a_lying_gguf_names_the_field() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("lie.gguf");
    std::fs::write(&path, Writer::default().header(1 << 40, 0).bytes).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_archc"))
        .arg("import")
        .arg(&path)
        .output()
        .expect("archc runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("header.tensor_count"), "{err}");
}

/// The GGUF metadata of a published model imports to the same Spec as its HF config
/// (apart from the name and the storage dtype, which a quantised file cannot state).
#[test]
fn gguf_metadata_and_hf_config_give_the_same_spec() {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/configs");
    let pairs = [
        ("qwen3-0.6b", "qwen3-0.6b"),
        ("qwen3-30b-a3b", "qwen3-30b-a3b"),
        ("deepseek-v3", "deepseek-v3"),
        ("gpt-oss-20b", "gpt-oss-20b"),
    ];
    let models = real_models();
    for (gguf_name, config) in pairs {
        let (_, m, tensors) = models
            .iter()
            .find(|(n, _, _)| *n == gguf_name)
            .expect("a real model");
        let tensors: BTreeSet<String> = tensors.iter().map(|t| t.to_string()).collect();
        let mut ours = from_gguf_metadata(m, &tensors, "x.gguf").unwrap_or_else(|e| panic!("{e}"));
        let hf =
            archc_spec::import::from_path(&configs.join(config)).unwrap_or_else(|e| panic!("{e}"));
        ours.name = hf.name.clone();
        ours.dtype = hf.dtype;
        // llama.cpp's converter leaves DeepSeek's multi-token-prediction layer out.
        assert_eq!(ours.mtp, 0, "{gguf_name}");
        ours.mtp = hf.mtp;
        assert_eq!(
            archc_spec::print::to_arch(&ours),
            archc_spec::print::to_arch(&hf),
            "{gguf_name}"
        );
        assert_eq!(ours, hf, "{gguf_name}");
    }
    // OLMo 3 as llama.cpp writes it (`olmo2` with a window): the same model as its HF
    // config, but for the YaRN attention factor, which GGUF stores as an f32.
    let (_, m, tensors) = models.iter().find(|(n, _, _)| *n == "olmo-3-7b").unwrap();
    let tensors: BTreeSet<String> = tensors.iter().map(|t| t.to_string()).collect();
    let mut ours = from_gguf_metadata(m, &tensors, "x.gguf").unwrap_or_else(|e| panic!("{e}"));
    let hf = archc_spec::import::from_path(&configs.join("olmo-3-7b")).unwrap();
    ours.name = hf.name.clone();
    ours.dtype = hf.dtype;
    assert_eq!(
        archc_spec::print::to_arch(&ours),
        archc_spec::print::to_arch(&hf).replace("1.2079441541679836", "1.2079442")
    );
}

/// Random single-byte and multi-byte corruptions of every fixture: each must open or be
/// refused with an error, never panic; whatever opens must dequantise, import and bind
/// without panicking (a deterministic stand-in for the `gguf` fuzz target).
#[test]
fn corrupted_fixtures_never_panic() {
    let mut files = vec![
        data().join("metadata/all_types.gguf"),
        data().join("smollm2_meta.gguf"),
        data().join("tiny_llama/q8_0.gguf"),
    ];
    for ty in GgmlType::ALL {
        files.push(data().join(format!("types/{}.gguf", ty.name())));
    }
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut opened = 0;
    for path in &files {
        let original = std::fs::read(path).expect("fixture");
        // Corrupt only the header region most of the time: that is where lies matter.
        let header_len = open(path).header().data_start as usize;
        for _ in 0..300 {
            let mut bytes = original.clone();
            for _ in 0..1 + next() % 4 {
                let limit = if next() % 4 == 0 {
                    bytes.len()
                } else {
                    header_len.min(bytes.len())
                };
                let at = (next() % limit.max(1) as u64) as usize;
                bytes[at] = next() as u8;
            }
            if next() % 8 == 0 {
                bytes.truncate((next() % bytes.len() as u64) as usize);
            }
            let Ok(file) = GgufFile::from_bytes(Path::new("c.gguf"), bytes) else {
                continue;
            };
            opened += 1;
            for t in file.tensors() {
                let v = file
                    .dequantize(&t.name)
                    .expect("checked tensors dequantise");
                assert_eq!(v.len(), t.numel());
            }
            if let Ok(spec) = from_gguf_metadata(file.metadata(), &file.names(), "c.gguf") {
                if archc_spec::tensors::params(&spec) < 1 << 20 {
                    let _ = bind_gguf(&spec, file);
                }
            }
        }
    }
    // Many corruptions hit values (token strings, tensor data) and still open.
    assert!(opened > 100, "only {opened} corrupted files opened");
}
