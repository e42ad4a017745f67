//! `archc fmt FILE... [--check]`: rewrites .arch files in the canonical layout
//! (atomically: a temporary file renamed over the original), or with `--check` only
//! reports the files that would change. `-` formats stdin to stdout.

use archc_spec::diagnostics::render;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The .arch files to format (`-` reads stdin and writes stdout).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Change nothing; exit 1 and name each file that is not formatted.
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: Args) -> ExitCode {
    let mut status = 0u8;
    for path in &args.files {
        let code = if path.as_os_str() == "-" {
            stdin_to_stdout()
        } else {
            one_file(path, args.check)
        };
        status = status.max(code);
    }
    ExitCode::from(status)
}

fn stdin_to_stdout() -> u8 {
    let mut src = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut src) {
        eprintln!("archc fmt: cannot read stdin: {e}");
        return 2;
    }
    match archc_spec::fmt::format_source(&src) {
        Ok(text) => {
            if std::io::stdout().write_all(text.as_bytes()).is_err() {
                return 2;
            }
            0
        }
        Err(diags) => {
            eprint!("{}", render("<stdin>", &src, &diags));
            1
        }
    }
}

fn one_file(path: &Path, check: bool) -> u8 {
    let name = path.display().to_string();
    let src = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("archc fmt: cannot read {name}: {e}");
            return 2;
        }
    };
    let text = match archc_spec::fmt::format_source(&src) {
        Ok(t) => t,
        Err(diags) => {
            eprint!("{}", render(&name, &src, &diags));
            eprintln!("archc fmt: {name} has syntax errors; not formatted");
            return 1;
        }
    };
    if text == src {
        return 0;
    }
    if check {
        println!("{name} would be reformatted");
        return 1;
    }
    match archc_runtime::npy::write_atomic(path, text.as_bytes()) {
        Ok(()) => {
            println!("formatted {name}");
            0
        }
        Err(e) => {
            eprintln!("archc fmt: cannot write {name}: {e}");
            2
        }
    }
}
