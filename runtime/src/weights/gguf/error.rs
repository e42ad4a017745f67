//! Why a GGUF file or one of its tensors could not be used: [`GgufError`] names the file
//! and the field (`header.tensor_count`, `metadata[3] "general.alignment" value`,
//! `tensor_info[2] "blk.0.attn_q.weight" offset`); [`FieldProblem`] says what the field
//! holds and what was expected.

use super::{MAX_ALIGNMENT, MAX_DIMS, MAX_METADATA_VALUES, MAX_NESTING};
use crate::quant::{DequantError, GgmlType};
use crate::weights::FileAction;
use std::fmt;
use std::path::{Path, PathBuf};

/// What is wrong with one field of a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldProblem {
    /// The file ends before the field's bytes.
    Truncated {
        needed: u64,
        offset: usize,
        file_len: usize,
    },
    /// A string's length runs past the end of the file.
    StringLength {
        len: u64,
        offset: usize,
        remaining: usize,
    },
    /// A key or tensor name that is not UTF-8.
    NotUtf8 {
        offset: usize,
        source: std::string::FromUtf8Error,
    },
    /// The file cannot hold the fixed header.
    ShortFile {
        len: u64,
    },
    Magic {
        found: String,
    },
    /// A version other than 2 and 3, with a hint when the cause is known.
    Version {
        version: u32,
        hint: &'static str,
    },
    /// More key-value pairs than the rest of the file can hold.
    KvCount {
        count: u64,
        rest: u64,
    },
    /// More tensor infos than the rest of the file can hold.
    TensorCount {
        count: u64,
        rest: u64,
    },
    UnknownValueType {
        id: u32,
    },
    DuplicateKey,
    /// `general.alignment` is not a power of two in range.
    Alignment {
        value: u64,
    },
    /// `general.alignment` is not a u32: what it is.
    AlignmentType {
        found: String,
    },
    DuplicateTensor,
    Dims {
        dims: u32,
    },
    /// A tensor type archc does not read: its ggml name when it has one.
    TensorType {
        id: u32,
        name: Option<&'static str>,
    },
    /// An extent above ggml's int64 range.
    Extent {
        value: u64,
    },
    ElementsOverflow {
        ne: Vec<u64>,
    },
    /// The innermost extent is not a whole number of blocks.
    Block {
        extent: u64,
        ty: GgmlType,
        block: u64,
    },
    BytesOverflow {
        elements: u64,
        ty: GgmlType,
    },
    Misaligned {
        offset: u64,
        alignment: u64,
    },
    /// An extent does not fit this machine's sizes.
    AddressSpace,
    /// The data section would start past the end of the file.
    DataPastEnd {
        data_start: u64,
        file_len: u64,
    },
    /// A tensor's bytes run past the end of the data section.
    TensorPastEnd {
        size: u64,
        offset: u64,
        data_len: u64,
    },
    /// A tensor's bytes share bytes with another tensor's.
    Overlap {
        begin: usize,
        end: usize,
        other: String,
        other_begin: usize,
        other_end: usize,
    },
    /// More metadata values in all than [`MAX_METADATA_VALUES`].
    TooManyValues,
    BadBool {
        byte: u8,
    },
    /// Arrays nested deeper than [`MAX_NESTING`].
    Nesting,
    /// More array items than the rest of the file can hold.
    ArrayCount {
        count: u64,
        elem: &'static str,
        rest: u64,
    },
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldProblem::Truncated {
                needed,
                offset,
                file_len,
            } => write!(
                f,
                "truncated: needs {needed} bytes at offset {offset}, but the file ends at {file_len}"
            ),
            FieldProblem::StringLength {
                len,
                offset,
                remaining,
            } => write!(
                f,
                "{len} bytes at offset {offset}, but only {remaining} remain in the file"
            ),
            FieldProblem::NotUtf8 { offset, source } => {
                write!(f, "not UTF-8 (string at offset {offset}): {source}")
            }
            FieldProblem::ShortFile { len } => write!(
                f,
                "file is {len} bytes, shorter than the 24-byte GGUF header"
            ),
            FieldProblem::Magic { found } => write!(f, "expected \"GGUF\", found {found:?}"),
            FieldProblem::Version { version, hint } => {
                write!(f, "unsupported version {version}; expected 2 or 3{hint}")
            }
            FieldProblem::KvCount { count, rest } => write!(
                f,
                "{count} entries cannot fit in the {rest} bytes that follow the header"
            ),
            FieldProblem::TensorCount { count, rest } => write!(
                f,
                "{count} tensors cannot fit in the {rest} bytes that follow the header"
            ),
            FieldProblem::UnknownValueType { id } => write!(f, "unknown value type {id}"),
            FieldProblem::DuplicateKey => f.write_str("duplicate key"),
            FieldProblem::Alignment { value } => write!(
                f,
                "{value} is not a power of two between 1 and {MAX_ALIGNMENT}"
            ),
            FieldProblem::AlignmentType { found } => write!(f, "expected a u32, found {found}"),
            FieldProblem::DuplicateTensor => f.write_str("duplicate tensor name"),
            FieldProblem::Dims { dims } => {
                write!(f, "{dims} dimensions; expected 1 to {MAX_DIMS}")
            }
            FieldProblem::TensorType { id, name } => {
                match name {
                    Some(n) => write!(f, "tensor type {n} ({id}) is not supported")?,
                    None => write!(f, "unknown tensor type {id}")?,
                }
                let supported: Vec<&str> = GgmlType::ALL.iter().map(|t| t.name()).collect();
                write!(f, "; supported: {}", supported.join(", "))
            }
            FieldProblem::Extent { value } => write!(f, "{value} exceeds 2^63 - 1"),
            FieldProblem::ElementsOverflow { ne } => {
                write!(f, "the element count of {ne:?} overflows 64 bits")
            }
            FieldProblem::Block { extent, ty, block } => write!(
                f,
                "{extent} is not a multiple of the {ty} block size {block}"
            ),
            FieldProblem::BytesOverflow { elements, ty } => write!(
                f,
                "the byte size of {elements} {ty} elements overflows 64 bits"
            ),
            FieldProblem::Misaligned { offset, alignment } => write!(
                f,
                "{offset} is not a multiple of the alignment {alignment}"
            ),
            FieldProblem::AddressSpace => f.write_str("an extent exceeds the address space"),
            FieldProblem::DataPastEnd {
                data_start,
                file_len,
            } => write!(
                f,
                "the data section would start at {data_start}, past the end of the file ({file_len} bytes)"
            ),
            FieldProblem::TensorPastEnd {
                size,
                offset,
                data_len,
            } => write!(
                f,
                "{size} bytes at data offset {offset} run past the end of the data section ({data_len} bytes)"
            ),
            FieldProblem::Overlap {
                begin,
                end,
                other,
                other_begin,
                other_end,
            } => write!(
                f,
                "its data (file bytes {begin}..{end}) overlaps tensor {other:?} ({other_begin}..{other_end})"
            ),
            FieldProblem::TooManyValues => write!(
                f,
                "the metadata holds more than {MAX_METADATA_VALUES} values"
            ),
            FieldProblem::BadBool { byte } => {
                write!(f, "bool byte is {byte}, expected 0 or 1")
            }
            FieldProblem::Nesting => write!(f, "arrays nested deeper than {MAX_NESTING}"),
            FieldProblem::ArrayCount { count, elem, rest } => write!(
                f,
                "{count} {elem} items cannot fit in the {rest} bytes that remain"
            ),
        }
    }
}

/// What went wrong, in which file, and in which field of it.
#[derive(Debug)]
pub enum GgufError {
    /// The file cannot be opened, examined or mapped.
    File {
        file: PathBuf,
        action: FileAction,
        source: std::io::Error,
    },
    /// A field of the file holds what it must not.
    Field {
        file: PathBuf,
        field: String,
        problem: FieldProblem,
    },
    /// The file has no tensor of this name.
    NoSuchTensor { file: PathBuf, tensor: String },
    /// A tensor's blocks cannot be dequantised.
    Dequantize {
        file: PathBuf,
        tensor: String,
        source: DequantError,
    },
}

impl GgufError {
    pub fn file(&self) -> &Path {
        match self {
            GgufError::File { file, .. }
            | GgufError::Field { file, .. }
            | GgufError::NoSuchTensor { file, .. }
            | GgufError::Dequantize { file, .. } => file,
        }
    }

    /// The field the error is about, e.g. `header.tensor_count`, `metadata["general.alignment"]`
    /// or `tensor_info[3] "blk.0.attn_q.weight" offset`; `file` for the file itself and
    /// `tensor "name"` for a tensor's data.
    pub fn field(&self) -> String {
        match self {
            GgufError::File { .. } => "file".to_string(),
            GgufError::Field { field, .. } => field.clone(),
            GgufError::NoSuchTensor { tensor, .. } | GgufError::Dequantize { tensor, .. } => {
                format!("tensor {tensor:?}")
            }
        }
    }
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: ", self.file().display(), self.field())?;
        match self {
            GgufError::File { action, source, .. } => write!(f, "{action}: {source}"),
            GgufError::Field { problem, .. } => write!(f, "{problem}"),
            GgufError::NoSuchTensor { .. } => f.write_str("no such tensor"),
            GgufError::Dequantize { source, .. } => write!(f, "{source}"),
        }
    }
}

impl std::error::Error for GgufError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GgufError::File { source, .. } => Some(source),
            GgufError::Dequantize { source, .. } => Some(source),
            _ => None,
        }
    }
}
