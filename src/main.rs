//! The `archc` command line: one subcommand per verb, each in `cmd/`.

mod cmd;
mod failure;
mod io;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// archc: a compiler from transformer architecture descriptions to kernels.
#[derive(Debug, Parser)]
#[command(name = "archc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check .arch files and report every error.
    Check(cmd::check::Args),
    /// Format a .arch file canonically.
    Fmt(cmd::fmt::Args),
    /// Parameter counts, KV-cache size and FLOPs of a model.
    Stats(cmd::stats::Args),
    /// Turn an HF config.json (or a model directory) into a .arch file.
    Import(cmd::import::Args),
    /// Compare two architectures side by side.
    Diff(cmd::diff::Args),
    /// Draw the block diagram of one model, or of several side by side (SVG or PNG).
    Draw(cmd::draw::Args),
    /// Write one HTML page with the figure, statistics and facts of the models.
    Report(cmd::report::Args),
    /// Lower a .arch file to the Graph IR and print it.
    Lower(cmd::lower::Args),
    /// Print a stage of the compilation (graph, fused, kernel, llvm).
    Emit(cmd::emit::Args),
    /// Run a model directory on tokens and write the logits as .npy.
    Logits(cmd::logits::Args),
    /// Time a model on the CPU against the machine's bandwidth and FMA roofs.
    Bench(cmd::bench::Args),
    /// Generate text with a model (default: SmolLM2-135M-Instruct, fetched on first use).
    Run(cmd::run::Args),
    /// Compile a model ahead of time to a native executable or C library.
    Build(cmd::build::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => cmd::check::run(args),
        Command::Fmt(args) => cmd::fmt::run(args),
        Command::Stats(args) => cmd::stats::run(args),
        Command::Import(args) => cmd::import::run(args),
        Command::Diff(args) => cmd::diff::run(args),
        Command::Draw(args) => cmd::draw::run(args),
        Command::Report(args) => cmd::report::run(args),
        Command::Lower(args) => cmd::lower::run(args),
        Command::Emit(args) => cmd::emit::run(args),
        Command::Logits(args) => cmd::logits::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Build(args) => cmd::build::run(args),
    }
}
