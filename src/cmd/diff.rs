//! `archc diff` (work in progress).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    eprintln!("archc diff: not implemented yet");
    ExitCode::from(2)
}
