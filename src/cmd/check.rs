//! `archc check FILE...`: parses and validates each file and prints every diagnostic.
//! Exit status: 0 when all files are valid, 1 when any is invalid, 2 when a file
//! cannot be read.

use archc_spec::diagnostics::{render, render_colored};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The .arch files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    let color = std::io::stderr().is_terminal();
    let mut invalid = false;
    let mut unreadable = false;
    for path in &args.files {
        let name = path.display().to_string();
        let src = match std::fs::read_to_string(path) {
            Ok(src) => src,
            Err(e) => {
                eprintln!("archc check: cannot read {name}: {e}");
                unreadable = true;
                continue;
            }
        };
        match archc_spec::validate::check_source(&name, &src) {
            Ok(spec) => {
                let blocks = spec.blocks.len();
                println!(
                    "{name}: ok ({} layers, {blocks} block{})",
                    spec.layers,
                    if blocks == 1 { "" } else { "s" }
                );
            }
            Err(diags) => {
                invalid |= diags.iter().any(|d| d.is_error());
                let text = if color {
                    render_colored(&name, &src, &diags)
                } else {
                    render(&name, &src, &diags)
                };
                eprint!("{text}");
                let errors = diags.iter().filter(|d| d.is_error()).count();
                eprintln!(
                    "{name}: {errors} error{}\n",
                    if errors == 1 { "" } else { "s" }
                );
            }
        }
    }
    if unreadable {
        ExitCode::from(2)
    } else if invalid {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
