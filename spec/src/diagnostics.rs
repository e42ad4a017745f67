//! (work in progress: diagnostics)
