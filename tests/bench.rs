//! `archc bench` end to end on the tiny Qwen3 fixture: the JSON report has every key with
//! sane values (no timing is asserted: a benchmark is not a timed test), the table has its
//! rows, and bad arguments fail with the messages snapshotted in `tests/data/bench/`.
//!
//! Bless with `INSTA_UPDATE=always cargo test --test bench`, then read the snapshots.

use archc_spec::stats::{stats, Options};
use archc_spec::DType;
use std::path::Path;
use std::process::{Command, Output};

const FIXTURE: &str = "tests/data/fixtures/qwen3";

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
    assert!(stdout.contains("of the FMA roof"), "{stdout}");
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
