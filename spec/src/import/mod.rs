//! (work in progress: import)
