/* shifted.c: a head's outputs and their values' gradients in the lanes of a
 * SIMD register (group.c: F_SHIFT4 and backward groups of 4). A head's output
 * entry j sums a_t * v_t[j] over positions t: four consecutive entries are
 * one weight a_t times four consecutive numbers. Every lane is one sum of the
 * reference, in its own order, nothing fused (as in matrix.c). */
#include "internal.h"
#include "lanes.h"

/* A backward group of 4 at entry b (internal.h): lane i is entry b - 3 + i,
 * whose parents are entry b's less 3 - i, with the same local gradients
 * (each lane adds x * g as the entry alone would). dst: the four entries. */
#define SHIFTED_BODY                                                            \
    v4 acc = {0.0, 0.0, 0.0, 0.0};                                              \
    for (int64_t k = k0; k < k1; ++k)                                           \
        if (pp[k] < end) acc = acc + x[src[k]] * load4(g + pp[k] - (SIDE - 1)); \
    for (int i = 0; i < SIDE; ++i) g[dst[i]] = acc[i];
#define SHIFTED_ARGS double *g, const double *x, const int32_t *pp, const int32_t *src, int64_t k0, int64_t k1, \
                     int32_t end, const int32_t *dst
KERNELS(shifted, (SHIFTED_ARGS), SHIFTED_BODY)

void shifted_grads(tape_t *t, int32_t b, int64_t k0, int64_t k1, int32_t end) {
    void (*kernel)(SHIFTED_ARGS) = KERNEL(shifted);
    kernel(t->grad, t->x, t->pull_parent, t->pull_src, k0, k1, end, t->bwd + b - (SIDE - 1));
}

/* An F_SHIFT4 at instruction i (group.c mark_shifted_dots): chain c's
 * products x[p[2 j]] * x[p[2 j + 1] + c], each lane summed in its order. */
#define SHIFT4_BODY                                                                 \
    const int32_t *A = t->fwd_arg + 3 * i, *p = t->dot_pair + A[0];                 \
    double *x = t->x;                                                               \
    v4 init = {x[A[1]], x[A[4]], x[A[7]], x[A[10]]};                                \
    v4 acc = x[p[0]] * load4(x + p[1]) + init;                                      \
    for (int32_t j = 2; j < A[2]; j += 2) acc = acc + x[p[j]] * load4(x + p[j + 1]); \
    for (int c = 0; c < SIDE; ++c) x[t->fwd[i + c]] = acc[c];
KERNELS(shift4, (tape_t *t, int64_t i), SHIFT4_BODY)

/* Four F_SHIFT4 groups in a row, one head's sixteen outputs at one position
 * (shift_plan): group q's chain c sums x[p[2 j]] * x[p[2 j + 1] + 4 q + c]
 * (len: 2 a product), the same weights, from init[4 q + c], into node out[4 q + c].
 * Four registers side by side: an addition's latency is waited once for
 * sixteen sums, not four. Each lane as in SHIFT4_BODY. */
#define SHIFT16_BODY                                                                      \
    v4 acc[SIDE];                                                                         \
    for (int q = 0; q < SIDE; ++q) acc[q] = x[p[0]] * load4(x + p[1] + SIDE * q) + load4(init + SIDE * q); \
    for (int32_t j = 2; j < len; j += 2) {                                                \
        double a = x[p[j]];                                                               \
        const double *v = x + p[j + 1];                                                   \
        for (int q = 0; q < SIDE; ++q) acc[q] = acc[q] + a * load4(v + SIDE * q);         \
    }                                                                                     \
    for (int q = 0; q < SIDE; ++q)                                                        \
        for (int c = 0; c < SIDE; ++c) x[out[SIDE * q + c]] = acc[q][c];
#define SHIFT16_ARGS double *x, const int32_t *p, int32_t len, const double *init, const int32_t *out
KERNELS(shift16, (SHIFT16_ARGS), SHIFT16_BODY)

void shift16(double *x, const int32_t *p, int32_t len, const double *init, const int32_t *out) {
    KERNEL(shift16)(x, p, len, init, out);
}

/* The group at instruction i, or the four from it (shift_plan: its second
 * instruction's first operand, unread by SHIFT4_BODY, is then -1); returns
 * the instructions done. */
int64_t shifted_dots(tape_t *t, int64_t i) {
    const int32_t *A = t->fwd_arg + 3 * i;
    if (A[3] != -1) {
        KERNEL(shift4)(t, i);
        return SIDE;
    }
    double init[SIDE * SIDE];
    for (int k = 0; k < SIDE * SIDE; ++k) init[k] = t->x[A[3 * k + 1]];
    shift16(t->x, t->dot_pair + A[0], A[2], init, t->fwd + i);
    return SIDE * SIDE;
}

/* Are the F_SHIFT4 groups at i and i + 4 q alike but for their vectors, 4 q
 * nodes on (A, B their operands)? */
static int shifted_alike(const tape_t *t, const int32_t *A, const int32_t *B, int q) {
    const int32_t *p = t->dot_pair + A[0], *r = t->dot_pair + B[0];
    if (B[2] != A[2]) return 0;
    for (int32_t j = 0; j < A[2]; j += 2)
        if (r[j] != p[j] || r[j + 1] != p[j + 1] + SIDE * q) return 0;
    return 1;
}

/* Runs of four F_SHIFT4 groups that shifted_dots may compute at once: alike
 * (shifted_alike), and none reading what another makes (made: scratch marks). */
int shift_plan(tape_t *t) {
    int64_t nf = t->fwd_end[t->n_pos - 1];
    uint8_t *made = NULL;
    if (!NEW(made, t->n_nodes)) return -1;
    for (int64_t i = 0; i + SIDE * SIDE <= nf; ++i) {
        if (t->fwd_code[i] != F_SHIFT4) continue;
        int32_t *A = t->fwd_arg + 3 * i;
        int ok = t->pos[t->fwd[i]] == t->pos[t->fwd[i + SIDE * SIDE - 1]];
        for (int q = 1; q < SIDE && ok; ++q)
            ok = t->fwd_code[i + SIDE * q] == F_SHIFT4 && shifted_alike(t, A, A + 3 * SIDE * q, q);
        for (int k = 0; k < SIDE * SIDE && ok; ++k) made[t->fwd[i + k]] = 1;
        const int32_t *p = t->dot_pair + A[0];
        for (int32_t j = 0; j < A[2] && ok; j += 2)
            for (int c = 0; c < SIDE * SIDE && ok; ++c) ok = !made[p[j]] && !made[p[j + 1] + c];
        for (int k = 0; k < SIDE * SIDE && ok; ++k) ok = !made[A[3 * k + 1]];
        for (int k = 0; k < SIDE * SIDE; ++k) made[t->fwd[i + k]] = 0;
        if (ok) {
            A[3] = -1;
            i += SIDE * SIDE - 1;
        } else {
            i += SIDE - 1;
        }
    }
    free(made);
    return 0;
}
