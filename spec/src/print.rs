//! (work in progress: print)
