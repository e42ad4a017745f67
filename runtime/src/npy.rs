//! NumPy `.npy` files of f32 in C order: an atomic writer and a strict, bounds-checked reader.
//!
//! The writer emits format 1.0 exactly as `numpy.save` does for a float32 array (header
//! dict, then spaces and a newline so that the data starts at a multiple of 64 bytes).
//! The reader accepts format 1.0, 2.0 and 3.0 headers of little-endian `<f4` or `<f8`
//! arrays in C order and rejects anything else with a message saying what it found.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// An array read from a `.npy` file, converted to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Npy {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Why an array could not be encoded, decoded, read or written.
#[derive(Debug)]
pub enum NpyError {
    /// The element count of `shape` overflows.
    ShapeOverflow {
        shape: Vec<usize>,
    },
    /// The values given are not the element count of the shape.
    LengthMismatch {
        shape: Vec<usize>,
        elements: usize,
        values: usize,
    },
    /// The header of `shape` does not fit format 1.0's 16-bit length.
    HeaderTooLong {
        shape: Vec<usize>,
    },
    /// The bytes do not start with the `.npy` magic.
    NotNpy,
    /// The file ends inside the 32-bit header length of format 2.0 or 3.0.
    TruncatedHeaderLength,
    /// The header length does not fit this machine's sizes.
    HeaderLengthOverflow,
    UnsupportedVersion {
        major: u8,
        minor: u8,
    },
    /// The header runs past the end of the file.
    HeaderPastEnd {
        header_len: usize,
        file_len: usize,
    },
    /// The header is not UTF-8.
    HeaderNotText,
    /// The header is not the dict this reader accepts: what is wrong, and the header.
    MalformedHeader {
        problem: String,
        header: String,
    },
    /// The element type is not little-endian f32 or f64.
    UnsupportedDtype {
        descr: String,
    },
    /// The array is in Fortran order.
    FortranOrder,
    /// The data section does not hold the shape's elements.
    DataLength {
        shape: Vec<usize>,
        descr: String,
        expected: usize,
        found: usize,
    },
    /// The file cannot be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file cannot be written.
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The array of the file at `path` is wrong.
    InFile {
        path: PathBuf,
        error: Box<NpyError>,
    },
}

impl fmt::Display for NpyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NpyError::ShapeOverflow { shape } => write!(f, "shape {shape:?} overflows"),
            NpyError::LengthMismatch {
                shape,
                elements,
                values,
            } => write!(
                f,
                "shape {shape:?} has {elements} elements but {values} values were given"
            ),
            NpyError::HeaderTooLong { shape } => {
                write!(f, "header of shape {shape:?} is too long for format 1.0")
            }
            NpyError::NotNpy => f.write_str("not a .npy file (missing \\x93NUMPY magic)"),
            NpyError::TruncatedHeaderLength => f.write_str("file ends inside the header length"),
            NpyError::HeaderLengthOverflow => f.write_str("header length overflows"),
            NpyError::UnsupportedVersion { major, minor } => {
                write!(f, "unsupported .npy format version {major}.{minor}")
            }
            NpyError::HeaderPastEnd {
                header_len,
                file_len,
            } => write!(
                f,
                "header length {header_len} runs past the end of the file ({file_len} bytes)"
            ),
            NpyError::HeaderNotText => f.write_str("header is not valid text"),
            NpyError::MalformedHeader { problem, header } => {
                write!(f, "malformed header ({problem}): {header:?}")
            }
            NpyError::UnsupportedDtype { descr } => {
                write!(f, "unsupported dtype {descr:?} (expected '<f4' or '<f8')")
            }
            NpyError::FortranOrder => {
                f.write_str("fortran_order arrays are not supported (expected C order)")
            }
            NpyError::DataLength {
                shape,
                descr,
                expected,
                found,
            } => write!(
                f,
                "shape {shape:?} of {descr} needs {expected} data bytes, file has {found}"
            ),
            NpyError::Read { path, source } => {
                write!(f, "{}: cannot read: {source}", path.display())
            }
            NpyError::Write { path, source } => write!(f, "{}: {source}", path.display()),
            NpyError::InFile { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

impl std::error::Error for NpyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NpyError::Read { source, .. } | NpyError::Write { source, .. } => Some(source),
            NpyError::InFile { error, .. } => Some(error.as_ref()),
            _ => None,
        }
    }
}

impl NpyError {
    /// This error as the problem of the file at `path`.
    fn in_file(self, path: &Path) -> NpyError {
        NpyError::InFile {
            path: path.to_path_buf(),
            error: Box::new(self),
        }
    }
}

/// Encodes an f32 array as `.npy` bytes. `data.len()` must equal the product of `shape`.
pub fn encode(shape: &[usize], data: &[f32]) -> Result<Vec<u8>, NpyError> {
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| NpyError::ShapeOverflow {
            shape: shape.to_vec(),
        })?;
    if numel != data.len() {
        return Err(NpyError::LengthMismatch {
            shape: shape.to_vec(),
            elements: numel,
            values: data.len(),
        });
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
    let header_len = u16::try_from(header.len()).map_err(|_| NpyError::HeaderTooLong {
        shape: shape.to_vec(),
    })?;
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
    let bytes = encode(shape, data).map_err(|e| e.in_file(path))?;
    crate::outfile::write_atomic(path, &bytes).map_err(|source| NpyError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a `.npy` file of `<f4` or `<f8` values in C order.
pub fn read(path: &Path) -> Result<Npy, NpyError> {
    let bytes = fs::read(path).map_err(|source| NpyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    decode(&bytes).map_err(|e| e.in_file(path))
}

/// Decodes `.npy` bytes; every length and offset is checked against the input.
pub fn decode(bytes: &[u8]) -> Result<Npy, NpyError> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(NpyError::NotNpy);
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, header_start): (usize, usize) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(NpyError::TruncatedHeaderLength);
            }
            let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            let n = usize::try_from(n).map_err(|_| NpyError::HeaderLengthOverflow)?;
            (n, 12)
        }
        _ => return Err(NpyError::UnsupportedVersion { major, minor }),
    };
    let data_start = header_start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or(NpyError::HeaderPastEnd {
            header_len,
            file_len: bytes.len(),
        })?;
    let header = std::str::from_utf8(&bytes[header_start..data_start])
        .map_err(|_| NpyError::HeaderNotText)?;
    let dict = parse_header(header)?;
    let elem = match dict.descr.as_str() {
        "<f4" => 4,
        "<f8" => 8,
        other => {
            return Err(NpyError::UnsupportedDtype {
                descr: other.to_string(),
            })
        }
    };
    if dict.fortran_order {
        return Err(NpyError::FortranOrder);
    }
    let overflow = || NpyError::ShapeOverflow {
        shape: dict.shape.clone(),
    };
    let numel = dict
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(overflow)?;
    let need = numel.checked_mul(elem).ok_or_else(overflow)?;
    let data = &bytes[data_start..];
    if data.len() != need {
        return Err(NpyError::DataLength {
            shape: dict.shape,
            descr: dict.descr,
            expected: need,
            found: data.len(),
        });
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
fn parse_header(text: &str) -> Result<Header, NpyError> {
    let bad = |what: &str| NpyError::MalformedHeader {
        problem: what.to_string(),
        header: text.trim_end().to_string(),
    };
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
