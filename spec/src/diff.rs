//! (work in progress: diff)
