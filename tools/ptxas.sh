#!/usr/bin/env bash
# Installs ptxas (the PTX assembler) from PyPI's nvidia-cuda-nvcc-cu12 into a virtual
# environment under the cargo target directory (or $ARCHC_PTXAS_DIR), then prints the
# path of the ptxas binary. Idempotent: a second run only prints the path.
#
#   export ARCHC_PTXAS="$(tools/ptxas.sh)"
#   cargo test -p archc-compiler --test ptx
#
# The wheel is a plain binary distribution, so no GPU or CUDA driver is needed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
dir="${ARCHC_PTXAS_DIR:-$target/ptxas-venv}"
version="12.9.86"

find_ptxas() {
  { find "$dir" -type f -name ptxas -path "*cuda_nvcc*" 2>/dev/null || true; } | sort | head -n 1
}

ptxas="$(find_ptxas)"
if [ -z "$ptxas" ]; then
  python="${PYTHON:-python3}"
  "$python" -m venv "$dir" >&2
  "$dir/bin/pip" install --quiet --disable-pip-version-check \
    "nvidia-cuda-nvcc-cu12==$version" >&2
  ptxas="$(find_ptxas)"
fi
if [ -z "$ptxas" ]; then
  echo "tools/ptxas.sh: nvidia-cuda-nvcc-cu12 installed but no ptxas found under $dir" >&2
  exit 1
fi
chmod +x "$ptxas"
"$ptxas" --version >&2
echo "$ptxas"
