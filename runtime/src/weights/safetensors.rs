//! A memory-mapped reader of the safetensors format, written against untrusted input.
//!
//! Layout: an 8-byte little-endian header length `n`, `n` bytes of JSON (an object of
//! tensor name to `{dtype, shape, data_offsets}` plus an optional `__metadata__` object
//! of strings), then the data section; offsets are relative to its start. Every check
//! happens at open time, so a [`SafetensorsFile`] that opened hands out only views that
//! lie inside the file and whose byte size matches their shape.

mod error;

pub use error::{EntryProblem, HeaderProblem, IndexProblem, SafetensorsError};

use super::{Dtype, FileAction, TensorView};
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

/// One tensor's header entry, checked against the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range within the data section.
    pub begin: usize,
    pub end: usize,
}

/// Headers longer than this are refused before parsing (the reference implementation
/// has the same cap): real headers are a few hundred KiB even for thousands of tensors.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The bytes of a file: memory-mapped from disk, or owned (an image built in memory).
#[derive(Debug)]
enum Image {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Image {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Image::Mapped(m) => m,
            Image::Owned(v) => v,
        }
    }
}

/// An open, validated safetensors file.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    map: Image,
    /// Offset of the data section in the file (8 + header length).
    data_start: usize,
    tensors: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
}

impl SafetensorsFile {
    /// Opens, maps and validates a file.
    pub fn open(path: &Path) -> Result<SafetensorsFile, SafetensorsError> {
        let err = |action: FileAction, source: std::io::Error| SafetensorsError::File {
            file: path.to_path_buf(),
            action,
            source,
        };
        let file = File::open(path).map_err(|e| err(FileAction::Open, e))?;
        let len = file.metadata().map_err(|e| err(FileAction::Stat, e))?.len();
        if len < 8 {
            // Checked here too: an empty file cannot be memory-mapped on every platform.
            return Err(SafetensorsError::Header {
                file: path.to_path_buf(),
                problem: HeaderProblem::TooShort { file_len: len },
            });
        }
        // SAFETY: the map is read-only and private to this process. Another process
        // truncating the file while it is mapped would be undefined behaviour; model
        // checkpoints are not modified while they are being loaded, and that is the
        // same assumption every memory-mapping weight loader makes.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| err(FileAction::Map, e))?;
        SafetensorsFile::from_image(path, Image::Mapped(map))
    }

    /// Maps and validates the `len` bytes at `offset` of the file at `path` (a file
    /// embedded in a larger one, as `archc build --embed-weights` appends weights to an
    /// executable). `offset` should be page-aligned so that tensors keep their alignment.
    pub fn open_at(
        path: &Path,
        offset: u64,
        len: u64,
    ) -> Result<SafetensorsFile, SafetensorsError> {
        let map = super::map_range(path, offset, len).map_err(|(action, source)| {
            SafetensorsError::File {
                file: path.to_path_buf(),
                action,
                source,
            }
        })?;
        SafetensorsFile::from_image(path, Image::Mapped(map))
    }

    /// Validates a file image held in memory; `path` only names it in errors. The same
    /// checks as [`SafetensorsFile::open`] (used by tests and the fuzz target).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<SafetensorsFile, SafetensorsError> {
        SafetensorsFile::from_image(path, Image::Owned(bytes))
    }

    fn from_image(path: &Path, map: Image) -> Result<SafetensorsFile, SafetensorsError> {
        let (data_start, tensors, metadata) = parse(&map).map_err(|e| match e {
            ParseError::Header(problem) => SafetensorsError::Header {
                file: path.to_path_buf(),
                problem,
            },
            ParseError::Entry(tensor, problem) => SafetensorsError::Entry {
                file: path.to_path_buf(),
                tensor,
                problem,
            },
        })?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            map,
            data_start,
            tensors,
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// The `__metadata__` object (empty when absent).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// A zero-copy view of a tensor; an error if it is absent or of a dtype the runtime
    /// cannot read.
    pub fn get(&self, name: &str) -> Result<TensorView<'_>, SafetensorsError> {
        self.view(name, false)
    }

    /// A zero-copy view of a tensor's bytes whatever its dtype (FP8 weights, MXFP4 blocks
    /// and scales: binding reads them as bytes); an error if it is absent.
    pub fn get_raw(&self, name: &str) -> Result<TensorView<'_>, SafetensorsError> {
        self.view(name, true)
    }

    fn view(&self, name: &str, raw: bool) -> Result<TensorView<'_>, SafetensorsError> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| SafetensorsError::NoSuchTensor {
                file: self.path.clone(),
                tensor: name.to_string(),
            })?;
        if !raw && !info.dtype.is_supported() {
            return Err(SafetensorsError::UnsupportedDtype {
                file: self.path.clone(),
                tensor: name.to_string(),
                dtype: info.dtype,
            });
        }
        // In bounds: `parse` checked end <= data length and begin <= end.
        let bytes = &self.map[self.data_start + info.begin..self.data_start + info.end];
        Ok(TensorView {
            dtype: info.dtype,
            shape: &info.shape,
            bytes,
        })
    }
}

/// A header problem: of the header as a whole, or of one tensor's entry.
enum ParseError {
    Header(HeaderProblem),
    Entry(String, EntryProblem),
}

type Parsed = (
    usize,
    BTreeMap<String, TensorInfo>,
    BTreeMap<String, String>,
);

/// Validates the header of a whole file image. Errors carry the tensor they concern.
fn parse(bytes: &[u8]) -> Result<Parsed, ParseError> {
    let file_len = bytes.len();
    let Some((len_bytes, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(ParseError::Header(HeaderProblem::TooShort {
            file_len: file_len as u64,
        }));
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    let available = rest.len() as u64;
    if header_len > MAX_HEADER_BYTES {
        return Err(ParseError::Header(HeaderProblem::TooLong {
            header_len,
            limit: MAX_HEADER_BYTES,
        }));
    }
    if header_len > available {
        return Err(ParseError::Header(HeaderProblem::PastEnd {
            header_len,
            available,
            file_len,
        }));
    }
    // header_len <= file_len, so it fits in usize.
    let data_start = 8 + header_len as usize;
    let header = &bytes[8..data_start];
    let entries = header_entries(header)?;
    let data_len = file_len - data_start;
    let mut tensors: BTreeMap<String, TensorInfo> = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    let mut seen_metadata = false;
    for (name, entry) in &entries {
        // A repeated name would let one entry silently shadow another.
        if name == "__metadata__" && seen_metadata {
            return Err(ParseError::Header(HeaderProblem::DuplicateMetadata));
        }
        if tensors.contains_key(name) {
            return Err(ParseError::Entry(name.clone(), EntryProblem::Duplicate));
        }
        if name == "__metadata__" {
            seen_metadata = true;
            let m = entry
                .as_object()
                .ok_or(ParseError::Header(HeaderProblem::MetadataNotObject))?;
            for (k, v) in m {
                let v = v.as_str().ok_or_else(|| {
                    ParseError::Header(HeaderProblem::MetadataNotString { key: k.clone() })
                })?;
                metadata.insert(k.clone(), v.to_string());
            }
            continue;
        }
        let info = parse_entry(entry, data_len).map_err(|p| ParseError::Entry(name.clone(), p))?;
        tensors.insert(name.clone(), info);
    }
    // Tensors may leave gaps (padding) but must not share bytes: two views of the same
    // bytes under different names would be a lying file.
    let mut spans: Vec<(&String, &TensorInfo)> =
        tensors.iter().filter(|(_, t)| t.begin < t.end).collect();
    spans.sort_by_key(|(_, t)| (t.begin, t.end));
    for pair in spans.windows(2) {
        let ((a, ta), (b, tb)) = (pair[0], pair[1]);
        if tb.begin < ta.end {
            return Err(ParseError::Entry(
                b.clone(),
                EntryProblem::Overlap {
                    begin: tb.begin,
                    end: tb.end,
                    other: a.clone(),
                    other_begin: ta.begin,
                    other_end: ta.end,
                },
            ));
        }
    }
    Ok((data_start, tensors, metadata))
}

/// The header's top-level entries in file order, duplicates kept (a `serde_json::Value`
/// would keep only the last of two equal keys, hiding the lie).
fn header_entries(header: &[u8]) -> Result<Vec<(String, serde_json::Value)>, ParseError> {
    use serde::de::{Deserializer, MapAccess, Visitor};
    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<(String, serde_json::Value)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(header);
    let entries = de
        .deserialize_map(Entries)
        .and_then(|e| de.end().map(|()| e))
        .map_err(|e| {
            // Keys are strings and values any JSON, so a data error means the top level
            // is not an object.
            ParseError::Header(if e.is_data() {
                HeaderProblem::NotObject
            } else {
                HeaderProblem::NotJson(e.to_string())
            })
        })?;
    Ok(entries)
}

fn parse_entry(entry: &serde_json::Value, data_len: usize) -> Result<TensorInfo, EntryProblem> {
    let obj = entry.as_object().ok_or(EntryProblem::NotObject)?;
    for key in obj.keys() {
        if !matches!(key.as_str(), "dtype" | "shape" | "data_offsets") {
            return Err(EntryProblem::UnknownField { field: key.clone() });
        }
    }
    let dtype_str = obj
        .get("dtype")
        .and_then(|d| d.as_str())
        .ok_or(EntryProblem::MissingDtype)?;
    let dtype = Dtype::from_safetensors(dtype_str).ok_or_else(|| EntryProblem::UnknownDtype {
        dtype: dtype_str.to_string(),
    })?;
    let shape_json = obj
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or(EntryProblem::MissingShape)?;
    let mut shape = Vec::with_capacity(shape_json.len());
    for d in shape_json {
        let d = d
            .as_u64()
            .and_then(|d| usize::try_from(d).ok())
            .ok_or_else(|| EntryProblem::ShapeEntry {
                value: d.to_string(),
            })?;
        shape.push(d);
    }
    let offsets = obj
        .get("data_offsets")
        .and_then(|o| o.as_array())
        .ok_or(EntryProblem::MissingOffsets)?;
    let [begin, end] = offsets.as_slice() else {
        return Err(EntryProblem::OffsetCount {
            found: offsets.len(),
        });
    };
    let to_usize = |v: &serde_json::Value| {
        v.as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| EntryProblem::OffsetEntry {
                value: v.to_string(),
            })
    };
    let (begin, end) = (to_usize(begin)?, to_usize(end)?);
    if begin > end {
        return Err(EntryProblem::BeginAfterEnd { begin, end });
    }
    if end > data_len {
        return Err(EntryProblem::OutsideData {
            begin,
            end,
            data_len,
        });
    }
    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| EntryProblem::ElementsOverflow {
            shape: shape.clone(),
        })?;
    let expected = numel
        .checked_mul(dtype.size())
        .ok_or_else(|| EntryProblem::BytesOverflow {
            shape: shape.clone(),
        })?;
    if expected != end - begin {
        return Err(EntryProblem::Size {
            shape,
            dtype,
            expected,
            begin,
            end,
        });
    }
    Ok(TensorInfo {
        dtype,
        shape,
        begin,
        end,
    })
}
