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

use crate::quant::{self, ggml_type_name, GgmlType};
use archc_spec::import::gguf::{MetaType, MetaValue};
use memmap2::Mmap;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

/// What went wrong, in which file, and in which field of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufError {
    pub file: PathBuf,
    /// The field, e.g. `header.tensor_count`, `metadata["general.alignment"]` or
    /// `tensor_info[3] "blk.0.attn_q.weight" offset`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.file.display(),
            self.field,
            self.message
        )
    }
}

impl std::error::Error for GgufError {}

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
        let err = |field: &str, message: String| GgufError {
            file: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        let file = File::open(path).map_err(|e| err("file", format!("cannot open: {e}")))?;
        let len = file
            .metadata()
            .map_err(|e| err("file", format!("cannot stat: {e}")))?
            .len();
        if len < 24 {
            // Checked here too: an empty file cannot be memory-mapped on every platform.
            return Err(err(
                "header",
                format!("file is {len} bytes, shorter than the 24-byte GGUF header"),
            ));
        }
        // SAFETY: the map is read-only and private to this process. Another process
        // truncating the file while it is mapped would be undefined behaviour; model
        // files are not modified while they are being loaded, the assumption every
        // memory-mapping weight loader makes.
        let map =
            unsafe { Mmap::map(&file) }.map_err(|e| err("file", format!("cannot map: {e}")))?;
        GgufFile::from_image(path, Image::Mapped(map))
    }

    /// Validates a file image held in memory; `path` only names it in errors.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        GgufFile::from_image(path, Image::Owned(bytes))
    }

    fn from_image(path: &Path, image: Image) -> Result<GgufFile, GgufError> {
        let header = parse(&image).map_err(|(field, message)| GgufError {
            file: path.to_path_buf(),
            field,
            message,
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
        let err = |message: String| GgufError {
            file: self.path.clone(),
            field: format!("tensor {name:?}"),
            message,
        };
        let info = self
            .info(name)
            .ok_or_else(|| err("no such tensor".into()))?;
        quant::dequantize(info.ty, self.bytes(info)).map_err(|e| err(e.to_string()))
    }
}

type Fail = (String, String);

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
                format!(
                    "truncated: needs {n} bytes at offset {}, but the file ends at {}",
                    self.pos,
                    self.bytes.len()
                ),
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
                format!(
                    "{len} bytes at offset {}, but only {} remain in the file",
                    self.pos,
                    self.remaining()
                ),
            ));
        }
        self.take(len, field)
    }

    /// A string that must be UTF-8 (keys and tensor names).
    fn string(&mut self, field: &dyn Fn() -> String) -> Result<String, Fail> {
        let at = self.pos;
        let raw = self.raw_string(field)?;
        String::from_utf8(raw.to_vec())
            .map_err(|e| (field(), format!("not UTF-8 (string at offset {at}): {e}")))
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
            format!(
                "expected \"GGUF\", found {:?}",
                String::from_utf8_lossy(&magic)
            ),
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
            format!("unsupported version {version}; expected 2 or 3{hint}"),
        ));
    }
    let tensor_count = c.u64(&f("header.tensor_count"))?;
    let kv_count = c.u64(&f("header.metadata_kv_count"))?;
    // A key-value pair takes at least 13 bytes, a tensor info at least 24.
    let rest = c.remaining() as u64;
    if kv_count > rest / 13 {
        return Err((
            "header.metadata_kv_count".into(),
            format!("{kv_count} entries cannot fit in the {rest} bytes that follow the header"),
        ));
    }
    if tensor_count > rest / 24 {
        return Err((
            "header.tensor_count".into(),
            format!("{tensor_count} tensors cannot fit in the {rest} bytes that follow the header"),
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
                format!("unknown value type {ty_id}"),
            )
        })?;
        let value = read_value(&mut c, ty, &field, 0, &mut budget)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err((field, "duplicate key".into()));
        }
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(MetaValue::U32(a)) => {
            let a = u64::from(*a);
            if a == 0 || !a.is_power_of_two() || a > MAX_ALIGNMENT {
                return Err((
                    "metadata \"general.alignment\"".into(),
                    format!("{a} is not a power of two between 1 and {MAX_ALIGNMENT}"),
                ));
            }
            a
        }
        Some(other) => {
            return Err((
                "metadata \"general.alignment\"".into(),
                format!("expected a u32, found {}", other.describe()),
            ))
        }
    };
    let mut tensors = Vec::new();
    let mut names = BTreeSet::new();
    for i in 0..tensor_count {
        let name = c.string(&|| format!("tensor_info[{i}] name"))?;
        let field = format!("tensor_info[{i}] {name:?}");
        if !names.insert(name.clone()) {
            return Err((format!("{field} name"), "duplicate tensor name".into()));
        }
        let n_dims = c.u32(&|| format!("{field} n_dims"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err((
                format!("{field} n_dims"),
                format!("{n_dims} dimensions; expected 1 to {MAX_DIMS}"),
            ));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            ne.push(c.u64(&|| format!("{field} ne[{d}]"))?);
        }
        let ty_id = c.u32(&|| format!("{field} type"))?;
        let offset = c.u64(&|| format!("{field} offset"))?;
        let ty = GgmlType::from_id(ty_id).ok_or_else(|| {
            let what = match ggml_type_name(ty_id) {
                Some(n) => format!("tensor type {n} ({ty_id}) is not supported"),
                None => format!("unknown tensor type {ty_id}"),
            };
            let supported: Vec<&str> = GgmlType::ALL.iter().map(|t| t.name()).collect();
            (
                format!("{field} type"),
                format!("{what}; supported: {}", supported.join(", ")),
            )
        })?;
        // Extents are int64 in ggml; the product must fit too.
        let mut numel: u64 = 1;
        for (d, &n) in ne.iter().enumerate() {
            if n > i64::MAX as u64 {
                return Err((format!("{field} ne[{d}]"), format!("{n} exceeds 2^63 - 1")));
            }
            numel = numel.checked_mul(n).ok_or_else(|| {
                (
                    format!("{field} ne"),
                    format!("the element count of {ne:?} overflows 64 bits"),
                )
            })?;
        }
        let block = ty.layout().block_len as u64;
        if ne[0] % block != 0 {
            return Err((
                format!("{field} ne[0]"),
                format!("{} is not a multiple of the {ty} block size {block}", ne[0]),
            ));
        }
        let size = ty.bytes_for(numel).ok_or_else(|| {
            (
                format!("{field} ne"),
                format!("the byte size of {numel} {ty} elements overflows 64 bits"),
            )
        })?;
        if offset % alignment != 0 {
            return Err((
                format!("{field} offset"),
                format!("{offset} is not a multiple of the alignment {alignment}"),
            ));
        }
        let shape = ne
            .iter()
            .rev()
            .map(|&n| usize::try_from(n))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|_| {
                (
                    format!("{field} ne"),
                    "an extent exceeds the address space".into(),
                )
            })?;
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
            format!("the data section would start at {data_start}, past the end of the file ({file_len} bytes)"),
        ));
    }
    let data_len = file_len.saturating_sub(data_start);
    let mut out = Vec::with_capacity(tensors.len());
    for (field, mut info, size) in tensors {
        let end = info.offset.checked_add(size).filter(|&e| e <= data_len);
        let Some(end) = end else {
            return Err((
                format!("{field} offset"),
                format!(
                    "{} bytes at data offset {} run past the end of the data section ({data_len} bytes)",
                    size, info.offset
                ),
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
                format!(
                    "its data (file bytes {}..{}) overlaps tensor {:?} ({}..{})",
                    w[1].begin, w[1].end, w[0].name, w[0].begin, w[0].end
                ),
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
        return Err((
            field.to_string(),
            format!("the metadata holds more than {MAX_METADATA_VALUES} values"),
        ));
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
                other => return Err((fv(), format!("bool byte is {other}, expected 0 or 1"))),
            }
        }
        // Values that are not UTF-8 (some tokenizers' byte tokens) are kept lossily:
        // nothing archc reads depends on them.
        MetaType::Str => MetaValue::Str(String::from_utf8_lossy(c.raw_string(&fv)?).into_owned()),
        MetaType::Array => {
            if depth >= MAX_NESTING {
                return Err((
                    field.to_string(),
                    format!("arrays nested deeper than {MAX_NESTING}"),
                ));
            }
            let elem_id = c.u32(&|| format!("{field} array type"))?;
            let elem = MetaType::from_id(elem_id).ok_or_else(|| {
                (
                    format!("{field} array type"),
                    format!("unknown value type {elem_id}"),
                )
            })?;
            let count = c.u64(&|| format!("{field} array count"))?;
            let rest = c.remaining() as u64;
            if count > rest / min_size(elem) {
                return Err((
                    format!("{field} array count"),
                    format!(
                        "{count} {} items cannot fit in the {rest} bytes that remain",
                        elem.name()
                    ),
                ));
            }
            if count > *budget {
                return Err((
                    format!("{field} array count"),
                    format!("the metadata holds more than {MAX_METADATA_VALUES} values"),
                ));
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
