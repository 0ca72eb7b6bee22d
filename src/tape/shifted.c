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
static void shifted_plain(SHIFTED_ARGS) { SHIFTED_BODY }
#ifdef HAVE_AVX2
__attribute__((target("avx2"))) static void shifted_avx2(SHIFTED_ARGS) { SHIFTED_BODY }
#endif

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
static void shift4_plain(tape_t *t, int64_t i) { SHIFT4_BODY }
#ifdef HAVE_AVX2
__attribute__((target("avx2"))) static void shift4_avx2(tape_t *t, int64_t i) { SHIFT4_BODY }
#endif

void shifted_dots(tape_t *t, int64_t i) {
    KERNEL(shift4)(t, i);
}
