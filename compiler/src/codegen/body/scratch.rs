//! Buffer bases in the kernel's frame: parameters from the body function, scratch where
//! the target places it, and the guard that runs the body only when every scratch
//! allocated at run time exists.

use super::Emitter;
use crate::codegen::CodegenError;
use crate::kernel::Access;
use inkwell::basic_block::BasicBlock;
use inkwell::values::PointerValue;

/// Where a scratch buffer lives, as `Target::scratch` placed it.
#[derive(Clone, Copy)]
pub(crate) struct Scratch<'ctx> {
    /// The buffer's first element.
    pub base: PointerValue<'ctx>,
    /// Memory allocated when the kernel runs (null when that failed), to be released by
    /// `Target::free_scratch`; `base` lies inside it.
    pub heap: Option<PointerValue<'ctx>>,
}

impl<'ctx> Emitter<'ctx, '_> {
    /// Fills `bufs` with the base of every buffer, in the entry block; returns the
    /// run-time allocations.
    pub(super) fn bind_buffers(&mut self) -> Result<Vec<PointerValue<'ctx>>, CodegenError> {
        let target = self.target;
        let mut heap = Vec::new();
        let mut next_param = 0u32;
        for (i, kb) in self.k.bufs.iter().enumerate() {
            let p = match kb.access {
                Access::Scratch { len } => {
                    let s = target.scratch(self, i, kb.elem, len)?;
                    heap.extend(s.heap);
                    s.base
                }
                _ => {
                    let p = self
                        .f
                        .get_nth_param(next_param)
                        .ok_or_else(|| self.err("missing buffer parameter".into()))?
                        .into_pointer_value();
                    next_param += 1;
                    p
                }
            };
            self.bufs.push(p);
        }
        Ok(heap)
    }

    /// The kernel's statements, then a branch to `exit`. With run-time allocations, the
    /// statements run only when all of them succeeded (out of memory leaves the outputs
    /// unwritten rather than crashing the process), and the allocations are released
    /// on the way out either way.
    pub(super) fn guarded_body(
        &mut self,
        heap: &[PointerValue<'ctx>],
        exit: BasicBlock<'ctx>,
    ) -> Result<(), CodegenError> {
        let k = self.k;
        let body = &k.body;
        if heap.is_empty() {
            self.block(body)?;
            self.b.build_unconditional_branch(exit)?;
            return Ok(());
        }
        let ctx = self.ctx;
        let mut ok = ctx.bool_type().const_int(1, false);
        for p in heap {
            let nonnull = self.b.build_is_not_null(*p, "")?;
            ok = self.b.build_and(ok, nonnull, "")?;
        }
        let body_bb = ctx.append_basic_block(self.f, "body");
        let free_bb = ctx.append_basic_block(self.f, "free");
        self.b.build_conditional_branch(ok, body_bb, free_bb)?;
        self.b.position_at_end(body_bb);
        self.block(body)?;
        self.b.build_unconditional_branch(free_bb)?;
        self.b.position_at_end(free_bb);
        let target = self.target;
        target.free_scratch(self, heap)?;
        self.b.build_unconditional_branch(exit)?;
        Ok(())
    }
}
