//! Running a kernel program on an NVIDIA GPU through the CUDA driver (cudarc, loaded at
//! run time): the program's kernels compiled to PTX for the device's architecture and
//! loaded once, parameters uploaded once (and shared by the prefill and decode programs
//! of a model, see `model`), one device buffer per root program buffer (aliases share
//! it), and every launch in order on one stream.
//!
//! Without a CUDA driver library or without a device, every entry point returns a
//! `CudaError` that says which; nothing panics (cudarc panics when the driver library is
//! missing, so `probe` checks for it first and every other entry point calls `probe`).
//!
//! Not done yet: keeping the KV cache and the temps on the device between calls (the
//! temps are allocated per call and the cache is copied back to the host after each
//! call and up again before the next), and CUDA graph capture of decode.

mod model;

pub use model::{CudaKv, CudaModel};

use archc_compiler::codegen::ptx::{self, PtxKernel, Sm};
use archc_compiler::kernel::{BufferKind, Elem, Program};
use cudarc::driver::PushKernelArg;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Why the GPU cannot be used or a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaError {
    /// No CUDA driver library (`libcuda.so`) could be loaded.
    NoDriver,
    /// The driver loaded but reports no device (or initialisation failed).
    NoDevice { message: String },
    /// The device is older than the code generator supports.
    Unsupported { message: String },
    /// Code generation, module loading, memory or a launch failed.
    Failed { message: String },
}

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CudaError::NoDriver => f.write_str(
                "no CUDA driver: libcuda could not be loaded (install the NVIDIA driver, or \
                 use a CPU backend)",
            ),
            CudaError::NoDevice { message } => write!(f, "no CUDA device: {message}"),
            CudaError::Unsupported { message } => write!(f, "unsupported GPU: {message}"),
            CudaError::Failed { message } => write!(f, "CUDA: {message}"),
        }
    }
}

impl std::error::Error for CudaError {}

fn failed(what: &str, e: impl fmt::Display) -> CudaError {
    CudaError::Failed {
        message: format!("{what}: {e}"),
    }
}

/// A usable device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    /// Compute capability (major, minor).
    pub capability: (i32, i32),
}

impl DeviceInfo {
    /// The architecture the kernels are generated for: `sm_90` on Hopper and newer,
    /// `sm_80` on Ampere and Ada.
    pub fn sm(&self) -> Result<Sm, CudaError> {
        match self.capability {
            (major, _) if major >= 9 => Ok(Sm::Sm90),
            (8, _) => Ok(Sm::Sm80),
            (major, minor) => Err(CudaError::Unsupported {
                message: format!(
                    "`{}` is compute capability {major}.{minor}; archc generates code for 8.0 \
                     and newer",
                    self.name
                ),
            }),
        }
    }
}

/// Checks for the driver library and device `ordinal` without panicking.
pub fn probe(ordinal: usize) -> Result<DeviceInfo, CudaError> {
    // SAFETY: only tries to open the library by its usual names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(CudaError::NoDriver);
    }
    let count = CudaContext::device_count().map_err(|e| CudaError::NoDevice {
        message: format!("the driver failed to initialise: {e}"),
    })?;
    if count <= 0 || ordinal >= count as usize {
        return Err(CudaError::NoDevice {
            message: format!("device {ordinal} requested, the driver reports {count}"),
        });
    }
    let ctx = CudaContext::new(ordinal).map_err(|e| CudaError::NoDevice {
        message: format!("device {ordinal}: {e}"),
    })?;
    Ok(DeviceInfo {
        ordinal,
        name: ctx.name().map_err(|e| failed("device name", e))?,
        capability: ctx
            .compute_capability()
            .map_err(|e| failed("compute capability", e))?,
    })
}

struct Loaded {
    ptx: PtxKernel,
    func: CudaFunction,
}

/// A kernel program compiled and loaded on a device, with its parameters uploaded.
pub struct CudaProgram {
    info: DeviceInfo,
    stream: Arc<CudaStream>,
    program: Program,
    kernels: Vec<Loaded>,
    /// The root buffer of each program buffer (itself unless an alias).
    roots: Vec<usize>,
    /// Uploaded parameters, possibly shared with other programs of the same model.
    params: Arc<DeviceParams>,
    /// Slot in `params` of each `Param` buffer, by program buffer index.
    param_slot: BTreeMap<usize, usize>,
}

/// Parameters uploaded to a device, each once per element type.
#[derive(Default)]
pub struct DeviceParams {
    index: BTreeMap<(String, &'static str), usize>,
    slices: Vec<CudaSlice<u8>>,
}

impl fmt::Debug for DeviceParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceParams")
            .field("tensors", &self.slices.len())
            .finish()
    }
}

impl DeviceParams {
    /// Whether parameter buffer `name` (as the program spells it) is uploaded as `elem`.
    pub fn contains(&self, name: &str, elem: Elem) -> bool {
        self.index.contains_key(&(name.to_string(), elem.as_str()))
    }

    /// Uploads `bytes` as parameter buffer `name` stored as `elem`, unless it is there.
    pub fn upload(
        &mut self,
        stream: &Arc<CudaStream>,
        name: &str,
        elem: Elem,
        bytes: &[u8],
    ) -> Result<(), CudaError> {
        let key = (name.to_string(), elem.as_str());
        if self.index.contains_key(&key) {
            return Ok(());
        }
        // A zero-length allocation has no pointer; one spare byte keeps every slice real.
        let dev = if bytes.is_empty() {
            stream.alloc_zeros::<u8>(1)
        } else {
            stream.clone_htod(bytes)
        }
        .map_err(|e| failed(&format!("uploading `{name}`"), e))?;
        self.slices.push(dev);
        self.index.insert(key, self.slices.len() - 1);
        Ok(())
    }
}

impl fmt::Debug for CudaProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaProgram")
            .field("device", &self.info)
            .field("program", &self.program.name)
            .field("kernels", &self.kernels.len())
            .finish()
    }
}

fn root_of(p: &Program, mut i: usize) -> Result<usize, CudaError> {
    for _ in 0..=p.buffers.len() {
        match p.buffers.get(i).map(|b| &b.kind) {
            Some(BufferKind::Alias { of }) => i = *of,
            Some(_) => return Ok(i),
            None => break,
        }
    }
    Err(CudaError::Failed {
        message: format!("program `{}`: buffer alias chain is broken at {i}", p.name),
    })
}

fn elem_bytes(p: &Program, i: usize, seq: usize, past: usize) -> Result<usize, CudaError> {
    let b = &p.buffers[i];
    b.shape
        .iter()
        .try_fold(b.elem.bytes(), |n, d| n.checked_mul(d.eval(seq, past)))
        .ok_or_else(|| CudaError::Failed {
            message: format!("the size of buffer `{}` overflows", b.name),
        })
}

impl CudaProgram {
    /// Compiles `program`'s kernels for device `ordinal` and loads them. `params` holds
    /// the bytes of every `Param` buffer by name (its storage type, little-endian); they
    /// are uploaded now, once.
    pub fn new(
        program: Program,
        ordinal: usize,
        params: &BTreeMap<String, &[u8]>,
    ) -> Result<CudaProgram, CudaError> {
        let info = probe(ordinal)?;
        // Refuse an old device before uploading anything to it.
        info.sm()?;
        let ctx = CudaContext::new(ordinal).map_err(|e| failed("context", e))?;
        let stream = ctx.default_stream();
        let mut uploaded = DeviceParams::default();
        for (i, b) in program.buffers.iter().enumerate() {
            if b.kind != BufferKind::Param {
                continue;
            }
            let bytes = params.get(&b.name).ok_or_else(|| CudaError::Failed {
                message: format!("no data for parameter `{}`", b.name),
            })?;
            let want = elem_bytes(&program, i, 0, 0)?;
            if bytes.len() != want {
                return Err(CudaError::Failed {
                    message: format!(
                        "parameter `{}` has {} bytes, expected {want}",
                        b.name,
                        bytes.len()
                    ),
                });
            }
            uploaded.upload(&stream, &b.name, b.elem, bytes)?;
        }
        CudaProgram::with_params(program, info, &ctx, stream, Arc::new(uploaded))
    }

    /// Compiles and loads `program` on `ctx`, reading its parameters from `params`, which
    /// must hold every `Param` buffer of the program (by name and element type).
    pub fn with_params(
        program: Program,
        info: DeviceInfo,
        ctx: &Arc<CudaContext>,
        stream: Arc<CudaStream>,
        params: Arc<DeviceParams>,
    ) -> Result<CudaProgram, CudaError> {
        let sm = info.sm()?;
        let compiled =
            ptx::emit_kernels(&program.kernels, sm).map_err(|e| failed("PTX generation", e))?;
        let mut kernels = Vec::with_capacity(compiled.len());
        for k in compiled {
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_src(k.ptx.clone()))
                .map_err(|e| failed(&format!("loading {}", k.file_name()), e))?;
            let func = module
                .load_function(&k.symbol)
                .map_err(|e| failed(&format!("kernel {}", k.symbol), e))?;
            kernels.push(Loaded { ptx: k, func });
        }
        let roots = (0..program.buffers.len())
            .map(|i| root_of(&program, i))
            .collect::<Result<Vec<_>, _>>()?;
        let mut param_slot = BTreeMap::new();
        for (i, b) in program.buffers.iter().enumerate() {
            if b.kind != BufferKind::Param {
                continue;
            }
            let slot = params
                .index
                .get(&(b.name.clone(), b.elem.as_str()))
                .copied()
                .ok_or_else(|| CudaError::Failed {
                    message: format!(
                        "program `{}`: parameter `{}` ({}) was not uploaded",
                        program.name,
                        b.name,
                        b.elem.as_str()
                    ),
                })?;
            param_slot.insert(i, slot);
        }
        Ok(CudaProgram {
            info,
            stream,
            program,
            kernels,
            roots,
            params,
            param_slot,
        })
    }

    /// The program this runs.
    pub fn program(&self) -> &Program {
        &self.program
    }

    pub fn device(&self) -> &DeviceInfo {
        &self.info
    }

    /// The compiled kernels, in program order.
    pub fn kernels(&self) -> impl Iterator<Item = &PtxKernel> {
        self.kernels.iter().map(|k| &k.ptx)
    }

    /// Runs every launch for `seq` new tokens after `past` cached ones. `inputs` holds the
    /// bytes of every `Input` buffer by name; the `Output` buffers come back by name.
    pub fn run(
        &self,
        inputs: &BTreeMap<String, &[u8]>,
        seq: usize,
        past: usize,
    ) -> Result<BTreeMap<String, Vec<u8>>, CudaError> {
        let p = &self.program;
        // One allocation per root buffer that is not a parameter.
        let mut mem: BTreeMap<usize, CudaSlice<u8>> = BTreeMap::new();
        for (i, b) in p.buffers.iter().enumerate() {
            if self.roots[i] != i || b.kind == BufferKind::Param {
                continue;
            }
            let bytes = elem_bytes(p, i, seq, past)?;
            let dev = if b.kind == BufferKind::Input {
                let data = inputs.get(&b.name).ok_or_else(|| CudaError::Failed {
                    message: format!("no data for input `{}`", b.name),
                })?;
                if data.len() != bytes {
                    return Err(CudaError::Failed {
                        message: format!(
                            "input `{}` has {} bytes, expected {bytes}",
                            b.name,
                            data.len()
                        ),
                    });
                }
                if bytes == 0 {
                    self.stream.alloc_zeros::<u8>(1)
                } else {
                    self.stream.clone_htod(*data)
                }
            } else {
                self.stream.alloc_zeros::<u8>(bytes.max(1))
            };
            mem.insert(
                i,
                dev.map_err(|e| failed(&format!("buffer `{}`", b.name), e))?,
            );
        }
        let ptr_of = |i: usize| -> Result<u64, CudaError> {
            let r = self.roots[i];
            let param = self
                .param_slot
                .get(&r)
                .and_then(|&s| self.params.slices.get(s));
            let slice = param
                .or_else(|| mem.get(&r))
                .ok_or_else(|| CudaError::Failed {
                    message: format!("buffer {i} has no device memory"),
                })?;
            let (ptr, _sync) = slice.device_ptr(&self.stream);
            Ok(ptr)
        };
        let (seq_i, past_i) = (seq as i64, past as i64);
        for (n, launch) in p.launches.iter().enumerate() {
            let k = self
                .kernels
                .get(launch.kernel)
                .ok_or_else(|| CudaError::Failed {
                    message: format!("launch {n} names kernel {}", launch.kernel),
                })?;
            let mut ptrs = Vec::new();
            for param in &k.ptx.params {
                if let ptx::Param::Buffer { buf, name, .. } = param {
                    let bound = launch.bufs.get(*buf).copied().flatten().ok_or_else(|| {
                        CudaError::Failed {
                            message: format!("launch {n}: parameter `{name}` is unbound"),
                        }
                    })?;
                    ptrs.push(ptr_of(bound)?);
                }
            }
            let shape = &k.ptx.plan.launch;
            let cfg = LaunchConfig {
                grid_dim: (shape.grid(seq_i, past_i), 1, 1),
                block_dim: (shape.block, 1, 1),
                // Scratch is static shared memory, declared in the PTX.
                shared_mem_bytes: 0,
            };
            let mut args = self.stream.launch_builder(&k.func);
            for ptr in &ptrs {
                args.arg(ptr);
            }
            args.arg(&seq_i);
            args.arg(&past_i);
            // SAFETY: the arguments match the kernel's parameters (one device pointer per
            // buffer, then two i64), and each buffer holds the elements the kernel
            // touches at these sizes, as the program's buffer table says.
            unsafe { args.launch(cfg) }
                .map_err(|e| failed(&format!("launch {n} ({})", k.ptx.symbol), e))?;
        }
        let mut out = BTreeMap::new();
        for (i, b) in p.buffers.iter().enumerate() {
            if b.kind != BufferKind::Output {
                continue;
            }
            let r = self.roots[i];
            let slice = mem.get(&r).ok_or_else(|| CudaError::Failed {
                message: format!("output `{}` has no device memory", b.name),
            })?;
            let mut bytes = self
                .stream
                .clone_dtoh(slice)
                .map_err(|e| failed(&format!("reading `{}`", b.name), e))?;
            bytes.truncate(elem_bytes(p, i, seq, past)?);
            out.insert(b.name.clone(), bytes);
        }
        Ok(out)
    }
}
