/* matrix.c: a matrix's rows times a vector, forward and backward, with the
 * lanes of a SIMD register across independent sums (internal.h, matvec_t).
 *
 * Every lane is one sum of the reference, in its own order: a multiply, then
 * an add, never fused (-ffp-contract=off; the AVX2 versions are compiled
 * without FMA), never reassociated. Only which sums run side by side changes.
 *   forward   four rows a lane each (a row block's weights transposed once a
 *             forward into wt: wt[w0 + 4 j + c] = row c's j-th weight), four
 *             blocks of one matrix times one vector at once;
 *   backward  a vector's gradients: its entries a lane each, a chunk of rows
 *             held in registers over every row that reads it; a row
 *             block's weights' gradients are weight_grads.c's. */
#include "internal.h"
#include "lanes.h"


/* The forward of groups g[0..count-1] (count 1 or 4: rows of one matrix times
 * one vector v): lane c of block k is g[k]'s row c. */
#define MATVEC_BODY                                                                      \
    v4 acc[4];                                                                           \
    const double *w[4];                                                                  \
    for (int k = 0; k < count; ++k) {                                                    \
        w[k] = wt + g[k].w[0];                                                           \
        v4 init = {x[g[k].init[0]], x[g[k].init[1]], x[g[k].init[2]], x[g[k].init[3]]};  \
        acc[k] = load4(w[k]) * v[0] + init;                                              \
    }                                                                                    \
    if (count == 4)                                                                      \
        for (int32_t j = 1; j < g->len; ++j) {                                           \
            double vj = v[j];                                                            \
            acc[0] = acc[0] + load4(w[0] + 4 * j) * vj;                                  \
            acc[1] = acc[1] + load4(w[1] + 4 * j) * vj;                                  \
            acc[2] = acc[2] + load4(w[2] + 4 * j) * vj;                                  \
            acc[3] = acc[3] + load4(w[3] + 4 * j) * vj;                                  \
        }                                                                                \
    else                                                                                 \
        for (int32_t j = 1; j < g->len; ++j) acc[0] = acc[0] + load4(w[0] + 4 * j) * v[j]; \
    for (int k = 0; k < count; ++k)                                                      \
        for (int c = 0; c < SIDE; ++c) x[g[k].top[c]] = acc[k][c];

/* Eight registers of W lanes at a time (V, LOAD, STORE: their type and
 * access), eight sums in flight: an add's latency hidden. */
#define VECGRADS_CHUNKS(V, LOAD, STORE, W)                                        \
    for (; i + 8 * W <= lanes; i += 8 * W) {                                      \
        V a[8];                                                                   \
        for (int u = 0; u < 8; ++u) a[u] = LOAD(acc + i + W * u);                 \
        for (int32_t r = 0; r < rows; ++r) {                                      \
            const double *w = x + wofs[r] + i;                                    \
            double gt = gts[r];                                                   \
            for (int u = 0; u < 8; ++u) a[u] = a[u] + LOAD(w + W * u) * gt;       \
        }                                                                         \
        for (int u = 0; u < 8; ++u) STORE(acc + i + W * u, a[u]);                 \
    }

/* A vector's gradients (a backward group of 2 or 3): acc[i] sums w_r[i] *
 * g_r over the rows r that read the vector, in the pull list's order; wofs[r]
 * is where row r's weights for lane 0 are in x, gts[r] its sum's gradient. */
#define VECGRADS_BODY                                                             \
    int32_t i = from;                                                             \
    VECGRADS_CHUNKS(v4, load4, store4, 4)                                         \
    for (; i + 16 <= lanes; i += 16) {                                            \
        v4 a0 = load4(acc + i), a1 = load4(acc + i + 4);                          \
        v4 a2 = load4(acc + i + 8), a3 = load4(acc + i + 12);                     \
        for (int32_t r = 0; r < rows; ++r) {                                      \
            const double *w = x + wofs[r] + i;                                    \
            double gt = gts[r];                                                   \
            a0 = a0 + load4(w) * gt;                                              \
            a1 = a1 + load4(w + 4) * gt;                                          \
            a2 = a2 + load4(w + 8) * gt;                                          \
            a3 = a3 + load4(w + 12) * gt;                                         \
        }                                                                         \
        store4(acc + i, a0); store4(acc + i + 4, a1);                             \
        store4(acc + i + 8, a2); store4(acc + i + 12, a3);                        \
    }                                                                             \
    for (; i < lanes; i += 4) {  /* lanes: a multiple of SIDE */                  \
        v4 a0 = load4(acc + i);                                                   \
        for (int32_t r = 0; r < rows; ++r) a0 = a0 + load4(x + wofs[r] + i) * gts[r]; \
        store4(acc + i, a0);                                                      \
    }

/* The same, for one run of four groups (16 rows) at two positions: g and h,
 * vectors v and u; the weights' loads shared, eight sums in flight. */
#define MATVEC2_BODY                                                                     \
    v4 acc[8];                                                                           \
    const double *w[4];                                                                  \
    for (int k = 0; k < 4; ++k) {                                                        \
        w[k] = wt + g[k].w[0];                                                           \
        v4 ig = {x[g[k].init[0]], x[g[k].init[1]], x[g[k].init[2]], x[g[k].init[3]]};    \
        v4 ih = {x[h[k].init[0]], x[h[k].init[1]], x[h[k].init[2]], x[h[k].init[3]]};    \
        acc[k] = load4(w[k]) * v[0] + ig;                                                \
        acc[4 + k] = load4(w[k]) * u[0] + ih;                                            \
    }                                                                                    \
    for (int32_t j = 1; j < g->len; ++j) {                                               \
        double vj = v[j], uj = u[j];                                                     \
        for (int k = 0; k < 4; ++k) {                                                    \
            v4 wk = load4(w[k] + 4 * j);                                                 \
            acc[k] = acc[k] + wk * vj;                                                   \
            acc[4 + k] = acc[4 + k] + wk * uj;                                           \
        }                                                                                \
    }                                                                                    \
    for (int k = 0; k < 4; ++k)                                                          \
        for (int c = 0; c < SIDE; ++c) {                                                 \
            x[g[k].top[c]] = acc[k][c];                                                  \
            x[h[k].top[c]] = acc[4 + k][c];                                              \
        }

#define MATVEC2_ARGS double *restrict x, const double *restrict wt, const double *v, const double *u, \
                     const matvec_t *g, const matvec_t *h
#define MATVEC_ARGS double *restrict x, const double *restrict wt, const double *v, const matvec_t *g, int count
#define VECGRADS_ARGS double *restrict acc, const double *x, const int32_t *wofs, const double *gts, int32_t rows, \
                      int32_t lanes, int32_t from

/* Where a tape has no row blocks, or a block's weights are read otherwise
 * too: an F_MV4 group's weights' gradients, a position at a time (lanes
 * across a row). Row c's weight j adds v[j] * g_c (its product's local grad
 * is the vector's entry, the product's gradient its row's). The rows are
 * distinct parameters, the vector other nodes or a copy: nothing aliases. */
#define ROWS_GRADS_BODY                                                                    \
    double *restrict g0 = g + m->w[0], *restrict g1 = g + m->w[1];                        \
    double *restrict g2 = g + m->w[2], *restrict g3 = g + m->w[3];                        \
    double t0 = g[m->top[0]], t1 = g[m->top[1]], t2 = g[m->top[2]], t3 = g[m->top[3]];    \
    for (int32_t j = 0; j < m->len; ++j) {                                                \
        g0[j] += v[j] * t0;                                                               \
        g1[j] += v[j] * t1;                                                               \
        g2[j] += v[j] * t2;                                                               \
        g3[j] += v[j] * t3;                                                               \
    }
#define ROWS_GRADS_ARGS double *restrict g, const double *restrict v, const matvec_t *m
KERNELS(matvec, (MATVEC_ARGS), MATVEC_BODY)
KERNELS(matvec2, (MATVEC2_ARGS), MATVEC2_BODY)
KERNELS(vecgrads, (VECGRADS_ARGS), VECGRADS_BODY)

/* The same with eight lanes a register (AVX-512): 64 lanes a step, eight
 * sums in flight; the lanes from the last multiple of 64 on as above. */
#define VECGRADS8_BODY                                                            \
    int32_t i = 0;                                                                \
    VECGRADS_CHUNKS(v8, load8, store8, 8)                                         \
    if (i < lanes) vecgrads_avx2(acc, x, wofs, gts, rows, lanes, i);
WIDE(vecgrads, (VECGRADS_ARGS), VECGRADS8_BODY)
KERNELS(rows_grads, (ROWS_GRADS_ARGS), ROWS_GRADS_BODY)

void matrix_group_grads(tape_t *t, const matvec_t *m) {
    double buf[MAX_LANES];
    KERNEL(rows_grads)(t->grad, matvec_vector(t->x, t->dot_pair, m, buf), m);
}

/* The row blocks' weights, transposed (wt: n_params numbers, read by blocks only). */
void matrix_transpose(tape_t *t) {
    for (int32_t b = 0; b < t->n_blocks; ++b) {
        int32_t w0 = t->block_w0[b], len = t->block_len[b];
        const double *w = t->x + w0;
        double *dst = t->wt + w0;
        for (int32_t j = 0; j < len; ++j)
            for (int c = 0; c < SIDE; ++c) dst[SIDE * j + c] = w[c * len + j];
    }
}

/* The forward of F_MV4 group g and, when g->run is 4, the three after it;
 * with h (level_forward), of the same rows at another position too. */
void matrix_forward(tape_t *t, const matvec_t *g, const matvec_t *h) {
    double buf[MAX_LANES], buf2[MAX_LANES];
    const double *v = matvec_vector(t->x, t->dot_pair, g, buf);
    if (h != NULL && g->run == SIDE && h->run == SIDE) {
        const double *u = matvec_vector(t->x, t->dot_pair, h, buf2);
        KERNEL(matvec2)(t->x, t->wt, v, u, g, h);
        return;
    }
    int count = g->run == SIDE ? SIDE : 1;
    KERNEL(matvec)(t->x, t->wt, v, g, count);
    if (h != NULL) matrix_forward(t, h, NULL);
}

/* The rows of [k0, k1) (a group's pull list) added into acc, a chunk at a
 * time: all of them (tgt < 0), or those of logits other than tgt (last
 * 0), or tgt's (last 1). */
static void add_rows(tape_t *t, double *acc, int32_t lanes, int64_t k0, int64_t k1, int32_t end, int32_t tgt, int last) {
    enum { CHUNK = 256 };
    double gts[CHUNK];
    int32_t wofs[CHUNK];
    void (*kernel)(VECGRADS_ARGS) = KERNEL_WIDE(vecgrads);
    while (k0 < k1) {
        int32_t rows = 0;
        for (; k0 < k1 && rows < CHUNK; ++k0)
            if (t->pull_parent[k0] < end && (tgt < 0 || (t->pull_block[k0] == tgt) == last)) {
                gts[rows] = t->grad[t->pull_parent[k0]];
                wofs[rows++] = t->pull_src[k0] - (lanes - 1);
            }
        kernel(acc, t->x, wofs, gts, rows, lanes, 0);
    }
}

/* N short vectors' gradients (16 or 32 lanes: an attention head's query or
 * key, read by one head's logits; or heads' outputs whose lists have the same
 * parents in the same order, aliases.c share_plan; or a head's queries, or
 * keys, at one position, each its own list, their parents at the same
 * positions pull by pull) in one pass over the lists, R registers of W lanes
 * a vector: each row's weights (each vector's its own, src[j]) times its
 * sum's gradient (pp[j]), added as the lists give them (a parent past end
 * adds nothing: past it in all N, share_plan), each lane the same sum as
 * alone; add_rows's sums, without its copies of the list, which would cost
 * more than the sums at this width. */
#define SHORT_BODY(V, LOAD, STORE, W, R, N)                                       \
    V a[N][R];                                                                    \
    for (int j = 0; j < N; ++j)                                                   \
        for (int u = 0; u < R; ++u) a[j][u] = (V){0.0};                           \
    for (int64_t k = 0; k < count; ++k) {                                         \
        if (pp[0][k] >= end) continue;                                            \
        for (int j = 0; j < N; ++j) {                                             \
            double gq = g[pp[j][k]];                                              \
            const double *w = x + src[j][k] - (R * W - 1);                        \
            for (int u = 0; u < R; ++u) a[j][u] = a[j][u] + LOAD(w + W * u) * gq; \
        }                                                                         \
    }                                                                             \
    for (int j = 0; j < N; ++j)                                                   \
        for (int u = 0; u < R; ++u) STORE(acc[j] + W * u, a[j][u]);
#define SHORT_ARGS double *const *acc, const double *x, const double *g, const int32_t *const *pp, \
                   const int32_t *const *src, int64_t count, int32_t end
#define SHORT_KERNELS(N)                                                            \
    KERNELS(short16x##N, (SHORT_ARGS), SHORT_BODY(v4, load4, store4, 4, 4, N))      \
    KERNELS(short32x##N, (SHORT_ARGS), SHORT_BODY(v4, load4, store4, 4, 8, N))      \
    WIDE(short16x##N, (SHORT_ARGS), SHORT_BODY(v8, load8, store8, 8, 2, N))         \
    WIDE(short32x##N, (SHORT_ARGS), SHORT_BODY(v8, load8, store8, 8, 4, N))
SHORT_KERNELS(1)
SHORT_KERNELS(2)
SHORT_KERNELS(3)
SHORT_KERNELS(4)

/* The kernel for n (1 to 4) short vectors of `lanes` (16 or 32) side by side. */
static void short_grads(int32_t lanes, int32_t n, double *const *acc, const double *x, const double *g,
                        const int32_t *const *pp, const int32_t *const *src, int64_t count, int32_t end) {
    void (*const by16[])(SHORT_ARGS) = {KERNEL_WIDE(short16x1), KERNEL_WIDE(short16x2),
                                        KERNEL_WIDE(short16x3), KERNEL_WIDE(short16x4)};
    void (*const by32[])(SHORT_ARGS) = {KERNEL_WIDE(short32x1), KERNEL_WIDE(short32x2),
                                        KERNEL_WIDE(short32x3), KERNEL_WIDE(short32x4)};
    (lanes == 16 ? by16 : by32)[n - 1](acc, x, g, pp, src, count, end);
}

/* Short vector b, when share_plan put it with others: the lead sums them all,
 * the others nothing (done). 1 if so, 0 if b is on its own. */
static int shared_grads(tape_t *t, int32_t b, int32_t lanes, int32_t end) {
    int32_t at = t->n_share > 0 ? share_index(t, b) : -1;
    if (at < 0) return 0;
    int32_t n = t->share_n[at], own = n < 0;  /* (own: each its own list, consecutive entries) */
    if (n == 0) return 1;
    n = own ? -n : n;
    double *accs[SHARE_MAX];  /* (each vector's nodes consecutive, none a parent of another's: share_plan) */
    const int32_t *src[SHARE_MAX], *pp[SHARE_MAX];
    for (int32_t j = 0; j < n; ++j) {
        int32_t e = own ? b - j * lanes : t->share_b[at + j];
        accs[j] = t->grad + t->bwd[e] - (lanes - 1);
        src[j] = t->pull_src + t->pull_start[e];
        pp[j] = t->pull_parent + t->pull_start[own ? e : b];
    }
    short_grads(lanes, n, accs, t->x, t->grad, pp, src, pull_count(t, b), end);
    t->short_vectors += n;
    t->vectors_shared_list += own ? 0 : n;
    t->vectors_side_by_side += own ? n : 0;
    return 1;
}

/* A backward group of 2 or 3 at entry b, `lanes` wide, whose parents' list is
 * [k0, k1): the entries' gradients, into g. A rotating vector (read by every
 * logit, tgt >= 0 the target) adds the target's row last (internal.h). */
void matrix_vector_grads(tape_t *t, int32_t b, int32_t lanes, int64_t k0, int64_t k1, int32_t end, int32_t tgt) {
    double acc[MAX_LANES];
    if (tgt < 0 && (lanes == 16 || lanes == 32) && shared_grads(t, b, lanes, end)) return;
    if (tgt < 0 && (lanes == 16 || lanes == 32)) {
        double *accs[1] = {acc};
        const int32_t *src[1] = {t->pull_src + k0}, *pp[1] = {t->pull_parent + k0};
        short_grads(lanes, 1, accs, t->x, t->grad, pp, src, k1 - k0, end);
        ++t->short_vectors;
    } else {
        for (int32_t i = 0; i < lanes; ++i) acc[i] = 0.0;
        add_rows(t, acc, lanes, k0, k1, end, tgt, 0);
        if (tgt >= 0) add_rows(t, acc, lanes, k0, k1, end, tgt, 1);
    }
    for (int32_t i = 0; i < lanes; ++i) t->grad[t->bwd[b - (lanes - 1 - i)]] = acc[i];
}
