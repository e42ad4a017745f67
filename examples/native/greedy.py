#!/usr/bin/env python3
"""Greedy generation through the C API of a library built by `archc build --lib`,
with nothing but the Python standard library (ctypes).

    archc build model.gguf --lib -o model        # libmodel.so and model.h
    python3 examples/native/greedy.py ./libmodel.so 1,2,3 --steps 8

Prints the generated token ids as a JSON list. The C API takes and gives token ids;
tokenize with the model's tokenizer (or use the executable `archc build` makes without
--lib, which carries the tokenizer and chat template).
"""

import argparse
import ctypes
import json
import sys


def load(path):
    lib = ctypes.CDLL(path)
    lib.archc_last_error.restype = ctypes.c_char_p
    lib.archc_model_open.argtypes = [ctypes.c_char_p]
    lib.archc_model_open.restype = ctypes.c_void_p
    lib.archc_model_vocab.argtypes = [ctypes.c_void_p]
    lib.archc_model_vocab.restype = ctypes.c_size_t
    lib.archc_model_free.argtypes = [ctypes.c_void_p]
    lib.archc_session_new.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    lib.archc_session_new.restype = ctypes.c_void_p
    lib.archc_session_prefill.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_uint32),
        ctypes.c_size_t,
    ]
    lib.archc_session_decode.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.archc_session_logits.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]
    lib.archc_session_logits.restype = ctypes.POINTER(ctypes.c_float)
    lib.archc_session_free.argtypes = [ctypes.c_void_p]
    return lib


def check(lib, ok):
    if not ok:
        sys.exit("archc: " + lib.archc_last_error().decode())


def argmax(lib, session):
    n = ctypes.c_size_t()
    row = lib.archc_session_logits(session, ctypes.byref(n))
    check(lib, bool(row))
    best = max(range(n.value), key=lambda i: row[i])
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("library", help="the libNAME.so that archc build --lib wrote")
    ap.add_argument("tokens", help="prompt token ids, comma-separated")
    ap.add_argument("--steps", type=int, default=8, help="tokens to generate")
    ap.add_argument("--weights", help="weights path (default: the build-time one)")
    args = ap.parse_args()

    lib = load(args.library)
    model = lib.archc_model_open(args.weights.encode() if args.weights else None)
    check(lib, model)
    # 0: last position's logits (generation); 0 threads: one per core.
    session = lib.archc_session_new(model, 0, 0)
    check(lib, session)
    prompt = [int(t) for t in args.tokens.split(",")]
    ids = (ctypes.c_uint32 * len(prompt))(*prompt)
    check(lib, lib.archc_session_prefill(session, ids, len(prompt)) == 0)
    out = []
    for _ in range(args.steps):
        token = argmax(lib, session)
        out.append(token)
        check(lib, lib.archc_session_decode(session, token) == 0)
    lib.archc_session_free(session)
    lib.archc_model_free(model)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
