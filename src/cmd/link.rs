//! The link step of `archc build`: the kernel object and the ahead-of-time runtime
//! archive through the system C compiler (`$CC`, else `cc`) into an executable or a
//! shared library, or (cross targets) into an object and a link-ready archive. Every
//! output is written under a temporary name beside its final path and renamed into
//! place once complete; intermediate files live in a scratch folder removed at the end.

use crate::failure::Failure;
use archc_runtime::aot::{embed, API, HEADER};
use archc_runtime::outfile;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The libraries Rust's standard library needs on Linux, after the runtime archive.
const SYSTEM_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

/// What a build wrote: each file and its size.
#[derive(Debug, Default)]
pub struct Linked {
    pub files: Vec<(PathBuf, u64)>,
}

/// A scratch folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, Failure> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("archc-build-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Failure::new(format!("{}: {e}", dir.display())))?;
        Ok(Scratch(dir))
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, Failure> {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).map_err(|e| Failure::new(format!("{}: {e}", p.display())))?;
        Ok(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where the output bound for `path` is written before [`finish`] puts it in place.
fn temporary(path: &Path) -> Result<PathBuf, Failure> {
    outfile::staging(path).map_err(|e| Failure::new(format!("{}: {e}", path.display())))
}

/// Moves a finished temporary output into place and records it.
fn finish(tmp: &Path, path: &Path, linked: &mut Linked) -> Result<(), Failure> {
    let bytes = std::fs::metadata(tmp).map_or(0, |m| m.len());
    outfile::place(tmp, path).map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
    linked.files.push((path.to_path_buf(), bytes));
    Ok(())
}

/// Writes `bytes` to `path` through a temporary name.
fn write_file(path: &Path, bytes: &[u8], linked: &mut Linked) -> Result<(), Failure> {
    let tmp = temporary(path)?;
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Failure::new(format!("{}: {e}", path.display())));
    }
    finish(&tmp, path, linked)
}

/// The runtime archive: `$ARCHC_RUNTIME_LIB`, else `libarchc_runtime.a` next to this
/// executable.
pub fn runtime_archive() -> Result<PathBuf, Failure> {
    if let Some(p) = std::env::var_os("ARCHC_RUNTIME_LIB").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(Failure::new(format!(
            "ARCHC_RUNTIME_LIB names {}, which is not a file",
            p.display()
        )));
    }
    let exe = std::env::current_exe().map_err(|e| Failure::new(format!("finding archc: {e}")))?;
    let p = exe.with_file_name("libarchc_runtime.a");
    if p.is_file() {
        return Ok(p);
    }
    Err(Failure::new(format!(
        "the ahead-of-time runtime {} is missing; build it with `cargo rustc --release -p archc-runtime --lib --crate-type staticlib --no-default-features --features aot` (or point ARCHC_RUNTIME_LIB at one)",
        p.display()
    )))
}

/// Runs the C compiler with `args`; its stderr becomes the error.
fn cc(args: &[OsString]) -> Result<(), Failure> {
    let cc = std::env::var("CC")
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "cc".into());
    let out = Command::new(&cc)
        .args(args)
        .output()
        .map_err(|e| Failure::new(format!("running the C compiler `{cc}`: {e}")))?;
    if !out.status.success() {
        return Err(Failure::new(format!(
            "the C compiler `{cc}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

/// The executable `out`: `main` calling the runtime's entry point, the kernel object,
/// the runtime archive; then the `appended` files (name, path) after it.
pub fn executable(
    out: &Path,
    object: &[u8],
    appended: &[(String, PathBuf)],
) -> Result<Linked, Failure> {
    let archive = runtime_archive()?;
    let scratch = Scratch::new()?;
    let obj = scratch.write("kernels.o", object)?;
    let main = scratch.write(
        "main.c",
        b"int archc_main(int, char **);\nint main(int argc, char **argv) { return archc_main(argc, argv); }\n",
    )?;
    let tmp = temporary(out)?;
    let mut args = vec![
        os("-O2"),
        os("-o"),
        tmp.clone().into(),
        main.into(),
        obj.into(),
        archive.into(),
    ];
    args.extend(SYSTEM_LIBS.iter().map(os));
    args.extend([os("-Wl,--gc-sections"), os("-s")]);
    let mut linked = Linked::default();
    let result = cc(&args).and_then(|()| {
        if !appended.is_empty() {
            let files: Vec<(String, &Path)> = appended
                .iter()
                .map(|(n, p)| (n.clone(), p.as_path()))
                .collect();
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&tmp)
                .map_err(|e| Failure::new(format!("{}: {e}", tmp.display())))?;
            embed::append(&mut f, &files)
                .map_err(|e| Failure::new(format!("embedding the weights: {e}")))?;
            f.sync_all()
                .map_err(|e| Failure::new(format!("{}: {e}", tmp.display())))?;
        }
        finish(&tmp, out, &mut linked)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| linked)
}

/// `libNAME.so` and `NAME.h` beside `out` (`NAME` is `out`'s file name).
pub fn library(out: &Path, object: &[u8]) -> Result<Linked, Failure> {
    let archive = runtime_archive()?;
    let scratch = Scratch::new()?;
    let obj = scratch.write("kernels.o", object)?;
    let script = format!(
        "{{\n  global:\n{}  local: *;\n}};\n",
        API.iter()
            .map(|f| format!("    {f};\n"))
            .collect::<String>()
    );
    let map = scratch.write("exports.map", script.as_bytes())?;
    let (so, header) = library_paths(out);
    let tmp = temporary(&so)?;
    let mut args = vec![os("-shared"), os("-o"), tmp.clone().into(), obj.into()];
    // Pull the API's objects out of the archive; the version script exports them alone.
    args.extend(API.iter().map(|f| os(format!("-Wl,-u,{f}"))));
    args.push(archive.into());
    args.extend(SYSTEM_LIBS.iter().map(os));
    let mut v = OsString::from("-Wl,--version-script=");
    v.push(&map);
    args.extend([v, os("-Wl,--gc-sections"), os("-s")]);
    let mut linked = Linked::default();
    if let Err(e) = cc(&args) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    finish(&tmp, &so, &mut linked)?;
    write_file(&header, HEADER.as_bytes(), &mut linked)?;
    Ok(linked)
}

/// `libNAME.so` and `NAME.h` for `out`.
pub fn library_paths(out: &Path) -> (PathBuf, PathBuf) {
    let name = out
        .file_name()
        .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    (
        out.with_file_name(format!("lib{name}.so")),
        out.with_file_name(format!("{name}.h")),
    )
}

/// A cross target: `NAME.o` (kernels, table and image) and `libNAME.a` holding it (with
/// a symbol index), with the header, to be linked with the runtime archive built for
/// that target.
pub fn cross(out: &Path, object: &[u8]) -> Result<Linked, Failure> {
    let name = out
        .file_name()
        .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    let obj = out.with_file_name(format!("{name}.o"));
    let lib = out.with_file_name(format!("lib{name}.a"));
    let header = out.with_file_name(format!("{name}.h"));
    let mut linked = Linked::default();
    write_file(&obj, object, &mut linked)?;
    write_file(&lib, &archive(object), &mut linked)?;
    write_file(&header, HEADER.as_bytes(), &mut linked)?;
    Ok(linked)
}

/// The symbols a runtime archive resolves from a build's object (the index entries of
/// the archive `cross` writes).
const TABLE_SYMBOLS: &[&str] = &[
    "archc_kernels",
    "archc_kernel_count",
    "archc_image",
    "archc_image_len",
];

/// A `!<arch>` archive of one member, `kernels.o`, in the System V / GNU format every
/// ELF linker reads, with the symbol index (`/` member) naming the table symbols, so a
/// link that takes the archive like any other resolves them from it.
fn archive(bytes: &[u8]) -> Vec<u8> {
    fn header(name: &str, size: usize) -> String {
        format!("{name:<16}{:<12}{:<6}{:<6}{:<8}{size:<10}`\n", 0, 0, 0, 644)
    }
    let mut names = Vec::new();
    for s in TABLE_SYMBOLS {
        names.extend_from_slice(s.as_bytes());
        names.push(0);
    }
    let mut index_len = 4 + 4 * TABLE_SYMBOLS.len() + names.len();
    index_len += index_len % 2;
    // The member's header comes after the magic, the index header and the index.
    let member_at = (8 + 60 + index_len) as u32;
    let mut out = b"!<arch>\n".to_vec();
    out.extend_from_slice(header("/", index_len).as_bytes());
    out.extend_from_slice(&(TABLE_SYMBOLS.len() as u32).to_be_bytes());
    for _ in TABLE_SYMBOLS {
        out.extend_from_slice(&member_at.to_be_bytes());
    }
    out.extend_from_slice(&names);
    if out.len() % 2 == 1 {
        out.push(b'\n');
    }
    out.extend_from_slice(header("kernels.o/", bytes.len()).as_bytes());
    out.extend_from_slice(bytes);
    if bytes.len() % 2 == 1 {
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The archive writer's index works: an object defining the table symbols, put in
    /// an archive by `archive`, resolves them for a program linked against it (on this
    /// machine's architecture; the format does not depend on it).
    #[test]
    fn the_archive_index_resolves_the_table_symbols() {
        let dir = std::env::temp_dir().join(format!("archc-ar-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let table = "const char archc_image[3] = {1, 2, 3};\n\
            const long archc_image_len = 3;\n\
            const void *const archc_kernels[1] = {0};\n\
            const long archc_kernel_count = 0;\n";
        std::fs::write(dir.join("t.c"), table).expect("write");
        std::fs::write(
            dir.join("m.c"),
            "extern const long archc_image_len;\nint main(void) { return archc_image_len == 3 ? 0 : 1; }\n",
        )
        .expect("write");
        let run = |args: &[&str]| {
            let ok = Command::new("cc")
                .current_dir(&dir)
                .args(args)
                .status()
                .expect("cc runs")
                .success();
            assert!(ok, "cc {args:?}");
        };
        run(&["-c", "-fPIC", "t.c", "-o", "t.o"]);
        let obj = std::fs::read(dir.join("t.o")).expect("object");
        std::fs::write(dir.join("libt.a"), archive(&obj)).expect("archive");
        run(&["m.c", "-L.", "-lt", "-o", "m"]);
        let status = Command::new(dir.join("m")).status().expect("runs");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(status.success());
    }
}
