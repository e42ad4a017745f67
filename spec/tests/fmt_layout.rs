//! The layout `archc fmt` writes: trailing comments aligned in runs the way gofmt aligns
//! them, one-line schedules; and every `.arch` file under `examples/` already in that
//! layout (`archc fmt --check` passes on each), with formatting idempotent.

use archc_spec::diagnostics::render;
use archc_spec::fmt::format_source;
use std::path::{Path, PathBuf};

fn format(src: &str) -> String {
    format_source(src).unwrap_or_else(|d| panic!("{}", render("t.arch", src, &d)))
}

/// Asserts that `src` formats to `expected`, and that `expected` is a fixed point.
fn check(src: &str, expected: &str) {
    let once = format(src);
    assert_eq!(once, expected, "formatted:\n{once}");
    assert_eq!(format(&once), once, "not idempotent");
}

#[test]
fn trailing_comments_align_within_runs() {
    let src = "\
model \"m\" {
  vocab = 1000   # a run: the comments of consecutive lines share a column
  hidden = 64 # two spaces after the longest code of the run
  layers = 2

  context = 4096            # alone after a blank line: two spaces
  dtype = bf16 # a new run
  # a comment line ends the run
  tied = true      # so this one stands alone
}
block {
  attention {   # the brace comment is not part of a run
    heads = 4          # a run that a multi-line entry ends
    rope {
      theta = 1e6 # a nested body has its own runs
      pairing = interleaved                  # like this
    }   # after a closing brace: two spaces
    kv_heads = 4 # alone again
  }
  mlp { hidden = 128 }  # runs also hold sections written on one line
  norm = rmsnorm { eps = 1e-6 } # like this
}
";
    let expected = "\
model \"m\" {
  vocab  = 1000  # a run: the comments of consecutive lines share a column
  hidden = 64    # two spaces after the longest code of the run
  layers = 2

  context = 4096  # alone after a blank line: two spaces
  dtype   = bf16  # a new run
  # a comment line ends the run
  tied    = true  # so this one stands alone
}

block {
  attention {  # the brace comment is not part of a run
    heads = 4  # a run that a multi-line entry ends
    rope {
      theta   = 1e6          # a nested body has its own runs
      pairing = interleaved  # like this
    }  # after a closing brace: two spaces
    kv_heads = 4  # alone again
  }
  mlp { hidden = 128 }           # runs also hold sections written on one line
  norm = rmsnorm { eps = 1e-6 }  # like this
}
";
    check(src, expected);
}

#[test]
fn trailing_comments_align_in_schedules() {
    let src = "\
model \"m\" { vocab = 1000, hidden = 64, layers = 8 }
block a { attention { heads = 4 }, mlp { hidden = 128 } }
block b : a { attention.rope = none }
schedule {
  b = every 4 from 3 # NoPE
  a = rest     # RoPE
}
";
    let expected = "\
model \"m\" {
  vocab  = 1000
  hidden = 64
  layers = 8
}

block a {
  attention { heads = 4 }
  mlp { hidden = 128 }
}

block b : a {
  attention.rope = none
}

schedule {
  b = every 4 from 3  # NoPE
  a = rest            # RoPE
}
";
    check(src, expected);
}

#[test]
fn short_schedules_stay_on_one_line() {
    let head = "model \"m\" {\n  vocab  = 1000\n  hidden = 64\n  layers = 8\n}\n\n\
                block a {\n  attention { heads = 4 }\n  mlp { hidden = 128 }\n}\n\n\
                block b : a {\n  attention.rope = none\n}\n\n";
    check(
        &format!("{head}schedule {{\n  repeat [ a*3, b ]\n}}   # three to one\n"),
        &format!("{head}schedule {{ repeat [a * 3, b] }}  # three to one\n"),
    );
    // A comment inside keeps it on several lines.
    let commented = format!("{head}schedule {{\n  repeat [a * 3, b]  # three to one\n}}\n");
    check(&commented, &commented);
    // So does a line that would be too wide.
    let items = vec!["a"; 30].join(", ");
    check(
        &format!("{head}schedule {{ repeat [{items}, b] }}\n"),
        &format!("{head}schedule {{\n  repeat [{items}, b]\n}}\n"),
    );
}

/// Every `.arch` file under `dir`, recursively, sorted.
fn arch_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            arch_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "arch") {
            out.push(path);
        }
    }
    out.sort();
}

#[test]
fn examples_are_formatted_canonically() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files = Vec::new();
    arch_files(&root, &mut files);
    assert!(files.len() >= 19, "examples/ lost files: {files:?}");
    for path in files {
        let name = path.display().to_string();
        let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let once = format_source(&src)
            .unwrap_or_else(|d| panic!("{name} does not parse:\n{}", render(&name, &src, &d)));
        if let Some((n, (have, want))) = src
            .lines()
            .zip(once.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
        {
            panic!(
                "{name}:{}: not in canonical layout (run `archc fmt` on it)\n  file: {have}\n  fmt:  {want}",
                n + 1
            );
        }
        assert_eq!(
            src, once,
            "{name}: not in canonical layout (run `archc fmt` on it)"
        );
        assert_eq!(
            format_source(&once).as_ref(),
            Ok(&once),
            "{name}: fmt is not idempotent"
        );
    }
}
