//! (work in progress: ast)
