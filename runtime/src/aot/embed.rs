//! Weights embedded in an executable (`archc build --embed-weights`): the files are
//! appended after the linked program, each at a 64 KiB-aligned offset (so tensors keep
//! the alignment they have in their own file and are memory-mapped in place), followed
//! by an index and a fixed trailer:
//!
//! ```text
//! [executable][pad][file 0][pad][file 1]...[index JSON][index length: u64 LE]["ARCHCWT1"]
//! ```
//!
//! The loader and the kernel code never look past the executable's own sections, so the
//! appended bytes change nothing else. The index is bounded and every entry is checked
//! against the file's length before anything is mapped.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The last 8 bytes of an executable with embedded weights.
pub const MAGIC: &[u8; 8] = b"ARCHCWT1";
/// Every embedded file starts at a multiple of this.
pub const ALIGN: u64 = 1 << 16;
/// The largest index a reader accepts.
const MAX_INDEX: u64 = 1 << 20;

/// One embedded file: its name (`model.gguf`, `model.safetensors`, `tokenizer.json`)
/// and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Embedded {
    pub name: String,
    pub offset: u64,
    pub len: u64,
}

/// Appends `files` (name, path) to `out`, which holds the linked executable, then the
/// index and trailer.
pub fn append(out: &mut File, files: &[(String, &Path)]) -> std::io::Result<Vec<Embedded>> {
    let mut at = out.seek(SeekFrom::End(0))?;
    let mut index = Vec::with_capacity(files.len());
    for (name, path) in files {
        let pad = at.next_multiple_of(ALIGN) - at;
        out.write_all(&vec![0u8; pad as usize])?;
        at += pad;
        let mut src = File::open(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let len = std::io::copy(&mut src, out)?;
        index.push(Embedded {
            name: name.clone(),
            offset: at,
            len,
        });
        at += len;
    }
    let json = serde_json::to_vec(&index).map_err(std::io::Error::other)?;
    out.write_all(&json)?;
    out.write_all(&(json.len() as u64).to_le_bytes())?;
    out.write_all(MAGIC)?;
    out.flush()?;
    Ok(index)
}

/// The embedded files of the executable at `path`: `None` when it has none.
pub fn read_index(path: &Path) -> Result<Option<Vec<Embedded>>, String> {
    let shown = path.display();
    let mut f = File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let total = f.metadata().map_err(|e| format!("{shown}: {e}"))?.len();
    if total < 16 {
        return Ok(None);
    }
    let mut tail = [0u8; 16];
    f.seek(SeekFrom::End(-16))
        .and_then(|_| f.read_exact(&mut tail))
        .map_err(|e| format!("{shown}: {e}"))?;
    if &tail[8..] != MAGIC {
        return Ok(None);
    }
    let bad = |what: String| format!("{shown}: embedded weights: {what}");
    let len = u64::from_le_bytes(tail[..8].try_into().unwrap_or_default());
    if len > MAX_INDEX || len > total - 16 {
        return Err(bad(format!("an index of {len} bytes")));
    }
    let mut json = vec![0u8; len as usize];
    f.seek(SeekFrom::Start(total - 16 - len))
        .and_then(|_| f.read_exact(&mut json))
        .map_err(|e| bad(e.to_string()))?;
    let index: Vec<Embedded> =
        serde_json::from_slice(&json).map_err(|e| bad(format!("index: {e}")))?;
    let data_end = total - 16 - len;
    for e in &index {
        if e.offset.checked_add(e.len).is_none_or(|end| end > data_end) {
            return Err(bad(format!(
                "`{}` at {} ({} bytes) runs past the data",
                e.name, e.offset, e.len
            )));
        }
    }
    Ok(Some(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_files_are_found_aligned_and_lies_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("exe");
        let data = dir.path().join("w.bin");
        std::fs::write(&exe, b"\x7fELF not really").expect("write");
        std::fs::write(&data, vec![7u8; 1000]).expect("write");
        assert_eq!(read_index(&exe).expect("reads"), None);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&exe)
            .expect("open");
        let index = append(&mut f, &[("model.gguf".into(), &data)]).expect("appends");
        drop(f);
        assert_eq!(index[0].offset % ALIGN, 0);
        assert_eq!(read_index(&exe).expect("reads"), Some(index.clone()));
        let bytes = std::fs::read(&exe).expect("read");
        let at = index[0].offset as usize;
        assert_eq!(&bytes[at..at + 1000], &[7u8; 1000][..]);

        // An index that points past the data is refused, not followed.
        let mut lie = bytes.clone();
        let json = serde_json::to_vec(&[Embedded {
            name: "model.gguf".into(),
            offset: 1 << 40,
            len: 10,
        }])
        .expect("json");
        lie.truncate(at + 1000);
        lie.extend_from_slice(&json);
        lie.extend_from_slice(&(json.len() as u64).to_le_bytes());
        lie.extend_from_slice(MAGIC);
        std::fs::write(&exe, &lie).expect("write");
        let err = read_index(&exe).expect_err("refused");
        assert!(err.contains("runs past the data"), "{err}");
        // So is an index longer than the file.
        let mut huge = bytes[..at + 1000].to_vec();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        huge.extend_from_slice(MAGIC);
        std::fs::write(&exe, &huge).expect("write");
        assert!(read_index(&exe).is_err());
    }
}
