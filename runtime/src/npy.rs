//! NumPy `.npy` files of f32 in C order: an atomic writer and a strict, bounds-checked reader.
//!
//! The writer emits format 1.0 exactly as `numpy.save` does for a float32 array (header
//! dict, then spaces and a newline so that the data starts at a multiple of 64 bytes).
//! The reader accepts format 1.0, 2.0 and 3.0 headers of little-endian `<f4` or `<f8`
//! arrays in C order and rejects anything else with a message saying what it found.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// An array read from a `.npy` file, converted to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Npy {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A `.npy` file could not be read or written.
#[derive(Debug)]
pub struct NpyError {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for NpyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for NpyError {}

/// Encodes an f32 array as `.npy` bytes. `data.len()` must equal the product of `shape`.
pub fn encode(shape: &[usize], data: &[f32]) -> Result<Vec<u8>, String> {
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    if numel != data.len() {
        return Err(format!(
            "shape {shape:?} has {numel} elements but {} values were given",
            data.len()
        ));
    }
    let dims = match shape {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", parts.join(", "))
        }
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // Magic (6) + version (2) + header length (2) + header + '\n' is a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    header.extend(std::iter::repeat_n(' ', pad));
    header.push('\n');
    let header_len = u16::try_from(header.len())
        .map_err(|_| format!("header of shape {shape:?} is too long for format 1.0"))?;
    let mut out = Vec::with_capacity(10 + header.len() + 4 * data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Writes an f32 array to `path` atomically: the bytes go to a temporary file in the
/// same directory that is then renamed over `path`, so no reader ever sees a partial file.
pub fn write(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), NpyError> {
    let err = |message: String| NpyError {
        path: path.to_path_buf(),
        message,
    };
    let bytes = encode(shape, data).map_err(err)?;
    write_atomic(path, &bytes).map_err(|e| err(e.to_string()))
}

/// Writes `bytes` to a sibling temporary file, syncs it and renames it onto `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // The temporary file is ours; leaving it behind would only litter the directory.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a `.npy` file of `<f4` or `<f8` values in C order.
pub fn read(path: &Path) -> Result<Npy, NpyError> {
    let err = |message: String| NpyError {
        path: path.to_path_buf(),
        message,
    };
    let bytes = fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    decode(&bytes).map_err(err)
}

/// Decodes `.npy` bytes; every length and offset is checked against the input.
pub fn decode(bytes: &[u8]) -> Result<Npy, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (missing \\x93NUMPY magic)".to_string());
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, header_start): (usize, usize) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("file ends inside the header length".to_string());
            }
            let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            let n = usize::try_from(n).map_err(|_| "header length overflows".to_string())?;
            (n, 12)
        }
        _ => return Err(format!("unsupported .npy format version {major}.{minor}")),
    };
    let data_start = header_start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            format!(
                "header length {header_len} runs past the end of the file ({} bytes)",
                bytes.len()
            )
        })?;
    let header = std::str::from_utf8(&bytes[header_start..data_start])
        .map_err(|_| "header is not valid text".to_string())?;
    let dict = parse_header(header)?;
    let elem = match dict.descr.as_str() {
        "<f4" => 4,
        "<f8" => 8,
        other => {
            return Err(format!(
                "unsupported dtype {other:?} (expected '<f4' or '<f8')"
            ))
        }
    };
    if dict.fortran_order {
        return Err("fortran_order arrays are not supported (expected C order)".to_string());
    }
    let numel = dict
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {:?} overflows", dict.shape))?;
    let need = numel
        .checked_mul(elem)
        .ok_or_else(|| format!("shape {:?} overflows", dict.shape))?;
    let data = &bytes[data_start..];
    if data.len() != need {
        return Err(format!(
            "shape {:?} of {} needs {need} data bytes, file has {}",
            dict.shape,
            dict.descr,
            data.len()
        ));
    }
    let values = if elem == 4 {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b) as f32
            })
            .collect()
    };
    Ok(Npy {
        shape: dict.shape,
        data: values,
    })
}

#[derive(Debug)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Parses the Python dict literal of a `.npy` header: exactly the keys `descr`,
/// `fortran_order` and `shape`, in any order.
fn parse_header(text: &str) -> Result<Header, String> {
    let bad = |what: &str| format!("malformed header ({what}): {:?}", text.trim_end());
    let body = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| bad("not a dict"))?;
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let (key, after) = take_quoted(rest).ok_or_else(|| bad("expected a quoted key"))?;
        let after = after
            .trim_start()
            .strip_prefix(':')
            .ok_or_else(|| bad("expected ':'"))?
            .trim_start();
        let after = match key {
            "descr" => {
                let (v, a) = take_quoted(after).ok_or_else(|| bad("descr is not a string"))?;
                descr = Some(v.to_string());
                a
            }
            "fortran_order" => {
                if let Some(a) = after.strip_prefix("False") {
                    fortran = Some(false);
                    a
                } else if let Some(a) = after.strip_prefix("True") {
                    fortran = Some(true);
                    a
                } else {
                    return Err(bad("fortran_order is not True or False"));
                }
            }
            "shape" => {
                let inner = after
                    .strip_prefix('(')
                    .ok_or_else(|| bad("shape is not a tuple"))?;
                let close = inner.find(')').ok_or_else(|| bad("unclosed shape"))?;
                let mut dims = Vec::new();
                for part in inner[..close].split(',') {
                    let part = part.trim();
                    if part.is_empty() {
                        continue;
                    }
                    dims.push(
                        part.parse::<usize>()
                            .map_err(|_| bad("shape entry is not an integer"))?,
                    );
                }
                shape = Some(dims);
                &inner[close + 1..]
            }
            other => return Err(bad(&format!("unexpected key {other:?}"))),
        };
        let after = after.trim_start();
        rest = match after.strip_prefix(',') {
            Some(a) => a.trim_start(),
            None if after.is_empty() => after,
            None => return Err(bad("expected ',' between entries")),
        };
    }
    Ok(Header {
        descr: descr.ok_or_else(|| bad("missing descr"))?,
        fortran_order: fortran.ok_or_else(|| bad("missing fortran_order"))?,
        shape: shape.ok_or_else(|| bad("missing shape"))?,
    })
}

/// Splits a leading `'...'` (or `"..."`) string off `s`.
fn take_quoted(s: &str) -> Option<(&str, &str)> {
    let q = s.chars().next().filter(|&c| c == '\'' || c == '"')?;
    let rest = &s[1..];
    let end = rest.find(q)?;
    Some((&rest[..end], &rest[end + 1..]))
}
