//! Loading a model's Spec the way `diff`, `draw` and `report` take it: a `.arch` file, an
//! HF `config.json` or model directory, or a `.gguf` file (its metadata only).

use super::model;
use archc_spec::diagnostics::{render, render_colored};
use archc_spec::Spec;
use std::io::IsTerminal;
use std::path::Path;

/// The Spec at `path`, printing what is wrong with it as `archc VERB: ...` (or the
/// diagnostics of a `.arch` file); the error is the exit status it deserves: 1 for an
/// invalid model, 2 for one that cannot be read.
pub fn spec(path: &Path, verb: &str) -> Result<Spec, u8> {
    let name = path.display().to_string();
    if model::is_gguf(path) {
        return model::gguf_spec(path).map_err(|f| {
            eprintln!("archc {verb}: {name}: {}", f.message);
            f.code
        });
    }
    let is_arch = path.extension().is_some_and(|e| e == "arch");
    if !is_arch {
        return archc_spec::import::from_path(path).map_err(|e| {
            eprintln!("archc {verb}: cannot import {name}: {e}");
            match e {
                archc_spec::import::ImportError::Io { .. } => 2,
                _ => 1,
            }
        });
    }
    let src = crate::io::read_arch(path).map_err(|f| {
        if f.code != 1 {
            eprintln!("archc {verb}: {}", f.message);
        }
        f.code
    })?;
    archc_spec::validate::check_source(&name, &src).map_err(|diags| {
        print_diagnostics(&name, &src, &diags);
        1
    })
}

/// Every model of `paths`, in order; every problem is printed before giving up, and the
/// worst exit status wins.
pub fn specs(paths: &[impl AsRef<Path>], verb: &str) -> Result<Vec<Spec>, u8> {
    let loaded: Vec<Result<Spec, u8>> = paths.iter().map(|p| spec(p.as_ref(), verb)).collect();
    let worst = loaded
        .iter()
        .filter_map(|r| r.as_ref().err())
        .max()
        .copied();
    match worst {
        Some(code) => Err(code),
        None => Ok(loaded.into_iter().flatten().collect()),
    }
}

/// Prints the diagnostics of a `.arch` source on stderr, in colour on a terminal.
pub fn print_diagnostics(name: &str, src: &str, diags: &[archc_spec::diagnostics::Diagnostic]) {
    let text = if std::io::stderr().is_terminal() {
        render_colored(name, src, diags)
    } else {
        render(name, src, diags)
    };
    eprint!("{text}");
}
