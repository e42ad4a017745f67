#!/usr/bin/env bash
# Compares archc with llama.cpp (llama-bench) and PyTorch eager on the CPU, on random-weight
# models at real shapes, and archc with llama.cpp on a real quantised model (SmolLM2-135M-
# Instruct Q4_1, the same GGUF file for both). A script for people, not part of CI; see
# bench/README.md.
#
#   bench/compare.sh [--threads N] [--prompt-len N] [--gen N] [--rounds N] [--models "a b"]
#                    [--engines "archc base llama torch"] [--only build|models|run]
#
# Everything it downloads or builds lives under bench/.work/ (gitignored). Set PYTHON to a
# Python that already has torch, transformers, safetensors, tokenizers and numpy to skip the venv,
# and ARCHC to a built archc binary to time it instead of building this checkout. ARCHC_BASE
# names another archc build (say, of the previous main) to time as the engine `base`, right
# after archc in every round; the table then adds archc/base.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$ROOT/bench/.work"
THREADS=2
PROMPT=512
GEN=128
ROUNDS=3
MODELS="qwen3-0.6b llama-3.2-1b lfm2-1.2b smollm2-135m-q4_1"
ONLY=""
ENGINES=""
LLAMA_CPP_PYTHON_VERSION=0.3.36

while [ $# -gt 0 ]; do
    case "$1" in
        --threads) THREADS="$2"; shift 2 ;;
        --prompt-len) PROMPT="$2"; shift 2 ;;
        --gen) GEN="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --models) MODELS="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        --engines) ENGINES="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "compare.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

if [ -z "$ENGINES" ]; then
    ENGINES="archc${ARCHC_BASE:+ base} llama torch"
fi
for e in $ENGINES; do
    case "$e" in
        archc|llama|torch) ;;
        base) [ -x "${ARCHC_BASE:-}" ] || {
            echo "compare.sh: the engine base needs ARCHC_BASE, an archc binary (found '${ARCHC_BASE:-}')" >&2
            exit 2
        } ;;
        *) echo "compare.sh: --engines takes archc, base, llama and torch (found '$e')" >&2; exit 2 ;;
    esac
done
engine() { case " $ENGINES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

mkdir -p "$WORK"
log() { echo "[compare.sh $(date +%H:%M:%S)] $*" >&2; }

# --- Python: a venv under bench/.work unless PYTHON names one that is ready. -------------------
setup_python() {
    if [ -n "${PYTHON:-}" ]; then
        PY="$PYTHON"
    else
        PY="$WORK/venv/bin/python"
        if [ ! -x "$PY" ]; then
            log "creating $WORK/venv"
            python3 -m venv "$WORK/venv"
        fi
        if ! "$PY" -c "import torch, transformers, safetensors, tokenizers, numpy" 2>/dev/null; then
            log "installing torch, transformers, safetensors, tokenizers, numpy into the venv"
            "$PY" -m pip install --quiet -r "$ROOT/tools/reference/requirements.txt" tokenizers
        fi
    fi
    "$PY" -c "import torch, transformers, safetensors, tokenizers, numpy" || {
        echo "compare.sh: $PY lacks torch/transformers/safetensors/tokenizers/numpy" >&2
        exit 1
    }
}

# --- llama.cpp: from the llama-cpp-python sdist, CPU only, native, release. -------------------
LLAMA_SRC="$WORK/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
LLAMA_BUILD="$WORK/llama-build"
LLAMA_BENCH="$LLAMA_BUILD/bin/llama-bench"

build_llama_cpp() {
    if [ -x "$LLAMA_BENCH" ]; then
        log "llama-bench already built: $LLAMA_BENCH"
        return
    fi
    if ! command -v cmake >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            log "installing cmake with apt-get"
            apt-get install -y -q cmake >/dev/null
        else
            log "installing cmake with pip into the venv"
            "$PY" -m pip install --quiet cmake
            PATH="$(dirname "$PY"):$PATH"
        fi
    fi
    if [ ! -f "$LLAMA_SRC/CMakeLists.txt" ]; then
        log "downloading the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist"
        # Only llama-cpp-python itself as source; its build backend may come as wheels.
        "$PY" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
            "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$WORK"
        tar -xzf "$WORK/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$WORK"
    fi
    log "configuring llama.cpp (CPU, GGML_NATIVE, Release)"
    cmake -S "$LLAMA_SRC" -B "$LLAMA_BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DLLAMA_CURL=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
    log "building llama-bench (takes a while on 2 cores)"
    cmake --build "$LLAMA_BUILD" --target llama-bench -j2 >/dev/null
    log "built $LLAMA_BENCH"
}

# --- The real model: SmolLM2-135M-Instruct Q4_1, archc's default model, in archc's model ----
# cache ($ARCHC_MODEL_DIR, else $XDG_CACHE_HOME/archc/models, else ~/.cache/archc/models),
# where `archc run --fetch-only` puts it. archc and llama.cpp both run this file as it is.
SMOLLM2=smollm2-135m-q4_1
SMOLLM2_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
is_real() { [ "$1" = "$SMOLLM2" ]; }
real_gguf() {
    local dir="${ARCHC_MODEL_DIR:-}"
    if [ -z "$dir" ]; then
        if [ -n "${XDG_CACHE_HOME:-}" ]; then dir="$XDG_CACHE_HOME/archc/models"; else dir="$HOME/.cache/archc/models"; fi
    fi
    echo "$dir/$SMOLLM2_FILE"
}

# --- Models: random weights at real shapes, bf16, with a tokenizer; and their GGUF. -----------
make_models() {
    for m in $MODELS; do
        if is_real "$m"; then
            if [ ! -f "$(real_gguf)" ]; then
                log "fetching $SMOLLM2_FILE into the archc model cache"
                (cd "$ROOT" && cargo build --release --quiet --bin archc)
                "$ROOT/target/release/archc" run --fetch-only
            fi
            continue
        fi
        if [ ! -f "$WORK/models/$m/config.json" ]; then
            log "creating the $m bench model"
            "$PY" "$ROOT/tools/reference/bench_models.py" --out "$WORK/models" "$m"
        fi
        if [ ! -f "$WORK/gguf/$m.gguf" ]; then
            log "converting $m to GGUF bf16"
            mkdir -p "$WORK/gguf"
            # The pre-tokenizer name only labels the bench tokenizer (see convert_gguf.py).
            case "$m" in qwen*) pre=qwen2 ;; *) pre=llama-bpe ;; esac
            "$PY" "$ROOT/bench/convert_gguf.py" "$LLAMA_SRC" "$pre" "$WORK/models/$m" \
                --outtype bf16 --outfile "$WORK/gguf/$m.gguf" >"$WORK/gguf/$m.convert.log" 2>&1 || {
                tail -20 "$WORK/gguf/$m.convert.log" >&2
                exit 1
            }
        fi
    done
}

# --- One round per engine, alternating, then the table. --------------------------------------
run_all() {
    # ARCHC=path times that binary instead of building this checkout.
    if [ -z "${ARCHC:-}" ]; then
        log "building archc (release)"
        (cd "$ROOT" && cargo build --release --quiet --bin archc)
        ARCHC="$ROOT/target/release/archc"
    fi
    RAW="$WORK/raw"
    rm -rf "$RAW"
    mkdir -p "$RAW"
    echo "# bench/compare.sh --threads $THREADS --prompt-len $PROMPT --gen $GEN --rounds $ROUNDS"
    echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    local field flags
    field() { grep -m1 "^$1" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'; }
    flags="$(for f in avx2 fma avx512f avx512_bf16; do grep -m1 -qw "$f" /proc/cpuinfo && printf '%s ' "$f"; done)"
    echo "# cpu: $(field 'model name') (family $(field 'cpu family'), model $(field 'model')), $(nproc) cores, ${flags% }"
    echo "# archc: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    if engine base; then
        echo "# base: ${ARCHC_BASE#"$ROOT"/}"
    fi
    echo "# engines: $ENGINES"
    echo "# llama.cpp: from llama-cpp-python $LLAMA_CPP_PYTHON_VERSION; torch $("$PY" -c 'import torch; print(torch.__version__)')"
    echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    # One round runs every engine once on every model; the table is the median over rounds.
    for r in $(seq 1 "$ROUNDS"); do
        for m in $MODELS; do
            # archc runs the HF directory of a bench model, or the real model's GGUF.
            local archc_model="$WORK/models/$m" gguf="$WORK/gguf/$m.gguf"
            if is_real "$m"; then
                archc_model="$(real_gguf)"
                gguf="$archc_model"
                [ -f "$gguf" ] || {
                    echo "compare.sh: $gguf is missing (run without --only, or archc run --fetch-only)" >&2
                    exit 1
                }
            fi
            # archc and base swap places every round, so neither always runs first.
            local pair="archc base"
            [ $((r % 2)) = 0 ] && pair="base archc"
            for e in $pair; do
                engine "$e" || continue
                local bin="$ARCHC"
                [ "$e" = base ] && bin="$ARCHC_BASE"
                log "round $r/$ROUNDS $m: $e"
                "$bin" bench "$archc_model" --prompt-len "$PROMPT" --gen "$GEN" \
                    --threads "$THREADS" --repeat 1 --json >"$RAW/$e.$m.$r.json"
            done
            if engine llama; then
                log "round $r/$ROUNDS $m: llama.cpp"
                "$LLAMA_BENCH" -m "$gguf" -p "$PROMPT" -n "$GEN" -t "$THREADS" \
                    -r 1 -o json >"$RAW/llama.$m.$r.json" 2>"$RAW/llama.$m.$r.log"
            fi
            # PyTorch has no Q4_1 kernels: the real model is archc against llama.cpp only.
            is_real "$m" && continue
            engine torch || continue
            log "round $r/$ROUNDS $m: PyTorch eager"
            "$PY" "$ROOT/bench/torch_bench.py" "$WORK/models/$m" --prompt-len "$PROMPT" \
                --gen "$GEN" --threads "$THREADS" --repeat 1 >"$RAW/torch.$m.$r.json" \
                2>"$RAW/torch.$m.$r.log"
        done
        echo "# after round $r, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
        # The table so far, so that an interrupted run still leaves one.
        if [ "$r" != "$ROUNDS" ]; then
            echo
            echo "## after round $r"
            "$PY" "$ROOT/bench/table.py" "$RAW" --models "$MODELS" --threads "$THREADS" \
                --prompt-len "$PROMPT" --gen "$GEN"
            echo
        fi
    done
    echo
    echo "## result"
    "$PY" "$ROOT/bench/table.py" "$RAW" --models "$MODELS" --threads "$THREADS" \
        --prompt-len "$PROMPT" --gen "$GEN"
    echo
    echo "## raw results"
    # Paths under the checkout or the home directory are shown relative to them.
    for f in "$RAW"/*.json; do
        echo "### $(basename "$f")"
        sed -e "s|$ROOT/||g" -e "s|$HOME/|~/|g" "$f"
        echo
    done
}

setup_python
case "$ONLY" in
    build) build_llama_cpp ;;
    models) build_llama_cpp; make_models ;;
    run) run_all ;;
    "") build_llama_cpp; make_models; run_all ;;
    *) echo "compare.sh: --only takes build, models or run (found '$ONLY')" >&2; exit 2 ;;
esac
