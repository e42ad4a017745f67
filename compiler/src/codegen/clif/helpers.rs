//! The functions Cranelift code calls for what it has no instruction for: the math of the
//! kernel IR (the same Rust functions the kernel IR interpreter calls, so both compute the
//! same bits), the f16 and f8 conversions of `crate::floats`, and `malloc`/`free` for large
//! scratch. Each kernel imports only the helpers it uses.

use crate::floats;
use crate::kernel::{Access, BinOp, Elem, Expr, Kernel, Stmt, UnOp};
use cranelift_codegen::ir::{types, AbiParam, FuncRef, Function, Signature};
use cranelift_codegen::isa::CallConv;
use cranelift_module::{FuncId, Linkage, Module};

/// A function Cranelift code may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Helper {
    Exp,
    Log,
    Sin,
    Cos,
    Tanh,
    Pow,
    F16ToF32,
    F32ToF16,
    F8ToF32,
    Malloc,
    Free,
}

const ALL: [Helper; 11] = [
    Helper::Exp,
    Helper::Log,
    Helper::Sin,
    Helper::Cos,
    Helper::Tanh,
    Helper::Pow,
    Helper::F16ToF32,
    Helper::F32ToF16,
    Helper::F8ToF32,
    Helper::Malloc,
    Helper::Free,
];

extern "C" fn exp(x: f32) -> f32 {
    x.exp()
}
extern "C" fn log(x: f32) -> f32 {
    x.ln()
}
extern "C" fn sin(x: f32) -> f32 {
    x.sin()
}
extern "C" fn cos(x: f32) -> f32 {
    x.cos()
}
extern "C" fn tanh(x: f32) -> f32 {
    x.tanh()
}
extern "C" fn pow(x: f32, y: f32) -> f32 {
    x.powf(y)
}
extern "C" fn f16_to_f32(bits: u32) -> f32 {
    floats::f16_to_f32(bits as u16)
}
extern "C" fn f32_to_f16(x: f32) -> u32 {
    u32::from(floats::f32_to_f16(x))
}
extern "C" fn f8_to_f32(bits: u32) -> f32 {
    floats::f8e4m3_to_f32(bits as u8)
}

impl Helper {
    /// The symbol the module imports it under.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Helper::Exp => "archc_expf",
            Helper::Log => "archc_logf",
            Helper::Sin => "archc_sinf",
            Helper::Cos => "archc_cosf",
            Helper::Tanh => "archc_tanhf",
            Helper::Pow => "archc_powf",
            Helper::F16ToF32 => "archc_f16_to_f32",
            Helper::F32ToF16 => "archc_f32_to_f16",
            Helper::F8ToF32 => "archc_f8_to_f32",
            Helper::Malloc => "malloc",
            Helper::Free => "free",
        }
    }

    /// Its address in this process, for the JIT's symbol table (`malloc` and `free` are
    /// the C library's, found by the JIT itself).
    pub(crate) fn address(self) -> Option<*const u8> {
        Some(match self {
            Helper::Exp => exp as *const u8,
            Helper::Log => log as *const u8,
            Helper::Sin => sin as *const u8,
            Helper::Cos => cos as *const u8,
            Helper::Tanh => tanh as *const u8,
            Helper::Pow => pow as *const u8,
            Helper::F16ToF32 => f16_to_f32 as *const u8,
            Helper::F32ToF16 => f32_to_f16 as *const u8,
            Helper::F8ToF32 => f8_to_f32 as *const u8,
            Helper::Malloc | Helper::Free => return None,
        })
    }

    pub(crate) fn all() -> impl Iterator<Item = Helper> {
        ALL.into_iter()
    }

    fn signature(self, call_conv: CallConv) -> Signature {
        let mut s = Signature::new(call_conv);
        let (params, ret): (&[types::Type], Option<types::Type>) = match self {
            Helper::Exp | Helper::Log | Helper::Sin | Helper::Cos | Helper::Tanh => {
                (&[types::F32], Some(types::F32))
            }
            Helper::Pow => (&[types::F32, types::F32], Some(types::F32)),
            Helper::F16ToF32 | Helper::F8ToF32 => (&[types::I32], Some(types::F32)),
            Helper::F32ToF16 => (&[types::F32], Some(types::I32)),
            Helper::Malloc => (&[types::I64], Some(types::I64)),
            Helper::Free => (&[types::I64], None),
        };
        s.params.extend(params.iter().map(|&t| AbiParam::new(t)));
        s.returns.extend(ret.map(AbiParam::new));
        s
    }
}

/// The helpers of one module, declared once each.
#[derive(Debug, Default)]
pub(crate) struct Declared {
    ids: Vec<(Helper, FuncId)>,
}

impl Declared {
    pub(crate) fn declare(module: &mut dyn Module) -> Result<Declared, String> {
        let call_conv = module.isa().default_call_conv();
        let mut ids = Vec::new();
        for h in Helper::all() {
            let id = module
                .declare_function(h.symbol(), Linkage::Import, &h.signature(call_conv))
                .map_err(|e| e.to_string())?;
            ids.push((h, id));
        }
        Ok(Declared { ids })
    }

    /// Imports into `func` the helpers kernel `k` uses.
    pub(crate) fn import(
        &self,
        module: &mut dyn Module,
        func: &mut Function,
        k: &Kernel,
    ) -> Imports {
        let used = used_by(k);
        let refs = self
            .ids
            .iter()
            .filter(|(h, _)| used.contains(h))
            .map(|&(h, id)| (h, module.declare_func_in_func(id, func)))
            .collect();
        Imports { refs }
    }
}

/// The helpers one function may call.
#[derive(Debug)]
pub(crate) struct Imports {
    refs: Vec<(Helper, FuncRef)>,
}

impl Imports {
    pub(crate) fn get(&self, h: Helper) -> Option<FuncRef> {
        self.refs.iter().find(|(x, _)| *x == h).map(|&(_, f)| f)
    }
}

/// The helpers a kernel's translation calls.
fn used_by(k: &Kernel) -> Vec<Helper> {
    let mut used = Vec::new();
    let mut add = |h: Helper| {
        if !used.contains(&h) {
            used.push(h);
        }
    };
    for b in &k.bufs {
        if let Access::Scratch { len } = b.access {
            if len.saturating_mul(b.elem.bytes() as u64) > super::translate::MAX_STACK_SCRATCH {
                add(Helper::Malloc);
                add(Helper::Free);
            }
        }
    }
    fn expr(e: &Expr, k: &Kernel, add: &mut dyn FnMut(Helper)) {
        match e {
            Expr::Load { buf, index } => {
                match k.bufs.get(buf.0 as usize).map(|b| b.elem) {
                    Some(Elem::F16) => add(Helper::F16ToF32),
                    Some(Elem::F8) => add(Helper::F8ToF32),
                    _ => {}
                }
                expr(index, k, add);
            }
            Expr::Un(op, x) => {
                match op {
                    UnOp::Exp => add(Helper::Exp),
                    UnOp::Log => add(Helper::Log),
                    UnOp::Sin => add(Helper::Sin),
                    UnOp::Cos => add(Helper::Cos),
                    UnOp::Tanh => add(Helper::Tanh),
                    UnOp::F16Bits => add(Helper::F16ToF32),
                    _ => {}
                }
                expr(x, k, add);
            }
            Expr::Bin(op, x, y) => {
                if *op == BinOp::Pow {
                    add(Helper::Pow);
                }
                expr(x, k, add);
                expr(y, k, add);
            }
            Expr::Select(c, a, b) => {
                expr(c, k, add);
                expr(a, k, add);
                expr(b, k, add);
            }
            Expr::F32(_) | Expr::I64(_) | Expr::Bool(_) | Expr::Var(_) | Expr::Dim(_) => {}
        }
    }
    fn stmts(body: &[Stmt], k: &Kernel, add: &mut dyn FnMut(Helper)) {
        for s in body {
            match s {
                Stmt::Let { value: e, .. }
                | Stmt::Local { init: e, .. }
                | Stmt::Set { value: e, .. } => expr(e, k, add),
                Stmt::Store { buf, index, value } => {
                    if k.bufs.get(buf.0 as usize).map(|b| b.elem) == Some(Elem::F16) {
                        add(Helper::F32ToF16);
                    }
                    expr(index, k, add);
                    expr(value, k, add);
                }
                Stmt::Loop {
                    start, end, body, ..
                } => {
                    expr(start, k, add);
                    expr(end, k, add);
                    stmts(body, k, add);
                }
                Stmt::If { cond, then, els } => {
                    expr(cond, k, add);
                    stmts(then, k, add);
                    stmts(els, k, add);
                }
                Stmt::Tile(_) => {}
            }
        }
    }
    stmts(&k.body, k, &mut add);
    used.sort();
    used
}
