/* weight_grads.c: the row blocks' weights' gradients (blocks.c), the
 * weights a lane each, positions last to first inside the register: each
 * weight is read once a position, so that is its order of additions. Lanes of
 * four (AVX2), or of eight where the processor has AVX-512 (the same sums, each
 * a multiply then an add, never fused: twice the weights an instruction). */
#include "internal.h"
#include "lanes.h"

#include <stdint.h>

/* Two chunks of W weights of each of the four rows at a time (eight sums in
 * flight), in lanes of type V (W doubles), loaded and stored with LOAD/STORE. */
#define BLOCKGRADS_CHUNKS(V, LOAD, STORE, W)                                      \
    for (; j + 2 * W <= len; j += 2 * W) {                                        \
        V a[8];                                                                   \
        for (int c = 0; c < SIDE; ++c) {                                          \
            a[2 * c] = LOAD(g0 + c * len + j);                                    \
            a[2 * c + 1] = LOAD(g0 + c * len + j + W);                            \
        }                                                                         \
        for (int32_t k = 0; k < reads; ++k) {                                     \
            V v0 = LOAD(vp[k] + j), v1 = LOAD(vp[k] + j + W);                     \
            const double *gk = gp[k];                                             \
            for (int c = 0; c < SIDE; ++c) {                                      \
                a[2 * c] = a[2 * c] + v0 * gk[c];                                 \
                a[2 * c + 1] = a[2 * c + 1] + v1 * gk[c];                         \
            }                                                                     \
        }                                                                         \
        for (int c = 0; c < SIDE; ++c) {                                          \
            STORE(gw + c * len + j, a[2 * c]);                                    \
            STORE(gw + c * len + j + W, a[2 * c + 1]);                            \
        }                                                                         \
    }

/* A row block's weights' gradients: row c's weight j, from its gradient in
 * g0, adds v_k[j] * gp[k][c] for its reads k = 0.. (positions last to first),
 * into gw; row c's weights at g0 + c len and gw + c len, from weight `from` on. */
#define BLOCKGRADS_BODY                                                           \
    int32_t j = from;                                                             \
    BLOCKGRADS_CHUNKS(v4, load4, store4, 4)                                      \
    for (; j + 4 <= len; j += 4) {                                                \
        v4 a0 = load4(g0 + j), a1 = load4(g0 + len + j);                          \
        v4 a2 = load4(g0 + 2 * len + j), a3 = load4(g0 + 3 * len + j);            \
        for (int32_t k = 0; k < reads; ++k) {                                     \
            v4 vj = load4(vp[k] + j);                                             \
            const double *gk = gp[k];                                             \
            a0 = a0 + vj * gk[0];                                                 \
            a1 = a1 + vj * gk[1];                                                 \
            a2 = a2 + vj * gk[2];                                                 \
            a3 = a3 + vj * gk[3];                                                 \
        }                                                                         \
        store4(gw + j, a0); store4(gw + len + j, a1);                             \
        store4(gw + 2 * len + j, a2); store4(gw + 3 * len + j, a3);               \
    }                                                                             \
    for (; j < len; ++j)                                                          \
        for (int c = 0; c < SIDE; ++c) {                                          \
            double a = g0[c * len + j];                                           \
            for (int32_t k = 0; k < reads; ++k) a = a + vp[k][j] * gp[k][c];     \
            gw[c * len + j] = a;                                                  \
        }

#define BLOCKGRADS_ARGS double *gw, const double *g0, int32_t len, const double *const *vp, \
                        const double *const *gp, int32_t reads, int32_t from
KERNELS(blockgrads, (BLOCKGRADS_ARGS), BLOCKGRADS_BODY)

/* The same with eight weights a register: sixteen weights of each of the
 * four rows at a time (eight sums in flight), the rest four-wide as above. */
#define BLOCKGRADS8_BODY                                                          \
    int32_t j = 0;                                                                \
    BLOCKGRADS_CHUNKS(v8, load8, store8, 8)                                      \
    if (j < len) blockgrads_avx2(gw, g0, len, vp, gp, reads, j);

WIDE(blockgrads, (BLOCKGRADS_ARGS), BLOCKGRADS8_BODY)

/* Two blocks that read the same vectors at once (AVX-512): eight rows, sixteen
 * weights of each (sixteen sums in flight), each vector chunk loaded once for
 * eight rows; the second block's rows from h0 into hw, their sums' gradients
 * hp[k]. Each weight's sum as above; the weights past the last multiple of
 * 16, block by block as above. The positions' vectors and sums' gradients lie
 * far apart (out of the hardware prefetchers' sight): the loop asks for read
 * k + AHEAD's as it takes read k, and a line of the next two blocks' weights
 * at each read (the rows after these: matrix_param_grads then finds them in
 * cache, to see whether they start from zeros). Each read's sums' gradients at
 * gp[k] + gofs and hp[k] + hofs (the lists of a block before, shifted). Whether
 * every sum it wrote is finite, found in registers as it stores them (a - a is
 * 0 for a finite a, else nan). */
#define AHEAD 8
#define BLOCKGRADS_TWO_BODY                                                       \
    int32_t j = 0;                                                                \
    v8 bad = {0};                                                                 \
    const double *next = g0 + 8 * (int64_t)len, *next_end = next + 8 * (int64_t)len; \
    for (; j + 16 <= len; j += 16) {                                              \
        v8 a[16];                                                                 \
        int32_t ahead = j + 16 < len ? j + 16 : 8 * len;  /* the next chunk's rows, \
                          * or the next two blocks' where they follow (cold) */  \
        for (int c = 0; c < 2 * SIDE; ++c) {                                      \
            __builtin_prefetch(g0 + c * len + ahead);                             \
            __builtin_prefetch(g0 + c * len + ahead + 8);                         \
            __builtin_prefetch(gw + c * len + ahead, 1);                          \
            __builtin_prefetch(gw + c * len + ahead + 8, 1);                      \
        }                                                                         \
        for (int c = 0; c < SIDE; ++c) {                                          \
            a[2 * c] = load8(g0 + c * len + j);                                   \
            a[2 * c + 1] = load8(g0 + c * len + j + 8);                           \
            a[8 + 2 * c] = load8(h0 + c * len + j);                               \
            a[9 + 2 * c] = load8(h0 + c * len + j + 8);                           \
        }                                                                         \
        for (int32_t k = 0; k < reads; ++k) {                                     \
            if (next < next_end) { __builtin_prefetch(next, 1); next += 8; }      \
            int32_t later = k + AHEAD < reads ? k + AHEAD : k;                    \
            __builtin_prefetch(vp[later] + j);                                    \
            __builtin_prefetch(vp[later] + j + 8);                                \
            if (j == 0) {  /* (after the first chunk, in cache) */                \
                __builtin_prefetch(gp[later] + gofs);                             \
                __builtin_prefetch(hp[later] + hofs);                             \
            }                                                                     \
            v8 v0 = load8(vp[k] + j), v1 = load8(vp[k] + j + 8);                  \
            const double *gk = gp[k] + gofs, *hk = hp[k] + hofs;                  \
            for (int c = 0; c < SIDE; ++c) {                                      \
                a[2 * c] = a[2 * c] + v0 * gk[c];                                 \
                a[2 * c + 1] = a[2 * c + 1] + v1 * gk[c];                         \
                a[8 + 2 * c] = a[8 + 2 * c] + v0 * hk[c];                         \
                a[9 + 2 * c] = a[9 + 2 * c] + v1 * hk[c];                         \
            }                                                                     \
        }                                                                         \
        for (int c = 0; c < 16; ++c) bad = bad + (a[c] - a[c]);                  \
        for (int c = 0; c < SIDE; ++c) {                                          \
            store8(gw + c * len + j, a[2 * c]);                                   \
            store8(gw + c * len + j + 8, a[2 * c + 1]);                           \
            store8(hw + c * len + j, a[8 + 2 * c]);                               \
            store8(hw + c * len + j + 8, a[9 + 2 * c]);                           \
        }                                                                         \
    }                                                                             \
    int finite = 1;                                                               \
    for (int l = 0; l < 8; ++l) finite &= bad[l] == 0.0;                          \
    if (j < len) {  /* (the lists shifted: only where len is a multiple of 16) */ \
        blockgrads_avx2(gw, g0, len, vp, gp, reads, j);                           \
        blockgrads_avx2(hw, h0, len, vp, hp, reads, j);                           \
        for (int c = 0; c < SIDE; ++c)                                            \
            finite &= grads_finite(gw + c * len + j, len - j) & grads_finite(hw + c * len + j, len - j); \
    }                                                                             \
    return finite;
#define BLOCKGRADS_TWO_ARGS double *gw, const double *g0, double *hw, const double *h0, int32_t len, \
                            const double *const *vp, const double *const *gp, const double *const *hp, int32_t reads, \
                            int64_t gofs, int64_t hofs
#ifdef HAVE_AVX2
__attribute__((target("avx512f"))) static int blockgrads_two_avx512(BLOCKGRADS_TWO_ARGS) { BLOCKGRADS_TWO_BODY }
#define TWO_BLOCKS (lanes_level() >= LANES_AVX512 ? blockgrads_two_avx512 : NULL)
#else
#define TWO_BLOCKS NULL
#endif

/* Block b's reads of positions [0, n), last to first: their sums' gradients
 * into gp, and (where the block before reads other vectors) their vectors
 * into vp. How many. */
static int32_t block_reads(tape_t *t, int32_t b, int32_t n, const double **vp, const double **gp) {
    int32_t r = t->block_start[b], r_end = t->block_start[b + 1], reads = 0;
    while (r < r_end && t->block_pos[r] >= n) ++r;  /* positions last to first */
    for (int32_t k = r; k < r_end; ++k, ++reads) {
        int32_t v = t->block_vec[k];
        if (!t->block_same[b])
            vp[reads] = v >= 0 ? t->x + v
                               : matvec_vector(t->x, t->dot_pair, t->mv + t->block_mv[k], t->block_vbuf + (int64_t)reads * MAX_LANES);
        gp[reads] = t->block_top != NULL ? t->grad + t->block_top[k] : t->block_gt + SIDE * (int64_t)k;
    }
    return reads;
}

/* How far block b's sums are past block a's, at every read (block_same 2
 * from a + 1 through b: blocks.c). */
static int64_t shift(const tape_t *t, int32_t a, int32_t b) {
    return a == b ? 0 : (int64_t)t->block_top[t->block_start[b]] - t->block_top[t->block_start[a]];
}

/* Whether n gradients are +0.0 every one (all bits zero: what Adam leaves). */
static int all_zero(const double *g, int64_t n) {
    uint64_t bits = 0;
    for (int64_t k = 0; k < n; ++k) {
        uint64_t u;
        memcpy(&u, g + k, sizeof u);
        bits |= u;
    }
    return bits == 0;
}

/* Every row block's weights' gradients over positions [0, n), last to first
 * (matrix_plan: no weight of a block is read otherwise). Read k of a block
 * adds its vector times its four rows' sums' gradients, read in place (four
 * consecutive nodes: block_top) or gathered group by group first (in node
 * order, not a block's scattered positions); two blocks at once where they
 * read the same vectors (block_same), which are then gathered once, and where
 * each read's sums are a constant past the block before's (block_same 2), the
 * lists found for that block serve, shifted (one pass over the reads less).
 * The weights' gradients start from `from` (the same layout as t->grad: the
 * arena's column, or t->grad). Where `from` is the arena's column (column),
 * a block whose gradients start from +0.0 every one (a step after Adam) sums
 * into the column itself (block_in_place: nothing to copy after, and one
 * stream of memory less; zeros again if the step goes back to the model
 * code, params.c), the others into t->grad. Whether every one came out
 * finite (checked as they are written; if not, the column as it was). */
int matrix_param_grads(tape_t *t, int32_t n, const double *from, double *column) {
    int finite = 1;
    const double **vp = t->block_vp, **gp = t->block_vp + t->n_pos, **hp = t->block_vp + 2 * t->n_pos;
    void (*kernel)(BLOCKGRADS_ARGS) = KERNEL_WIDE(blockgrads);
    int (*two)(BLOCKGRADS_TWO_ARGS) = TWO_BLOCKS;
    t->blocks_paired = t->lists_shifted = 0;
    for (int32_t k = 0; k < t->mv_end[n - 1] && t->block_top == NULL; ++k) {
        const matvec_t *g = t->mv + k;
        double *dst = t->block_gt + SIDE * (int64_t)t->mv_read[k];
        for (int c = 0; c < SIDE; ++c) dst[c] = t->grad[g->top[c]];
    }
    int32_t base = -1, reads = 0;  /* the block whose sums' list gp holds (vp: its vectors) */
    for (int32_t b = 0; b < t->n_blocks; ++b) {
        int32_t w0 = t->block_w0[b], len = t->block_len[b];
        int64_t size = SIDE * (int64_t)len;
        int pair = two != NULL && b + 1 < t->n_blocks && t->block_same[b + 1];
        int32_t w1 = pair ? t->block_w0[b + 1] : w0;
        int shifted = pair && len % 16 == 0 && base >= 0 && t->block_same[b] == 2;
        if (!shifted) reads = block_reads(t, b, n, vp, gp);
        base = shifted ? base : b;
        int in_place = column != NULL && all_zero(from + w0, size) && all_zero(from + w1, size);  /* (in
                                                           * cache: the kernel before asked for them) */
        double *out = in_place ? column : t->grad;
        t->block_in_place[b] = (uint8_t)in_place;
        if (pair) {
            int64_t gofs = shift(t, base, b), hofs = 0;
            const double **hl = hp;
            if (len % 16 == 0 && t->block_same[b + 1] == 2) hofs = shift(t, base, b + 1), hl = gp;
            else block_reads(t, b + 1, n, vp, hp), base = -1;  /* (the next block's shift is from b + 1's) */
            t->block_in_place[++b] = (uint8_t)in_place;
            finite &= two(out + w0, from + w0, out + w1, from + w1, len, vp, gp, hl, reads, gofs, hofs);
            t->blocks_paired += 2;
            t->lists_shifted += (gofs != 0) + (hofs != 0);
            continue;
        }
        kernel(out + w0, from + w0, len, vp, gp, reads, 0);
        finite &= grads_finite(out + w0, size);  /* (while in cache) */
    }
    if (!finite && column != NULL) blocks_zero_again(t, column);
    return finite;
}

/* The blocks summed in the column (block_in_place) back to +0.0, as they were. */
void blocks_zero_again(const tape_t *t, double *column) {
    for (int32_t b = 0; b < t->n_blocks; ++b)
        if (t->block_in_place[b]) memset(column + t->block_w0[b], 0, SIDE * (size_t)t->block_len[b] * sizeof *column);
}
