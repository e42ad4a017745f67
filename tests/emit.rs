//! `archc emit` snapshots: for every examples/*.arch, the fused graph (`--stage fused`,
//! tests/data/emit/), the kernel IR program (`--stage kernel`, tests/data/emit/kernel/)
//! and a digest of the LLVM IR of its kernels for the fixed x86-64-v4 CPU (`--stage
//! llvm`, tests/data/emit/llvm/: one line per kernel; smollm2-135m's module is kept in
//! full), or the error a user sees (f8 weights and linear-attention
//! mixers have no kernels yet), all with the options `archc run` uses (the last
//! position's logits, bf16 activations); the kernels of real weight files (GGUF blocks,
//! tests/data/emit/weights/); the program document (`--stage program`). Each run is
//! repeated to check that the output is byte-for-byte deterministic.
//!
//! Every successful `--stage llvm` snapshot is also a verifier check: `emit_llvm_ir`
//! runs the LLVM module verifier on each generated module and archc fails (exit 1) when
//! it complains.
//!
//! Bless with `INSTA_UPDATE=always cargo test --test emit`, then read the snapshots.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn archc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("archc runs")
}

/// What a user sees: stdout on success, else the exit status and stderr.
fn shown(out: &Output) -> String {
    if out.status.success() {
        assert!(out.stderr.is_empty(), "unexpected stderr");
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        format!(
            "exit status: {:?}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .collect();
    files.sort();
    files
}

/// Runs `archc emit examples/<name>.arch <args>` twice for every example and snapshots
/// what a user sees into `tests/data/<dir>/<name>.snap`.
fn snapshot_every_example(args: &[&str], dir: &str) {
    snapshot_every_example_as(args, dir, shown);
}

/// As [`snapshot_every_example`], snapshotting `view` of each run.
fn snapshot_every_example_as(args: &[&str], dir: &str, view: impl Fn(&Output) -> String) {
    let snaps = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(dir);
    let files = examples();
    assert!(!files.is_empty(), "no examples");
    for file in files {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name");
        let rel = format!("examples/{name}.arch");
        let mut full = vec!["emit", rel.as_str()];
        full.extend_from_slice(args);
        let first = archc(&full);
        let second = archc(&full);
        assert_eq!(
            first.stdout, second.stdout,
            "{name}: output differs between runs"
        );
        assert_eq!(
            first.stderr, second.stderr,
            "{name}: errors differ between runs"
        );
        insta::with_settings!({snapshot_path => &snaps, prepend_module_to_snapshot => false, omit_expression => true}, {
            insta::assert_snapshot!(name, view(&first));
        });
    }
}

#[test]
fn fused_graph_of_every_example() {
    snapshot_every_example(&["--stage", "fused"], "emit");
}

/// `--stage graph --logits all` is exactly what `archc lower` prints, in both modes.
#[test]
fn graph_stage_is_the_lowered_graph() {
    for mode in ["prefill", "decode"] {
        let emit = archc(&[
            "emit",
            "tests/data/lower/tiny-llama.arch",
            "--stage",
            "graph",
            "--logits",
            "all",
            "--mode",
            mode,
        ]);
        let lower = archc(&["lower", "tests/data/lower/tiny-llama.arch", "--mode", mode]);
        assert!(emit.status.success() && lower.status.success());
        assert_eq!(emit.stdout, lower.stdout);
    }
}

#[test]
fn out_dir_receives_the_stage_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("build");
    let out = archc(&[
        "emit",
        "tests/data/lower/tiny-llama.arch",
        "--stage",
        "fused",
        "--mode",
        "decode",
        "-o",
        out_dir.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "{}", shown(&out));
    assert!(out.stdout.is_empty());
    let written = std::fs::read_to_string(out_dir.join("fused.txt")).expect("fused.txt written");
    let printed = archc(&[
        "emit",
        "tests/data/lower/tiny-llama.arch",
        "--stage",
        "fused",
        "--mode",
        "decode",
    ]);
    assert_eq!(written.as_bytes(), printed.stdout.as_slice());
    assert!(written.starts_with("graph \"tiny-llama\" decode\n"));
    // Only the stage file is left: no temporary files.
    let names: Vec<String> = std::fs::read_dir(&out_dir)
        .expect("listable")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(names, ["fused.txt"]);
}

/// `--target` and `--optimized` belong to the code generation stages: elsewhere they are
/// a usage error, as is an unknown target.
#[test]
fn codegen_flags_need_a_codegen_stage() {
    for flags in [&["--target", "x86_64"][..], &["--optimized"][..]] {
        let mut args = vec![
            "emit",
            "tests/data/lower/tiny-llama.arch",
            "--stage",
            "kernel",
        ];
        args.extend_from_slice(flags);
        let out = archc(&args);
        assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err,
            "archc emit: --target and --optimized only apply to --stage llvm, not --stage kernel\n"
        );
    }
    let out = archc(&[
        "emit",
        "tests/data/lower/tiny-llama.arch",
        "--stage",
        "llvm",
        "--target",
        "riscv64",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value 'riscv64'") && err.contains("x86_64, znver4, aarch64, host"),
        "unexpected error: {err}"
    );
}

/// `--stage kernel`: the kernel IR program of every example (or the error a user sees),
/// byte-for-byte the same on a second run.
#[test]
fn kernel_program_of_every_example() {
    snapshot_every_example(&["--stage", "kernel"], "emit/kernel");
}

/// The decode program of a small model: one token, the cache grown by one.
#[test]
fn kernel_stage_in_decode_mode() {
    let out = archc(&[
        "emit",
        "tests/data/lower/tiny-llama.arch",
        "--stage",
        "kernel",
        "--mode",
        "decode",
    ]);
    assert!(out.status.success(), "{}", shown(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("program tiny-llama.decode\n"), "{text}");
    assert!(text.contains("buffer logits: f32[1, "), "{text}");
    assert!(text.contains("output\n"), "{text}");
}

/// `--stage llvm`: the unoptimized LLVM IR (what archc generates, before `O3`) of every
/// example for the default target, the fixed x86-64-v4 CPU, so the snapshots do not
/// depend on the machine. A whole module is about a megabyte, so each example's snapshot
/// is a digest line per kernel (instructions, vector instructions, a hash of its text:
/// any change shows and names the kernel); the kernels themselves are read in the file
/// tests (compiler/tests/filetests/llvm/), and one whole module, smollm2-135m's, is kept
/// in full.
#[test]
fn llvm_ir_of_every_example() {
    snapshot_every_example_as(&["--stage", "llvm"], "emit/llvm", |out| {
        if out.status.success() {
            digest_lines(&String::from_utf8_lossy(&out.stdout))
        } else {
            shown(out)
        }
    });
    let whole = emit_twice(&["examples/smollm2-135m.arch", "--stage", "llvm"]);
    snapshot("smollm2-135m.whole", &whole);
}

/// Runs `archc emit` twice and returns stdout, checking that it succeeded and that both
/// runs printed the same bytes.
fn emit_twice(args: &[&str]) -> String {
    let mut full = vec!["emit"];
    full.extend_from_slice(args);
    let first = archc(&full);
    assert!(first.status.success(), "{}", shown(&first));
    let second = archc(&full);
    assert_eq!(
        first.stdout, second.stdout,
        "output differs between runs of archc {full:?}"
    );
    shown(&first)
}

fn snapshot(name: &str, text: &str) {
    let snaps = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/emit/llvm");
    insta::with_settings!({snapshot_path => &snaps, prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!(name, text);
    });
}

/// The default target is x86_64; aarch64 code is generated for its fixed CPU
/// (`neoverse-v1`) on any machine.
#[test]
fn llvm_ir_for_aarch64() {
    let file = "examples/smollm2-135m.arch";
    let default = emit_twice(&[file, "--stage", "llvm"]);
    let x86 = emit_twice(&[file, "--stage", "llvm", "--target", "x86_64"]);
    assert_eq!(default, x86, "x86_64 is the default target");
    let arm = emit_twice(&[file, "--stage", "llvm", "--target", "aarch64"]);
    assert!(
        arm.contains("target triple = \"aarch64-unknown-linux-gnu\"\n")
            && arm.contains("\"target-cpu\"=\"neoverse-v1\""),
        "not aarch64 code"
    );
    snapshot("smollm2-135m.aarch64", &digest_lines(&arm));
}

/// `--optimized`: the module after `O3`, what actually runs. Its full text is about
/// 400 KB even for the smallest example (unrolled and vectorized loops), too much to
/// review, so the snapshot holds a digest line per function (instruction count, how
/// many of them work on vectors, a hash of its text: any change shows) and the full
/// text of one function, the smallest `linear` kernel, where the vectorization of a
/// bf16-weight dot product can be read: AVX-512 on x86_64, NEON/SVE on aarch64.
#[test]
fn optimized_llvm_ir_digest() {
    for (target, vector) in [("x86_64", "<16 x float>"), ("aarch64", "x float>")] {
        let ir = emit_twice(&[
            "examples/smollm2-135m.arch",
            "--stage",
            "llvm",
            "--target",
            target,
            "--optimized",
        ]);
        let text = digest(&ir);
        let (_, linear) = text.split_once("\n\n").expect("a kernel after the digest");
        assert!(
            linear.contains(vector),
            "{target}: the linear kernel was not vectorized:\n{text}"
        );
        snapshot(&format!("smollm2-135m.{target}.optimized"), &text);
    }
}

/// The target lines, one digest line per defined function, then the smallest function
/// whose symbol contains `_linear_`, in full.
fn digest(ir: &str) -> String {
    let functions = functions(ir);
    let smallest_linear = functions
        .iter()
        .filter(|f| f.name.contains("_linear_"))
        .min_by_key(|f| (f.instructions, f.name.clone()))
        .expect("a linear kernel");
    format!(
        "{}\n; the smallest linear kernel in full:\n{}",
        digest_lines(ir),
        smallest_linear.text
    )
}

/// The target lines, then one line per defined function: its name, instructions, vector
/// instructions and the FNV-1a hash of its text.
fn digest_lines(ir: &str) -> String {
    let mut out =
        String::from("; one line per function: instructions, vector instructions, FNV-1a hash\n");
    for line in ir.lines().filter(|l| l.starts_with("target ")) {
        out.push_str(line);
        out.push('\n');
    }
    let functions = functions(ir);
    assert!(!functions.is_empty(), "no function in the module");
    for f in &functions {
        out.push_str(&format!(
            "{}: {} instructions, {} on vectors, {:016x}\n",
            f.name,
            f.instructions,
            f.vector_instructions,
            fnv1a(f.text.as_bytes())
        ));
    }
    out
}

/// A function defined in an LLVM IR module.
struct Function {
    name: String,
    /// The text from its `define` line to its closing brace, both included.
    text: String,
    instructions: usize,
    vector_instructions: usize,
}

/// The defined functions of a module, in order. Instructions are the indented lines of
/// a body (labels and comments start at column 0).
fn functions(ir: &str) -> Vec<Function> {
    let mut out = Vec::new();
    let mut current: Option<Function> = None;
    for line in ir.lines() {
        if let Some(f) = current.as_mut() {
            f.text.push_str(line);
            f.text.push('\n');
            if line == "}" {
                out.extend(current.take());
            } else if line.starts_with("  ") {
                f.instructions += 1;
                f.vector_instructions += usize::from(is_vector(line));
            }
        } else if line.starts_with("define ") {
            let name = line
                .split_once('@')
                .and_then(|(_, rest)| rest.split_once('('))
                .map(|(name, _)| name.to_string())
                .unwrap_or_else(|| panic!("no function name in `{line}`"));
            current = Some(Function {
                name,
                text: format!("{line}\n"),
                instructions: 0,
                vector_instructions: 0,
            });
        }
    }
    assert!(current.is_none(), "unterminated function in the module");
    out
}

/// Whether an instruction mentions a vector type: `<N x T>` or `<vscale x N x T>`.
fn is_vector(line: &str) -> bool {
    line.match_indices('<').any(|(i, _)| {
        let rest = &line[i + 1..];
        let rest = rest.strip_prefix("vscale x ").unwrap_or(rest);
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && rest[digits..].starts_with(" x ")
    })
}

/// 64-bit FNV-1a: a hash whose value is fixed by its definition, unlike std's hashers.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `-o DIR` writes `llvm.ll`, the bytes `--stage llvm` prints; here for a decode program.
#[test]
fn llvm_stage_writes_llvm_ll() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("build");
    let args = [
        "emit",
        "tests/data/lower/tiny-llama.arch",
        "--stage",
        "llvm",
        "--mode",
        "decode",
    ];
    let mut with_out = args.to_vec();
    with_out.extend(["-o", out_dir.to_str().expect("utf-8 path")]);
    let out = archc(&with_out);
    assert!(out.status.success(), "{}", shown(&out));
    assert!(out.stdout.is_empty());
    let written = std::fs::read_to_string(out_dir.join("llvm.ll")).expect("llvm.ll written");
    let printed = archc(&args);
    assert_eq!(written.as_bytes(), printed.stdout.as_slice());
    assert!(written.starts_with("; ModuleID = 'archc'\n"), "{written}");
    assert!(written.contains("define void @archc_k0_"), "{written}");
    let names: Vec<String> = std::fs::read_dir(&out_dir)
        .expect("listable")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(names, ["llvm.ll"]);
}

/// Snapshots `archc emit <args>` (run twice: the same bytes) into
/// `tests/data/emit/<dir>/<name>.snap`.
fn snapshot_emit(dir: &str, name: &str, args: &[&str]) -> String {
    let text = emit_twice(args);
    let snaps = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/emit")
        .join(dir);
    insta::with_settings!({snapshot_path => &snaps, prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!(name, text);
    });
    text
}

/// The kernels that run on real weights: a GGUF file's block-quantised parameters stay
/// blocks, read by fused dequantise-and-multiply kernels (prefill tiles and decode
/// matvecs) and block gathers, for Q4_1, Q4_K, Q6_K and Q8_0.
#[test]
fn gguf_blocks_emit_their_dequantising_kernels() {
    for (file, tag) in [
        ("tests/data/gguf/tiny_quant/q4_1.gguf", "q4_1"),
        ("tests/data/gguf/tiny_quant/q4_k.gguf", "q4_k"),
        ("tests/data/gguf/tiny_quant/q6_k.gguf", "q6_k"),
        ("tests/data/gguf/tiny_llama/q8_0.gguf", "q8_0"),
    ] {
        for mode in ["prefill", "decode"] {
            let text = snapshot_emit(
                "weights",
                &format!("{tag}.{mode}"),
                &[file, "--stage", "kernel", "--mode", mode],
            );
            let quantised = text
                .lines()
                .filter(|l| l.starts_with("buffer @") && l.contains(": u8["))
                .count();
            assert!(quantised > 0, "{file}: no parameter is read as blocks");
            let kernels = text
                .lines()
                .filter(|l| l.starts_with("kernel ") && l.contains(&format!("_{tag}_")))
                .count();
            assert!(
                kernels >= 2,
                "{file} {mode}: {kernels} dequantising kernels"
            );
        }
    }
}

/// A bf16 model prefills with the tokens-in-lanes tiles by default (as `archc run`);
/// `--precision f32` (as `archc logits`) keeps f32 activations and plain tiles, and
/// `--logits all` keeps every position's logits.
#[test]
fn precision_and_logits_choose_what_runs() {
    let file = "examples/smollm2-135m.arch";
    let run = emit_twice(&[file, "--stage", "kernel"]);
    let logits = emit_twice(&[
        file,
        "--stage",
        "kernel",
        "--precision",
        "f32",
        "--logits",
        "all",
    ]);
    let lanes = |t: &str| t.contains(" lanes 16 {");
    assert!(lanes(&run), "the run program has no tokens-in-lanes tile");
    assert!(!lanes(&logits), "f32 activations use the lanes tiles");
    assert!(
        run.contains("buffer logits: f32[1, 49152] output"),
        "last position only"
    );
    assert!(
        logits.contains("buffer logits: f32[seq, 49152] output"),
        "every position"
    );
    // The GPU program (`--sm`) never gets the CPU's row-blocked schedules.
    let gpu = emit_twice(&[file, "--stage", "kernel", "--sm", "90"]);
    assert!(!lanes(&gpu), "the GPU program has a CPU schedule");
}

/// `--stage program`: the program contract as JSON, versioned and deterministic, with
/// typed buffer roles and kernels by content hash; `-o` writes `program.json`.
#[test]
fn program_stage_is_the_versioned_contract() {
    let text = snapshot_emit(
        "program",
        "tiny-llama.decode",
        &[
            "tests/data/lower/tiny-llama.arch",
            "--stage",
            "program",
            "--mode",
            "decode",
        ],
    );
    let doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(doc["format"], "archc-program");
    assert_eq!(doc["version"], 1);
    let roles: Vec<&str> = doc["buffers"]
        .as_array()
        .expect("buffers")
        .iter()
        .filter_map(|b| b["role"].as_str())
        .collect();
    for role in ["param", "input", "output", "append", "temp"] {
        assert!(roles.contains(&role), "no `{role}` buffer in {roles:?}");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let out = archc(&[
        "emit",
        "tests/data/lower/tiny-llama.arch",
        "--stage",
        "program",
        "--mode",
        "decode",
        "-o",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", shown(&out));
    let written = std::fs::read_to_string(dir.path().join("program.json")).expect("written");
    assert_eq!(written, text);
}

/// An HF model directory and a config.json emit the same graph as the spec imported from
/// them; the directory's program reads its weights as stored.
#[test]
fn hf_directories_and_configs_are_models() {
    let dir = "tests/data/fixtures/llama";
    let from_dir = emit_twice(&[dir, "--stage", "fused"]);
    let from_config = emit_twice(&[&format!("{dir}/config.json"), "--stage", "fused"]);
    assert_eq!(from_dir, from_config);
    let kernel = emit_twice(&[dir, "--stage", "kernel", "--logits", "all"]);
    assert!(kernel.starts_with("program "), "{kernel}");
    let missing = archc(&["emit", "tests/data/no-such-model", "--stage", "kernel"]);
    assert_eq!(missing.status.code(), Some(2), "{}", shown(&missing));
}

/// What `archc emit` prints is what `archc run` runs: the programs the CPU executor
/// loads for a GGUF model with the generation options equal the emitted ones, in both
/// modes (the document names every kernel by the hash of its text).
#[test]
fn emitted_programs_are_the_ones_that_run() {
    use archc_runtime::exec::cpu::{CpuModel, Engine, LlvmOptions, Options, Phase};
    let file = "tests/data/gguf/tiny_quant/q4_k.gguf";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let gguf = archc_runtime::weights::gguf::GgufFile::open(&path).expect("opens");
    let spec = archc_spec::import::gguf::from_gguf_metadata(gguf.metadata(), &gguf.names(), file)
        .expect("imports");
    let weights = archc_runtime::bind::bind_gguf(&spec, gguf).expect("binds");
    let model = CpuModel::from_spec_options(
        &spec,
        &weights,
        Engine::KernelInterp,
        1,
        &LlvmOptions::no_cache(),
        &Options::generation(),
    )
    .expect("loads");
    for (phase, mode) in [(Phase::Prefill, "prefill"), (Phase::Decode, "decode")] {
        let emitted = emit_twice(&[file, "--stage", "program", "--mode", mode]);
        assert_eq!(model.program(phase).to_json(), emitted, "{mode}");
    }
}

/// Runs `archc emit` and returns stdout, failing the test with stderr otherwise.
fn emit_ok(args: &[&str]) -> String {
    let mut full = vec!["emit"];
    full.extend_from_slice(args);
    let out = archc(&full);
    assert!(out.status.success(), "archc {full:?}: {}", shown(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// IR text is a model too: the kernel program a spec compiles to, written out and read
/// back, gives the same LLVM IR and PTX as compiling from the spec (for a bf16 model with
/// tokens-in-lanes tiles, a GGUF model whose weights are blocks, and both modes); the
/// graph written out gives the same fused graph and program.
#[test]
fn ir_text_compiles_to_what_the_spec_compiles_to() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().to_str().expect("utf-8");
    for model in [
        "examples/smollm2-135m.arch",
        "tests/data/gguf/tiny_quant/q4_k.gguf",
        "tests/data/lower/tiny-llama.arch",
    ] {
        for mode in ["prefill", "decode"] {
            let base = [model, "--mode", mode];
            let with = |extra: &[&str]| -> Vec<String> {
                base.iter()
                    .chain(extra)
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
            };
            let run = |args: Vec<String>| {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                emit_ok(&refs)
            };
            // The CPU program compiles to LLVM; the GPU program (`--sm`) to PTX.
            let cpu = format!("{out}/cpu");
            let gpu = format!("{out}/gpu");
            run(with(&["--stage", "kernel", "-o", &cpu]));
            run(with(&["--stage", "kernel", "--sm", "90", "-o", &gpu]));
            for (stage, dir, extra) in [
                ("llvm", &cpu, &[][..]),
                ("llvm", &cpu, &["--target", "znver4"][..]),
                ("ptx", &gpu, &[][..]),
            ] {
                let kernel = format!("{dir}/kernel.txt");
                let mut from_spec = vec!["--stage", stage];
                from_spec.extend_from_slice(extra);
                let mut from_text = vec![kernel.as_str(), "--stage", stage];
                from_text.extend_from_slice(extra);
                assert_eq!(
                    run(with(&from_spec)),
                    emit_ok(&from_text),
                    "{model} {mode}: --stage {stage} {extra:?} from the kernel text"
                );
            }
            if model.ends_with(".arch") {
                run(with(&["--stage", "graph", "-o", out]));
                let graph = format!("{out}/graph.txt");
                for stage in ["fused", "kernel"] {
                    assert_eq!(
                        run(with(&["--stage", stage])),
                        emit_ok(&[&graph, "--stage", stage]),
                        "{model} {mode}: --stage {stage} from the graph text"
                    );
                }
            }
        }
    }
}

/// IR text states its own pass and stage: a contradicting `--mode`, or a stage before
/// the text's, is a usage error; text that does not parse says where.
#[test]
fn ir_text_errors_say_what_and_where() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().to_str().expect("utf-8");
    emit_ok(&[
        "tests/data/lower/tiny-llama.arch",
        "--stage",
        "kernel",
        "-o",
        out,
    ]);
    let kernel = format!("{out}/kernel.txt");
    let mut messages = String::new();
    for args in [
        vec![kernel.as_str(), "--stage", "llvm", "--mode", "decode"],
        vec![kernel.as_str(), "--stage", "fused"],
    ] {
        let mut full = vec!["emit"];
        full.extend_from_slice(&args);
        let o = archc(&full);
        assert_eq!(o.status.code(), Some(2), "{}", shown(&o));
        messages.push_str(&String::from_utf8_lossy(&o.stderr).replace(out, "DIR"));
    }
    let text = std::fs::read_to_string(&kernel).expect("written");
    let broken = text.replacen("launch ", "lunch ", 1);
    let bad = format!("{out}/broken.txt");
    std::fs::write(&bad, broken).expect("writes");
    let o = archc(&["emit", &bad, "--stage", "llvm"]);
    assert_eq!(o.status.code(), Some(1), "{}", shown(&o));
    messages.push_str(&String::from_utf8_lossy(&o.stderr).replace(out, "DIR"));
    let snaps = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/emit");
    insta::with_settings!({snapshot_path => &snaps, prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!("ir_text_errors", messages);
    });
}
