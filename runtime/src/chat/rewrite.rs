//! The compiled chat template, rewritten so that every step that can grow a value goes
//! through the bounded functions of `bounds.rs`.
//!
//! minijinja runs `~`, `+` and `*` as instructions no environment setting reaches, and
//! writes template text without the formatter. This pass copies a compiled template's
//! instructions with: those operators as calls of `__archc_concat`, `__archc_add` and
//! `__archc_mul` (each pops two values and pushes one, as the operator did); template text
//! as a constant and an `Emit`, so the formatter counts it; and after every instruction
//! that makes a value from code the template controls (a filter, function, method or
//! macro call, a captured block, a list or map literal) a call of `__archc_checked`, which
//! hands the value back once it is within the bounds. Jump targets are moved with the
//! instructions they point at, and each instruction keeps its source span for errors.
//!
//! It uses minijinja's `unstable_machinery` API, so the version is pinned in Cargo.toml.

use minijinja::machinery::{Instruction, Instructions};
use minijinja::value::Value;

/// The template function names the rewritten instructions call.
pub const CONCAT: &str = "__archc_concat";
pub const ADD: &str = "__archc_add";
pub const MUL: &str = "__archc_mul";
pub const CHECKED: &str = "__archc_checked";

/// Whether a value made by `instruction` is checked after it.
fn makes_value(instruction: &Instruction<'_>) -> bool {
    match instruction {
        Instruction::CallFunction(name, _) => ![CONCAT, ADD, MUL, CHECKED].contains(name),
        Instruction::ApplyFilter(..)
        | Instruction::CallMethod(..)
        | Instruction::CallObject(..)
        | Instruction::EndCapture
        | Instruction::BuildList(..)
        | Instruction::BuildMap(..) => true,
        _ => false,
    }
}

/// How many instructions `instruction` becomes.
fn width(instruction: &Instruction<'_>) -> u32 {
    if matches!(instruction, Instruction::EmitRaw(_)) || makes_value(instruction) {
        2
    } else {
        1
    }
}

/// `old` with the bounded operators, counted text and checked values described above.
pub fn rewrite<'s>(old: &Instructions<'s>) -> Instructions<'s> {
    let count = old.len() as u32;
    // Where each old instruction starts in the new list; a jump may target `count`.
    let mut at = Vec::with_capacity(old.len() + 1);
    let mut next = 0u32;
    for i in 0..count {
        at.push(next);
        next += old.get(i).map_or(1, width);
    }
    at.push(next);
    let moved = |target: u32| at.get(target as usize).copied().unwrap_or(target);

    let mut new = Instructions::new(old.name(), old.source());
    for i in 0..count {
        let Some(instruction) = old.get(i) else {
            break;
        };
        let span = old.get_span(i);
        let line = old
            .get_line(i)
            .and_then(|l| u16::try_from(l).ok())
            .unwrap_or(0);
        let mut push = |instruction: Instruction<'s>| match span {
            Some(span) => new.add_with_span(instruction, span),
            None => new.add_with_line(instruction, line),
        };
        match instruction {
            Instruction::StringConcat => push(Instruction::CallFunction(CONCAT, Some(2))),
            Instruction::Add => push(Instruction::CallFunction(ADD, Some(2))),
            Instruction::Mul => push(Instruction::CallFunction(MUL, Some(2))),
            Instruction::EmitRaw(text) => {
                push(Instruction::LoadConst(Value::from(*text)));
                push(Instruction::Emit)
            }
            Instruction::Jump(t) => push(Instruction::Jump(moved(*t))),
            Instruction::JumpIfFalse(t) => push(Instruction::JumpIfFalse(moved(*t))),
            Instruction::JumpIfFalseOrPop(t) => push(Instruction::JumpIfFalseOrPop(moved(*t))),
            Instruction::JumpIfTrueOrPop(t) => push(Instruction::JumpIfTrueOrPop(moved(*t))),
            Instruction::Iterate(t) => push(Instruction::Iterate(moved(*t))),
            Instruction::BuildMacro(name, t, flags) => {
                push(Instruction::BuildMacro(name, moved(*t), *flags))
            }
            other if makes_value(other) => {
                push(other.clone());
                push(Instruction::CallFunction(CHECKED, Some(1)))
            }
            other => push(other.clone()),
        };
    }
    new
}
