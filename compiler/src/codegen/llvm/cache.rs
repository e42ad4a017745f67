//! The disk cache of compiled kernels: one shared library per kernel list and target,
//! named by a 128-bit FNV-1a hash of everything the machine code depends on, with a
//! manifest holding the library's size and checksum.
//!
//! Entries are written to temporary names and renamed into place, the manifest last, so
//! a reader sees either a complete entry or none. A manifest that does not match its
//! library (a crash mid-write by another tool, a truncated disk) is a miss, not a crash.

use super::{KernelFn, Target};
use crate::kernel::Kernel;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The source of the code generator (this target and the body emitter it shares):
/// editing it changes every key, so a development build never loads code produced by an
/// older code generator.
const CODEGEN_SOURCE: &[&str] = &[
    include_str!("mod.rs"),
    include_str!("cpu.rs"),
    include_str!("tiles/mod.rs"),
    include_str!("tiles/dot.rs"),
    include_str!("tiles/lanes.rs"),
    include_str!("math.rs"),
    include_str!("jit.rs"),
    include_str!("target.rs"),
    include_str!("../body/mod.rs"),
    include_str!("../body/emitter.rs"),
    include_str!("../body/scratch.rs"),
    include_str!("../body/stmt.rs"),
    include_str!("../body/hints.rs"),
    include_str!("../body/expr.rs"),
    include_str!("../body/memory.rs"),
    // What a tile the target does not lower becomes.
    include_str!("../../kernel/tile.rs"),
];

/// Where the cache lives, from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// `None` when disabled.
    pub dir: Option<PathBuf>,
}

impl CacheSettings {
    /// `ARCHC_NO_CACHE=1` disables the cache; otherwise `ARCHC_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/archc`, else `$HOME/.cache/archc`.
    pub fn from_env() -> CacheSettings {
        CacheSettings::from_vars(|name| std::env::var(name).ok())
    }

    /// `from_env` over any variable lookup (tests pass a map).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> CacheSettings {
        let set = |name: &str| get(name).filter(|v| !v.is_empty());
        if set("ARCHC_NO_CACHE").is_some_and(|v| v != "0") {
            return CacheSettings { dir: None };
        }
        let dir = set("ARCHC_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| set("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("archc")))
            .or_else(|| set("HOME").map(|d| PathBuf::from(d).join(".cache").join("archc")));
        CacheSettings { dir }
    }
}

/// FNV-1a over bytes, 128-bit: stable across Rust versions and platforms.
fn fnv1a128(bytes: &[u8], mut h: u128) -> u128 {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013B;
    for &b in bytes {
        h ^= b as u128;
        h = h.wrapping_mul(PRIME);
    }
    h
}

const FNV128_OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;

/// The cache key of kernels on a target: 32 hex digits over the kernels' text form, the
/// target triple, CPU and features, the archc version, the LLVM version and the source
/// of the code generator.
pub fn cache_key(kernels: &[Kernel], target: &Target) -> String {
    let (maj, min, patch) = inkwell::support::get_llvm_version();
    let mut h = FNV128_OFFSET;
    let mut head = String::new();
    let _ = write!(
        head,
        "archc {}\nllvm {maj}.{min}.{patch}\ntriple {}\ncpu {}\nfeatures {}\nkernels {}\n",
        env!("CARGO_PKG_VERSION"),
        target.triple,
        target.cpu,
        target.features,
        kernels.len()
    );
    h = fnv1a128(head.as_bytes(), h);
    for src in CODEGEN_SOURCE {
        h = fnv1a128(src.as_bytes(), h);
        h = fnv1a128(&[0], h);
    }
    for k in kernels {
        // Separators keep `[a, bc]` and `[ab, c]` apart.
        h = fnv1a128(k.to_string().as_bytes(), h);
        h = fnv1a128(&[0], h);
    }
    format!("{h:032x}")
}

fn paths(dir: &Path, key: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{key}.so")),
        dir.join(format!("{key}.manifest")),
    )
}

/// The manifest text of a library's bytes.
fn manifest(lib: &[u8]) -> String {
    format!(
        "archc kernel library\nbytes {}\nfnv1a128 {:032x}\n",
        lib.len(),
        fnv1a128(lib, FNV128_OFFSET)
    )
}

/// Loads the library of `key` if the cache has a complete, intact entry. `Ok(None)` is
/// a miss; `Err` is a warning (a damaged entry, which is then removed).
pub(super) fn load(
    dir: &Path,
    key: &str,
    syms: &[String],
) -> Result<Option<(libloading::Library, Vec<KernelFn>)>, String> {
    let (so, man) = paths(dir, key);
    let want = match read_entry(&man, MAX_MANIFEST_BYTES) {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(None) => return Ok(None),
        Err(e) => {
            remove_entry(dir, key);
            return Err(format!(
                "kernel cache entry {} unreadable: {e} (removed)",
                man.display()
            ));
        }
    };
    let bytes = match read_entry(&so, MAX_LIBRARY_BYTES)
        .and_then(|b| b.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "missing")))
    {
        Ok(b) => b,
        Err(e) => {
            remove_entry(dir, key);
            return Err(format!(
                "kernel cache entry {} unreadable: {e}",
                so.display()
            ));
        }
    };
    if manifest(&bytes) != want {
        remove_entry(dir, key);
        return Err(format!(
            "kernel cache entry {} does not match its manifest (removed)",
            so.display()
        ));
    }
    open(&so, syms)
        .map(Some)
        .inspect_err(|_| remove_entry(dir, key))
}

/// The largest manifest a cache entry may have (a real one is under 100 bytes).
const MAX_MANIFEST_BYTES: u64 = 4096;

/// The largest kernel library the cache reads back (a large MoE model's is tens of MiB).
const MAX_LIBRARY_BYTES: u64 = 1 << 30;

/// The bytes of a cache file: `None` when it does not exist; an error when it is not a
/// regular file (a FIFO planted in the cache would block the read forever) or is larger
/// than `limit`.
fn read_entry(path: &Path, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let not_plain = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a regular file");
    if !meta.is_file() {
        return Err(not_plain());
    }
    let file = std::fs::File::open(path)?;
    // Checked again on the open file: the name may have been replaced in between.
    if !file.metadata()?.is_file() {
        return Err(not_plain());
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(Some(bytes))
}

fn remove_entry(dir: &Path, key: &str) {
    let (so, man) = paths(dir, key);
    let _ = std::fs::remove_file(man);
    let _ = std::fs::remove_file(so);
}

fn open(so: &Path, syms: &[String]) -> Result<(libloading::Library, Vec<KernelFn>), String> {
    // SAFETY: the library was produced by this code generator from these kernels (the
    // manifest checksum matches what we linked); its initialisers are the C runtime's.
    let lib = unsafe { libloading::Library::new(so) }
        .map_err(|e| format!("cannot load kernel library {}: {e}", so.display()))?;
    let mut fns = Vec::with_capacity(syms.len());
    for s in syms {
        // SAFETY: every exported kernel symbol has the `KernelFn` signature.
        let f = unsafe { lib.get::<KernelFn>(s.as_bytes()) }
            .map_err(|e| format!("kernel library {} lacks `{s}`: {e}", so.display()))?;
        fns.push(*f);
    }
    Ok((lib, fns))
}

/// A name next to `path` that no other process or thread uses.
fn temp_name(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}.{n}", std::process::id()));
    path.with_file_name(name)
}

/// Writes the object, links it into a shared library with the C compiler (`$CC` or `cc`),
/// moves it into the cache with its manifest and loads it. `Err` is a warning.
pub(super) fn store_and_load(
    dir: &Path,
    key: &str,
    object: &[u8],
    syms: &[String],
    cc: Option<&str>,
) -> Result<(libloading::Library, Vec<KernelFn>), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create kernel cache {}: {e}", dir.display()))?;
    let (so, man) = paths(dir, key);
    let obj_path = temp_name(&dir.join(format!("{key}.o")));
    let so_tmp = temp_name(&so);
    let result = (|| {
        std::fs::write(&obj_path, object)
            .map_err(|e| format!("cannot write {}: {e}", obj_path.display()))?;
        let cc = cc.map(str::to_string).unwrap_or_else(|| {
            std::env::var("CC")
                .ok()
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "cc".to_string())
        });
        let out = Command::new(&cc)
            .arg("-shared")
            .arg("-o")
            .arg(&so_tmp)
            .arg(&obj_path)
            .arg("-lm")
            .output()
            .map_err(|e| format!("cannot run the C compiler `{cc}` to link kernels: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`{cc} -shared` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let bytes =
            std::fs::read(&so_tmp).map_err(|e| format!("cannot read {}: {e}", so_tmp.display()))?;
        std::fs::rename(&so_tmp, &so)
            .map_err(|e| format!("cannot move {} into the cache: {e}", so.display()))?;
        let man_tmp = temp_name(&man);
        std::fs::write(&man_tmp, manifest(&bytes))
            .and_then(|()| std::fs::rename(&man_tmp, &man))
            .map_err(|e| {
                let _ = std::fs::remove_file(&man_tmp);
                format!("cannot write {}: {e}", man.display())
            })?;
        open(&so, syms)
    })();
    let _ = std::fs::remove_file(&obj_path);
    let _ = std::fs::remove_file(&so_tmp);
    result
}
