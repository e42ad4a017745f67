//! (work in progress: tensors)
