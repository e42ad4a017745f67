//! Loop metadata: the `!llvm.loop` node that carries a target's hints for LLVM's loop
//! passes (`Target::loop_hints`).

use inkwell::context::Context;
use inkwell::values::{AsValueRef, InstructionValue};

/// The operand of a loop property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HintArg {
    I32(u32),
    Bool(bool),
    /// A property that is only its name (`!{!"llvm.loop.unroll.disable"}`).
    None,
}

/// Attaches `!llvm.loop !N` with `!N = distinct !{!N, props...}` to the latch branch.
/// The C API has no distinct nodes, so the self-reference is made through a temporary
/// node; LLVM turns a node that refers to itself into a distinct one.
pub(super) fn attach_loop_id(
    ctx: &Context,
    latch_br: InstructionValue<'_>,
    props: &[(&str, HintArg)],
) {
    use inkwell::llvm_sys::core::{
        LLVMConstInt, LLVMInt1TypeInContext, LLVMInt32TypeInContext, LLVMMDNodeInContext2,
        LLVMMDStringInContext2, LLVMMetadataAsValue, LLVMSetMetadata,
    };
    use inkwell::llvm_sys::debuginfo::{LLVMMetadataReplaceAllUsesWith, LLVMTemporaryMDNode};
    use inkwell::llvm_sys::prelude::LLVMMetadataRef;
    let raw = ctx.raw();
    // SAFETY: every reference passed belongs to `ctx`, which outlives the calls; the
    // temporary node is consumed (deleted) by the replace-all-uses call.
    unsafe {
        let mut nodes: Vec<LLVMMetadataRef> = Vec::with_capacity(props.len() + 1);
        let temp = LLVMTemporaryMDNode(raw, std::ptr::null_mut(), 0);
        nodes.push(temp);
        for (name, arg) in props {
            let key = LLVMMDStringInContext2(raw, name.as_ptr().cast(), name.len());
            let val = match arg {
                HintArg::I32(v) => LLVMConstInt(LLVMInt32TypeInContext(raw), *v as u64, 0),
                HintArg::Bool(v) => LLVMConstInt(LLVMInt1TypeInContext(raw), *v as u64, 0),
                HintArg::None => {
                    let mut only = [key];
                    nodes.push(LLVMMDNodeInContext2(raw, only.as_mut_ptr(), 1));
                    continue;
                }
            };
            let val = inkwell::llvm_sys::core::LLVMValueAsMetadata(val);
            let mut pair = [key, val];
            nodes.push(LLVMMDNodeInContext2(raw, pair.as_mut_ptr(), 2));
        }
        let id = LLVMMDNodeInContext2(raw, nodes.as_mut_ptr(), nodes.len());
        LLVMMetadataReplaceAllUsesWith(temp, id);
        let kind = ctx.get_kind_id("llvm.loop");
        LLVMSetMetadata(latch_br.as_value_ref(), kind, LLVMMetadataAsValue(raw, id));
    }
}
