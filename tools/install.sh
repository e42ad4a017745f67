#!/usr/bin/env bash
# Build archc and the ahead-of-time runtime archive that `archc build` links into native
# executables and libraries: target/release/archc and target/release/libarchc_runtime.a
# (archc finds the archive next to itself). Installs what it needs on a fresh Debian
# machine with a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
[ -x /usr/lib/llvm-19/bin/llvm-config ] || need_apt+=(llvm-19-dev libpolly-19-dev libzstd-dev zlib1g-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
  else sudo apt-get update -qq && sudo apt-get install -y -qq "${need_apt[@]}"; fi
fi
command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found; install a Rust toolchain first" >&2; exit 2; }
cargo build --release --locked -q
# Its own cargo invocation: built with the `archc` binary, the runtime would get that
# binary's features (the code generators, LLVM, CUDA) by feature unification.
cargo rustc --release --locked -q -p archc-runtime --lib --crate-type staticlib \
    --no-default-features --features aot
echo "target/release/archc"
echo "target/release/libarchc_runtime.a"
