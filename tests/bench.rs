//! `archc bench` end to end on the tiny Qwen3 fixture: the JSON report has every key with
//! sane values (no timing is asserted: a benchmark is not a timed test), the table has its
//! rows, and bad arguments fail with the messages snapshotted in `tests/data/bench/`.
//! Random weights (`--random-weights`) on a tiny `.arch` spec: deterministic for a seed,
//! at the Spec's shapes, finite logits, and a report like the checkpoint's.
//! `--backend cuda` without a device fails as `logits` and `run` do; with one it reports.
//!
//! Bless with `INSTA_UPDATE=always cargo test --test bench`, then read the snapshots.

use archc_compiler::interp::{WeightDType, WeightSource};
use archc_runtime::bench::RandomWeights;
use archc_runtime::exec::cpu::{CpuModel, Engine, Phase};
use archc_runtime::exec::cuda::{probe, CudaError};
use archc_spec::stats::{stats, Options};
use archc_spec::{DType, Spec};
use std::path::Path;
use std::process::{Command, Output};

const FIXTURE: &str = "tests/data/fixtures/qwen3";
/// A two-layer Qwen3-shaped spec without weights, for `--random-weights`.
const TINY_SPEC: &str = "tests/data/bench/tiny-qwen3.arch";

/// Small and quick: a short prompt, a few decode steps, one repetition, a small probe.
const QUICK: &[&str] = &[
    "--prompt-len",
    "8",
    "--gen",
    "4",
    "--threads",
    "2",
    "--repeat",
    "1",
    "--probe-mib",
    "16",
];

fn archc_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archc"))
        .arg("bench")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run archc bench: {e}"))
}

fn snapshot(name: &str, text: &str) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bench");
    insta::with_settings!({snapshot_path => dir, prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn json_report_has_every_key_with_sane_values() {
    let mut args = vec![FIXTURE];
    args.extend_from_slice(QUICK);
    args.push("--json");
    let out = archc_bench(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "archc bench failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stderr}"));
    let obj = report.as_object().expect("a JSON object");

    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    snapshot("json_keys", &keys.join("\n"));

    let num = |k: &str| {
        obj.get(k)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("`{k}` is missing or not a number in {report}"))
    };
    for k in [
        "prefill_tok_s",
        "decode_tok_s",
        "compile_cold_s",
        "compile_cached_s",
        "peak_rss_bytes",
        "weight_bytes",
        "kv_bytes",
        "bandwidth_gbs",
        "fma_gflops",
        "decode_roofline_fraction",
        "prefill_roofline_fraction",
        "decode_bytes_per_token",
        "prefill_flops",
    ] {
        let v = num(k);
        assert!(
            v > 0.0 && v.is_finite(),
            "`{k}` = {v}, expected a positive number"
        );
    }
    assert_eq!(
        obj["compile_cached_hit"], true,
        "the second compile missed the cache"
    );
    assert_eq!(num("threads"), 2.0);
    assert_eq!(num("prompt_len"), 8.0);
    assert_eq!(num("gen"), 4.0);
    assert_eq!(obj["prefill_s"].as_array().map(Vec::len), Some(1));

    // The weight bytes are the checkpoint file; a decode step reads at most all of it.
    let file = std::fs::metadata(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(FIXTURE)
            .join("model.safetensors"),
    )
    .expect("fixture checkpoint")
    .len();
    assert_eq!(num("weight_bytes"), file as f64);
    assert!(num("decode_bytes_per_token") <= num("weight_bytes"));

    // The KV cache at prompt + gen tokens in the kernels' f32 cache, as `archc stats` counts it.
    let spec = archc_spec::import::from_path(&Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE))
        .expect("fixture config imports");
    let kv = stats(
        &spec,
        Options {
            context: 12,
            kv_dtype: DType::F32,
        },
    )
    .kv_bytes_total;
    assert_eq!(num("kv_bytes"), kv as f64);

    // The fractions are the achieved rates over the roofs, recomputed from the report.
    let decode_roof = num("bandwidth_gbs") * 1e9 / num("decode_bytes_per_token");
    let want = num("decode_tok_s") / decode_roof;
    assert!((num("decode_roofline_fraction") - want).abs() <= 1e-9 * want.max(1.0));
    let prefill_rate = num("prefill_flops") / obj["prefill_s"][0].as_f64().expect("seconds");
    let want = prefill_rate / (num("fma_gflops") * 1e9);
    assert!((num("prefill_roofline_fraction") - want).abs() <= 1e-6 * want.max(1e-12));
}

#[test]
fn table_names_every_measurement() {
    let mut args = vec![FIXTURE];
    args.extend_from_slice(QUICK);
    let out = archc_bench(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "archc bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let labels: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        labels,
        ["archc", "prompt", "prefill", "decode", "compile", "memory"],
        "unexpected table:\n{stdout}"
    );
    assert!(stdout.contains("of the compute roof"), "{stdout}");
    assert!(stdout.contains("of the bandwidth roof"), "{stdout}");
}

#[test]
fn bad_arguments_are_refused() {
    let cases: &[(&str, &[&str])] = &[
        ("zero_threads", &[FIXTURE, "--threads", "0"]),
        ("zero_gen", &[FIXTURE, "--gen", "0"]),
        (
            "beyond_context",
            &[FIXTURE, "--prompt-len", "120", "--gen", "9"],
        ),
        ("not_a_model", &["tests/data/bench/missing-model"]),
        ("arch_without_random_weights", &[TINY_SPEC]),
        ("seed_without_random_weights", &[FIXTURE, "--seed", "3"]),
        ("cuda_graph_on_the_cpu", &[FIXTURE, "--cuda-graph"]),
        (
            "random_weights_missing_spec",
            &["tests/data/bench/missing.arch", "--random-weights"],
        ),
    ];
    let mut text = String::new();
    for (name, args) in cases {
        let out = archc_bench(args);
        text += &format!(
            "{name}: exit {:?}\n{}\n",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
        assert!(out.stdout.is_empty(), "{name}: printed a report");
    }
    snapshot("bad_arguments", &text);
}

fn tiny_spec() -> Spec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(TINY_SPEC);
    let src = std::fs::read_to_string(&path).expect("tiny spec");
    archc_spec::validate::check_source(TINY_SPEC, &src)
        .unwrap_or_else(|d| panic!("{TINY_SPEC} does not validate: {d:?}"))
}

#[test]
fn random_weights_are_deterministic_at_the_spec_shapes() {
    let spec = tiny_spec();
    let a = RandomWeights::for_spec(&spec, WeightDType::Bf16, 7, 2).expect("weights");
    let b = RandomWeights::for_spec(&spec, WeightDType::Bf16, 7, 1).expect("weights");
    let c = RandomWeights::for_spec(&spec, WeightDType::Bf16, 8, 2).expect("weights");
    let tensors = archc_spec::tensors::tensors(&spec);
    assert_eq!(a.names().count(), tensors.len());
    let mut total = 0u64;
    for t in &tensors {
        let (x, y, z) = (
            a.get(&t.name).expect("tensor"),
            b.get(&t.name).expect("tensor"),
            c.get(&t.name).expect("tensor"),
        );
        let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        assert_eq!(x.shape, &shape[..], "{}", t.name);
        assert_eq!(x.dtype, WeightDType::Bf16);
        assert_eq!(x.bytes.len() as u64, t.numel() * 2, "{}", t.name);
        // The same seed gives the same bytes on any thread count; another seed does not.
        assert_eq!(x.bytes, y.bytes, "{}", t.name);
        assert_ne!(x.bytes, z.bytes, "{}", t.name);
        total += x.bytes.len() as u64;
    }
    assert_eq!(a.bytes(), total);
    // Norm weights near 1, projections scaled by their fan-in.
    let norm = values(&a, "final_norm.weight");
    assert!(norm.iter().all(|&v| (0.79..=1.21).contains(&v)), "{norm:?}");
    let down = values(&a, "layers.1.ffn.down.weight");
    let bound = (3.0f32 / 128.0).sqrt() * 1.01;
    assert!(down.iter().all(|&v| v.abs() <= bound));
    assert!(down.iter().any(|&v| v.abs() > bound / 2.0));
}

fn values(w: &RandomWeights, name: &str) -> Vec<f32> {
    let v = w.get(name).unwrap_or_else(|| panic!("no `{name}`"));
    v.bytes
        .chunks_exact(2)
        .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
        .collect()
}

/// The tiny model on random weights computes finite logits, prefill and decode alike.
#[test]
fn random_weights_give_finite_logits() {
    let spec = tiny_spec();
    let w = RandomWeights::for_spec(&spec, WeightDType::Bf16, 0, 2).expect("weights");
    let mut model = CpuModel::from_spec(&spec, &w, Engine::Llvm, 2).expect("model");
    let mut cache = model.new_cache();
    let tokens: Vec<u32> = (0..16).map(|i| (i * 37 + 5) % 512).collect();
    let prefill = model
        .run(Phase::Prefill, &mut cache, &tokens)
        .expect("prefill");
    assert!(!prefill.is_empty() && prefill.iter().all(|v| v.is_finite()));
    let step = model.run(Phase::Decode, &mut cache, &[3]).expect("decode");
    assert!(step.iter().all(|v| v.is_finite()));
    // Not all alike: the weights are not degenerate.
    assert!(step.iter().any(|&v| (v - step[0]).abs() > 1e-3));
}

#[test]
fn random_weights_report_on_the_cpu() {
    let mut args = vec![TINY_SPEC, "--random-weights", "--seed", "3"];
    args.extend_from_slice(QUICK);
    args.push("--json");
    let out = archc_bench(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "archc bench failed: {stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"));
    let num = |k: &str| {
        report[k]
            .as_f64()
            .unwrap_or_else(|| panic!("`{k}` is missing in {report}"))
    };
    for k in [
        "prefill_tok_s",
        "decode_tok_s",
        "decode_roofline_fraction",
        "prefill_roofline_fraction",
    ] {
        assert!(num(k) > 0.0 && num(k).is_finite(), "`{k}` = {}", num(k));
    }
    assert_eq!(report["model"], "tiny-qwen3");
    // The weights are the bf16 tensors of the Spec, nothing read from disk.
    let spec = tiny_spec();
    let want: u64 = archc_spec::tensors::tensors(&spec)
        .iter()
        .map(|t| t.numel() * 2)
        .sum();
    assert_eq!(num("weight_bytes"), want as f64);
    assert!(num("decode_bytes_per_token") < num("weight_bytes") + 1.0);
}

/// `archc bench --backend cuda`: without a device the probe's error, exactly as `archc
/// logits` prints it (exit 2, nothing on stdout); with one, a report with finite numbers.
#[test]
fn cuda_backend_reports_or_fails_cleanly() {
    let out = archc_bench(&[
        TINY_SPEC,
        "--random-weights",
        "--backend",
        "cuda",
        "--prompt-len",
        "16",
        "--gen",
        "4",
        "--repeat",
        "1",
        "--probe-mib",
        "64",
        "--cuda-graph",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match probe(0).and_then(|d| d.sm().map(|_| d)) {
        Ok(info) => {
            assert!(out.status.success(), "on {}: {stderr}", info.name);
            let report: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"));
            for k in [
                "prefill_tok_s",
                "decode_tok_s",
                "bandwidth_tbs",
                "decode_roofline_fraction",
                "prefill_peak_fraction",
                "peak_device_bytes",
            ] {
                let v = report[k].as_f64().unwrap_or(f64::NAN);
                assert!(v > 0.0 && v.is_finite(), "`{k}` = {v} in {report}");
            }
            let graph = &report["decode_graph"];
            assert!(
                graph["fallback"].is_null(),
                "the decode graph fell back: {graph}"
            );
            assert!(graph["replays"].as_u64().unwrap_or(0) > 0, "{graph}");
        }
        Err(e) => {
            assert_eq!(out.status.code(), Some(2), "{stderr}");
            assert!(out.stdout.is_empty());
            assert_eq!(stderr, format!("archc bench: --backend cuda: {e}\n"));
            if e == CudaError::NoDriver {
                snapshot("cuda_without_driver", &stderr);
            }
        }
    }
}
