//! `archc fmt FILE... [--check]`: rewrites .arch files in the canonical layout
//! (atomically: a temporary file renamed over the original), or with `--check` only
//! reports the files that would change. `-` formats stdin to stdout.

use archc_spec::diagnostics::render;
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
    let src = match crate::io::read_arch_stdin() {
        Ok(src) => src,
        Err(f) => return failed(f),
    };
    match archc_spec::fmt::format_source(&src) {
        Ok(text) => match crate::io::print(&text) {
            Ok(()) => 0,
            Err(f) => failed(f),
        },
        Err(diags) => {
            eprint!("{}", render("<stdin>", &src, &diags));
            1
        }
    }
}

fn one_file(path: &Path, check: bool) -> u8 {
    let name = path.display().to_string();
    let src = match crate::io::read_arch(path) {
        Ok(s) => s,
        Err(f) => return failed(f),
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
        return match crate::io::print(&format!("{name} would be reformatted\n")) {
            Ok(()) => 1,
            Err(f) => failed(f),
        };
    }
    match archc_runtime::outfile::write_atomic(path, text.as_bytes()) {
        Ok(()) => match crate::io::print(&format!("formatted {name}\n")) {
            Ok(()) => 0,
            Err(f) => failed(f),
        },
        Err(e) => {
            eprintln!("archc fmt: cannot write {name}: {e}");
            2
        }
    }
}

/// Prints a failure of `fmt` (a non-UTF-8 file's diagnostic is already printed) and gives
/// its exit status.
fn failed(f: crate::failure::Failure) -> u8 {
    eprintln!("archc fmt: {}", f.message);
    f.code
}
