//! Checkpoint tensors: dtypes, borrowed views, and opening an HF model directory
//! (one `model.safetensors` or shards listed in `model.safetensors.index.json`).

pub mod gguf;
mod multimodal;
pub mod safetensors;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

pub use safetensors::{IndexProblem, SafetensorsError, SafetensorsFile, TensorInfo};

/// A file operation on a checkpoint that failed (safetensors and GGUF alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAction {
    Open,
    Stat,
    Map,
}

/// Maps the `len` bytes at `offset` of the file at `path` read-only (a file embedded in
/// a larger one; see `GgufFile::open_at`), or says which step failed. The range must lie
/// inside the file and not be empty.
pub(crate) fn map_range(
    path: &Path,
    offset: u64,
    len: u64,
) -> Result<memmap2::Mmap, (FileAction, std::io::Error)> {
    let file = std::fs::File::open(path).map_err(|e| (FileAction::Open, e))?;
    let total = file.metadata().map_err(|e| (FileAction::Stat, e))?.len();
    let fits = offset.checked_add(len).is_some_and(|end| end <= total);
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| fits && l > 0)
        .ok_or_else(|| {
            let why = format!("{len} bytes at {offset} do not fit in the file's {total}");
            (
                FileAction::Map,
                std::io::Error::new(std::io::ErrorKind::InvalidData, why),
            )
        })?;
    // SAFETY: read-only and private; as every memory-mapping loader, this assumes the
    // file is not modified while it is mapped.
    unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .map(&file)
    }
    .map_err(|e| (FileAction::Map, e))
}

impl fmt::Display for FileAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileAction::Open => "cannot open",
            FileAction::Stat => "cannot stat",
            FileAction::Map => "cannot map",
        })
    }
}

/// Element type of a checkpoint tensor, as safetensors names it.
///
/// Only `F32`, `F16` and `BF16` can be read as numbers; the others are recognised so
/// that their byte sizes can be checked and so that a tensor of such a type gets an
/// "unsupported dtype" error naming it rather than a parse failure of the whole file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
    F8E4M3,
    F8E5M2,
}

impl Dtype {
    /// Parses the safetensors spelling (`"F32"`, `"BF16"`, ...).
    pub fn from_safetensors(s: &str) -> Option<Dtype> {
        Some(match s {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::Bf16,
            "F64" => Dtype::F64,
            "I64" => Dtype::I64,
            "I32" => Dtype::I32,
            "I16" => Dtype::I16,
            "I8" => Dtype::I8,
            "U64" => Dtype::U64,
            "U32" => Dtype::U32,
            "U16" => Dtype::U16,
            "U8" => Dtype::U8,
            "BOOL" => Dtype::Bool,
            "F8_E4M3" => Dtype::F8E4M3,
            "F8_E5M2" => Dtype::F8E5M2,
            _ => return None,
        })
    }

    /// The safetensors spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::Bf16 => "BF16",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::I16 => "I16",
            Dtype::I8 => "I8",
            Dtype::U64 => "U64",
            Dtype::U32 => "U32",
            Dtype::U16 => "U16",
            Dtype::U8 => "U8",
            Dtype::Bool => "BOOL",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E5M2 => "F8_E5M2",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
            Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
            Dtype::F16 | Dtype::Bf16 | Dtype::I16 | Dtype::U16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool | Dtype::F8E4M3 | Dtype::F8E5M2 => 1,
        }
    }

    /// Whether the runtime can read this dtype as numbers.
    pub fn is_supported(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F16 | Dtype::Bf16)
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A borrowed tensor: dtype, shape and little-endian bytes in C order.
///
/// The bytes may point straight into a memory-mapped file, so they carry no alignment
/// guarantee; read elements with [`TensorView::to_f32`] or [`decode_f32`].
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

impl TensorView<'_> {
    /// Number of elements (the product of the shape).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Converts to f32. Returns `None` for a dtype the runtime cannot read.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        decode_f32(self.dtype, self.bytes)
    }
}

/// Decodes little-endian elements of `dtype` to f32; `None` for unsupported dtypes.
/// A trailing partial element (which a checked view never has) is ignored.
pub fn decode_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    match dtype {
        Dtype::F32 => Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::F16 => Some(
            bytes
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        Dtype::Bf16 => Some(
            bytes
                .chunks_exact(2)
                .map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        _ => None,
    }
}

pub use archc_compiler::floats::{bf16_to_f32, f16_to_f32};

/// The `quantization_config` object of `dir/config.json`, when the file is there, reads
/// as JSON and has one. A config that cannot be read is `import`'s to report; binding then
/// refuses quantised tensors it cannot interpret.
fn quantization_config(dir: &Path) -> Option<serde_json::Value> {
    let path = dir.join("config.json");
    let bytes = archc_spec::source::read_bounded(&path, archc_spec::source::MAX_JSON_BYTES).ok()?;
    let mut config: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    // A multimodal config keeps it at the top level or in its text config.
    let q = config
        .get_mut("quantization_config")
        .map(serde_json::Value::take);
    q.or_else(|| {
        config
            .get_mut("text_config")?
            .get_mut("quantization_config")
            .map(serde_json::Value::take)
    })
}

/// The shard file names `model.safetensors.index.json` refers to, and where each tensor lives.
const INDEX_FILE: &str = "model.safetensors.index.json";
const SINGLE_FILE: &str = "model.safetensors";

/// All tensors of a checkpoint, possibly spread over several memory-mapped files.
#[derive(Debug)]
pub struct Checkpoint {
    files: Vec<SafetensorsFile>,
    /// Tensor name to the index of the file that holds it.
    names: BTreeMap<String, usize>,
    /// Names under which a tensor is known that differ from its stored name (the text
    /// model of a multimodal checkpoint): known name to stored name.
    alias: BTreeMap<String, String>,
    /// The `quantization_config` of the `config.json` next to the files, where there is
    /// one (how FP8 and MXFP4 weights are to be read; binding checks it).
    quantization: Option<serde_json::Value>,
}

impl Checkpoint {
    /// Opens a model directory (`model.safetensors.index.json` when present, else
    /// `model.safetensors`) or a single `.safetensors` file.
    pub fn open(path: &Path) -> Result<Checkpoint, SafetensorsError> {
        let dir = if path.is_dir() {
            Some(path)
        } else {
            path.parent()
        };
        let quantization = dir.and_then(quantization_config);
        Ok(Checkpoint::open_files(path)?.with_quantization(quantization))
    }

    /// The checkpoint with `quantization` as its `quantization_config` (what
    /// [`Checkpoint::open`] reads from `config.json`).
    pub fn with_quantization(mut self, quantization: Option<serde_json::Value>) -> Checkpoint {
        self.quantization = quantization;
        self
    }

    /// The `quantization_config` object of the checkpoint's `config.json`, if any.
    pub fn quantization(&self) -> Option<&serde_json::Value> {
        self.quantization.as_ref()
    }

    fn open_files(path: &Path) -> Result<Checkpoint, SafetensorsError> {
        if path.is_dir() {
            let index = path.join(INDEX_FILE);
            if index.is_file() {
                return Checkpoint::open_index(&index);
            }
            let single = path.join(SINGLE_FILE);
            if single.is_file() {
                return Checkpoint::from_files(vec![SafetensorsFile::open(&single)?]);
            }
            return Err(SafetensorsError::NoCheckpoint {
                dir: path.to_path_buf(),
            });
        }
        if path.file_name().is_some_and(|n| n == INDEX_FILE) {
            return Checkpoint::open_index(path);
        }
        Checkpoint::from_files(vec![SafetensorsFile::open(path)?])
    }

    /// Opens a sharded checkpoint from its index: every shard must exist and hold
    /// exactly the tensors the index assigns to it.
    pub fn open_index(index: &Path) -> Result<Checkpoint, SafetensorsError> {
        let err = |tensor: Option<&str>, problem: IndexProblem| SafetensorsError::Index {
            index: index.to_path_buf(),
            tensor: tensor.map(str::to_string),
            problem,
        };
        let bytes = archc_spec::source::read_bounded(index, archc_spec::source::MAX_JSON_BYTES)
            .map_err(|e| {
                err(
                    None,
                    IndexProblem::Read(match e {
                        archc_spec::source::ReadError::Io(e) => e,
                        other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
                    }),
                )
            })?;
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| err(None, IndexProblem::Json(e)))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| err(None, IndexProblem::NoWeightMap))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        // Sorted maps make the first error reported deterministic.
        let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (tensor, shard) in map {
            let shard = shard
                .as_str()
                .ok_or_else(|| err(Some(tensor), IndexProblem::NotFileName))?;
            if shard.is_empty()
                || shard.contains('/')
                || shard.contains('\\')
                || shard == "."
                || shard == ".."
            {
                return Err(err(
                    Some(tensor),
                    IndexProblem::ShardNotPlain {
                        shard: shard.to_string(),
                    },
                ));
            }
            expected
                .entry(shard.to_string())
                .or_default()
                .insert(tensor.clone());
        }
        let mut files = Vec::new();
        for (shard, tensors) in &expected {
            let shard_path = dir.join(shard);
            if !shard_path.is_file() {
                let first = tensors.iter().next().map(String::as_str);
                return Err(err(
                    first,
                    IndexProblem::ShardMissing {
                        shard: shard.clone(),
                        tensors: tensors.len(),
                    },
                ));
            }
            let file = SafetensorsFile::open(&shard_path)?;
            for tensor in tensors {
                if file.info(tensor).is_none() {
                    return Err(err(
                        Some(tensor),
                        IndexProblem::NotInShard {
                            shard: shard.clone(),
                        },
                    ));
                }
            }
            for tensor in file.names() {
                if !tensors.contains(tensor) {
                    let listed = map.get(tensor).and_then(|v| v.as_str());
                    let shard = shard.clone();
                    let problem = match listed {
                        Some(other) => IndexProblem::ListedElsewhere {
                            shard,
                            listed: other.to_string(),
                        },
                        None => IndexProblem::Unlisted { shard },
                    };
                    return Err(err(Some(tensor), problem));
                }
            }
            files.push(file);
        }
        Checkpoint::from_files(files)
    }

    /// A checkpoint of one already-open file (e.g. one built in memory with
    /// [`SafetensorsFile::from_bytes`]).
    pub fn from_file(file: SafetensorsFile) -> Checkpoint {
        let names = file.names().map(|n| (n.to_string(), 0)).collect();
        Checkpoint {
            files: vec![file],
            names,
            alias: BTreeMap::new(),
            quantization: None,
        }
    }

    /// A checkpoint of already-open files (shards embedded in an executable, say): each
    /// tensor must be in exactly one of them.
    pub fn from_open_files(files: Vec<SafetensorsFile>) -> Result<Checkpoint, SafetensorsError> {
        Checkpoint::from_files(files)
    }

    fn from_files(files: Vec<SafetensorsFile>) -> Result<Checkpoint, SafetensorsError> {
        let mut names = BTreeMap::new();
        for (i, file) in files.iter().enumerate() {
            for name in file.names() {
                if let Some(prev) = names.insert(name.to_string(), i) {
                    return Err(SafetensorsError::TwoFiles {
                        file: file.path().to_path_buf(),
                        tensor: name.to_string(),
                        other: files[prev].path().to_path_buf(),
                    });
                }
            }
        }
        Ok(Checkpoint {
            files,
            names,
            alias: BTreeMap::new(),
            quantization: None,
        })
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Header information of a tensor, if present.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        let stored = self.stored(name);
        self.names
            .get(name)
            .and_then(|&i| self.files[i].info(stored))
    }

    /// The tensor's bytes, zero-copy. Errors if absent or of an unsupported dtype.
    pub fn get(&self, name: &str) -> Result<TensorView<'_>, SafetensorsError> {
        self.view(name, false)
    }

    /// [`Checkpoint::get`] whatever the tensor's dtype: its bytes, for binding to read
    /// FP8 weights and MXFP4 blocks and scales.
    pub fn get_raw(&self, name: &str) -> Result<TensorView<'_>, SafetensorsError> {
        self.view(name, true)
    }

    fn view(&self, name: &str, raw: bool) -> Result<TensorView<'_>, SafetensorsError> {
        match self.names.get(name) {
            Some(&i) if raw => self.files[i].get_raw(self.stored(name)),
            Some(&i) => self.files[i].get(self.stored(name)),
            None => Err(SafetensorsError::NoSuchTensor {
                file: self.files.first().map_or_else(
                    || PathBuf::from("<empty checkpoint>"),
                    |f| f.path().to_path_buf(),
                ),
                tensor: name.to_string(),
            }),
        }
    }

    /// The name a tensor has in its file (another than `name` only for the text model of
    /// a multimodal checkpoint).
    pub fn stored<'a>(&'a self, name: &'a str) -> &'a str {
        self.alias.get(name).map_or(name, String::as_str)
    }

    /// The file that holds a tensor (for error messages).
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.names.get(name).map(|&i| self.files[i].path())
    }

    /// The paths of all files, in load order.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path().to_path_buf()).collect()
    }
}
