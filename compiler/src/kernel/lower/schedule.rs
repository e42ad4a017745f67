//! The schedule choices of kernel lowering, per target: how the matmul generators tile
//! their work, how wide the vector hints are, and which matmul schedules a target may run.
//! Schedules change how a kernel computes, never what: every choice here keeps the
//! kernels equal to the graph interpreter up to f32 summation order. Choices that change
//! numerics (bf16 activations) are `KernelOptions`, not schedule.

/// Which schedule a prefill matmul (more than one token row) takes. Decode matmuls (one
/// token row) are matrix-vector products whatever this says, and matmuls over
/// block-quantised weights take the quantised schedules. A forced schedule that a matmul
/// does not admit (see each variant) leaves that matmul to `Auto`'s choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum MatmulSchedule {
    /// Tokens in lanes where the matmul admits it (bf16 weights and bf16 activations, an
    /// even reduction), else row blocks where its weights are bf16 and its activations
    /// bf16, else plain row tiles; the row-blocked schedules only where
    /// [`Schedule::row_blocks`] allows them.
    #[default]
    Auto,
    /// Parallel over blocks of output columns; inside, register tiles of token rows ×
    /// columns reading the activations where they are (each tile's rows first go into
    /// scratch when there is a norm prologue, or when bf16 activations over bf16 weights
    /// round them). Every matmul admits it.
    RowTiles,
    /// Token rows in blocks, each prepared once per thread into scratch (normalised, and
    /// rounded to bf16 with bf16 activations over bf16 weights) outside the parallel loop
    /// over column blocks; long reductions in chunks ([`KChunks`]). Needs a constant
    /// reduction width and [`Schedule::row_blocks`].
    RowBlocked,
    /// Row blocks packed as groups of tokens in vector lanes, an outer-product tile of
    /// broadcast bf16 weight pairs ([`LanesTile`]). Needs bf16 weights, bf16 activations,
    /// an even constant reduction width and [`Schedule::row_blocks`].
    Lanes,
}

/// A register tile of dot products: `rows` token rows × at most `cols` output columns,
/// one f32 accumulator each (per weight part: a gated epilogue reduces gate and up
/// together, so its tiles take half the columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tile {
    /// Token rows per tile (left-over rows go one at a time).
    pub rows: i64,
    /// The most output columns per tile.
    pub cols: i64,
}

/// The tile of the tokens-in-lanes matmul (see [`MatmulSchedule::Lanes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LanesTile {
    /// Tokens per group: the lanes of one f32 vector, the packing unit of the activations
    /// (`[k / 2][lanes][2]` per group) and the width of the vector loop over tokens.
    pub lanes: i64,
    /// Groups of tokens per tile (the rest of the block goes one group at a time).
    pub groups: i64,
    /// Output columns per tile (half of them with a gated epilogue, whose tiles reduce
    /// gate and up): `groups × cols` accumulators of `lanes` floats, which a 32-register
    /// vector file holds with room for the operands.
    pub cols: i64,
    /// Below this many token rows the kernel takes the row-blocked dot-product tiles
    /// instead (decided when it runs): a group would be mostly padding.
    pub min_rows: i64,
}

/// How the row-blocked matmul splits a long reduction: reductions of more than `above`
/// elements (one weight part, no gate) go in chunks of `len`, partial sums through the
/// output, so that a tile's rows of activations and weights stay in L1 while the column
/// loop passes over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KChunks {
    /// The longest reduction (in elements) that goes in one pass.
    pub above: u64,
    /// Elements per chunk of a longer one (the last chunk takes the rest).
    pub len: i64,
}

/// The schedule of a target: every choice of the kernel generators that is a constant of
/// the target rather than of the graph. [`Schedule::cpu`] and [`Schedule::gpu`] are the
/// two targets archc has; tests build others by changing fields (forcing a matmul
/// schedule, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Schedule {
    /// Vector width hint of the inner loops over contiguous elements (elementwise, layout,
    /// norm, RoPE, gather, matmul and row-append kernels; attention and MoE keep the
    /// widths their modules document): SIMD lanes on a CPU; the PTX target splits vector
    /// loops over a warp whatever their width.
    pub vector: u32,
    /// Output columns per iteration of a prefill matmul's parallel loop (and of every
    /// quantised matmul's): each iteration streams its own weight rows.
    pub matmul_cols: i64,
    /// The register tile of the prefill matmuls (plain and row-blocked): token rows ×
    /// the most columns; fewer columns where the width has no such divisor.
    pub tile: Tile,
    /// The most output columns of a decode matrix-vector tile (one token row): one weight
    /// stream per column, side by side.
    pub matvec_cols: i64,
    /// Token rows per block of the row-blocked and tokens-in-lanes matmuls.
    pub block_rows: i64,
    /// The tokens-in-lanes tile.
    pub lanes: LanesTile,
    /// Reduction chunking of the row-blocked matmul.
    pub k_chunks: KChunks,
    /// Whether a matmul may loop over token blocks outside its parallel loop, every thread
    /// preparing the block in its own scratch (the row-blocked and tokens-in-lanes
    /// schedules): a few CPU cores each redo a cheap preparation, thousands of GPU
    /// threads would each redo it too.
    pub row_blocks: bool,
    /// Which prefill matmul schedule to take; tests force one to cover it.
    pub matmul: MatmulSchedule,
}

impl Schedule {
    /// CPU cores with 16-lane f32 vectors (AVX-512) or narrower: LLVM splits wider hints.
    pub fn cpu() -> Schedule {
        Schedule {
            vector: 16,
            matmul_cols: 64,
            tile: Tile { rows: 4, cols: 4 },
            matvec_cols: 8,
            block_rows: 64,
            lanes: LanesTile {
                lanes: 16,
                groups: 2,
                cols: 8,
                min_rows: 16,
            },
            k_chunks: KChunks {
                above: 4096,
                len: 2048,
            },
            row_blocks: true,
            matmul: MatmulSchedule::Auto,
        }
    }

    /// A GPU's grid: the CPU's tiles, which the PTX target maps to threads and warps as
    /// they are, without the row-blocked schedules.
    pub fn gpu() -> Schedule {
        Schedule {
            row_blocks: false,
            ..Schedule::cpu()
        }
    }

    /// This schedule with the prefill matmuls forced to `matmul`.
    pub fn with_matmul(self, matmul: MatmulSchedule) -> Schedule {
        Schedule { matmul, ..self }
    }
}

impl Default for Schedule {
    /// The CPU's.
    fn default() -> Schedule {
        Schedule::cpu()
    }
}
