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
        let src = match crate::io::read_arch(path) {
            Ok(src) => src,
            Err(f) => {
                if f.code == 1 {
                    invalid = true;
                    eprintln!("{}\n", f.message);
                } else {
                    eprintln!("archc check: {}", f.message);
                    unreadable = true;
                }
                continue;
            }
        };
        match archc_spec::validate::check_source(&name, &src) {
            Ok(spec) => {
                let blocks = spec.blocks.len();
                let line = format!(
                    "{name}: ok ({} layers, {blocks} block{})\n",
                    spec.layers,
                    if blocks == 1 { "" } else { "s" }
                );
                if let Err(f) = crate::io::print(&line) {
                    return f.exit("check");
                }
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
