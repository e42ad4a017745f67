//! `archc diff A B`: compare two architectures side by side, printing only the facts that
//! differ (every fact with `--all`). Each side is a `.arch` file or an HF `config.json`
//! (or a model directory that holds one), so a hand-written file can be checked against
//! the config it describes. Exit status: 0 when both load (whether or not they differ),
//! 1 when either is invalid, 2 when either cannot be read.

use archc_spec::diagnostics::{render, render_colored};
use archc_spec::Spec;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The first model: a .arch file, a config.json or a model directory.
    pub left: PathBuf,
    /// The second model, in the same forms.
    pub right: PathBuf,
    /// Show every row, not only the ones that differ.
    #[arg(long)]
    pub all: bool,
}

pub fn run(args: Args) -> ExitCode {
    let left = load(&args.left);
    let right = load(&args.right);
    match (left, right) {
        (Ok(a), Ok(b)) => {
            print!("{}", archc_spec::diff::report(&a, &b, args.all));
            ExitCode::SUCCESS
        }
        (l, r) => {
            // Report both sides' problems before giving up; an unreadable file wins.
            let codes: Vec<u8> = [l.err(), r.err()].into_iter().flatten().collect();
            ExitCode::from(codes.into_iter().max().unwrap_or(1))
        }
    }
}

/// Load one side, printing its errors; the error value is the exit status it deserves.
fn load(path: &Path) -> Result<Spec, u8> {
    let name = path.display().to_string();
    let is_arch = path.extension().is_some_and(|e| e == "arch");
    if !is_arch {
        return archc_spec::import::from_path(path).map_err(|e| {
            eprintln!("archc diff: cannot import {name}: {e}");
            match e {
                archc_spec::import::ImportError::Io { .. } => 2,
                _ => 1,
            }
        });
    }
    let src = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("archc diff: cannot read {name}: {e}");
        2
    })?;
    archc_spec::validate::check_source(&name, &src).map_err(|diags| {
        let text = if std::io::stderr().is_terminal() {
            render_colored(&name, &src, &diags)
        } else {
            render(&name, &src, &diags)
        };
        eprint!("{text}");
        1
    })
}
