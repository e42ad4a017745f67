//! (work in progress: parse)
