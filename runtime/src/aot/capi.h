/*
 * The C API of a model library built by `archc build --lib`.
 *
 * A library holds one model: its kernels as native code and the description of its
 * programs. The weights are memory-mapped at `archc_model_open` from the path given
 * there, or from the path given to `archc build` when that is NULL.
 *
 * Conventions:
 *   - Every exported symbol starts with `archc_`.
 *   - Functions returning `int` give 0 on success and -1 on failure; functions returning
 *     a pointer give NULL on failure. After a failure, `archc_last_error()` says why.
 *   - Handles are opaque. A model may be shared by any number of sessions; each session
 *     has its own KV cache and working memory, so two threads may use two sessions at
 *     the same time. One session must not be used by two threads at once.
 *   - Token ids are `uint32_t`, below `archc_model_vocab()`.
 *
 * Example:
 *   archc_model *m = archc_model_open(NULL);
 *   if (!m) { fprintf(stderr, "%s\n", archc_last_error()); return 1; }
 *   archc_session *s = archc_session_new(m, 0, 0);
 *   uint32_t prompt[] = {1, 2, 3};
 *   archc_session_prefill(s, prompt, 3);
 *   size_t n; const float *logits = archc_session_logits(s, &n);  // n == vocab
 *   archc_session_decode(s, next_token);
 *   archc_session_free(s); archc_model_free(m);
 */
#ifndef ARCHC_MODEL_H
#define ARCHC_MODEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* An open model: the weights bound to the compiled programs. */
typedef struct archc_model archc_model;
/* A sequence being run: KV cache, logits of the last call, executor state. */
typedef struct archc_session archc_session;

/* The message of the last failed call on this thread ("" if none). The string stays
 * valid until the next call on the same thread. */
const char *archc_last_error(void);

/* Opens the model over `weights_path` (a .gguf file or an HF model directory, as at
 * build time), or over the build-time weights when it is NULL. The weights must be
 * stored as the kernels were compiled for: the same tensors, shapes and formats, and
 * metadata that describes the same model; otherwise NULL, and the error names the
 * tensor or field. */
archc_model *archc_model_open(const char *weights_path);

/* The vocabulary size: the length of one row of logits. */
size_t archc_model_vocab(const archc_model *model);

/* Frees the model. Sessions made from it remain valid. NULL is ignored. */
void archc_model_free(archc_model *model);

/* A new session with an empty cache, running on `threads` worker threads (0: one per
 * core). With `all_logits` != 0, a prefill gives the logits of every position with f32
 * activations (what `OUT logits` writes); with 0, the last position's only, at the
 * build's precision (what generation runs). Decode always gives one row. */
archc_session *archc_session_new(const archc_model *model, int all_logits, size_t threads);

/* Runs `n` >= 1 tokens after the cached ones and keeps their logits. */
int archc_session_prefill(archc_session *session, const uint32_t *tokens, size_t n);

/* Runs one token after the cached ones and keeps its logits (one row). */
int archc_session_decode(archc_session *session, uint32_t token);

/* The logits of the last prefill or decode, row-major, with their count in `*len`
 * (if `len` is not NULL). Valid until the next call on the session; NULL before the
 * first. */
const float *archc_session_logits(const archc_session *session, size_t *len);

/* The number of tokens in the session's cache. */
size_t archc_session_position(const archc_session *session);

/* Forgets every cached token; the memory is kept for the next sequence. */
void archc_session_reset(archc_session *session);

/* Frees the session. NULL is ignored. */
void archc_session_free(archc_session *session);

#ifdef __cplusplus
}
#endif

#endif /* ARCHC_MODEL_H */
