//! The binary's own input and output under hostile conditions: a full disk or a closed pipe
//! on stdout is a message and exit 2 for every verb (never a panic, never exit 0), a `.arch`
//! that is not UTF-8 is a located diagnostic (exit 1), unbounded inputs such as `/dev/zero`
//! stop at the bound, and `-o` follows symbolic links and writes FIFOs in place.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn archc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_archc"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example(name: &str) -> String {
    root().join("examples").join(name).display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("archc-cli-io-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

fn mkfifo(path: &Path) -> bool {
    Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

/// Every verb that prints to stdout, with arguments that succeed.
fn printing_verbs() -> Vec<Vec<String>> {
    let qwen = example("qwen3-0.6b.arch");
    let gpt2 = example("gpt2.arch");
    let config = root()
        .join("tests/data/fixtures/qwen3")
        .display()
        .to_string();
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        v(&["check", &qwen]),
        v(&["stats", &qwen]),
        v(&["stats", &qwen, &gpt2]),
        v(&["stats", "--json", &qwen, &gpt2]),
        v(&["diff", &qwen, &gpt2]),
        v(&["import", &config]),
        v(&["lower", &qwen]),
        v(&["emit", &qwen, "--stage", "graph"]),
        v(&["emit", &qwen, "--stage", "kernel"]),
        v(&["draw", &qwen]),
    ]
}

#[test]
fn a_full_disk_on_stdout_is_exit_2_with_a_message() {
    let full = Path::new("/dev/full");
    if !full.exists() {
        return; // no /dev/full on this system
    }
    for args in printing_verbs() {
        let out = std::fs::OpenOptions::new().write(true).open(full).unwrap();
        let o = archc().args(&args).stdout(out).output().expect("runs");
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "archc {args:?}: {err}");
        assert!(
            err.contains("cannot write to stdout"),
            "archc {args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "archc {args:?}: {err}");
    }
    // `fmt -` reads stdin and says why it failed, too.
    let src = std::fs::read(example("gpt2.arch")).unwrap();
    let out = std::fs::OpenOptions::new().write(true).open(full).unwrap();
    let mut child = archc()
        .args(["fmt", "-"])
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&src).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("archc fmt: cannot write to stdout"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_closed_pipe_on_stdout_is_exit_2_with_a_message() {
    let dir = scratch("pipe");
    let fifo = dir.join("pipe");
    if !mkfifo(&fifo) {
        return; // no mkfifo on this system
    }
    use std::os::unix::fs::OpenOptionsExt;
    for args in printing_verbs() {
        // A pipe whose only reader is gone before the verb writes: EPIPE on the first write.
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(0o4000) // O_NONBLOCK: open without waiting for a writer
            .open(&fifo)
            .unwrap();
        let writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        drop(reader);
        let o = archc().args(&args).stdout(writer).output().expect("runs");
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "archc {args:?}: {err}");
        assert!(
            err.contains("cannot write to stdout"),
            "archc {args:?}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_spec_that_is_not_utf8_is_a_located_diagnostic() {
    let dir = scratch("utf8");
    let file = dir.join("latin1.arch");
    let mut bytes = std::fs::read(example("gpt2.arch")).unwrap();
    // A Latin-1 "é" in a comment on the second line.
    let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    bytes.splice(second..second, b"// caf\xe9\n".iter().copied());
    std::fs::write(&file, &bytes).unwrap();
    let shown = file.display().to_string();
    let want = format!("{shown}:2:7: error: the file is not UTF-8: byte 0xe9");
    for verb in [
        vec!["check"],
        vec!["stats"],
        vec!["lower"],
        vec!["emit", "--stage", "graph"],
        vec!["fmt"],
        vec!["diff", &example("gpt2.arch")],
    ] {
        let o = archc().args(&verb).arg(&file).output().expect("runs");
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "archc {verb:?}: {err}");
        assert!(err.contains(&want), "archc {verb:?}: {err}");
        assert!(err.contains("^ not valid UTF-8"), "archc {verb:?}: {err}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "fmt left it alone");
    let o = archc()
        .args(["fmt", "-"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("<stdin>:2:7: error: the file is not UTF-8"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reads_are_bounded() {
    if Path::new("/dev/zero").exists() {
        let o = archc().args(["check", "/dev/zero"]).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("cannot read /dev/zero: larger than 16 MiB"),
            "{}",
            stderr(&o)
        );
        let o = archc()
            .args(["fmt", "-"])
            .stdin(std::fs::File::open("/dev/zero").unwrap())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("larger than 16 MiB"), "{}", stderr(&o));
        // A config.json is bounded too.
        let o = archc().args(["import", "/dev/zero"]).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("larger than 64 MiB"), "{}", stderr(&o));
    }
    let dir = scratch("dir");
    let o = archc().arg("check").arg(&dir).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is a directory"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn outputs_follow_symlinks_and_write_fifos_in_place() {
    let dir = scratch("out");
    let config = root().join("tests/data/fixtures/qwen3");
    // `import -o LINK` writes the file the link names; the link stays a link.
    std::fs::create_dir(dir.join("real")).unwrap();
    std::os::unix::fs::symlink("real/model.arch", dir.join("link.arch")).unwrap();
    let o = archc()
        .arg("import")
        .arg(&config)
        .arg("-o")
        .arg(dir.join("link.arch"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let meta = std::fs::symlink_metadata(dir.join("link.arch")).unwrap();
    assert!(meta.file_type().is_symlink());
    let written = std::fs::read_to_string(dir.join("real/model.arch")).unwrap();
    assert!(written.contains("model "), "{written}");
    // `fmt` of a linked file rewrites the target, as `fmt -` would, not the link.
    let untidy = written.replace("\n", "  \n\n\n");
    std::fs::write(dir.join("real/model.arch"), &untidy).unwrap();
    let o = archc()
        .arg("fmt")
        .arg(dir.join("link.arch"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::symlink_metadata(dir.join("link.arch"))
        .unwrap()
        .file_type()
        .is_symlink());
    let tidy = archc()
        .args(["fmt", "-"])
        .stdin(std::fs::File::open(dir.join("real/model.arch")).unwrap())
        .output()
        .unwrap();
    let now = std::fs::read_to_string(dir.join("real/model.arch")).unwrap();
    assert_ne!(now, untidy);
    assert_eq!(now.as_bytes(), &tidy.stdout[..]);
    // `draw -o FIFO` writes into the pipe; the FIFO is still a FIFO afterwards.
    let fifo = dir.join("figure.svg");
    if mkfifo(&fifo) {
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        let o = archc()
            .args(["draw", &example("gpt2.arch"), "-o"])
            .arg(&fifo)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let svg = reader.join().unwrap();
        assert!(svg.starts_with(b"<svg"), "{:?}", &svg[..svg.len().min(40)]);
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn logits_refuse_positions_past_the_context() {
    // The GPT-2 fixture's learned position table has 64 rows: a 65th token has no row, and
    // the compiled gather must never be asked for it.
    let dir = scratch("ctx");
    let model = root().join("tests/data/fixtures/gpt2");
    let tokens = |n: usize| vec!["1"; n].join(",");
    for backend in ["interp", "llvm", "cranelift"] {
        let o = archc()
            .arg("logits")
            .arg(&model)
            .args(["--tokens", &tokens(65), "--backend", backend, "--out"])
            .arg(dir.join("x.npy"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{backend}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("65 tokens, more than the model's context of 64"),
            "{backend}: {}",
            stderr(&o)
        );
        assert!(!dir.join("x.npy").exists());
    }
    let o = archc()
        .arg("logits")
        .arg(&model)
        .args(["--tokens", &tokens(64), "--backend", "llvm", "--out"])
        .arg(dir.join("x.npy"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}
