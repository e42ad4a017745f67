//! Hostile input never panics, never overflows and never allocates absurdly: table-driven
//! `.arch` and `config.json` cases (each an error, snapshotted, or a valid spec that every
//! later stage handles), and deterministic truncation and mutation sweeps over the
//! safetensors fixtures and their configs.
//!
//! Cases live in `tests/data/hostile/{arch,config}_cases.txt`, one per `=== name` section;
//! the outcome of every case is snapshotted in `<file>.snap` beside it. Bless with
//! `INSTA_UPDATE=always cargo test --test hostile`, then read the snapshots.

use archc_compiler::{lower, Mode};
use archc_runtime::bind::bind;
use archc_runtime::weights::{Checkpoint, SafetensorsFile};
use archc_spec::Spec;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostile")
}

fn snapshot(name: &str, text: &str) {
    let dir = data_dir();
    insta::with_settings!({snapshot_path => dir, prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!(name, text);
    });
}

/// Splits a case file into `(name, body)` pairs at `=== name` lines.
fn cases(file: &str) -> Vec<(String, String)> {
    let path = data_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("=== ") {
            out.push((name.trim().to_string(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// Runs `f`, turning a panic into an error naming the stage.
fn guarded<T>(stage: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("PANIC in {stage}: {msg}")
    })
}

/// Lowering a model of many layers only repeats per-layer work already exercised by
/// smaller ones; above this it is skipped to keep the suite fast.
const LOWER_MAX_LAYERS: u64 = 256;

/// Every later stage on a spec that was accepted: a one-line summary, or the panics.
fn downstream(spec: &Spec) -> Result<String, String> {
    let stats = guarded("stats", || {
        archc_spec::stats::stats(spec, archc_spec::stats::Options::for_spec(spec))
    })?;
    let count = guarded("tensors", || archc_spec::tensors::tensors(spec).len())?;
    guarded("stats render", || stats.render())?;
    let text = guarded("print", || archc_spec::print::to_arch(spec))?;
    guarded("diff", || archc_spec::diff::report(spec, spec, true))?;
    let lowered = if spec.layers <= LOWER_MAX_LAYERS {
        match guarded("lower", || lower(spec, Mode::Prefill))? {
            Ok(_) => "lowers".to_string(),
            Err(e) => format!("lower error: {e}"),
        }
    } else {
        "lower skipped".to_string()
    };
    // The printed form must read back as the same model.
    let back = guarded("print read-back", || {
        archc_spec::validate::check_source("printed.arch", &text)
    })?;
    if back.as_ref().ok() != Some(spec) {
        return Err("the printed spec does not read back as itself".to_string());
    }
    Ok(format!(
        "ok: {} layers, {count} tensors, {} params, {} weight bytes, {} kv bytes, {} flops/token; {lowered}",
        spec.layers,
        stats.params_total,
        stats.weight_bytes,
        stats.kv_bytes_total,
        stats.flops_per_token
    ))
}

/// The deepest spec the language accepts goes through every stage up to the kernel
/// program (the machine-code stages compile its kernels, which do not grow with depth).
#[test]
fn the_layer_limit_lowers_to_the_kernel_program() {
    let src = format!(
        "model \"deep\" {{\n  vocab = 8\n  hidden = 8\n  layers = {}\n}}\nblock {{\n  attention {{ heads = 2 }}\n  mlp {{ hidden = 8 }}\n}}\n",
        archc_spec::validate::MAX_LAYERS
    );
    let spec = archc_spec::validate::check_source("deep.arch", &src).expect("valid");
    let driver = archc_compiler::driver::Driver::for_spec(&spec, Default::default());
    let program = driver.program(Mode::Decode).expect("lowers");
    assert!(program.launches.len() as u64 >= archc_spec::validate::MAX_LAYERS);
}

#[test]
fn hostile_arch() {
    let all = cases("arch_cases.txt");
    assert!(
        all.len() >= 40,
        "expected at least 40 cases, found {}",
        all.len()
    );
    let mut out = String::new();
    let mut panics = Vec::new();
    for (name, src) in &all {
        let file = format!("{name}.arch");
        let outcome = match guarded("check", || archc_spec::validate::check_source(&file, src)) {
            Err(p) => Err(p),
            Ok(Err(diags)) => {
                assert!(diags.iter().any(|d| d.is_error()), "{name}: no error");
                Ok(archc_spec::diagnostics::render(&file, src, &diags))
            }
            Ok(Ok(spec)) => {
                assert_eq!(archc_spec::validate::check_spec(&spec), Ok(()), "{name}");
                downstream(&spec).map(|s| s + "\n")
            }
        };
        match outcome {
            Ok(text) => writeln!(out, "=== {name}\n{text}").unwrap_or(()),
            Err(p) => panics.push(format!("{name}: {p}")),
        }
    }
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
    snapshot("arch_cases", &out);
}

#[test]
fn hostile_config() {
    let all = cases("config_cases.txt");
    assert!(
        all.len() >= 30,
        "expected at least 30 cases, found {}",
        all.len()
    );
    let mut out = String::new();
    let mut panics = Vec::new();
    for (name, text) in &all {
        let file = format!("{name}/config.json");
        let outcome = match guarded("import", || {
            archc_spec::import::from_config_json(text, &file)
        }) {
            Err(p) => Err(p),
            Ok(Err(e)) => Ok(format!("{e}\n")),
            Ok(Ok(spec)) => {
                assert_eq!(archc_spec::validate::check_spec(&spec), Ok(()), "{name}");
                downstream(&spec).map(|s| s + "\n")
            }
        };
        match outcome {
            Ok(text) => writeln!(out, "=== {name}\n{text}").unwrap_or(()),
            Err(p) => panics.push(format!("{name}: {p}")),
        }
    }
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
    snapshot("config_cases", &out);
}

/// A deterministic xorshift64 generator (no dependency, same sequence everywhere).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes a mutation writes: JSON structure, digits and signs, plus arbitrary bytes.
const INTERESTING: &[u8] = b"0123456789-+.eE\"[]{},: nul\x00\xff\x7f";

fn mutate(rng: &mut Rng, bytes: &mut [u8], region: usize) {
    let region = region.min(bytes.len());
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(region);
        bytes[at] = match rng.below(3) {
            0 => INTERESTING[rng.below(INTERESTING.len())],
            1 => bytes[at] ^ (1 << rng.below(8)),
            _ => rng.next() as u8,
        };
    }
}

fn fixtures() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.safetensors").is_file() && p.join("config.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// Outcome counts of one sweep, snapshotted so that a change in what is accepted shows.
#[derive(Default)]
struct Tally {
    rejected: usize,
    opened_bound: usize,
    opened_bind_error: usize,
}

/// Opens an image in memory and binds it; a panic anywhere is an error naming the stage.
fn open_and_bind(
    spec: &Spec,
    path: &Path,
    bytes: Vec<u8>,
    tally: &mut Tally,
) -> Result<(), String> {
    let file = guarded("open", || SafetensorsFile::from_bytes(path, bytes))?;
    let Ok(file) = file else {
        tally.rejected += 1;
        return Ok(());
    };
    // Every view the file hands out lies inside it and matches its shape.
    let names: Vec<String> = file.names().map(str::to_string).collect();
    for n in &names {
        let (view, info) = (file.get(n), file.info(n));
        if let (Ok(v), Some(i)) = (view, info) {
            let numel: usize = v.shape.iter().product();
            if numel * i.dtype.size() != v.bytes.len() {
                return Err(format!("tensor {n}: view of the wrong size"));
            }
        }
    }
    let ck = Checkpoint::from_file(file);
    match guarded("bind", || bind(spec, ck))? {
        Ok(_) => tally.opened_bound += 1,
        Err(e) => {
            if e.problems.is_empty() {
                return Err("bind failed without naming a problem".to_string());
            }
            tally.opened_bind_error += 1
        }
    }
    Ok(())
}

#[test]
fn safetensors_truncation_and_mutation() {
    let mut report = String::new();
    let mut failures = Vec::new();
    for dir in fixtures() {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let spec = archc_spec::import::from_path(&dir.join("config.json"))
            .unwrap_or_else(|e| panic!("{name}: fixture config does not import: {e}"));
        let path = dir.join("model.safetensors");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The unmodified file binds, so the sweeps below reach binding.
        let mut base = Tally::default();
        if let Err(e) = open_and_bind(&spec, &path, bytes.clone(), &mut base) {
            failures.push(format!("{name}: {e}"));
        }
        assert_eq!(
            base.opened_bound, 1,
            "{name}: the fixture itself does not bind"
        );
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8])) as usize;
        let data_start = 8 + header_len;

        // Truncation: every 97th length through the header, then 40 lengths spread over
        // the data section, and one byte short of the whole file.
        let mut truncated = Tally::default();
        let step = (bytes.len() - data_start) / 40 + 1;
        let cuts = (0..data_start + 97)
            .step_by(97)
            .chain((data_start..bytes.len()).step_by(step))
            .chain([bytes.len() - 1]);
        for cut in cuts {
            if let Err(e) = open_and_bind(&spec, &path, bytes[..cut].to_vec(), &mut truncated) {
                failures.push(format!("{name}: truncated to {cut}: {e}"));
            }
        }
        if truncated.opened_bound > 0 {
            failures.push(format!("{name}: a truncated file bound"));
        }

        // Mutation: 300 copies with one to three bytes of the length prefix or header changed.
        let mut mutated = Tally::default();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ bytes.len() as u64);
        for i in 0..300 {
            let mut m = bytes.clone();
            mutate(&mut rng, &mut m, data_start);
            if let Err(e) = open_and_bind(&spec, &path, m, &mut mutated) {
                failures.push(format!("{name}: mutation {i}: {e}"));
            }
        }
        writeln!(
            report,
            "{name}: truncated {}/{} rejected; mutated: {} rejected, {} opened but failed to bind, {} bound",
            truncated.rejected,
            truncated.rejected + truncated.opened_bind_error,
            mutated.rejected,
            mutated.opened_bind_error,
            mutated.opened_bound
        )
        .unwrap_or(());
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
    snapshot("safetensors_sweep", &report);
}

#[test]
fn config_mutation() {
    let mut report = String::new();
    let mut failures = Vec::new();
    for dir in fixtures() {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read(dir.join("config.json")).unwrap_or_else(|e| panic!("{e}"));
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ text.len() as u64);
        let (mut rejected, mut accepted) = (0, 0);
        for i in 0..150 {
            let mut m = text.clone();
            mutate(&mut rng, &mut m, text.len());
            let src = String::from_utf8_lossy(&m).into_owned();
            let file = format!("{name}/config.json");
            match guarded("import", || {
                archc_spec::import::from_config_json(&src, &file)
            }) {
                Err(p) => failures.push(format!("{name}: mutation {i}: {p}")),
                Ok(Err(_)) => rejected += 1,
                Ok(Ok(spec)) => {
                    accepted += 1;
                    if let Err(p) = archc_spec::validate::check_spec(&spec) {
                        failures.push(format!("{name}: mutation {i}: import accepted {p:?}"));
                    } else if let Err(p) = downstream(&spec) {
                        failures.push(format!("{name}: mutation {i}: {p}"));
                    }
                }
            }
        }
        writeln!(report, "{name}: {rejected} rejected, {accepted} accepted").unwrap_or(());
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
    snapshot("config_sweep", &report);
}

/// Header lengths that lie: past the end, past the cap, and the largest value.
#[test]
fn safetensors_lying_lengths() {
    let path = Path::new("lying.safetensors");
    let mut out = String::new();
    let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let image = |len: u64, header: &[u8], data: usize| {
        let mut b = len.to_le_bytes().to_vec();
        b.extend_from_slice(header);
        b.extend(std::iter::repeat_n(0u8, data));
        b
    };
    let n = header.len() as u64;
    let dup = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let overlap = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let zero = br#"{"a":{"dtype":"F32","shape":[0,5],"data_offsets":[0,0]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let huge_shape =
        br#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#;
    let meta_twice = br#"{"__metadata__":{},"__metadata__":{},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let bad_utf8: Vec<u8> = [
        &br#"{"a"#[..],
        b"\xff",
        br#"":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
    ]
    .concat();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("seven bytes", vec![0; 7]),
        ("length 2^63", image(1 << 63, header, 8)),
        ("length u64::MAX", image(u64::MAX, header, 8)),
        ("length one past the end", image(n + 9, header, 8)),
        ("length over the cap", image(200_000_000, header, 8)),
        ("length zero", image(0, header, 8)),
        ("duplicate tensor name", image(dup.len() as u64, dup, 8)),
        (
            "overlapping offsets",
            image(overlap.len() as u64, overlap, 8),
        ),
        ("zero-sized tensor", image(zero.len() as u64, zero, 8)),
        (
            "shape product overflows",
            image(huge_shape.len() as u64, huge_shape, 8),
        ),
        (
            "__metadata__ twice",
            image(meta_twice.len() as u64, meta_twice, 8),
        ),
        ("non-UTF-8 name", image(bad_utf8.len() as u64, &bad_utf8, 8)),
        ("valid", image(n, header, 8)),
    ];
    for (what, bytes) in cases {
        let r = guarded("open", || SafetensorsFile::from_bytes(path, bytes));
        let line = match r {
            Err(p) => panic!("{what}: {p}"),
            Ok(Ok(f)) => format!("ok: {} tensor(s)", f.names().count()),
            Ok(Err(e)) => e.to_string(),
        };
        writeln!(out, "{what}: {line}").unwrap_or(());
    }
    snapshot("safetensors_lying", &out);
}

/// A shard index may only name files inside the model directory.
#[test]
fn shard_index_escapes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut out = String::new();
    for shard in [
        "../x.safetensors",
        "/etc/passwd",
        "a/../../b",
        "..",
        "",
        "sub\\x",
    ] {
        let index = serde_json::json!({"weight_map": {"w": shard}});
        let path = dir.path().join("model.safetensors.index.json");
        std::fs::write(&path, index.to_string()).unwrap_or_else(|e| panic!("{e}"));
        let msg = match Checkpoint::open(dir.path()) {
            Ok(_) => "opened".to_string(),
            Err(e) => e.detail(),
        };
        writeln!(out, "{shard:?}: {msg}").unwrap_or(());
    }
    snapshot("shard_index", &out);
}
