//! A program's launch sequence as one CUDA graph, built once per `seq` and replayed:
//! a decode step becomes one `cuGraphLaunch` instead of hundreds of kernel launches.
//!
//! The graph is built from explicit kernel nodes (each depending on the one before, the
//! program's order) rather than by stream capture: the legacy default stream the
//! runtime uses cannot be captured, and explicit nodes give the handles that replay
//! needs. Before each replay, the nodes whose arguments changed since the last one are
//! updated in the instantiated graph (`cuGraphExecKernelNodeSetParams`): the grid (it may
//! grow with `past`), the buffer pointers (the KV cache moves when it grows) and `past`
//! itself, for the kernels that read it. Everything else is left as built, so a decode
//! step typically updates only the attention and cache kernels.
//!
//! Every failure is a [`GraphError`] the caller answers by launching the kernels one by
//! one; the driver entry points are looked up first so that an old driver cannot make
//! cudarc panic on a missing symbol.

use cudarc::driver::sys;
use std::ffi::c_void;
use std::fmt;

/// The driver call of the graph path that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphCall {
    /// Making the stream's context current on the calling thread.
    BindContext,
    Create,
    /// Adding the kernel node of launch `n`.
    AddNode(usize),
    Instantiate,
    /// Updating the kernel node of launch `n` before a replay.
    UpdateNode(usize),
    Launch,
}

impl fmt::Display for GraphCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphCall::BindContext => f.write_str("binding the context"),
            GraphCall::Create => f.write_str("cuGraphCreate"),
            GraphCall::AddNode(i) => write!(f, "adding kernel node {i}"),
            GraphCall::Instantiate => f.write_str("cuGraphInstantiateWithFlags"),
            GraphCall::UpdateNode(i) => write!(f, "updating kernel node {i}"),
            GraphCall::Launch => f.write_str("cuGraphLaunch"),
        }
    }
}

/// Why a launch sequence could not run as a CUDA graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphError {
    /// The loaded driver lacks this graph entry point.
    MissingSymbol(&'static str),
    /// A driver call returned an error code.
    Driver {
        call: GraphCall,
        result: sys::CUresult,
    },
    /// The graph was built for other launches than the call's.
    Mismatch {
        nodes: usize,
        seq: i64,
        launches: usize,
    },
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphError::MissingSymbol(name) => write!(f, "the CUDA driver has no `{name}`"),
            GraphError::Driver { call, result } => write!(f, "{call}: {result:?}"),
            GraphError::Mismatch {
                nodes,
                seq,
                launches,
            } => write!(
                f,
                "the graph has {nodes} nodes for seq {seq}, the call {launches} launches"
            ),
        }
    }
}

impl std::error::Error for GraphError {}

/// One kernel launch with its arguments: the buffer pointers, then `seq` and `past`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LaunchArgs {
    pub func: sys::CUfunction,
    pub grid: u32,
    pub block: u32,
    /// Dynamic shared memory of the launch, in bytes (the kernel's planned scratch).
    pub shared: u32,
    pub ptrs: Vec<u64>,
    pub seq: i64,
    pub past: i64,
    /// Whether the kernel reads `past` at all; if not, a stale `past` in its node is
    /// harmless and not worth an update.
    pub uses_past: bool,
}

/// The driver entry points the graph path calls, each checked for before the first use.
const SYMBOLS: [&str; 7] = [
    "cuGraphCreate",
    "cuGraphAddKernelNode_v2",
    "cuGraphInstantiateWithFlags",
    "cuGraphExecKernelNodeSetParams_v2",
    "cuGraphLaunch",
    "cuGraphExecDestroy",
    "cuGraphDestroy",
];

/// The first graph entry point the loaded driver lacks, if any.
fn missing_symbol() -> Option<&'static str> {
    // SAFETY: the driver library was loaded by the probe (it is present); looking a symbol
    // up calls nothing.
    let lib = unsafe { sys::culib() };
    SYMBOLS.into_iter().find(|name| {
        // SAFETY: the symbol is only looked up, never called through this type.
        unsafe { lib.get::<unsafe extern "C" fn()>(name.as_bytes()) }.is_err()
    })
}

fn check(call: GraphCall, result: sys::CUresult) -> Result<(), GraphError> {
    if result == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(GraphError::Driver { call, result })
    }
}

/// The argument values of a launch in parameter order, 8 bytes each (pointers and the
/// two `i64` dims), which `kernelParams` points into.
fn arg_values(l: &LaunchArgs) -> Vec<u64> {
    let mut v = l.ptrs.clone();
    v.push(l.seq as u64);
    v.push(l.past as u64);
    v
}

/// Node parameters for `l`; `pointers` must stay alive (and unmoved) until the driver
/// call that reads them returns.
fn node_params(l: &LaunchArgs, pointers: &mut [*mut c_void]) -> sys::CUDA_KERNEL_NODE_PARAMS_v2 {
    sys::CUDA_KERNEL_NODE_PARAMS_v2 {
        func: l.func,
        gridDimX: l.grid,
        gridDimY: 1,
        gridDimZ: 1,
        blockDimX: l.block,
        blockDimY: 1,
        blockDimZ: 1,
        // Scratch beyond 48 KiB is dynamic shared memory, sized here.
        sharedMemBytes: l.shared,
        kernelParams: pointers.as_mut_ptr(),
        extra: std::ptr::null_mut(),
        // With `func` set, `kern` must be null and `ctx` is ignored.
        kern: std::ptr::null_mut(),
        ctx: std::ptr::null_mut(),
    }
}

/// What a node was last set to, to skip updates that change nothing.
#[derive(Debug, Clone, PartialEq)]
struct Applied {
    grid: u32,
    ptrs: Vec<u64>,
    past: i64,
}

/// An instantiated graph of one program's launches at one `seq`.
pub(crate) struct LaunchGraph {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
    nodes: Vec<sys::CUgraphNode>,
    applied: Vec<Applied>,
    seq: i64,
}

// SAFETY: the graph handles are owned by this value alone and used only through `&mut
// self` (the driver requires calls on one graph to be serialised, not made on one thread).
unsafe impl Send for LaunchGraph {}

impl std::fmt::Debug for LaunchGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchGraph")
            .field("nodes", &self.nodes.len())
            .field("seq", &self.seq)
            .finish()
    }
}

impl Drop for LaunchGraph {
    fn drop(&mut self) {
        // SAFETY: both handles were created by `build` and are destroyed once, here.
        // Errors cannot be reported from a drop; the memory is the driver's to reclaim.
        unsafe {
            if !self.exec.is_null() {
                let _ = sys::cuGraphExecDestroy(self.exec);
            }
            if !self.graph.is_null() {
                let _ = sys::cuGraphDestroy(self.graph);
            }
        }
    }
}

impl LaunchGraph {
    /// Builds and instantiates the graph of `launches`, in order, each node depending on
    /// the previous one. The current context must be the one the functions belong to.
    pub fn build(launches: &[LaunchArgs]) -> Result<LaunchGraph, GraphError> {
        if let Some(name) = missing_symbol() {
            return Err(GraphError::MissingSymbol(name));
        }
        let seq = launches.first().map_or(0, |l| l.seq);
        let mut g = LaunchGraph {
            graph: std::ptr::null_mut(),
            exec: std::ptr::null_mut(),
            nodes: Vec::with_capacity(launches.len()),
            applied: Vec::with_capacity(launches.len()),
            seq,
        };
        // SAFETY: `g.graph` receives a new graph, destroyed by `Drop` on every path.
        check(GraphCall::Create, unsafe {
            sys::cuGraphCreate(&mut g.graph, 0)
        })?;
        for (i, l) in launches.iter().enumerate() {
            let mut values = arg_values(l);
            let mut pointers: Vec<*mut c_void> = values
                .iter_mut()
                .map(|v| v as *mut u64 as *mut c_void)
                .collect();
            let params = node_params(l, &mut pointers);
            let mut node: sys::CUgraphNode = std::ptr::null_mut();
            let deps = g.nodes.last().copied();
            let (dep_ptr, ndeps) = match &deps {
                Some(d) => (d as *const sys::CUgraphNode, 1),
                None => (std::ptr::null(), 0),
            };
            // SAFETY: `params` points into `pointers` and `values`, both alive until the
            // call returns (the driver copies the argument values); `dep_ptr` is null or
            // points at one node of this graph.
            check(GraphCall::AddNode(i), unsafe {
                sys::cuGraphAddKernelNode_v2(&mut node, g.graph, dep_ptr, ndeps, &params)
            })?;
            g.nodes.push(node);
            g.applied.push(Applied {
                grid: l.grid,
                ptrs: l.ptrs.clone(),
                past: l.past,
            });
        }
        // SAFETY: `g.graph` is a complete graph; `g.exec` receives its executable form.
        check(GraphCall::Instantiate, unsafe {
            sys::cuGraphInstantiateWithFlags(&mut g.exec, g.graph, 0)
        })?;
        Ok(g)
    }

    /// Whether this graph was built for `launches` at this `seq` (the same kernels in
    /// the same order; arguments may differ).
    pub fn fits(&self, launches: &[LaunchArgs]) -> bool {
        launches.len() == self.nodes.len() && launches.first().is_none_or(|l| l.seq == self.seq)
    }

    /// Updates the nodes whose arguments differ from `launches` and launches the graph on
    /// `stream`. The caller checked `fits`. The error is the caller's type, any that a
    /// [`GraphError`] converts into.
    pub fn replay<E: From<GraphError>>(
        &mut self,
        launches: &[LaunchArgs],
        stream: sys::CUstream,
    ) -> Result<(), E> {
        self.replay_typed(launches, stream).map_err(E::from)
    }

    fn replay_typed(
        &mut self,
        launches: &[LaunchArgs],
        stream: sys::CUstream,
    ) -> Result<(), GraphError> {
        if !self.fits(launches) {
            return Err(GraphError::Mismatch {
                nodes: self.nodes.len(),
                seq: self.seq,
                launches: launches.len(),
            });
        }
        for (i, l) in launches.iter().enumerate() {
            let a = &self.applied[i];
            let stale = a.grid != l.grid || a.ptrs != l.ptrs || (l.uses_past && a.past != l.past);
            if !stale {
                continue;
            }
            let mut values = arg_values(l);
            let mut pointers: Vec<*mut c_void> = values
                .iter_mut()
                .map(|v| v as *mut u64 as *mut c_void)
                .collect();
            let params = node_params(l, &mut pointers);
            // SAFETY: node `i` is a kernel node of the graph `exec` was instantiated from,
            // with the same function; `params` points at live argument storage.
            check(GraphCall::UpdateNode(i), unsafe {
                sys::cuGraphExecKernelNodeSetParams_v2(self.exec, self.nodes[i], &params)
            })?;
            self.applied[i] = Applied {
                grid: l.grid,
                ptrs: l.ptrs.clone(),
                past: l.past,
            };
        }
        // SAFETY: `exec` is a valid executable graph and `stream` a stream of its context.
        check(GraphCall::Launch, unsafe {
            sys::cuGraphLaunch(self.exec, stream)
        })
    }
}
