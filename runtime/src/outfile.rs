//! Output files a user names (`-o`, `--out`, `fmt` in place): a regular file is replaced
//! whole through a temporary sibling and a rename, so a reader never sees half a file and a
//! failed write (a full disk) leaves the old file as it was. A symbolic link is followed
//! (the file it points at is replaced, the link stays), and a FIFO or device node
//! (`-o /dev/stdout`, a named pipe) is written directly, never replaced by a regular file.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How many symbolic links are followed before giving up, as the kernel's `ELOOP` does.
const MAX_LINKS: usize = 40;

/// Where an output goes once symbolic links are followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A regular file, or nothing yet: written to a sibling temporary and renamed here.
    Replace(PathBuf),
    /// A FIFO, character or block device: opened and written as it is.
    Direct(PathBuf),
}

/// Follows the symbolic links of `path` (also dangling ones: the file they name is created)
/// and says how to write there. A directory is an error.
pub fn destination(path: &Path) -> std::io::Result<Destination> {
    let mut at = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        let meta = match fs::symlink_metadata(&at) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Destination::Replace(at))
            }
            Err(e) => return Err(e),
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            let target = fs::read_link(&at)?;
            at = match at.parent() {
                Some(dir) if target.is_relative() => dir.join(target),
                _ => target,
            };
        } else if kind.is_file() {
            return Ok(Destination::Replace(at));
        } else if kind.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "is a directory",
            ));
        } else {
            return Ok(Destination::Direct(at));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("more than {MAX_LINKS} symbolic links"),
    ))
}

/// `path` with `.NAME.tmpPID` beside it: where a replacement is written before the rename.
pub fn temporary(path: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// Where a tool that writes a whole file itself (the linker) should write the output bound
/// for `path`, for [`place`] to put it there: beside the file a link points at, so that the
/// rename stays on one file system, or in the temporary folder for a FIFO or device.
pub fn staging(path: &Path) -> std::io::Result<PathBuf> {
    Ok(match destination(path)? {
        Destination::Replace(at) => temporary(&at),
        Destination::Direct(at) => std::env::temp_dir().join(
            temporary(&at)
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default(),
        ),
    })
}

/// Writes `bytes` to `path` as [`Destination`] says. A replaced file keeps its permissions.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    match destination(path)? {
        Destination::Direct(at) => write_direct(&at, bytes),
        Destination::Replace(at) => {
            if at.file_name().is_none() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "path has no file name",
                ));
            }
            let tmp = temporary(&at);
            let result = (|| {
                let mut f = fs::File::create(&tmp)?;
                f.write_all(bytes)?;
                f.sync_all()?;
                if let Ok(meta) = fs::metadata(&at) {
                    fs::set_permissions(&tmp, meta.permissions())?;
                }
                fs::rename(&tmp, &at)
            })();
            if result.is_err() {
                // The temporary file is ours; leaving it behind would only litter the directory.
                let _ = fs::remove_file(&tmp);
            }
            result
        }
    }
}

/// Puts a finished temporary file `tmp` (written beside `path` by a tool such as the
/// linker) in place at `path`: renamed over the file a link points at, or copied into a
/// FIFO or device. `tmp` is gone afterwards either way. Gives where it went.
pub fn place(tmp: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let result = destination(path).and_then(|dest| match dest {
        Destination::Replace(at) => fs::rename(tmp, &at).map(|()| at),
        Destination::Direct(at) => {
            let bytes = fs::read(tmp)?;
            write_direct(&at, &bytes).map(|()| at)
        }
    });
    let _ = fs::remove_file(tmp);
    result
}

/// Writes into an existing FIFO or device without truncating or replacing it.
fn write_direct(at: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(at)?;
    f.write_all(bytes)?;
    f.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("archc-outfile-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_is_followed_and_stays_a_link() {
        let dir = scratch("link");
        fs::create_dir(dir.join("real")).unwrap();
        fs::write(dir.join("real/out.txt"), "old").unwrap();
        std::os::unix::fs::symlink("real/out.txt", dir.join("link.txt")).unwrap();
        write_atomic(&dir.join("link.txt"), b"new").unwrap();
        assert!(fs::symlink_metadata(dir.join("link.txt"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(dir.join("real/out.txt")).unwrap(), "new");
        // A dangling link creates the file it names.
        std::os::unix::fs::symlink("made.txt", dir.join("dangling")).unwrap();
        write_atomic(&dir.join("dangling"), b"x").unwrap();
        assert_eq!(fs::read_to_string(dir.join("made.txt")).unwrap(), "x");
        // A loop is an error, not a hang.
        std::os::unix::fs::symlink("b", dir.join("a")).unwrap();
        std::os::unix::fs::symlink("a", dir.join("b")).unwrap();
        let e = write_atomic(&dir.join("a"), b"x").unwrap_err();
        assert!(e.to_string().contains("symbolic links"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn devices_are_written_in_place_and_errors_reported() {
        let null = Path::new("/dev/null");
        if null.exists() {
            assert_eq!(destination(null).unwrap(), Destination::Direct(null.into()));
            write_atomic(null, b"discarded").unwrap();
            use std::os::unix::fs::FileTypeExt;
            assert!(fs::metadata(null).unwrap().file_type().is_char_device());
        }
        let full = Path::new("/dev/full");
        if full.exists() {
            let e = write_atomic(full, b"x").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(28), "{e}");
        }
        let dir = scratch("dir");
        let e = write_atomic(&dir, b"x").unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        // `place` moves a temporary into a device and removes it.
        let tmp = dir.join("tmp");
        fs::write(&tmp, "x").unwrap();
        if null.exists() {
            assert_eq!(place(&tmp, null).unwrap(), PathBuf::from(null));
            assert!(!tmp.exists());
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_written_not_replaced() {
        let dir = scratch("fifo");
        let fifo = dir.join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            return; // no mkfifo on this system: nothing to check
        }
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read(fifo).unwrap())
        };
        write_atomic(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        use std::os::unix::fs::FileTypeExt;
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_regular_file_is_replaced_whole() {
        let dir = scratch("file");
        let out = dir.join("o.txt");
        write_atomic(&out, b"one").unwrap();
        write_atomic(&out, b"two").unwrap();
        assert_eq!(fs::read_to_string(&out).unwrap(), "two");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary left");
        fs::remove_dir_all(&dir).unwrap();
    }
}
