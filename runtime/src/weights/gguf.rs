//! A reader of llama.cpp's GGUF format (versions 2 and 3), written against untrusted input.
//!
//! Layout, all little-endian: magic `GGUF`, `u32` version, `u64` tensor count, `u64`
//! metadata count; the metadata (key string, `u32` value type, value; strings are a `u64`
//! length and bytes, arrays a `u32` element type, a `u64` count and the elements); the
//! tensor infos (name, `u32` rank, `u64` extents innermost first, `u32` GGML type, `u64`
//! offset); then, at the next multiple of `general.alignment` (default 32), the data
//! section, in which every tensor's offset is a multiple of the alignment.
//!
//! Every count, length, rank, extent, offset and size is checked before it is used: a
//! count must fit in the bytes that remain, sizes are computed with checked arithmetic,
//! and tensors must lie inside the data section without overlapping. A lying file gets a
//! [`GgufError`] naming the field; no input panics, reads out of bounds or allocates
//! more than a small multiple of its own size.

mod error;

pub use error::{FieldProblem, GgufError};

use super::FileAction;
use crate::quant::{self, ggml_type_name, GgmlType};
use archc_spec::import::gguf::{MetaType, MetaValue};
use memmap2::Mmap;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The default and largest accepted `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_ALIGNMENT: u64 = 1 << 20;
/// GGML tensors have at most four dimensions.
pub const MAX_DIMS: u32 = 4;
/// Arrays nest at most this deep (real files nest at most once).
const MAX_NESTING: u32 = 8;
/// Metadata values in all, arrays' items included. A large real vocabulary has a few
/// hundred thousand tokens and as many merges; the cap bounds the memory a file of
/// small values can make the reader spend.
pub const MAX_METADATA_VALUES: u64 = 1 << 23;

/// One tensor's info entry, checked against the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    pub name: String,
    pub ty: GgmlType,
    /// Extents as GGUF stores them, innermost (contiguous) first.
    pub ne: Vec<u64>,
    /// Extents in torch (row-major) order: `ne` reversed.
    pub shape: Vec<usize>,
    /// Offset within the data section, as stored.
    pub offset: u64,
    /// Absolute byte range in the file.
    pub begin: usize,
    pub end: usize,
}

impl GgufTensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

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

/// An open, validated GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    image: Image,
    header: Header,
}

/// Everything a GGUF file says before its data section.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    /// Tensor infos in file order.
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_start: u64,
}

impl GgufFile {
    /// Opens, maps and validates a file.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let err = |action: FileAction, source: std::io::Error| GgufError::File {
            file: path.to_path_buf(),
            action,
            source,
        };
        let file = File::open(path).map_err(|e| err(FileAction::Open, e))?;
        let len = file.metadata().map_err(|e| err(FileAction::Stat, e))?.len();
        if len < 24 {
            // Checked here too: an empty file cannot be memory-mapped on every platform.
            return Err(GgufError::Field {
                file: path.to_path_buf(),
                field: "header".to_string(),
                problem: FieldProblem::ShortFile { len },
            });
        }
        // SAFETY: the map is read-only and private to this process. Another process
        // truncating the file while it is mapped would be undefined behaviour; model
        // files are not modified while they are being loaded, the assumption every
        // memory-mapping weight loader makes.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| err(FileAction::Map, e))?;
        GgufFile::from_image(path, Image::Mapped(map))
    }

    /// Maps and validates the `len` bytes at `offset` of the file at `path` (a file
    /// embedded in a larger one, as `archc build --embed-weights` appends weights to an
    /// executable). `offset` should be page-aligned so that tensors keep their alignment.
    pub fn open_at(path: &Path, offset: u64, len: u64) -> Result<GgufFile, GgufError> {
        let map =
            super::map_range(path, offset, len).map_err(|(action, source)| GgufError::File {
                file: path.to_path_buf(),
                action,
                source,
            })?;
        GgufFile::from_image(path, Image::Mapped(map))
    }

    /// Validates a file image held in memory; `path` only names it in errors.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        GgufFile::from_image(path, Image::Owned(bytes))
    }

    fn from_image(path: &Path, image: Image) -> Result<GgufFile, GgufError> {
        let header = parse(&image).map_err(|(field, problem)| GgufError::Field {
            file: path.to_path_buf(),
            field,
            problem,
        })?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            image,
            header,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn version(&self) -> u32 {
        self.header.version
    }

    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.header.metadata
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.header.tensors
    }

    /// Every tensor name.
    pub fn names(&self) -> BTreeSet<String> {
        self.header.tensors.iter().map(|t| t.name.clone()).collect()
    }

    pub fn info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.header.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's stored bytes (quantised blocks stay as they are), zero-copy.
    pub fn bytes(&self, info: &GgufTensorInfo) -> &[u8] {
        // The range was checked against the image when the file was parsed.
        self.image.get(info.begin..info.end).unwrap_or(&[])
    }

    /// A tensor's values widened or dequantised to f32, in torch order.
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let info = self.info(name).ok_or_else(|| GgufError::NoSuchTensor {
            file: self.path.clone(),
            tensor: name.to_string(),
        })?;
        quant::dequantize(info.ty, self.bytes(info)).map_err(|source| GgufError::Dequantize {
            file: self.path.clone(),
            tensor: name.to_string(),
            source,
        })
    }
}

/// A parse failure: the field, and what is wrong with it.
type Fail = (String, FieldProblem);

/// A bounds-checked little-endian reader over the file image.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: u64, field: &dyn Fn() -> String) -> Result<&'a [u8], Fail> {
        if n > self.remaining() as u64 {
            return Err((
                field(),
                FieldProblem::Truncated {
                    needed: n,
                    offset: self.pos,
                    file_len: self.bytes.len(),
                },
            ));
        }
        let n = n as usize;
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &dyn Fn() -> String) -> Result<[u8; N], Fail> {
        let b = self.take(N as u64, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, field: &dyn Fn() -> String) -> Result<u32, Fail> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &dyn Fn() -> String) -> Result<u64, Fail> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A length-prefixed string; the length is checked against the bytes that remain
    /// before anything is allocated.
    fn raw_string(&mut self, field: &dyn Fn() -> String) -> Result<&'a [u8], Fail> {
        let len_field = || format!("{} length", field());
        let len = self.u64(&len_field)?;
        if len > self.remaining() as u64 {
            return Err((
                len_field(),
                FieldProblem::StringLength {
                    len,
                    offset: self.pos,
                    remaining: self.remaining(),
                },
            ));
        }
        self.take(len, field)
    }

    /// A string that must be UTF-8 (keys and tensor names).
    fn string(&mut self, field: &dyn Fn() -> String) -> Result<String, Fail> {
        let at = self.pos;
        let raw = self.raw_string(field)?;
        String::from_utf8(raw.to_vec())
            .map_err(|source| (field(), FieldProblem::NotUtf8 { offset: at, source }))
    }
}

/// The fewest bytes one value of type `t` occupies, for checking counts before reading.
fn min_size(t: MetaType) -> u64 {
    match t {
        MetaType::U8 | MetaType::I8 | MetaType::Bool => 1,
        MetaType::U16 | MetaType::I16 => 2,
        MetaType::U32 | MetaType::I32 | MetaType::F32 => 4,
        MetaType::U64 | MetaType::I64 | MetaType::F64 | MetaType::Str => 8,
        MetaType::Array => 12,
    }
}

/// Parses and checks everything before the data section, and every tensor's place in it.
pub fn parse(bytes: &[u8]) -> Result<Header, Fail> {
    let mut c = Cursor { bytes, pos: 0 };
    let f = |s: &'static str| move || s.to_string();
    let magic = c.array::<4>(&f("header.magic"))?;
    if &magic != b"GGUF" {
        return Err((
            "header.magic".into(),
            FieldProblem::Magic {
                found: String::from_utf8_lossy(&magic).into_owned(),
            },
        ));
    }
    let version = c.u32(&f("header.version"))?;
    if version != 2 && version != 3 {
        let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            " (this is a big-endian file; only little-endian files are supported)"
        } else if version == 1 {
            " (version 1 used 32-bit counts and is obsolete)"
        } else {
            ""
        };
        return Err((
            "header.version".into(),
            FieldProblem::Version { version, hint },
        ));
    }
    let tensor_count = c.u64(&f("header.tensor_count"))?;
    let kv_count = c.u64(&f("header.metadata_kv_count"))?;
    // A key-value pair takes at least 13 bytes, a tensor info at least 24.
    let rest = c.remaining() as u64;
    if kv_count > rest / 13 {
        return Err((
            "header.metadata_kv_count".into(),
            FieldProblem::KvCount {
                count: kv_count,
                rest,
            },
        ));
    }
    if tensor_count > rest / 24 {
        return Err((
            "header.tensor_count".into(),
            FieldProblem::TensorCount {
                count: tensor_count,
                rest,
            },
        ));
    }
    let mut metadata = BTreeMap::new();
    let mut budget = MAX_METADATA_VALUES;
    for i in 0..kv_count {
        let key = c.string(&|| format!("metadata[{i}] key"))?;
        let field = format!("metadata[{i}] {key:?}");
        let ty_id = c.u32(&|| format!("{field} type"))?;
        let ty = MetaType::from_id(ty_id).ok_or_else(|| {
            (
                format!("{field} type"),
                FieldProblem::UnknownValueType { id: ty_id },
            )
        })?;
        let value = read_value(&mut c, ty, &field, 0, &mut budget)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err((field, FieldProblem::DuplicateKey));
        }
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(MetaValue::U32(a)) => {
            let a = u64::from(*a);
            if a == 0 || !a.is_power_of_two() || a > MAX_ALIGNMENT {
                return Err((
                    "metadata \"general.alignment\"".into(),
                    FieldProblem::Alignment { value: a },
                ));
            }
            a
        }
        Some(other) => {
            return Err((
                "metadata \"general.alignment\"".into(),
                FieldProblem::AlignmentType {
                    found: other.describe(),
                },
            ))
        }
    };
    let mut tensors = Vec::new();
    let mut names = BTreeSet::new();
    for i in 0..tensor_count {
        let name = c.string(&|| format!("tensor_info[{i}] name"))?;
        let field = format!("tensor_info[{i}] {name:?}");
        if !names.insert(name.clone()) {
            return Err((format!("{field} name"), FieldProblem::DuplicateTensor));
        }
        let n_dims = c.u32(&|| format!("{field} n_dims"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err((
                format!("{field} n_dims"),
                FieldProblem::Dims { dims: n_dims },
            ));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            ne.push(c.u64(&|| format!("{field} ne[{d}]"))?);
        }
        let ty_id = c.u32(&|| format!("{field} type"))?;
        let offset = c.u64(&|| format!("{field} offset"))?;
        let ty = GgmlType::from_id(ty_id).ok_or_else(|| {
            (
                format!("{field} type"),
                FieldProblem::TensorType {
                    id: ty_id,
                    name: ggml_type_name(ty_id),
                },
            )
        })?;
        // Extents are int64 in ggml; the product must fit too.
        let mut numel: u64 = 1;
        for (d, &n) in ne.iter().enumerate() {
            if n > i64::MAX as u64 {
                return Err((
                    format!("{field} ne[{d}]"),
                    FieldProblem::Extent { value: n },
                ));
            }
            numel = numel.checked_mul(n).ok_or_else(|| {
                (
                    format!("{field} ne"),
                    FieldProblem::ElementsOverflow { ne: ne.clone() },
                )
            })?;
        }
        let block = ty.layout().block_len as u64;
        if ne[0] % block != 0 {
            return Err((
                format!("{field} ne[0]"),
                FieldProblem::Block {
                    extent: ne[0],
                    ty,
                    block,
                },
            ));
        }
        let size = ty.bytes_for(numel).ok_or_else(|| {
            (
                format!("{field} ne"),
                FieldProblem::BytesOverflow {
                    elements: numel,
                    ty,
                },
            )
        })?;
        if offset % alignment != 0 {
            return Err((
                format!("{field} offset"),
                FieldProblem::Misaligned { offset, alignment },
            ));
        }
        let shape = ne
            .iter()
            .rev()
            .map(|&n| usize::try_from(n))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|_| (format!("{field} ne"), FieldProblem::AddressSpace))?;
        tensors.push((
            field,
            GgufTensorInfo {
                name,
                ty,
                ne,
                shape,
                offset,
                begin: 0,
                end: 0,
            },
            size,
        ));
    }
    let info_end = c.pos as u64;
    let data_start = info_end.div_ceil(alignment) * alignment;
    let file_len = bytes.len() as u64;
    if !tensors.is_empty() && data_start > file_len {
        return Err((
            "data".into(),
            FieldProblem::DataPastEnd {
                data_start,
                file_len,
            },
        ));
    }
    let data_len = file_len.saturating_sub(data_start);
    let mut out = Vec::with_capacity(tensors.len());
    for (field, mut info, size) in tensors {
        let end = info.offset.checked_add(size).filter(|&e| e <= data_len);
        let Some(end) = end else {
            return Err((
                format!("{field} offset"),
                FieldProblem::TensorPastEnd {
                    size,
                    offset: info.offset,
                    data_len,
                },
            ));
        };
        // Both ends are within the file, whose length is a usize.
        info.begin = (data_start + info.offset) as usize;
        info.end = (data_start + end) as usize;
        out.push(info);
    }
    let mut by_start: Vec<&GgufTensorInfo> = out.iter().collect();
    by_start.sort_by_key(|t| (t.begin, t.end));
    for w in by_start.windows(2) {
        if w[1].begin < w[0].end {
            return Err((
                format!("tensor {:?} offset", w[1].name),
                FieldProblem::Overlap {
                    begin: w[1].begin,
                    end: w[1].end,
                    other: w[0].name.clone(),
                    other_begin: w[0].begin,
                    other_end: w[0].end,
                },
            ));
        }
    }
    Ok(Header {
        version,
        metadata,
        tensors: out,
        alignment,
        data_start,
    })
}

fn read_value(
    c: &mut Cursor<'_>,
    ty: MetaType,
    field: &str,
    depth: u32,
    budget: &mut u64,
) -> Result<MetaValue, Fail> {
    if *budget == 0 {
        return Err((field.to_string(), FieldProblem::TooManyValues));
    }
    *budget -= 1;
    let fv = || format!("{field} value");
    Ok(match ty {
        MetaType::U8 => MetaValue::U8(c.array::<1>(&fv)?[0]),
        MetaType::I8 => MetaValue::I8(c.array::<1>(&fv)?[0] as i8),
        MetaType::U16 => MetaValue::U16(u16::from_le_bytes(c.array(&fv)?)),
        MetaType::I16 => MetaValue::I16(i16::from_le_bytes(c.array(&fv)?)),
        MetaType::U32 => MetaValue::U32(u32::from_le_bytes(c.array(&fv)?)),
        MetaType::I32 => MetaValue::I32(i32::from_le_bytes(c.array(&fv)?)),
        MetaType::U64 => MetaValue::U64(u64::from_le_bytes(c.array(&fv)?)),
        MetaType::I64 => MetaValue::I64(i64::from_le_bytes(c.array(&fv)?)),
        MetaType::F32 => MetaValue::F32(f32::from_le_bytes(c.array(&fv)?)),
        MetaType::F64 => MetaValue::F64(f64::from_le_bytes(c.array(&fv)?)),
        MetaType::Bool => {
            let b = c.array::<1>(&fv)?[0];
            match b {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                other => return Err((fv(), FieldProblem::BadBool { byte: other })),
            }
        }
        // A single string must be UTF-8: archc reads some (the architecture, the chat
        // template), and a template read with replacement characters would run changed.
        MetaType::Str if depth == 0 => MetaValue::Str(c.string(&fv)?),
        // Strings in arrays that are not UTF-8 (some tokenizers' byte tokens) are kept
        // lossily, so such a vocabulary still opens.
        MetaType::Str => MetaValue::Str(String::from_utf8_lossy(c.raw_string(&fv)?).into_owned()),
        MetaType::Array => {
            if depth >= MAX_NESTING {
                return Err((field.to_string(), FieldProblem::Nesting));
            }
            let elem_id = c.u32(&|| format!("{field} array type"))?;
            let elem = MetaType::from_id(elem_id).ok_or_else(|| {
                (
                    format!("{field} array type"),
                    FieldProblem::UnknownValueType { id: elem_id },
                )
            })?;
            let count = c.u64(&|| format!("{field} array count"))?;
            let rest = c.remaining() as u64;
            if count > rest / min_size(elem) {
                return Err((
                    format!("{field} array count"),
                    FieldProblem::ArrayCount {
                        count,
                        elem: elem.name(),
                        rest,
                    },
                ));
            }
            if count > *budget {
                return Err((format!("{field} array count"), FieldProblem::TooManyValues));
            }
            let mut items = Vec::with_capacity(count as usize);
            for j in 0..count {
                let item_field = format!("{field}[{j}]");
                items.push(read_value(c, elem, &item_field, depth + 1, budget)?);
            }
            MetaValue::Array { elem, items }
        }
    })
}
