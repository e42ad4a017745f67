//! Objects for ahead-of-time builds (`archc build`): the optimized kernels plus the
//! symbols through which the linked runtime finds them, so the object links with the
//! runtime archive and nothing else.
//!
//! | symbol               | type                 | what                                   |
//! |----------------------|----------------------|----------------------------------------|
//! | `archc_kernels`      | `[K x ptr]`          | every kernel's address, in table order |
//! | `archc_kernel_count` | `i64`                | `K`                                    |
//! | `archc_image`        | `[N x i8]`           | the build image (`runtime/src/aot`)    |
//! | `archc_image_len`    | `i64`                | `N`                                    |

use super::{new_context, object_of, optimized_module, symbols, CodegenError, Target};
use crate::kernel::Kernel;
use inkwell::module::{Linkage, Module};
use inkwell::values::BasicValue;
use inkwell::AddressSpace;

/// The object of `kernels` for `target` with the table and `image` (see the module docs).
/// Position-independent, so it links into executables and shared libraries alike.
pub fn emit_linkable_object(
    kernels: &[Kernel],
    target: &Target,
    image: &[u8],
) -> Result<Vec<u8>, CodegenError> {
    let tm = target.machine()?;
    let ctx = new_context();
    let module = optimized_module(&ctx, kernels, target, &tm)?;
    add_table(&module, kernels, image)?;
    module.verify().map_err(|e| CodegenError::Llvm {
        stage: "verifier",
        message: e.to_string(),
    })?;
    object_of(&module, &tm)
}

fn add_table(module: &Module<'_>, kernels: &[Kernel], image: &[u8]) -> Result<(), CodegenError> {
    let ctx = module.get_context();
    let ptr = ctx.ptr_type(AddressSpace::default());
    let mut fns = Vec::with_capacity(kernels.len());
    for name in symbols(kernels) {
        let f = module
            .get_function(&name)
            .ok_or_else(|| CodegenError::Llvm {
                stage: "ahead-of-time table",
                message: format!("kernel function `{name}` is missing from the module"),
            })?;
        fns.push(f.as_global_value().as_pointer_value());
    }
    let i64t = ctx.i64_type();
    let count = |n: usize| i64t.const_int(n as u64, false);
    let table = ptr.const_array(&fns);
    let data = ctx.const_string(image, false);
    let globals: [(&str, &dyn BasicValue<'_>); 4] = [
        ("archc_kernels", &table),
        ("archc_kernel_count", &count(kernels.len())),
        ("archc_image", &data),
        ("archc_image_len", &count(image.len())),
    ];
    for (name, value) in globals {
        let value = value.as_basic_value_enum();
        let g = module.add_global(value.get_type(), None, name);
        g.set_initializer(&value);
        g.set_constant(true);
        g.set_linkage(Linkage::External);
        g.set_alignment(16);
    }
    Ok(())
}
