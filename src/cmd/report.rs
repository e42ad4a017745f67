//! `archc report MODEL... -o report.html`: one self-contained page with the figure of the
//! models, their statistics and the side-by-side table of their facts.

use crate::failure::Failure;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The models: .arch files, config.json files, model directories or .gguf files.
    #[arg(required = true, value_name = "MODEL")]
    pub models: Vec<PathBuf>,
    /// Write the page here (default: standard output).
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    let specs = match super::load::specs(&args.models, "report") {
        Ok(s) => s,
        Err(code) => return ExitCode::from(code),
    };
    let result = super::draw::check_drawable(&specs).and_then(|()| {
        let page = archc_spec::figure::report::html(&specs);
        match &args.out {
            None => crate::io::print(&page),
            Some(path) => archc_runtime::outfile::write_atomic(path, page.as_bytes())
                .map_err(|e| Failure::new(format!("cannot write {}: {e}", path.display()))),
        }
    });
    crate::failure::exit(result, "report")
}
