//! The compile tiers at run time: tiered kernels start on Cranelift code and switch to
//! LLVM code between calls, giving logits within the parity tolerance of LLVM's all along;
//! and two processes compiling into one cache at once leave it intact.

mod common;

use archc_compiler::codegen::llvm::Options as LlvmOptions;
use archc_runtime::exec::cpu::{CpuModel, Engine, Options, Phase};
use common::*;
use std::path::Path;
use std::process::Command;

fn model<'w>(
    f: &Fixture,
    w: &'w archc_runtime::bind::BoundWeights,
    engine: Engine,
    cache: &Path,
) -> CpuModel<'w> {
    let llvm = LlvmOptions {
        cache: Some(cache.to_path_buf()),
        cc: None,
    };
    CpuModel::from_spec_options(&f.spec, w, engine, 2, &llvm, &Options::default())
        .unwrap_or_else(|e| panic!("{engine:?}: {e}"))
}

/// Prefill of the first half of the tokens, then one decode step per token of the rest;
/// `switch_after` decode steps in, the model finishes its upgrade.
fn logits(m: &mut CpuModel<'_>, tokens: &[u32], switch_after: Option<usize>) -> Vec<f32> {
    let half = tokens.len() / 2;
    let mut cache = m.new_cache();
    let mut out = m
        .run(Phase::Prefill, &mut cache, &tokens[..half])
        .expect("prefill");
    for (i, t) in tokens[half..].iter().enumerate() {
        if switch_after == Some(i) {
            assert!(m.finish_upgrade(), "the tiered model did not switch");
        }
        out.extend(m.run(Phase::Decode, &mut cache, &[*t]).expect("decode"));
    }
    out
}

#[test]
fn tiered_kernels_switch_to_llvm_between_decode_steps() {
    let f = fixture("llama");
    let w = load("llama", &f.spec, &f.dir);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut llvm = model(&f, &w, Engine::Llvm, dir.path());
    let want = logits(&mut llvm, &f.tokens, None);

    let cold = tempfile::tempdir().expect("temp dir");
    let mut tiered = model(&f, &w, Engine::Tiered, cold.path());
    // Nothing switches before the first call: both programs start on Cranelift code.
    assert_eq!(tiered.tiers(), ["cranelift", "cranelift"]);
    let got = logits(&mut tiered, &f.tokens, Some(2));
    assert_eq!(tiered.tiers(), ["llvm", "llvm"]);
    check(
        "llama (tiered)",
        "logits across the switch vs LLVM",
        &got,
        &want,
        f.vocab,
        1e-4,
    );
    // Nothing is left to switch to.
    assert!(!tiered.finish_upgrade());
}

/// Two processes compile the same kernels into one empty cache at the same time: both
/// run, their logits are identical, the cache holds one complete entry per program and no
/// temporary files, and a third run loads it.
#[test]
fn two_processes_compiling_into_one_cache_leave_it_intact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures/gpt2");
    let run = |out: &str| {
        Command::new(env!("CARGO_BIN_EXE_archc"))
            .args([
                "logits",
                fixture.to_str().expect("utf-8"),
                "--tokens",
                "1,2,3,4,5",
            ])
            .args(["--out", dir.path().join(out).to_str().expect("utf-8")])
            .args(["--backend", "llvm"])
            .env("ARCHC_CACHE_DIR", &cache)
            .env_remove("ARCHC_NO_CACHE")
            .spawn()
            .expect("archc runs")
    };
    let (a, b) = (run("a.npy"), run("b.npy"));
    for (name, child) in [("a", a), ("b", b)] {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "process {name} failed");
    }
    let read = |f: &str| std::fs::read(dir.path().join(f)).expect("logits written");
    assert_eq!(read("a.npy"), read("b.npy"));
    let names: Vec<String> = std::fs::read_dir(&cache)
        .expect("cache exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    assert_eq!(
        names.len(),
        4,
        "two programs, a library and a manifest each: {names:?}"
    );
    let third = run("c.npy").wait_with_output().expect("wait");
    assert!(third.status.success());
    assert_eq!(read("c.npy"), read("a.npy"));
}
