//! (work in progress: naming)
