//! `archc build`: executables and C libraries compiled ahead of time, run without LLVM.
//!
//! The link needs the ahead-of-time runtime archive next to the archc under test
//! (`target/<profile>/libarchc_runtime.a`); `tools/test.sh` builds it before the tests
//! with `cargo rustc -p archc-runtime --lib --crate-type staticlib --no-default-features
//! --features aot`.

#[macro_use]
mod common;

use archc_runtime::npy;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn archc() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_archc"));
    // `archc logits --backend llvm` compiles through the disk cache; keep it per test run.
    c.env("ARCHC_CACHE_DIR", scratch_root().join("cache"));
    c
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("build")
}

/// A fresh folder for one test.
fn scratch(name: &str) -> PathBuf {
    let d = scratch_root().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch folder");
    d
}

fn shown(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(mut c: Command) -> Output {
    let out = c.output().expect("runs");
    assert!(out.status.success(), "{c:?}: {}", shown(&out));
    out
}

fn fails(mut c: Command) -> String {
    let out = c.output().expect("runs");
    assert_eq!(out.status.code(), Some(2), "{c:?}: {}", shown(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn archive_present() {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_archc"));
    let lib = exe.with_file_name("libarchc_runtime.a");
    assert!(
        lib.is_file(),
        "{} is missing: build it with `cargo rustc -p archc-runtime --lib --crate-type staticlib --no-default-features --features aot` (tools/test.sh does)",
        lib.display()
    );
}

/// Builds `model` (plus `extra` arguments) into `dir/name`; the output path.
fn build(model: &Path, dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    archive_present();
    let out = dir.join(name);
    let mut c = archc();
    c.arg("build").arg(model).arg("-o").arg(&out).args(extra);
    ok(c);
    out
}

fn tokens_of(case: &str) -> String {
    let text = std::fs::read_to_string(
        root()
            .join("tests/data/fixtures")
            .join(case)
            .join("tokens.json"),
    )
    .expect("tokens.json");
    let ids: Vec<u32> = serde_json::from_str(&text).expect("ids");
    ids.iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn bits(path: &Path) -> Vec<u32> {
    npy::read(path)
        .expect("reads the npy")
        .data
        .iter()
        .map(|&x| x.to_bits())
        .collect()
}

/// The executable's logits equal `archc logits --backend llvm`, bit for bit, in both
/// modes: the same kernels for the same target, run by the same executor.
fn same_logits_as_archc(case: &str) {
    let dir = scratch(case);
    let model = root().join("tests/data/fixtures").join(case);
    let exe = build(&model, &dir, case, &[]);
    let tokens = tokens_of(case);
    for mode in ["prefill", "decode"] {
        let ours = dir.join(format!("{mode}.npy"));
        let theirs = dir.join(format!("{mode}-archc.npy"));
        let mut c = Command::new(&exe);
        c.args(["logits", "--tokens", &tokens, "--mode", mode, "--out"])
            .arg(&ours);
        ok(c);
        let mut c = archc();
        c.arg("logits")
            .arg(&model)
            .args([
                "--tokens",
                &tokens,
                "--mode",
                mode,
                "--backend",
                "llvm",
                "--out",
            ])
            .arg(&theirs);
        ok(c);
        let (a, b) = (bits(&ours), bits(&theirs));
        assert_eq!(a.len(), b.len(), "{case} {mode}");
        let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert_eq!(
            differ, 0,
            "{case} {mode}: {differ} logits differ in their bits"
        );
    }
}

macro_rules! fixtures {
    ($($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                same_logits_as_archc(stringify!($case));
            }
        )*

        /// Every fixture directory has a case above, and every case has its directory.
        #[test]
        fn every_fixture_has_a_case() {
            common::assert_every_fixture_listed(
                &[$(stringify!($case)),*],
                "tests/build.rs",
            );
        }
    };
}

with_compiled_fixtures!(fixtures);

#[test]
fn a_model_whose_weights_do_not_bind_is_refused_and_leaves_nothing() {
    archive_present();
    let dir = scratch("refused");
    // The llama fixture's config with one more layer than its checkpoint holds.
    let model = scratch("refused-model");
    let from = common::fixture_root().join("llama");
    std::fs::copy(
        from.join("model.safetensors"),
        model.join("model.safetensors"),
    )
    .expect("copy");
    let text = std::fs::read_to_string(from.join("config.json")).expect("config");
    let mut config: serde_json::Value = serde_json::from_str(&text).expect("json");
    let layers = config["num_hidden_layers"].as_u64().expect("layers");
    config["num_hidden_layers"] = serde_json::json!(layers + 1);
    std::fs::write(model.join("config.json"), config.to_string()).expect("write");
    let out = dir.join("llama");
    let mut c = archc();
    c.arg("build").arg(&model).arg("-o").arg(&out);
    let err = fails(c);
    assert!(err.contains("missing tensor"), "{err}");
    assert_eq!(
        std::fs::read_dir(&dir).expect("dir").count(),
        0,
        "left a file"
    );
}

#[test]
fn the_executable_carries_no_llvm_and_checks_its_cpu() {
    let dir = scratch("ldd");
    let exe = build(
        &root().join("tests/data/fixtures/llama"),
        &dir,
        "llama",
        &[],
    );
    let out = ok({
        let mut c = Command::new("ldd");
        c.arg(&exe);
        c
    });
    let libs = String::from_utf8_lossy(&out.stdout);
    assert!(!libs.to_lowercase().contains("llvm"), "{libs}");
    assert!(!libs.contains("libcuda"), "{libs}");
    let size = std::fs::metadata(&exe).expect("size").len();
    assert!(size < 15_000_000, "{} bytes", size);
    // --version and --help work without weights.
    let mut c = Command::new(&exe);
    c.arg("--version");
    ok(c);
}

/// What the AOT runtime links of the compiler crate (built without `codegen`): the
/// program contract's types, their deserialisers, `kernel::analysis` and the block
/// formats' names, which the executor reads, and nothing of a compiler stage. Checked on the symbols of an
/// executable linked without stripping.
#[test]
fn the_executable_holds_the_program_contract_and_no_compiler_stage() {
    let dir = scratch("symbols");
    let wrapper = dir.join("cc-keep-symbols");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nfor a; do shift; [ \"$a\" = -s ] || set -- \"$@\" \"$a\"; done\nexec cc \"$@\"\n",
    )
    .expect("wrapper");
    let mut perms = std::fs::metadata(&wrapper).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&wrapper, perms).expect("chmod");
    archive_present();
    let exe = dir.join("qwen3");
    let mut c = archc();
    c.arg("build")
        .arg(root().join("tests/data/fixtures/qwen3"))
        .arg("-o")
        .arg(&exe)
        .env("CC", &wrapper);
    ok(c);
    let nm = ok({
        let mut c = Command::new("nm");
        c.arg("-C").arg(&exe);
        c
    });
    let text = String::from_utf8_lossy(&nm.stdout);
    assert!(
        text.contains("archc_compiler::kernel::analysis::analyze"),
        "the executor's analysis should be there: is the executable stripped?"
    );
    // Functions of a stage (its own functions and its types' methods), not the glue of
    // the error types that pass through `ExecError` (destructors, `Display`).
    let stages = [
        "archc_compiler::lower::",
        "archc_compiler::passes::",
        "archc_compiler::kernel::lower::",
        "archc_compiler::kernel::interp::",
        "archc_compiler::kernel::parse",
        "archc_compiler::interp::",
        "archc_compiler::ir::parse",
        "archc_compiler::ir::infer",
        "archc_compiler::driver::Driver",
        "archc_compiler::codegen::llvm",
        "archc_compiler::codegen::clif",
        "archc_compiler::codegen::ptx",
        "inkwell",
        "cranelift",
        "cudarc",
    ];
    // Allowed within those: the block formats' names (the image records each quantised
    // parameter's format), the weights trait the executor binds through, error types.
    let allowed = [
        "kernel::lower::format::BlockFormat",
        "interp::weights::",
        "Error",
    ];
    for line in text.lines() {
        let Some(sym) = line.splitn(3, ' ').nth(2) else {
            continue;
        };
        let sym = sym.trim_start_matches('<');
        if allowed.iter().any(|a| sym.contains(a)) {
            continue;
        }
        for s in stages {
            assert!(!sym.starts_with(s), "the executable links `{s}`: {line}");
        }
    }
}

/// Weights given at run time must be the ones the kernels were compiled for.
#[test]
fn weights_that_do_not_match_the_build_are_refused_by_name() {
    let dir = scratch("mismatch");
    let fixtures = root().join("tests/data/fixtures");
    let exe = build(&fixtures.join("qwen3"), &dir, "qwen3", &[]);
    // Another model's directory: its config imports to another spec.
    let mut c = Command::new(&exe);
    c.args(["logits", "--tokens", "1,2", "--out"])
        .arg(dir.join("x.npy"))
        .arg("--weights")
        .arg(fixtures.join("llama"));
    let err = fails(c);
    assert!(
        err.contains("another model than the one this build compiled"),
        "{err}"
    );
    assert!(!dir.join("x.npy").exists());

    // A .arch build checks tensors one by one: another checkpoint's shapes are named.
    let arch = dir.join("qwen3.arch");
    let mut c = archc();
    c.arg("import")
        .arg(fixtures.join("qwen3"))
        .arg("-o")
        .arg(&arch);
    ok(c);
    let exe = build(
        &arch,
        &dir,
        "from-arch",
        &["--weights", fixtures.join("qwen3").to_str().expect("utf-8")],
    );
    let mut c = Command::new(&exe);
    c.args(["logits", "--tokens", "1,2", "--out"])
        .arg(dir.join("y.npy"))
        .arg("--weights")
        .arg(fixtures.join("olmo2"));
    let err = fails(c);
    assert!(
        err.contains("layers.0.") || err.contains("embed"),
        "names a tensor: {err}"
    );

    // The same GGUF model in another block format: the kernels decode the format they
    // were compiled for, so the file is refused, naming the tensor and both formats.
    let quant = root().join("tests/data/gguf/tiny_quant");
    let exe = build(&quant.join("q4_k.gguf"), &dir, "q4k", &[]);
    let mut c = Command::new(&exe);
    c.args(["logits", "--tokens", "1,2", "--out"])
        .arg(dir.join("z.npy"))
        .arg("--weights")
        .arg(quant.join("q6_k.gguf"));
    let err = fails(c);
    assert!(
        err.contains("is stored as") && err.contains("compiled for"),
        "{err}"
    );
}

#[test]
fn embedded_weights_make_one_self_contained_file() {
    let dir = scratch("embed");
    let quant = root().join("tests/data/gguf/tiny_quant");
    let copy = dir.join("model.gguf");
    std::fs::copy(quant.join("q4_k.gguf"), &copy).expect("copy");
    let exe = build(&copy, &dir, "embedded", &["--embed-weights"]);
    let plain = build(&quant.join("q4_k.gguf"), &dir, "plain", &[]);
    // The build-time file is gone: only the embedded copy can answer.
    std::fs::remove_file(&copy).expect("remove");
    for (name, path) in [("embedded", &exe), ("plain", &plain)] {
        let mut c = Command::new(path);
        c.args(["logits", "--tokens", "1,2,3,4", "--out"])
            .arg(dir.join(format!("{name}.npy")));
        ok(c);
    }
    assert_eq!(
        bits(&dir.join("embedded.npy")),
        bits(&dir.join("plain.npy"))
    );
    // The appended bytes carry the weights.
    let size = |p: &Path| std::fs::metadata(p).expect("size").len();
    let weights = size(&quant.join("q4_k.gguf"));
    assert!(
        size(&exe) >= size(&plain) + weights,
        "{} {}",
        size(&exe),
        size(&plain)
    );

    // An HF directory: its safetensors and config travel inside the executable.
    let fixture = root().join("tests/data/fixtures/qwen3");
    let copy = dir.join("qwen3-copy");
    std::fs::create_dir_all(&copy).expect("mkdir");
    for f in std::fs::read_dir(&fixture).expect("fixture") {
        let f = f.expect("entry").path();
        std::fs::copy(&f, copy.join(f.file_name().expect("name"))).expect("copy");
    }
    let hf = build(&copy, &dir, "hf-embedded", &["--embed-weights"]);
    let hf_plain = build(&fixture, &dir, "hf-plain", &[]);
    // A side file that cannot be read (a directory where the chat template goes) is an
    // error, not a file left out of the executable.
    std::fs::create_dir(copy.join("chat_template.jinja")).expect("mkdir");
    let mut c = archc();
    c.arg("build")
        .arg(&copy)
        .args(["--embed-weights", "-o"])
        .arg(dir.join("nope-template"));
    let err = fails(c);
    assert!(
        err.contains("chat_template.jinja: not a regular file"),
        "{err}"
    );
    assert!(!dir.join("nope-template").exists());
    std::fs::remove_dir_all(&copy).expect("remove");
    let tokens = tokens_of("qwen3");
    for (name, path) in [("hf-embedded", &hf), ("hf-plain", &hf_plain)] {
        let mut c = Command::new(path);
        c.args(["logits", "--tokens", &tokens, "--out"])
            .arg(dir.join(format!("{name}.npy")));
        ok(c);
    }
    assert_eq!(
        bits(&dir.join("hf-embedded.npy")),
        bits(&dir.join("hf-plain.npy"))
    );

    // Options that cannot embed are refused before any work.
    let mut c = archc();
    c.arg("build")
        .arg(quant.join("q4_k.gguf"))
        .args(["--lib", "--embed-weights", "-o"])
        .arg(dir.join("nope"));
    let err = fails(c);
    assert!(err.contains("--embed-weights"), "{err}");
}

#[test]
fn the_c_library_equals_the_executable_from_two_threads() {
    let dir = scratch("capi");
    let model = root().join("tests/data/fixtures/qwen3");
    let exe = build(&model, &dir, "qwen3", &[]);
    build(&model, &dir, "model", &["--lib"]);
    assert!(dir.join("libmodel.so").is_file() && dir.join("model.h").is_file());
    let nm = ok({
        let mut c = Command::new("nm");
        c.args(["-D", "--defined-only"])
            .arg(dir.join("libmodel.so"));
        c
    });
    for line in String::from_utf8_lossy(&nm.stdout).lines() {
        let sym = line.rsplit(' ').next().unwrap_or("");
        assert!(sym.starts_with("archc_"), "exported `{sym}`");
    }
    let prog = dir.join("capi");
    ok({
        let mut c = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
        c.arg("-O1")
            .arg("-o")
            .arg(&prog)
            .arg(root().join("tests/data/build/capi.c"))
            .arg("-I")
            .arg(&dir)
            .arg("-L")
            .arg(&dir)
            .args(["-lmodel", "-lpthread", "-Wl,-rpath,$ORIGIN"]);
        c
    });
    let tokens = tokens_of("qwen3");
    let mut c = Command::new(&prog);
    c.arg(dir.join("prefill.bin"))
        .arg(dir.join("decode.bin"))
        .args(tokens.split(','));
    ok(c);
    for mode in ["prefill", "decode"] {
        let npy_out = dir.join(format!("{mode}.npy"));
        let mut c = Command::new(&exe);
        c.args(["logits", "--tokens", &tokens, "--mode", mode, "--out"])
            .arg(&npy_out);
        ok(c);
        let raw = std::fs::read(dir.join(format!("{mode}.bin"))).expect("raw");
        let lib: Vec<u32> = raw
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(lib, bits(&npy_out), "{mode}: the library's logits differ");
    }
}

/// The fixed x86 targets run here (this machine has AVX-512 with bf16): their code is
/// scheduled for another CPU, so the logits match the host build closely, not bit for
/// bit.
#[test]
fn fixed_x86_targets_run_and_agree_with_the_host_build() {
    let dir = scratch("targets");
    let model = root().join("tests/data/fixtures/qwen3");
    let tokens = tokens_of("qwen3");
    let run = |exe: &Path, name: &str| {
        let out = dir.join(format!("{name}.npy"));
        let mut c = Command::new(exe);
        c.args(["logits", "--tokens", &tokens, "--out"]).arg(&out);
        ok(c);
        npy::read(&out).expect("npy").data
    };
    let host = run(&build(&model, &dir, "host", &[]), "host");
    for target in ["x86-64-v3", "x86-64-v4", "znver4"] {
        let exe = build(&model, &dir, target, &["--target", target]);
        let got = run(&exe, target);
        assert_eq!(got.len(), host.len());
        let worst = got
            .iter()
            .zip(&host)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "{target}: max |diff| {worst}");
    }
}

#[test]
fn aarch64_gives_an_object_and_a_link_ready_archive() {
    let dir = scratch("aarch64");
    let model = root().join("tests/data/fixtures/llama");
    build(&model, &dir, "llama", &["--target", "aarch64"]);
    let obj = std::fs::read(dir.join("llama.o")).expect("object");
    // ELF, 64-bit, e_machine = 183 (AArch64).
    assert_eq!(&obj[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([obj[18], obj[19]]), 183);
    let lib = std::fs::read(dir.join("libllama.a")).expect("archive");
    assert!(
        lib.starts_with(b"!<arch>\n/               "),
        "an index comes first"
    );
    assert!(
        lib.windows(12).any(|w| w == b"archc_image\0"),
        "the index names the table"
    );
    assert!(lib
        .windows(obj.len().min(64))
        .any(|w| w == &obj[..obj.len().min(64)]));
    assert!(dir.join("llama.h").is_file());
    assert!(!dir.join("llama").exists(), "nothing to run here");
}

#[test]
fn bad_builds_say_why() {
    let dir = scratch("bad");
    let fixtures = root().join("tests/data/fixtures");
    let arch = root().join("examples/llama-3.2-1b.arch");
    let llama = fixtures.join("llama");
    let cases: [(&[&str], &str); 3] = [
        (&[arch.to_str().expect("utf-8")], "needs its weights"),
        (
            &[llama.to_str().expect("utf-8"), "--weights", "x.gguf"],
            "--weights goes with a .arch model",
        ),
        (&["/nonexistent/model"], "not a .gguf file"),
    ];
    for (args, want) in cases {
        let mut c = archc();
        c.arg("build").args(args).arg("-o").arg(dir.join("out"));
        let err = fails(c);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Without the runtime archive the link cannot happen, and the error says how to
    // make one.
    let mut c = archc();
    c.arg("build")
        .arg(fixtures.join("llama"))
        .arg("-o")
        .arg(dir.join("out"))
        .env("ARCHC_RUNTIME_LIB", dir.join("missing.a"));
    let err = fails(c);
    assert!(err.contains("ARCHC_RUNTIME_LIB"), "{err}");
    assert_eq!(
        std::fs::read_dir(&dir).expect("dir").count(),
        0,
        "left a file"
    );
}

/// Greedy generation from the built executable equals `archc run` on the real
/// SmolLM2-135M-Instruct (fetched by tools/test.sh).
#[test]
fn smollm2_generates_what_archc_run_generates() {
    use archc_runtime::fetch;
    let dir_models = fetch::model_dir().expect("model dir");
    let Some(gguf) = fetch::cached(&fetch::SMOLLM2, &dir_models).ok().flatten() else {
        panic!(
            "{} is not in {}: fetch it with `archc run --fetch-only` (tools/test.sh does)",
            fetch::SMOLLM2.file_name,
            dir_models.display()
        );
    };
    let dir = scratch("smollm2");
    let exe = build(&gguf, &dir, "smollm2", &[]);
    // Also with the weights inside: the tokenizer and template come from the embedded file.
    let embedded = build(&gguf, &dir, "smollm2-embedded", &["--embed-weights"]);
    let args = [
        "--prompt",
        "Name three colours.",
        "--temperature",
        "0",
        "--max-tokens",
        "24",
        "--json",
    ];
    let ours = ok({
        let mut c = Command::new(&exe);
        c.args(args);
        c
    });
    let theirs = ok({
        let mut c = archc();
        c.arg("run").arg(&gguf).args(args);
        c
    });
    let json = |o: &Output| -> serde_json::Value {
        serde_json::from_slice(&o.stdout).expect("one JSON object")
    };
    let inside = ok({
        let mut c = Command::new(&embedded);
        c.args(args);
        c
    });
    let (a, b, e) = (json(&ours), json(&theirs), json(&inside));
    for key in ["tokens", "text", "stop", "prefill_tokens", "decode_tokens"] {
        assert_eq!(a[key], b[key], "{key}");
        assert_eq!(e[key], b[key], "{key} (embedded weights)");
    }
    // A conversation over stdin: the same replies, turn by turn, reusing the cache.
    let chat = |mut c: Command| -> String {
        use std::io::Write;
        let mut child = c
            .args(["--chat", "--temperature", "0", "--max-tokens", "12"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawns");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"Hello!\nWhat is the capital of France?\n")
            .expect("writes");
        drop(stdin);
        let out = child.wait_with_output().expect("waits");
        assert!(out.status.success(), "{}", shown(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut theirs_chat = archc();
    theirs_chat.arg("run").arg(&gguf);
    let ours_chat = chat(Command::new(&exe));
    assert_eq!(ours_chat, chat(theirs_chat));
    assert!(!ours_chat.trim().is_empty(), "no reply");

    // A closed pipe is an error the executable reports (exit 2), not a SIGPIPE death.
    let mut child = Command::new(&exe)
        .args(["--prompt", "Count to twenty.", "--temperature", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawns");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("waits");
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("writing to stdout"),
        "{}",
        shown(&out)
    );
    // The same keys as archc run's object.
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&a), keys(&b));
}
