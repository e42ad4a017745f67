/* Drives a model library built by `archc build --lib` through its C API, as
 * tests/build.rs does: two sessions of one model on two threads at once, one running
 * the tokens as a prefill (every position's logits), the other token by token through
 * decode. Each writes its logits as raw float32 to a file, which the test compares with
 * the executable's `logits` output.
 *
 * usage: capi PREFILL_OUT DECODE_OUT TOKEN...
 */
#include "model.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

struct job {
    const archc_model *model;
    const uint32_t *tokens;
    size_t n;
    int decode;
    const char *out;
    const char *error;
};

static int write_floats(const char *path, const float *x, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(x, sizeof(float), n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static void *run(void *arg) {
    struct job *j = arg;
    archc_session *s = archc_session_new(j->model, 1, 1);
    if (!s) { j->error = archc_last_error(); return NULL; }
    size_t vocab = archc_model_vocab(j->model);
    float *all = malloc(sizeof(float) * vocab * j->n);
    size_t len = 0;
    if (!j->decode) {
        if (archc_session_prefill(s, j->tokens, j->n) != 0) { j->error = archc_last_error(); return NULL; }
        const float *l = archc_session_logits(s, &len);
        for (size_t i = 0; i < len && i < vocab * j->n; i++) all[i] = l[i];
    } else {
        for (size_t t = 0; t < j->n; t++) {
            if (archc_session_decode(s, j->tokens[t]) != 0) { j->error = archc_last_error(); return NULL; }
            size_t one = 0;
            const float *l = archc_session_logits(s, &one);
            if (one != vocab) { j->error = "decode gave a row of the wrong length"; return NULL; }
            for (size_t i = 0; i < vocab; i++) all[t * vocab + i] = l[i];
            len += one;
        }
    }
    if (len != vocab * j->n) { j->error = "wrong number of logits"; return NULL; }
    if (archc_session_position(s) != j->n) { j->error = "wrong cache position"; return NULL; }
    archc_session_reset(s);
    if (archc_session_position(s) != 0) { j->error = "reset kept tokens"; return NULL; }
    if (write_floats(j->out, all, len) != 0) { j->error = "cannot write the output"; return NULL; }
    free(all);
    archc_session_free(s);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: capi PREFILL_OUT DECODE_OUT TOKEN...\n"); return 2; }
    /* A wrong path fails with a message, not a crash. */
    if (archc_model_open("/nonexistent/model.gguf") != NULL || archc_last_error()[0] == 0) {
        fprintf(stderr, "opening a missing file did not fail with a message\n");
        return 1;
    }
    archc_model *m = archc_model_open(NULL);
    if (!m) { fprintf(stderr, "open: %s\n", archc_last_error()); return 1; }
    size_t n = (size_t)(argc - 3);
    uint32_t *tokens = malloc(sizeof(uint32_t) * n);
    for (size_t i = 0; i < n; i++) tokens[i] = (uint32_t)strtoul(argv[3 + i], NULL, 10);
    /* A token outside the vocabulary is refused with a message. */
    archc_session *bad = archc_session_new(m, 0, 1);
    if (!bad || archc_session_decode(bad, (uint32_t)archc_model_vocab(m)) != -1) {
        fprintf(stderr, "an out-of-range token was not refused\n");
        return 1;
    }
    fprintf(stderr, "refused as expected: %s\n", archc_last_error());
    archc_session_free(bad);
    struct job a = {m, tokens, n, 0, argv[1], NULL};
    struct job b = {m, tokens, n, 1, argv[2], NULL};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, run, &a);
    pthread_create(&tb, NULL, run, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    archc_model_free(m);
    if (a.error || b.error) {
        fprintf(stderr, "prefill: %s; decode: %s\n", a.error ? a.error : "ok", b.error ? b.error : "ok");
        return 1;
    }
    free(tokens);
    return 0;
}
