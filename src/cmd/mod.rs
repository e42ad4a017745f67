//! Subcommands of the `archc` binary, one file each.

pub mod bench;
pub mod check;
pub mod diff;
pub mod emit;
pub mod fmt;
pub mod import;
pub mod logits;
pub mod lower;
pub mod model;
pub mod run;
pub mod stats;
