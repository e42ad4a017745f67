//! archc-compiler: Graph IR, lowering, passes, reference interpreter, kernel IR and code generation.
