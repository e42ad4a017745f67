//! (work in progress: fmt)
