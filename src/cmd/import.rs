//! `archc import SRC [-o OUT.arch]`: turns an HF `config.json` (or a model directory that
//! holds one), or a llama.cpp `.gguf` file (from its metadata and tensor names), into
//! canonical `.arch` text, printed or written atomically to OUT.
//! Exit status: 0 on success, 2 when the config cannot be read or imported or OUT cannot
//! be written.

use super::model::{gguf_spec, is_gguf};
use crate::failure::{self, Failure};
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
        None => crate::io::print(&text)?,
        Some(out) => archc_runtime::outfile::write_atomic(out, text.as_bytes())
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
