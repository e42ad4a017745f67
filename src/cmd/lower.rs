//! `archc lower FILE [--mode prefill|decode]`: lowers a .arch file to the Graph IR, verifies
//! it and prints its text form. Exit status: 0 on success, 1 when the file is invalid or
//! cannot be lowered, 2 when it cannot be read.

use archc_compiler::driver::{Driver, Logits, Options};
use archc_compiler::{verify, Mode};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// The whole prompt at once (`seq` new tokens after `past` cached ones).
    Prefill,
    /// One new token after `past` cached ones.
    Decode,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The .arch file to lower.
    pub file: PathBuf,
    /// Which forward pass to build.
    #[arg(long, value_enum, default_value = "prefill")]
    pub mode: ModeArg,
}

pub fn run(args: Args) -> ExitCode {
    let name = args.file.display().to_string();
    let src = match crate::io::read_arch(&args.file) {
        Ok(src) => src,
        Err(f) => return f.exit("lower"),
    };
    let spec = match archc_spec::validate::check_source(&name, &src) {
        Ok(spec) => spec,
        Err(diags) => {
            super::load::print_diagnostics(&name, &src, &diags);
            return ExitCode::from(1);
        }
    };
    let mode = match args.mode {
        ModeArg::Prefill => Mode::Prefill,
        ModeArg::Decode => Mode::Decode,
    };
    // The driver's graph stage, every position's logits (as `archc logits` runs it).
    let options = Options {
        logits: Logits::All,
        ..Options::default()
    };
    let graph = match Driver::for_spec(&spec, options).graph(mode) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("archc lower: {name}: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = verify(&graph) {
        // A graph that fails verification is a compiler bug, not a user error.
        eprintln!("archc lower: {name}: internal error: the lowered graph is invalid: {e}");
        return ExitCode::from(1);
    }
    // A closed pipe (`archc lower f.arch | head`) is exit 2 with a message, not a panic.
    match crate::io::print(&graph.to_string()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.exit("lower"),
    }
}
