/* paired.c: the backward's vectors read by a matrix's rows, two, four or
 * eight positions at once, so that the matrix's weights come from memory once for
 * all of them (as the forward's matvec2 does for two, levels.c).
 *
 * In the backward a level ends (runs first, levels.c) with the vector its
 * matrix read: a backward group of 2 or 3 (matrix.c) whose parents are that
 * matrix's rows' sums, a level later, at the same position. Those are final
 * once the later levels have run, and nothing else of the level reads the
 * vector's gradients before they are computed; so every position's vector
 * may be computed first, at the start of the level, eight (AVX-512), four or
 * two positions at a time where their lists read the same weights in the same order. Each entry's
 * gradient is the same sum, in its list's order, as matrix_vector_grads's.
 * paired_plan checks each of these facts from the tape. */
#include "internal.h"
#include "lanes.h"

#define CHUNK 256  /* rows a kernel call at most */
#define ASK_MAX 1024  /* lines asked for ahead a call at most */

/* One kernel call's rows: row r's weights for lane 0 at x + wofs[r], its
 * sum's gradient at position m gt[m][r]; and the lines the next call reads
 * first (ask[0 .. n_ask - 1]: far apart, gone from the caches since the
 * level after computed them), asked for one a row as the sums run (asked for
 * all at once, a few hundred, they stalled the call ~2 us of its ~30 at
 * 6/128/128: a prefetch waits for a free fill buffer). */
typedef struct rows_in {
    const double *x;
    const double (*gt)[CHUNK];
    const int32_t *wofs;
    int32_t rows, lanes, n_ask;
    const void *const *ask;
} rows_in_t;

/* The row loop's head: row r's weights w, its gradients e; a line asked for
 * while any is left (chunk c's rows ask for ask[c rows ..], in a call's first
 * kernel only). */
#define ROW_HEAD(i)                                                                 \
    const double *w = x + wofs[r] + (i), *e = gt[0] + r;                            \
    if (r < n_ask) __builtin_prefetch(ask[r]);
#define ROW_LOCALS(i0)                                                              \
    int32_t i = (i0), lanes = in->lanes, rows = in->rows;                           \
    const double *x = in->x, (*gt)[CHUNK] = in->gt;                                 \
    const int32_t *wofs = in->wofs;
/* (at the top of chunk i's rows, w lanes a chunk) */
#define ASKS(w)                                                                     \
    int32_t n_ask = from == 0 ? in->n_ask - (i / (w)) * rows : 0;                   \
    const void *const *ask = n_ask > 0 ? in->ask + (int64_t)(i / (w)) * rows : in->ask;

/* Four registers of W lanes at a time for each position (V, LOAD, STORE:
 * their type and access), the weights loaded once for both. */
#define PAIRED_CHUNKS(V, LOAD, STORE, W)                                            \
    for (; i + 4 * W <= lanes; i += 4 * W) {                                        \
        V a[4], b[4];                                                               \
        for (int u = 0; u < 4; ++u) { a[u] = LOAD(ap + i + W * u); b[u] = LOAD(aq + i + W * u); } \
        ASKS(4 * W)                                                                 \
        for (int32_t r = 0; r < rows; ++r) {                                        \
            ROW_HEAD(i)                                                             \
            double gp = e[0], gq = e[CHUNK];                                        \
            for (int u = 0; u < 4; ++u) {                                           \
                V wu = LOAD(w + W * u);                                             \
                a[u] = a[u] + wu * gp;                                              \
                b[u] = b[u] + wu * gq;                                              \
            }                                                                       \
        }                                                                           \
        for (int u = 0; u < 4; ++u) { STORE(ap + i + W * u, a[u]); STORE(aq + i + W * u, b[u]); } \
    }

/* Two positions' sums: acc[0][i] and acc[1][i] add w_r[i] * their row r's
 * gradient, rows in order; the weights loaded once. */
#define PAIRED_BODY                                                                 \
    ROW_LOCALS(from)                                                                \
    double *restrict ap = acc[0], *restrict aq = acc[1];                            \
    PAIRED_CHUNKS(v4, load4, store4, 4)                                             \
    for (; i < lanes; i += SIDE) {                                                  \
        v4 a0 = load4(ap + i), b0 = load4(aq + i);                                  \
        ASKS(SIDE)                                                                  \
        for (int32_t r = 0; r < rows; ++r) {                                        \
            ROW_HEAD(i)                                                             \
            v4 wu = load4(w);                                                       \
            a0 = a0 + wu * e[0];                                                    \
            b0 = b0 + wu * e[CHUNK];                                                \
        }                                                                           \
        store4(ap + i, a0); store4(aq + i, b0);                                     \
    }
#define ROWS_ARGS double *const *acc, const rows_in_t *in, int32_t from
KERNELS(paired, (ROWS_ARGS), PAIRED_BODY)
#define PAIRED8_BODY  /* (AVX-512: 32 lanes a step, the rest as above) */           \
    ROW_LOCALS(0)                                                                   \
    double *restrict ap = acc[0], *restrict aq = acc[1];                            \
    PAIRED_CHUNKS(v8, load8, store8, 8)                                             \
    if (i < lanes) paired_avx2(acc, in, i);
WIDE(paired, (ROWS_ARGS), PAIRED8_BODY)

/* Four positions' sums at once, likewise: eight lanes a step, the weights loaded once for four. */
#define QUAD_BODY                                                                   \
    ROW_LOCALS(from)                                                                \
    for (; i + 8 <= lanes; i += 8) {                                                \
        v4 a[4][2];                                                                 \
        for (int m = 0; m < 4; ++m) { a[m][0] = load4(acc[m] + i); a[m][1] = load4(acc[m] + i + 4); } \
        ASKS(8)                                                                     \
        for (int32_t r = 0; r < rows; ++r) {                                        \
            ROW_HEAD(i)                                                             \
            v4 w0 = load4(w), w1 = load4(w + 4);                                    \
            for (int m = 0; m < 4; ++m) {                                           \
                a[m][0] = a[m][0] + w0 * e[m * CHUNK];                              \
                a[m][1] = a[m][1] + w1 * e[m * CHUNK];                              \
            }                                                                       \
        }                                                                           \
        for (int m = 0; m < 4; ++m) { store4(acc[m] + i, a[m][0]); store4(acc[m] + i + 4, a[m][1]); } \
    }                                                                               \
    for (; i < lanes; i += SIDE) {                                                  \
        v4 a[4];                                                                    \
        for (int m = 0; m < 4; ++m) a[m] = load4(acc[m] + i);                       \
        ASKS(SIDE)                                                                  \
        for (int32_t r = 0; r < rows; ++r) {                                        \
            ROW_HEAD(i)                                                             \
            v4 w0 = load4(w);                                                       \
            for (int m = 0; m < 4; ++m) a[m] = a[m] + w0 * e[m * CHUNK];            \
        }                                                                           \
        for (int m = 0; m < 4; ++m) store4(acc[m] + i, a[m]);                       \
    }
KERNELS(quad, (ROWS_ARGS), QUAD_BODY)

/* ... and with eight lanes a register (AVX-512): sixteen lanes a step for M
 * positions at once, each sixteen-lane chunk of a row's weights loaded once
 * for all M; the row's next chunk asked for meanwhile (the rows are a row's
 * width apart, too far for the hardware to see: 6/128/128 backward median
 * 26.3 against 27.5 ms, one process alternating). */
#define SIXTEEN_LANES(M)                                                            \
    ROW_LOCALS(0)                                                                   \
    for (; i + 16 <= lanes; i += 16) {                                              \
        v8 a[M][2];                                                                 \
        for (int m = 0; m < M; ++m) { a[m][0] = load8(acc[m] + i); a[m][1] = load8(acc[m] + i + 8); } \
        ASKS(16)                                                                    \
        for (int32_t r = 0; r < rows; ++r) {                                        \
            ROW_HEAD(i)                                                             \
            if (i + 32 <= lanes) { __builtin_prefetch(w + 16); __builtin_prefetch(w + 24); } \
            v8 w0 = load8(w), w1 = load8(w + 8);                                    \
            for (int m = 0; m < M; ++m) {                                           \
                a[m][0] = a[m][0] + w0 * e[m * CHUNK];                              \
                a[m][1] = a[m][1] + w1 * e[m * CHUNK];                              \
            }                                                                       \
        }                                                                           \
        for (int m = 0; m < M; ++m) { store8(acc[m] + i, a[m][0]); store8(acc[m] + i + 8, a[m][1]); } \
    }

/* four positions; the lanes from the last multiple of 16 on as above */
#define QUAD8_BODY                                                                  \
    SIXTEEN_LANES(4)                                                                \
    if (i < lanes) quad_avx2(acc, in, i);
WIDE(quad, (ROWS_ARGS), QUAD8_BODY)

/* Eight positions' sums at once (AVX-512): half the weights' traffic of four
 * (a large matrix's rows come from L2), sixteen sums in flight; the lanes past
 * the last multiple of 16, four positions at a time as above. */
#define OCT_BODY                                                                    \
    SIXTEEN_LANES(8)                                                                \
    if (i < lanes) {                                                                \
        rows_in_t up = *in;  /* (positions 4 to 7's gradients as 0 to 3's) */       \
        up.gt = gt + 4;                                                             \
        quad_avx2(acc, in, i);                                                      \
        quad_avx2(acc + 4, &up, i);                                                 \
    }
WIDE(oct, (ROWS_ARGS), OCT_BODY)
#ifdef HAVE_AVX2
#define EIGHT_POSITIONS (lanes_level() >= LANES_AVX512 ? oct_avx512 : NULL)
#else
#define EIGHT_POSITIONS NULL
#endif

/* The lines the call for positions p, p - 1, .. p - 7 reads first: their
 * lists' parents and their vectors' nodes (into ask; their count). */
static int32_t ahead(const tape_t *t, int32_t p, int32_t s, const void **ask) {
    int32_t nl = t->n_levels, n = 0;
    for (int32_t q = p; q > p - 8 && q >= 0; --q) {
        if (t->first_lanes[(int64_t)q * nl + s] == 0) break;
        const first_group_t *f = group_at(t, q, s);
        for (int32_t j = 0; j < f->count && f->step != 0 && n < ASK_MAX; j += 8) ask[n++] = t->grad + f->parent0 - j;
        for (int32_t i = 0; i < f->lanes && f->node0 >= 0 && n < ASK_MAX; i += 8) ask[n++] = t->grad + f->node0 + i;
        for (int32_t j = 0; j < f->count && f->step == 0 && q == p && n + 1 < ASK_MAX; j += 16) {
            ask[n++] = t->pull_parent + f->k0 + j;
            ask[n++] = t->pull_src + f->k0 + j;
        }
    }
    return n;
}

/* How many positions from p down run their first groups of level s together
 * (8 with AVX-512, 4, 2, or 1: alone, or 0: p has none). */
int paired_width(const tape_t *t, int32_t p, int32_t s) {
    int32_t nl = t->n_levels, most = EIGHT_POSITIONS != NULL ? 8 : 4;
    if (t->first_lanes == NULL || t->first_lanes[(int64_t)p * nl + s] == 0) return 0;
    int k = 1;
    while (k < most && p - k >= 0 && t->paired[(int64_t)(p - k + 1) * nl + s]) ++k;
    return k >= 8 ? 8 : k >= 4 ? 4 : k >= 2 ? 2 : 1;
}

/* The first groups of positions p, p - 1, .. p - k + 1 (k 2, 4 or 8) at level s
 * (paired): summed into their gradients in place where each group's entries
 * are consecutive nodes, else in acc and copied. The rows' gradients are
 * copied to gt first, a chunk of rows at a time: each position's in a row
 * (its list's parents are consecutive, last first: a copy in order), or read
 * through the first position's list (the others' a constant from it), or
 * each through its own. */
void paired_grads(tape_t *t, int32_t p, int32_t s, int k) {
    int32_t nl = t->n_levels, lanes = group_at(t, p, s)->lanes;
    double buf[8][MAX_LANES], gt[8][CHUNK], *acc[8];
    int32_t wofs[CHUNK];
    const void *ask[ASK_MAX];
    void (*kernel)(ROWS_ARGS) = k == 8 ? EIGHT_POSITIONS : k == 4 ? KERNEL_WIDE(quad) : KERNEL_WIDE(paired);
    const first_group_t *f = group_at(t, p, s), *fm[8];  /* (k is 8 only where oct is built: paired_width) */
    for (int m = 0; m < k; ++m) {
        fm[m] = f - m;
        acc[m] = fm[m]->node0 >= 0 ? t->grad + fm[m]->node0 : buf[m];
        for (int32_t i = 0; i < lanes; ++i) acc[m][i] = 0.0;
    }
    int steps = 1, shifted = 1;  /* every list read from its first pull and the step (list_step); or
                                  * the first's parents read, the others' a constant from them */
    for (int m = 0; m < k; ++m) steps &= fm[m]->step != 0;
    for (int m = 1; m < k; ++m) shifted &= t->paired[(int64_t)(p - m + 1) * nl + s] == 3;
    int32_t off[8];
    for (int m = 0; m < k; ++m) off[m] = fm[m]->parent0 - f->parent0;
    rows_in_t in = {t->x, (const double (*)[CHUNK])gt, wofs, 0, lanes, ahead(t, p - k, s, ask), ask};
    int64_t count = f->count;
    for (int64_t j = 0; j < count; in.n_ask = 0) {  /* (every parent is at its own position: before end) */
        int32_t rows = 0;
        if (steps) {  /* (each position's gradients consecutive, last first) */
            rows = count - j < CHUNK ? (int32_t)(count - j) : CHUNK;
            for (int m = 0; m < k; ++m) {
                const double *g = t->grad + fm[m]->parent0 - j;
                for (int32_t r = 0; r < rows; ++r) gt[m][r] = g[-r];
            }
            for (int32_t r = 0; r < rows; ++r) wofs[r] = f->src0 + (int32_t)(j + r) * f->step - (lanes - 1);
            j += rows;
        }
        for (; j < count && rows < CHUNK && shifted; ++j, ++rows) {
            const double *g = t->grad + t->pull_parent[f->k0 + j];
            for (int m = 0; m < k; ++m) gt[m][rows] = g[off[m]];
            wofs[rows] = t->pull_src[f->k0 + j] - (lanes - 1);
        }
        for (; j < count && rows < CHUNK; ++j, ++rows) {
            for (int m = 0; m < k; ++m) gt[m][rows] = t->grad[t->pull_parent[fm[m]->k0 + j]];
            wofs[rows] = t->pull_src[f->k0 + j] - (lanes - 1);
        }
        in.rows = rows;
        kernel(acc, &in, 0);
    }
    for (int m = 0; m < k; ++m) {  /* (each head's lanes to its nodes) */
        int32_t heads = fm[m]->share >= 0 ? t->share_n[fm[m]->share] : 1, w = lanes / heads;
        for (int32_t h = 0; h < heads && acc[m] == buf[m] && heads > 1; ++h)
            memcpy(t->grad + fm[m]->head[h], acc[m] + h * w, (size_t)w * sizeof **acc);
        for (int32_t i = 0; i < lanes && acc[m] == buf[m] && heads == 1; ++i)
            t->grad[t->bwd[fm[m]->b - (lanes - 1 - i)]] = acc[m][i];
        t->short_vectors += heads > 1 ? heads : 0;
        t->vectors_shared_list += heads > 1 ? heads : 0;
    }
}
