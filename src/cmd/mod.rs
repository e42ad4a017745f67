//! Subcommands of the `archc` binary, one file each.

pub mod bench;
pub mod bench_compile;
pub mod build;
pub mod check;
pub mod diff;
pub mod draw;
pub mod emit;
pub mod fmt;
pub mod import;
pub mod link;
pub mod load;
pub mod logits;
pub mod lower;
pub mod model;
pub mod report;
pub mod run;
pub mod stats;
