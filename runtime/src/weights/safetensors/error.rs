//! Why a safetensors file, a sharded checkpoint or one of its tensors could not be used:
//! [`SafetensorsError`] says which file (and tensor, when one is involved) and what kind
//! of failure; the problem enums below say exactly what a lying header or index holds.

use crate::weights::{Dtype, FileAction};
use std::fmt;
use std::path::{Path, PathBuf};

/// What is wrong with a file's header as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderProblem {
    /// The file cannot hold the 8-byte header length.
    TooShort {
        file_len: u64,
    },
    /// The header length is above [`super::MAX_HEADER_BYTES`].
    TooLong {
        header_len: u64,
        limit: u64,
    },
    /// The header length runs past the end of the file.
    PastEnd {
        header_len: u64,
        available: u64,
        file_len: usize,
    },
    /// The header is not JSON: the parser's message.
    NotJson(String),
    /// The header is JSON but not an object.
    NotObject,
    DuplicateMetadata,
    MetadataNotObject,
    MetadataNotString {
        key: String,
    },
}

impl fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderProblem::TooShort { file_len } => write!(
                f,
                "file is {file_len} bytes, too short for the 8-byte header length"
            ),
            HeaderProblem::TooLong { header_len, limit } => write!(
                f,
                "header length {header_len} is more than the limit of {limit} bytes"
            ),
            HeaderProblem::PastEnd {
                header_len,
                available,
                file_len,
            } => write!(
                f,
                "header length {header_len} exceeds the {available} bytes that follow it \
                 (file is {file_len} bytes)"
            ),
            HeaderProblem::NotJson(e) => write!(f, "header is not valid JSON: {e}"),
            HeaderProblem::NotObject => f.write_str("header is not a JSON object"),
            HeaderProblem::DuplicateMetadata => {
                f.write_str("__metadata__ appears twice in the header")
            }
            HeaderProblem::MetadataNotObject => f.write_str("__metadata__ is not an object"),
            HeaderProblem::MetadataNotString { key } => {
                write!(f, "__metadata__ value of {key:?} is not a string")
            }
        }
    }
}

/// What is wrong with one tensor's header entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryProblem {
    /// The tensor's name appears twice.
    Duplicate,
    NotObject,
    UnknownField {
        field: String,
    },
    MissingDtype,
    /// A dtype string safetensors does not define.
    UnknownDtype {
        dtype: String,
    },
    MissingShape,
    /// A shape entry that is not a non-negative integer (as JSON).
    ShapeEntry {
        value: String,
    },
    MissingOffsets,
    OffsetCount {
        found: usize,
    },
    /// An offset that is not a non-negative integer (as JSON).
    OffsetEntry {
        value: String,
    },
    BeginAfterEnd {
        begin: usize,
        end: usize,
    },
    OutsideData {
        begin: usize,
        end: usize,
        data_len: usize,
    },
    ElementsOverflow {
        shape: Vec<usize>,
    },
    BytesOverflow {
        shape: Vec<usize>,
    },
    /// The byte range does not hold the shape's elements.
    Size {
        shape: Vec<usize>,
        dtype: Dtype,
        expected: usize,
        begin: usize,
        end: usize,
    },
    /// The byte range shares bytes with another tensor's.
    Overlap {
        begin: usize,
        end: usize,
        other: String,
        other_begin: usize,
        other_end: usize,
    },
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryProblem::Duplicate => f.write_str("the name appears twice in the header"),
            EntryProblem::NotObject => f.write_str("entry is not an object"),
            EntryProblem::UnknownField { field } => write!(f, "unknown field {field:?} in entry"),
            EntryProblem::MissingDtype => f.write_str("missing string field \"dtype\""),
            EntryProblem::UnknownDtype { dtype } => write!(
                f,
                "unsupported dtype {dtype:?} (not a safetensors dtype this reader knows)"
            ),
            EntryProblem::MissingShape => f.write_str("missing array field \"shape\""),
            EntryProblem::ShapeEntry { value } => {
                write!(f, "shape entry {value} is not a non-negative integer")
            }
            EntryProblem::MissingOffsets => f.write_str("missing array field \"data_offsets\""),
            EntryProblem::OffsetCount { found } => {
                write!(f, "data_offsets has {found} entries, expected 2")
            }
            EntryProblem::OffsetEntry { value } => {
                write!(f, "data_offsets entry {value} is not a non-negative integer")
            }
            EntryProblem::BeginAfterEnd { begin, end } => {
                write!(f, "data_offsets [{begin}, {end}]: begin is after end")
            }
            EntryProblem::OutsideData {
                begin,
                end,
                data_len,
            } => write!(
                f,
                "data_offsets [{begin}, {end}] lie outside the data section ({data_len} bytes)"
            ),
            EntryProblem::ElementsOverflow { shape } => {
                write!(f, "shape {shape:?} overflows the element count")
            }
            EntryProblem::BytesOverflow { shape } => {
                write!(f, "shape {shape:?} overflows the byte size")
            }
            EntryProblem::Size {
                shape,
                dtype,
                expected,
                begin,
                end,
            } => write!(
                f,
                "shape {shape:?} of {dtype} needs {expected} bytes, data_offsets [{begin}, {end}] hold {}",
                end - begin
            ),
            EntryProblem::Overlap {
                begin,
                end,
                other,
                other_begin,
                other_end,
            } => write!(
                f,
                "data_offsets [{begin}, {end}] overlap those of tensor '{other}' [{other_begin}, {other_end}]"
            ),
        }
    }
}

/// What is wrong with a shard index (`model.safetensors.index.json`).
#[derive(Debug)]
pub enum IndexProblem {
    Read(std::io::Error),
    /// The index is not JSON: the parser's message.
    Json(serde_json::Error),
    NoWeightMap,
    /// A `weight_map` value is not a string.
    NotFileName,
    /// A shard named with a directory part, or `.`/`..`, or empty.
    ShardNotPlain {
        shard: String,
    },
    /// A shard file that does not exist, and how many tensors the index puts in it.
    ShardMissing {
        shard: String,
        tensors: usize,
    },
    /// The index puts the tensor in a shard that does not hold it.
    NotInShard {
        shard: String,
    },
    /// A shard holds a tensor the index does not list.
    Unlisted {
        shard: String,
    },
    /// A shard holds a tensor the index puts in another shard.
    ListedElsewhere {
        shard: String,
        listed: String,
    },
}

impl fmt::Display for IndexProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexProblem::Read(e) => write!(f, "cannot read: {e}"),
            IndexProblem::Json(e) => write!(f, "invalid JSON: {e}"),
            IndexProblem::NoWeightMap => f.write_str("missing object \"weight_map\""),
            IndexProblem::NotFileName => f.write_str("weight_map value is not a file name"),
            IndexProblem::ShardNotPlain { shard } => write!(
                f,
                "shard {shard:?} is not a plain file name in the model directory"
            ),
            IndexProblem::ShardMissing { shard, tensors } => write!(
                f,
                "shard {shard:?} is missing ({tensors} tensor(s) are listed in it)"
            ),
            IndexProblem::NotInShard { shard } => write!(
                f,
                "listed in shard {shard:?} but that shard does not hold it"
            ),
            IndexProblem::Unlisted { shard } => {
                write!(f, "found in shard {shard:?} but not listed in the index")
            }
            IndexProblem::ListedElsewhere { shard, listed } => write!(
                f,
                "found in shard {shard:?} but the index lists it in {listed:?}"
            ),
        }
    }
}

/// What went wrong, in which file, and for which tensor (when one is involved).
#[derive(Debug)]
pub enum SafetensorsError {
    /// The file cannot be opened, examined or mapped.
    File {
        file: PathBuf,
        action: FileAction,
        source: std::io::Error,
    },
    /// The header as a whole is wrong.
    Header {
        file: PathBuf,
        problem: HeaderProblem,
    },
    /// One tensor's header entry is wrong.
    Entry {
        file: PathBuf,
        tensor: String,
        problem: EntryProblem,
    },
    /// The file (or checkpoint) has no tensor of this name.
    NoSuchTensor { file: PathBuf, tensor: String },
    /// The tensor's dtype cannot be read as numbers.
    UnsupportedDtype {
        file: PathBuf,
        tensor: String,
        dtype: Dtype,
    },
    /// The directory holds neither `model.safetensors` nor an index.
    NoCheckpoint { dir: PathBuf },
    /// The shard index is wrong, about one tensor or as a whole.
    Index {
        index: PathBuf,
        tensor: Option<String>,
        problem: IndexProblem,
    },
    /// Two files of one checkpoint hold the same tensor.
    TwoFiles {
        file: PathBuf,
        tensor: String,
        other: PathBuf,
    },
}

impl SafetensorsError {
    /// The file the error is about (the index, for index errors).
    pub fn file(&self) -> &Path {
        match self {
            SafetensorsError::File { file, .. }
            | SafetensorsError::Header { file, .. }
            | SafetensorsError::Entry { file, .. }
            | SafetensorsError::NoSuchTensor { file, .. }
            | SafetensorsError::UnsupportedDtype { file, .. }
            | SafetensorsError::TwoFiles { file, .. } => file,
            SafetensorsError::NoCheckpoint { dir } => dir,
            SafetensorsError::Index { index, .. } => index,
        }
    }

    /// The tensor the error is about, if one is.
    pub fn tensor(&self) -> Option<&str> {
        match self {
            SafetensorsError::Entry { tensor, .. }
            | SafetensorsError::NoSuchTensor { tensor, .. }
            | SafetensorsError::UnsupportedDtype { tensor, .. }
            | SafetensorsError::TwoFiles { tensor, .. } => Some(tensor),
            SafetensorsError::Index { tensor, .. } => tensor.as_deref(),
            _ => None,
        }
    }
}

impl SafetensorsError {
    /// What is wrong, without the file and tensor that [`fmt::Display`] puts first.
    pub fn detail(&self) -> String {
        match self {
            SafetensorsError::File { action, source, .. } => format!("{action}: {source}"),
            SafetensorsError::Header { problem, .. } => problem.to_string(),
            SafetensorsError::Entry { problem, .. } => problem.to_string(),
            SafetensorsError::NoSuchTensor { .. } => "no such tensor".to_string(),
            SafetensorsError::UnsupportedDtype { dtype, .. } => {
                format!("unsupported dtype {dtype} (supported: F32, F16, BF16)")
            }
            SafetensorsError::NoCheckpoint { .. } => format!(
                "no {} or {} in this directory",
                super::super::SINGLE_FILE,
                super::super::INDEX_FILE
            ),
            SafetensorsError::Index { problem, .. } => problem.to_string(),
            SafetensorsError::TwoFiles { other, .. } => {
                format!("tensor also present in {}", other.display())
            }
        }
    }
}

impl fmt::Display for SafetensorsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file().display())?;
        if let Some(t) = self.tensor() {
            write!(f, "tensor '{t}': ")?;
        }
        f.write_str(&self.detail())
    }
}

impl std::error::Error for SafetensorsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SafetensorsError::File { source, .. } => Some(source),
            SafetensorsError::Index {
                problem: IndexProblem::Read(e),
                ..
            } => Some(e),
            SafetensorsError::Index {
                problem: IndexProblem::Json(e),
                ..
            } => Some(e),
            _ => None,
        }
    }
}
