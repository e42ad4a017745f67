//! (work in progress: stats)
