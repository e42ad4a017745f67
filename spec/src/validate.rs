//! (work in progress: validate)
