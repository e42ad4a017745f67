#!/usr/bin/env bash
# The main job for now: build archc, check every example architecture and print
# the table of their sizes. Installs what it needs on a fresh Debian machine.
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
./target/release/archc check examples/*.arch
./target/release/archc stats examples/*.arch
