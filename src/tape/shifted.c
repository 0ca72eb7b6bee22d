/* shifted.c: a head's outputs and their values' gradients in the lanes of a
 * SIMD register (group.c: F_SHIFT4 and backward groups of 4). A head's output
 * entry j sums a_t * v_t[j] over positions t: four consecutive entries are
 * one weight a_t times four consecutive numbers; in the backward, a head's
 * sixteen values' entries (and up to four heads) run from one list each
 * (shifted_runs). Every lane is one sum of the reference, in its own order,
 * nothing fused (as in matrix.c). */
#include "attention.h"
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

/* A run of such groups (shifted_runs): a head's sixteen values' entries from
 * one list, its four groups' lists alike but for their parents, four apart,
 * and up to four heads' lists (of one length) side by side: lane m of head h
 * is entry b - 16 h - 15 + m, whose parent is the list's less 15 - m. W lanes
 * a register; each lane adds x * g in its list's order, as its group alone. */
#define LANES16 (SIDE * SIDE)
#define RUN_BODY(V, LOAD, W)                                                               \
    V acc[SIDE][LANES16 / W];                                                              \
    memset(acc, 0, sizeof acc);                                                            \
    for (int64_t j = 0; j < s->count; ++j)                                                 \
        for (int h = 0; h < SIDE; ++h) {                                                   \
            if (h >= s->heads) break;                                                      \
            int64_t k = s->k[h] + j;                                                       \
            if (pp[k] >= end) continue;                                                    \
            double xs = x[src[k]];                                                         \
            const double *gp = g + pp[k] - (LANES16 - 1);                                  \
            for (int u = 0; u < LANES16 / W; ++u) acc[h][u] = acc[h][u] + xs * LOAD(gp + W * u); \
        }                                                                                  \
    for (int h = 0; h < s->heads; ++h)                                                     \
        for (int m = 0; m < LANES16; ++m) g[dst[-LANES16 * h - (LANES16 - 1) + m]] = acc[h][m / W][m % W];
#define RUN_ARGS double *g, const double *x, const int32_t *pp, const int32_t *src, const struct shift_run *s, \
                 int32_t end, const int32_t *dst
KERNELS(shift_run, (RUN_ARGS), RUN_BODY(v4, load4, 4))
WIDE(shift_run, (RUN_ARGS), RUN_BODY(v8, load8, 8))

/* The group of 4 at b: alone (bwd_lanes 0), a run's first (its record's index + 1),
 * or another of a run (-1: done with the first). */
void shifted_grads(tape_t *t, int32_t b, int64_t k0, int64_t k1, int32_t end) {
    int32_t r = t->bwd_lanes[b];
    if (r > 0 && t->shift_runs[r - 1].gv_at >= 0) attention_values(t, t->shift_runs + r - 1, t->bwd + b);
    else if (r > 0) KERNEL_WIDE(shift_run)(t->grad, t->x, t->pull_parent, t->pull_src, t->shift_runs + r - 1, end, t->bwd + b);
    if (r != 0) return;
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

/* Is the group of 4 at e group b's list with its parents d lower? */
static int shifted_by(const tape_t *t, int32_t b, int32_t e, int32_t d) {
    int64_t kb = t->pull_start[b], ke = t->pull_start[e], count = t->pull_start[b + 1] - kb;
    if (t->bwd_group[e] != 4 || t->pull_start[e + 1] - ke != count) return 0;
    for (int64_t j = 0; j < count; ++j)
        if (t->pull_parent[ke + j] != t->pull_parent[kb + j] - d || t->pull_src[ke + j] != t->pull_src[kb + j]) return 0;
    return 1;
}

/* Heads of sixteen entries from group b down (up to four, lists of one
 * length), inside [lo, b], each met as four groups (met: the backward's tops),
 * no lane's parent an entry of the run, all sixteen parents of a pull at one
 * position (a replay's end cuts none of them apart). mark: n_nodes zeros, left so. */
static int32_t run_heads(const tape_t *t, int32_t b, int32_t lo, const uint8_t *met, uint8_t *mark) {
    int32_t heads = 0;
    int64_t count = pull_count(t, b);
    for (; heads < SIDE; ++heads) {
        int32_t top = b - LANES16 * heads, ok = top - (LANES16 - 1) >= lo && t->bwd_group[top] == 4
            && pull_count(t, top) == count;
        for (int q = 1; q < SIDE && ok; ++q) ok = met[top - SIDE * q] && shifted_by(t, top, top - SIDE * q, SIDE * q);
        if (!ok || !met[top]) break;
    }
    for (int32_t e = b - LANES16 * heads + 1; e <= b; ++e) mark[t->bwd[e]] = 1;
    int ok = heads > 0;
    for (int32_t h = 0; h < heads && ok; ++h)
        for (int64_t k = t->pull_start[b - LANES16 * h]; k < t->pull_start[b - LANES16 * h + 1] && ok; ++k) {
            int32_t p = t->pull_parent[k];
            ok = p - (LANES16 - 1) >= 0 && t->pos[p - (LANES16 - 1)] == t->pos[p];
            for (int m = 0; m < LANES16 && ok; ++m) ok = !mark[p - m];
        }
    for (int32_t e = b - LANES16 * heads + 1; e <= b; ++e) mark[t->bwd[e]] = 0;
    return ok ? heads : 0;
}

/* Runs of groups of 4 (shifted_run records; bwd_lanes of their groups' tops).
 * 0, or -1 out of memory. */
int shifted_runs(tape_t *t) {
    int32_t nb = t->bwd_end[t->n_pos - 1], n = 0, cap = 0;
    uint8_t *met = NULL, *mark = NULL;
    if (!NEW(met, nb) || !NEW(mark, t->n_nodes)) { free(met); return -1; }
    backward_tops(t, met);
    for (int32_t p = t->n_pos - 1; p >= 0; --p) {
        int32_t b0 = p > 0 ? t->bwd_end[p - 1] : 0;
        for (int32_t b = t->bwd_end[p] - 1; b >= b0 + LANES16 - 1; --b) {
            if (t->bwd_group[b] != 4 || !met[b] || t->bwd_lanes[b] != 0) continue;
            int32_t lo = backward_piece(t, p, b), heads = run_heads(t, b, lo, met, mark);
            if (heads == 0) continue;
            if (n == cap) {
                cap = 2 * cap + 16;
                shift_run_t *more = realloc(t->shift_runs, (size_t)cap * sizeof *more);
                if (more == NULL) { free(met); free(mark); return -1; }
                t->shift_runs = more;
            }
            shift_run_t *s = t->shift_runs + n++;
            s->heads = heads;
            s->gv_at = -1;
            s->count = (int32_t)pull_count(t, b);
            for (int32_t h = 0; h < heads; ++h) s->k[h] = t->pull_start[b - LANES16 * h];
            for (int32_t e = b - LANES16 * heads + 1; e < b; ++e)
                if (t->bwd_group[e] == 4 && met[e]) t->bwd_lanes[e] = -1;
            t->bwd_lanes[b] = n;
            b -= LANES16 * heads - 1;
        }
    }
    t->n_shift_runs = n;
    free(met);
    free(mark);
    return 0;
}
