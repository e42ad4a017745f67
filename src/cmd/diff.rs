//! `archc diff A B`: compare two architectures side by side, printing only the facts that
//! differ (every fact with `--all`). Each side is a `.arch` file or an HF `config.json`
//! (or a model directory that holds one) or a `.gguf` file, so a hand-written file can be checked against
//! the config it describes. Exit status: 0 when both load (whether or not they differ),
//! 1 when either is invalid, 2 when either cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The first model: a .arch file, a config.json, a model directory or a .gguf file.
    pub left: PathBuf,
    /// The second model, in the same forms.
    pub right: PathBuf,
    /// Show every row, not only the ones that differ.
    #[arg(long)]
    pub all: bool,
}

pub fn run(args: Args) -> ExitCode {
    match super::load::specs(&[&args.left, &args.right], "diff") {
        Ok(specs) => {
            match crate::io::print(&archc_spec::diff::report(&specs[0], &specs[1], args.all)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(f) => f.exit("diff"),
            }
        }
        Err(code) => ExitCode::from(code),
    }
}
