//! archc-runtime: weight loading, parameter binding, execution and the KV cache.
