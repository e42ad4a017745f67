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
//! Device memory stays between calls: a `Workspace` holds one allocation per root buffer
//! of a program (temps, tokens, positions, logits), grown but never shrunk, so a decode
//! step allocates nothing; the KV cache lives on the device in `CudaKv` (see `model`).
//! Buffers that a kernel reads before any kernel writes them are zeroed before each call,
//! as the CPU executor does. A program's launches may run as one CUDA graph (`graph`),
//! with plain launches as the fallback.
//!
//! Kernel scratch lives where the PTX plan put it (`ptx::plan`): static shared memory
//! in the PTX; dynamic shared memory past 48 KiB, which each such kernel is opted in to
//! when loaded (refused, naming the kernel, where the device's per-block limit is lower)
//! and which every launch and graph node passes; or a module-level global array of
//! per-warp slices, which is why the launches of one module never overlap (one stream)
//! and the grid is capped by `LaunchShape::grid`.

mod graph;
mod model;

pub use model::{CudaKv, CudaModel, CudaOptions};

use archc_compiler::codegen::ptx::{self, PtxKernel, Sm};
use archc_compiler::kernel::analysis::{analyze, ProgramInfo};
use archc_compiler::kernel::{BufferKind, Elem, Program};
use cudarc::driver::PushKernelArg;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig};
pub use graph::{GraphCall, GraphError};
use graph::{LaunchArgs, LaunchGraph};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

/// Why the GPU cannot be used or a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaError {
    /// No CUDA driver library (`libcuda.so`) could be loaded.
    NoDriver,
    /// The driver loaded but reports no device (or initialisation failed).
    NoDevice { message: String },
    /// The device is older than the code generator supports.
    Unsupported { message: String },
    /// A parameter cannot be uploaded as the program reads it (missing, mis-shaped, or of
    /// a type no checkpoint stores).
    Param { name: String, message: String },
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
            CudaError::Param { name, message } => write!(f, "parameter `{name}`: {message}"),
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
    /// Whether the kernel reads `past` (the graph node of a kernel that does not needs no
    /// update when it changes).
    uses_past: bool,
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
    /// Bytes uploaded in all.
    pub fn bytes(&self) -> usize {
        self.slices.iter().map(CudaSlice::len).sum()
    }

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

/// Device memory of one buffer, kept between calls and grown (never shrunk) to what a
/// call needs.
#[derive(Default)]
pub(crate) struct DevBuf {
    mem: Option<CudaSlice<u8>>,
}

impl fmt::Debug for DevBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevBuf({} bytes)", self.capacity())
    }
}

impl DevBuf {
    /// Bytes allocated (0 before the first call).
    pub(crate) fn capacity(&self) -> usize {
        self.mem.as_ref().map_or(0, CudaSlice::len)
    }

    /// Makes room for `bytes` (at least one, so that the pointer is real) and returns the
    /// device pointer. Growing drops the contents; with `double` the new size is at least
    /// twice the old, so a buffer that grows by a row per token reallocates rarely.
    pub(crate) fn reserve(
        &mut self,
        stream: &Arc<CudaStream>,
        bytes: usize,
        double: bool,
        what: &str,
    ) -> Result<u64, CudaError> {
        let need = bytes.max(1);
        let cap = self.capacity();
        if need > cap {
            let size = if double && cap > 0 {
                need.max(cap.saturating_mul(2))
            } else {
                need
            };
            // Free the old block first so that both never exist at once.
            self.mem = None;
            let mem = stream
                .alloc_zeros::<u8>(size)
                .map_err(|e| failed(&format!("allocating {size} bytes for {what}"), e))?;
            self.mem = Some(mem);
        }
        self.ptr(stream).ok_or_else(|| CudaError::Failed {
            message: format!("{what} has no device memory"),
        })
    }

    /// Makes room for `bytes` keeping the first `keep` bytes (an in-place cache that
    /// grows): a new block at least twice the old, the kept bytes copied on the device.
    pub(crate) fn grow_keeping(
        &mut self,
        stream: &Arc<CudaStream>,
        bytes: usize,
        keep: usize,
        what: &str,
    ) -> Result<u64, CudaError> {
        let cap = self.capacity();
        if bytes.max(1) > cap {
            let size = bytes.max(1).max(cap.saturating_mul(2));
            let mut mem = stream
                .alloc_zeros::<u8>(size)
                .map_err(|e| failed(&format!("allocating {size} bytes for {what}"), e))?;
            let keep = keep.min(cap);
            if let Some(old) = self.mem.as_ref().filter(|_| keep > 0) {
                stream
                    .memcpy_dtod(&old.slice(0..keep), &mut mem.slice_mut(0..keep))
                    .map_err(|e| failed(&format!("moving {what}"), e))?;
            }
            self.mem = Some(mem);
        }
        self.ptr(stream).ok_or_else(|| CudaError::Failed {
            message: format!("{what} has no device memory"),
        })
    }

    /// The device pointer, once allocated.
    pub(crate) fn ptr(&self, stream: &CudaStream) -> Option<u64> {
        self.mem.as_ref().map(|m| m.device_ptr(stream).0)
    }

    /// The first `bytes` bytes, copied to the host.
    pub(crate) fn read(
        &self,
        stream: &Arc<CudaStream>,
        bytes: usize,
        what: &str,
    ) -> Result<Vec<u8>, CudaError> {
        let mem = self
            .mem
            .as_ref()
            .filter(|m| m.len() >= bytes)
            .ok_or_else(|| CudaError::Failed {
                message: format!(
                    "{what}: {bytes} bytes requested, {} on the device",
                    self.capacity()
                ),
            })?;
        stream
            .clone_dtoh(&mem.slice(0..bytes))
            .map_err(|e| failed(&format!("reading {what}"), e))
    }

    /// Copies `data` to the start of the buffer, growing it first if needed.
    pub(crate) fn write(
        &mut self,
        stream: &Arc<CudaStream>,
        data: &[u8],
        what: &str,
    ) -> Result<u64, CudaError> {
        let ptr = self.reserve(stream, data.len(), false, what)?;
        if let Some(mem) = self.mem.as_mut().filter(|_| !data.is_empty()) {
            stream
                .memcpy_htod(data, &mut mem.slice_mut(0..data.len()))
                .map_err(|e| failed(&format!("uploading {what}"), e))?;
        }
        Ok(ptr)
    }
}

/// A program's device memory between calls: one `DevBuf` per buffer (used for the
/// roots that are not parameters, inputs handled by the caller or the KV cache), and the
/// program's CUDA graph once one is built.
#[derive(Debug, Default)]
pub struct Workspace {
    pub(crate) bufs: Vec<DevBuf>,
    graph: Option<LaunchGraph>,
    /// Why the graph path was given up, once it failed (then plain launches are used).
    graph_error: Option<GraphError>,
    /// Calls that ran as a graph replay.
    graph_replays: u64,
}

impl Workspace {
    /// Device bytes held.
    pub fn bytes(&self) -> usize {
        self.bufs.iter().map(DevBuf::capacity).sum()
    }

    /// Why this workspace launches kernels one by one although graphs were asked for.
    pub fn graph_error(&self) -> Option<&GraphError> {
        self.graph_error.as_ref()
    }

    /// How many calls ran as a graph replay.
    pub fn graph_replays(&self) -> u64 {
        self.graph_replays
    }

    pub(crate) fn buf(&mut self, i: usize) -> &mut DevBuf {
        if self.bufs.len() <= i {
            self.bufs.resize_with(i + 1, DevBuf::default);
        }
        &mut self.bufs[i]
    }
}

/// A kernel program compiled and loaded on a device, with its parameters uploaded.
pub struct CudaProgram {
    device: DeviceInfo,
    stream: Arc<CudaStream>,
    program: Program,
    /// The program's analysis, shared with every other executor.
    analysis: ProgramInfo,
    kernels: Vec<Loaded>,
    /// Uploaded parameters, possibly shared with other programs of the same model.
    params: Arc<DeviceParams>,
    /// Device pointer of each `Param` buffer, by program buffer index.
    param_ptr: BTreeMap<usize, u64>,
    /// Root buffers some launch reads before any launch writes them: zeroed before
    /// every call so that the read is deterministic.
    zero_first: Vec<usize>,
}

impl fmt::Debug for CudaProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaProgram")
            .field("device", &self.device)
            .field("program", &self.program.name)
            .field("kernels", &self.kernels.len())
            .field("params", &self.params)
            .finish()
    }
}

/// Bytes of buffer `i` of `p` at these sizes.
pub(crate) fn elem_bytes(
    p: &Program,
    i: usize,
    seq: usize,
    past: usize,
) -> Result<usize, CudaError> {
    let b = p.buffers.get(i).ok_or_else(|| CudaError::Failed {
        message: format!("program `{}` has no buffer {i}", p.name),
    })?;
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
        let device = probe(ordinal)?;
        // Refuse an old device before uploading anything to it.
        device.sm()?;
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
        CudaProgram::with_params(program, device, &ctx, stream, Arc::new(uploaded))
    }

    /// Compiles and loads `program` on `ctx`, reading its parameters from `params`, which
    /// must hold every `Param` buffer of the program (by name and element type).
    pub fn with_params(
        program: Program,
        device: DeviceInfo,
        ctx: &Arc<CudaContext>,
        stream: Arc<CudaStream>,
        params: Arc<DeviceParams>,
    ) -> Result<CudaProgram, CudaError> {
        let sm = device.sm()?;
        let analysis = analyze(&program.doc()).map_err(|e| CudaError::Failed {
            message: format!("program `{}`: {e}", program.name),
        })?;
        let compiled =
            archc_compiler::driver::ptx(&program, sm).map_err(|e| failed("PTX generation", e))?;
        let mut kernels = Vec::with_capacity(compiled.len());
        // The shared memory a block may opt in to (227 KiB on sm_90, 163 KiB on sm_80),
        // asked for only when some kernel needs more than the default 48 KiB.
        let mut optin: Option<u64> = None;
        for (ki, k) in compiled.into_iter().enumerate() {
            let launch = &k.plan.launch;
            let dynamic = launch.dynamic_shared_bytes;
            if dynamic > 0 {
                let limit = match optin {
                    Some(l) => l,
                    None => {
                        let attr = cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN;
                        let l = ctx
                            .attribute(attr)
                            .map_err(|e| failed("the device's shared memory limit", e))?;
                        let l = u64::try_from(l).unwrap_or(0);
                        optin = Some(l);
                        l
                    }
                };
                check_shared(&k, &device.name, limit)?;
            }
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_src(k.ptx.clone()))
                .map_err(|e| failed(&format!("loading {}", k.file_name()), e))?;
            let func = module
                .load_function(&k.symbol)
                .map_err(|e| failed(&format!("kernel {}", k.symbol), e))?;
            if dynamic > 0 {
                let attr = cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
                // `check_shared` bounded it by the device's limit, an i32.
                func.set_attribute(attr, dynamic as i32).map_err(|e| {
                    failed(
                        &format!(
                            "opting kernel {} in to {dynamic} B of shared memory",
                            k.symbol
                        ),
                        e,
                    )
                })?;
            }
            kernels.push(Loaded {
                ptx: k,
                func,
                uses_past: analysis.uses_past[ki],
            });
        }
        let mut param_ptr = BTreeMap::new();
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
            let ptr = params
                .slices
                .get(slot)
                .map(|s| s.device_ptr(&stream).0)
                .ok_or_else(|| CudaError::Failed {
                    message: format!("parameter slot {slot} is missing"),
                })?;
            param_ptr.insert(i, ptr);
        }
        // The KV cache and states hold the model's state: the analysis never lists them.
        let zero_first = analysis.read_before_write.clone();
        Ok(CudaProgram {
            device,
            stream,
            program,
            analysis,
            kernels,
            params,
            param_ptr,
            zero_first,
        })
    }

    /// The program this runs.
    pub fn program(&self) -> &Program {
        &self.program
    }

    pub fn device(&self) -> &DeviceInfo {
        &self.device
    }

    /// The program's analysis.
    pub fn analysis(&self) -> &ProgramInfo {
        &self.analysis
    }

    /// The compiled kernels, in program order.
    pub fn kernels(&self) -> impl Iterator<Item = &PtxKernel> {
        self.kernels.iter().map(|k| &k.ptx)
    }

    /// The root buffer of buffer `i`.
    pub(crate) fn root(&self, i: usize) -> usize {
        self.analysis.roots.get(i).copied().unwrap_or(i)
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The arguments of every launch at these sizes; `ptrs` holds the device pointer of
    /// every root buffer (by buffer index).
    fn launch_args(
        &self,
        ptrs: &[u64],
        seq: usize,
        past: usize,
    ) -> Result<Vec<LaunchArgs>, CudaError> {
        let (seq_i, past_i) = (seq as i64, past as i64);
        let mut out = Vec::with_capacity(self.program.launches.len());
        for (n, launch) in self.program.launches.iter().enumerate() {
            let k = self
                .kernels
                .get(launch.kernel)
                .ok_or_else(|| CudaError::Failed {
                    message: format!("launch {n} names kernel {}", launch.kernel),
                })?;
            let mut bufs = Vec::with_capacity(k.ptx.params.len());
            for param in &k.ptx.params {
                if let ptx::Param::Buffer { buf, name, .. } = param {
                    let bound = launch.bufs.get(*buf).copied().flatten().ok_or_else(|| {
                        CudaError::Failed {
                            message: format!("launch {n}: parameter `{name}` is unbound"),
                        }
                    })?;
                    let ptr = ptrs
                        .get(self.root(bound))
                        .copied()
                        .filter(|&p| p != 0)
                        .ok_or_else(|| CudaError::Failed {
                            message: format!(
                                "launch {n}: buffer `{}` has no device memory",
                                self.program.buffers.get(bound).map_or("?", |b| &b.name)
                            ),
                        })?;
                    bufs.push(ptr);
                }
            }
            let shape = &k.ptx.plan.launch;
            out.push(LaunchArgs {
                func: k.func.cu_function(),
                grid: shape.grid(seq_i, past_i),
                block: shape.block,
                // Checked against the device's limit (so below 2^32) when loaded.
                shared: shape.dynamic_shared_bytes as u32,
                ptrs: bufs,
                seq: seq_i,
                past: past_i,
                uses_past: k.uses_past,
            });
        }
        Ok(out)
    }

    /// Runs every launch for `seq` new tokens after `past` cached ones, with the buffers
    /// at `ptrs` (a device pointer for every root buffer, by index; parameters are filled
    /// in here), as one graph when `use_graph` and the graph path works, else launch by
    /// launch. Asynchronous: the work is queued on the stream.
    pub(crate) fn execute(
        &self,
        ws: &mut Workspace,
        ptrs: &mut [u64],
        seq: usize,
        past: usize,
        use_graph: bool,
    ) -> Result<(), CudaError> {
        for (&i, &p) in &self.param_ptr {
            if let Some(slot) = ptrs.get_mut(i) {
                *slot = p;
            }
        }
        for &r in &self.zero_first {
            let bytes = elem_bytes(&self.program, r, seq, past)?;
            let ptr = ptrs.get(r).copied().unwrap_or(0);
            if bytes == 0 || ptr == 0 {
                continue;
            }
            // SAFETY: `ptr` is a live allocation of at least `bytes` bytes (the caller
            // reserved every root buffer for these sizes) made on this stream's context.
            unsafe {
                cudarc::driver::result::memset_d8_async(ptr, 0, bytes, self.stream.cu_stream())
            }
            .map_err(|e| failed(&format!("zeroing `{}`", self.program.buffers[r].name), e))?;
        }
        let launches = self.launch_args(ptrs, seq, past)?;
        if use_graph && ws.graph_error.is_none() {
            match self.replay(ws, &launches) {
                Ok(()) => {
                    ws.graph_replays += 1;
                    return Ok(());
                }
                Err(e) => {
                    // Nothing of this call was queued: launch it the plain way, from now on.
                    ws.graph = None;
                    ws.graph_error = Some(e);
                }
            }
        }
        for (n, l) in launches.iter().enumerate() {
            let k = &self.kernels[self.program.launches[n].kernel];
            let cfg = LaunchConfig {
                grid_dim: (l.grid, 1, 1),
                block_dim: (l.block, 1, 1),
                // Scratch beyond 48 KiB is dynamic shared memory, sized at the launch.
                shared_mem_bytes: l.shared,
            };
            let mut args = self.stream.launch_builder(&k.func);
            for ptr in &l.ptrs {
                args.arg(ptr);
            }
            args.arg(&l.seq);
            args.arg(&l.past);
            // SAFETY: the arguments match the kernel's parameters (one device pointer per
            // buffer, then two i64), and each buffer holds the elements the kernel
            // touches at these sizes, as the program's buffer table says.
            unsafe { args.launch(cfg) }
                .map_err(|e| failed(&format!("launch {n} ({})", k.ptx.symbol), e))?;
        }
        Ok(())
    }

    /// Replays the workspace's graph for `launches`, building it first when there is none
    /// for this shape.
    fn replay(&self, ws: &mut Workspace, launches: &[LaunchArgs]) -> Result<(), GraphError> {
        self.stream
            .context()
            .bind_to_thread()
            .map_err(|e| GraphError::Driver {
                call: GraphCall::BindContext,
                result: e.0,
            })?;
        let graph = match ws.graph.take() {
            Some(g) if g.fits(launches) => ws.graph.insert(g),
            _ => ws.graph.insert(LaunchGraph::build(launches)?),
        };
        graph.replay(launches, self.stream.cu_stream())
    }

    /// Runs every launch for `seq` new tokens after `past` cached ones. `inputs` holds the
    /// bytes of every `Input` buffer by name; the `Output` and `Append` buffers (the grown
    /// caches) come back by name. The memory is allocated for this call alone.
    pub fn run(
        &self,
        inputs: &BTreeMap<String, &[u8]>,
        seq: usize,
        past: usize,
    ) -> Result<BTreeMap<String, Vec<u8>>, CudaError> {
        let p = &self.program;
        let mut ws = Workspace::default();
        let mut ptrs = vec![0u64; p.buffers.len()];
        // An in-place append and its input share one buffer: the input's bytes at the
        // start, room for the grown size (`BufferKind::Append`).
        let mut appended = vec![false; p.buffers.len()];
        for (i, b) in p.buffers.iter().enumerate() {
            let BufferKind::Append { to } = b.kind else {
                continue;
            };
            let input = p.buffers.get(to).ok_or_else(|| CudaError::Failed {
                message: format!("`{}` appends to buffer {to}, which does not exist", b.name),
            })?;
            let data = inputs.get(&input.name).ok_or_else(|| CudaError::Failed {
                message: format!("no data for input `{}`", input.name),
            })?;
            let keep = elem_bytes(p, to, seq, past)?;
            if data.len() != keep {
                return Err(CudaError::Failed {
                    message: format!(
                        "input `{}` has {} bytes, expected {keep}",
                        input.name,
                        data.len()
                    ),
                });
            }
            let bytes = elem_bytes(p, i, seq, past)?;
            let what = format!("buffer `{}`", b.name);
            let buf = ws.buf(i);
            buf.reserve(&self.stream, bytes, false, &what)?;
            ptrs[i] = buf.write(&self.stream, data, &what)?;
            ptrs[to] = ptrs[i];
            appended[i] = true;
            appended[to] = true;
        }
        for (i, b) in p.buffers.iter().enumerate() {
            if self.root(i) != i || b.kind == BufferKind::Param || appended[i] {
                continue;
            }
            let bytes = elem_bytes(p, i, seq, past)?;
            let what = format!("buffer `{}`", b.name);
            ptrs[i] = if matches!(b.kind, BufferKind::Input(_)) {
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
                ws.buf(i).write(&self.stream, data, &what)?
            } else {
                ws.buf(i).reserve(&self.stream, bytes, false, &what)?
            };
        }
        self.execute(&mut ws, &mut ptrs, seq, past, false)?;
        let mut out = BTreeMap::new();
        for (i, b) in p.buffers.iter().enumerate() {
            if !matches!(b.kind, BufferKind::Output(_) | BufferKind::Append { .. }) {
                continue;
            }
            let r = self.root(i);
            let bytes = elem_bytes(p, i, seq, past)?;
            let what = format!("output `{}`", b.name);
            out.insert(b.name.clone(), ws.buf(r).read(&self.stream, bytes, &what)?);
        }
        Ok(out)
    }
}

/// Device-to-device copy bandwidth of device `ordinal`: bytes read plus bytes written per
/// second copying a `bytes`-byte buffer, the best of `repeats` copies (after one
/// untimed copy). This is what HBM sustains for a pure stream, the roof of a decode step.
pub fn copy_bandwidth(ordinal: usize, bytes: usize, repeats: usize) -> Result<f64, CudaError> {
    if bytes == 0 || repeats == 0 {
        return Err(CudaError::Failed {
            message: "the bandwidth probe needs a buffer and a repetition".into(),
        });
    }
    let info = probe(ordinal)?;
    info.sm()?;
    let ctx = CudaContext::new(ordinal).map_err(|e| failed("context", e))?;
    let stream = ctx.default_stream();
    let src = stream
        .alloc_zeros::<u8>(bytes)
        .map_err(|e| failed(&format!("allocating {bytes} bytes for the probe"), e))?;
    let mut dst = stream
        .alloc_zeros::<u8>(bytes)
        .map_err(|e| failed(&format!("allocating {bytes} bytes for the probe"), e))?;
    let mut best = f64::MAX;
    for r in 0..=repeats {
        stream.synchronize().map_err(|e| failed("synchronize", e))?;
        let start = Instant::now();
        stream
            .memcpy_dtod(&src, &mut dst)
            .map_err(|e| failed("device copy", e))?;
        stream.synchronize().map_err(|e| failed("synchronize", e))?;
        if r > 0 {
            best = best.min(start.elapsed().as_secs_f64());
        }
    }
    Ok(2.0 * bytes as f64 / best.max(1e-9))
}

/// Free and total memory of the device the stream's context belongs to, in bytes.
pub(crate) fn mem_info(stream: &Arc<CudaStream>) -> Result<(usize, usize), CudaError> {
    stream
        .context()
        .mem_get_info()
        .map_err(|e| failed("memory info", e))
}

/// Refuses kernel `k` when its shared memory (static plus dynamic) exceeds `limit`,
/// the opt-in maximum per block of device `device`.
fn check_shared(k: &ptx::PtxKernel, device: &str, limit: u64) -> Result<(), CudaError> {
    let launch = &k.plan.launch;
    let need = launch.shared_bytes + launch.dynamic_shared_bytes;
    if need > limit {
        return Err(CudaError::Unsupported {
            message: format!(
                "kernel `{}` ({}) needs {need} bytes of shared memory per block ({} of them \
                 dynamic); `{device}` allows at most {limit}",
                k.name, k.symbol, launch.dynamic_shared_bytes
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
