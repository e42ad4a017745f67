//! `archc import SRC [-o OUT.arch]`: turns an HF `config.json` (or a model directory that
//! holds one), or a llama.cpp `.gguf` file (from its metadata and tensor names), into
//! canonical `.arch` text, printed or written atomically to OUT.
//! Exit status: 0 on success, 2 when the config cannot be read or imported or OUT cannot
//! be written.

use super::model::{gguf_spec, is_gguf};
use crate::failure::{self, Failure};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// An HF config.json, a model directory that contains one, or a .gguf file.
    pub src: PathBuf,
    /// Write the .arch text to this file instead of standard output.
    #[arg(short, long, value_name = "OUT.arch")]
    pub output: Option<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    failure::exit(run_inner(&args), "import")
}

fn run_inner(args: &Args) -> Result<(), Failure> {
    let text = render(&import(&args.src)?);
    match &args.output {
        None => print!("{text}"),
        Some(out) => write_atomically(out, &text)
            .map_err(|e| Failure::new(format!("cannot write {}: {e}", out.display())))?,
    }
    Ok(())
}

/// Imports SRC: a `.gguf` file through the GGUF reader, anything else as an HF config.
fn import(src: &Path) -> Result<archc_spec::Spec, Failure> {
    if is_gguf(src) {
        gguf_spec(src)
    } else {
        Ok(archc_spec::import::from_path(src)?)
    }
}

/// The text `archc import` emits: the canonical `.arch` form of the spec.
fn render(spec: &archc_spec::Spec) -> String {
    archc_spec::print::to_arch(spec)
}

/// Write `text` to a temporary file beside `out`, then rename it over `out`, so a reader
/// never sees a half-written file and a failed write leaves the old file intact.
fn write_atomically(out: &Path, text: &str) -> std::io::Result<()> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = out
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("out.arch");
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, out)
    })();
    if result.is_err() {
        // Best effort: the temporary file is ours and useless after a failure.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
