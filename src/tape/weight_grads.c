/* weight_grads.c: the row blocks' weights' gradients (blocks.c). Weight j of
 * row c of a block adds x_k[j] * d_k[c] for its reads k, positions last to
 * first (x_k the read's vector, d_k its four sums' gradients): each weight is
 * read once a position, so that is its order of additions, each a multiply
 * then an add, never fused.
 *
 * The reads' vectors and sums' gradients lie a position's nodes apart. They
 * are packed first, so that the kernels read two streams in order (no pointer
 * lists, no scattered loads; the hardware prefetchers keep up):
 *   X  the vectors, once for a run of blocks that read the same ones (block_same):
 *      sixteen entries of every read a chunk, [len / 16][reads][16], then the
 *      last len % 16 entries, [reads][len % 16]
 *   D  a block's sums' gradients (or two blocks': eight rows), [reads][rows]
 * Rows of 16 k + r weights: the chunks in registers (lanes of eight with
 * AVX-512, two blocks at once; else of four, block by block), the rest in
 * lanes of four, then one by one. (A 6/128/128 step: the kernels ~1.5x as
 * fast as ones that read each read's vector and sums where they are, the
 * whole of this file's work ~9% less, packing included: perf, one process
 * alternating the two.) */
#include "internal.h"
#include "lanes.h"

#include <stdint.h>

#define CHUNK 16
#define AHEAD 8  /* reads ahead a prefetch asks for */

/* The first of block b's reads of a position below n (its reads run last
 * position to first, each position once: a binary search). */
static int32_t first_read(const tape_t *t, int32_t b, int32_t n) {
    int32_t lo = t->block_start[b], hi = t->block_start[b + 1];
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        if (t->block_pos[mid] >= n) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Block b's reads from its first (r0) on: their vectors packed into X (above). How many. */
static int32_t pack_vectors(tape_t *t, int32_t b, int32_t r0) {
    int32_t reads = t->block_start[b + 1] - r0, len = t->block_len[b];
    int32_t full = len - len % CHUNK, rest = len % CHUNK;
    double *X = t->block_x, *tail = t->block_x + (int64_t)full * reads, buf[MAX_LANES];
    for (int32_t k = 0; k < reads; ++k) {
        int32_t ahead = t->block_vec[r0 + (k + AHEAD < reads ? k + AHEAD : k)];  /* (a position's nodes apart) */
        for (int32_t j = 0; j < len && ahead >= 0; j += 8) __builtin_prefetch(t->x + ahead + j);
        const double *v = t->block_vec[r0 + k] >= 0 ? t->x + t->block_vec[r0 + k]
                                                     : matvec_vector(t->x, t->dot_pair, t->mv + t->block_mv[r0 + k], buf);
        for (int32_t j = 0; j < full; j += CHUNK) memcpy(X + (int64_t)j * reads + CHUNK * k, v + j, CHUNK * sizeof *v);
        memcpy(tail + (int64_t)rest * k, v + full, (size_t)rest * sizeof *v);
    }
    return reads;
}

/* The rows of blocks b, b + 1 .. at once: eight (two blocks) where the
 * processor has AVX-512 and block b + 1 reads what b reads, else four. */
static int rows_at(const tape_t *t, int32_t b, int wide) {
    return wide && b + 1 < t->n_blocks && t->block_same[b + 1] ? 2 * SIDE : SIDE;
}

/* The sums' gradients of block b's (and, rows 8, block b + 1's) reads, the
 * first skip past (its run's), into D, rows a read. */
static void pack_sums(tape_t *t, int32_t b, int32_t skip, int32_t reads, int rows) {
    for (int32_t h = 0; h < rows / SIDE; ++h) {
        double *d = t->block_d + SIDE * h;
        for (int32_t k = 0, r = t->block_start[b + h] + skip; k < reads; ++k, ++r, d += rows) {
            const double *g = t->block_top != NULL ? t->grad + t->block_top[r] : t->block_gt + SIDE * (int64_t)r;
            for (int c = 0; c < SIDE; ++c) d[c] = g[c];
        }
    }
}

/* What the kernel asks for as it runs, to find in cache after it (a
 * position's nodes apart, or cold): the lines of the next rows' gradients
 * (block b on: all_zero reads them first) and of their reads' sums'
 * gradients (pack_sums). How many (at most ahead_size, below). */
static int32_t lines_ahead(tape_t *t, int32_t b, int32_t skip, const double *from, int wide) {
    int32_t m = 0;
    for (int32_t h = 0; b < t->n_blocks && h < rows_at(t, b, wide) / SIDE; ++h) {
        for (int32_t i = 0; i < SIDE * t->block_len[b + h]; i += 8) t->block_ahead[m++] = from + t->block_w0[b + h] + i;
        for (int32_t r = t->block_start[b + h] + skip; r < t->block_start[b + h + 1]; ++r)
            t->block_ahead[m++] = t->block_top != NULL ? t->grad + t->block_top[r] : t->block_gt + SIDE * (int64_t)r;
    }
    return m;
}

/* R rows (row r's gradients from in[r] into out[r]), their chunks of 16:
 * each chunk's R x 16 sums in registers, two of W lanes (type V) a row,
 * over every read k: x0, x1 its vector's chunk (X), d[r] row r's sum's
 * gradient (D). One of the lines ahead asked for at each read (to L2: the
 * rest of the kernel would push them out of L1). *finite cleared unless
 * every sum is finite (a - a is 0 only for a finite a: found in registers as
 * they are stored). */
#define CHUNKS_BODY(V, LOAD, STORE, W, R)                                         \
    V bad = {0};                                                                  \
    int32_t p = 0;                                                                \
    for (int32_t j = 0; j + CHUNK <= len; j += CHUNK)                             \
        for (int h = 0; h < CHUNK; h += 2 * W) {                                  \
            V a[R][2];                                                            \
            for (int r = 0; r < R; ++r) {                                         \
                a[r][0] = LOAD(in[r] + j + h);                                    \
                a[r][1] = LOAD(in[r] + j + h + W);                                \
            }                                                                     \
            const double *x = X + (int64_t)j * reads + h, *d = D;                 \
            for (int32_t k = 0; k < reads; ++k, x += CHUNK, d += R) {             \
                if (p < n_ahead) __builtin_prefetch(ahead[p++], 0, 2);            \
                V x0 = LOAD(x), x1 = LOAD(x + W);                                 \
                for (int r = 0; r < R; ++r) {                                     \
                    a[r][0] = a[r][0] + x0 * d[r];                                \
                    a[r][1] = a[r][1] + x1 * d[r];                                \
                }                                                                 \
            }                                                                     \
            for (int r = 0; r < R; ++r) {                                         \
                bad = bad + (a[r][0] - a[r][0]) + (a[r][1] - a[r][1]);            \
                STORE(out[r] + j + h, a[r][0]);                                   \
                STORE(out[r] + j + h + W, a[r][1]);                               \
            }                                                                     \
        }                                                                         \
    for (int l = 0; l < W; ++l) *finite &= bad[l] == 0.0;

#define CHUNKS_ARGS double *const *out, const double *const *in, int32_t len, const double *X, \
                    const double *D, int32_t reads, const double *const *ahead, int32_t n_ahead, int *finite
KERNELS(chunks4, (CHUNKS_ARGS), CHUNKS_BODY(v4, load4, store4, 4, SIDE))
WIDE(chunks4, (CHUNKS_ARGS), CHUNKS_BODY(v8, load8, store8, 8, SIDE))
#ifdef HAVE_AVX2
__attribute__((target("avx512f"))) static void chunks8_avx512(CHUNKS_ARGS) { CHUNKS_BODY(v8, load8, store8, 8, 2 * SIDE) }
#define TWO_BLOCKS (lanes_level() >= LANES_AVX512 ? chunks8_avx512 : NULL)
#else
#define TWO_BLOCKS NULL
#endif

/* The rest of rows rows (weights 16 (len / 16) on; their vectors at X, [reads][rest]):
 * four at a time, then one by one. */
#define REST_BODY                                                                 \
    int32_t rest = len % CHUNK, j0 = len - rest, j = 0;                           \
    v4 bad = {0};                                                                 \
    for (; j + 4 <= rest; j += 4) {                                               \
        v4 a[2 * SIDE];                                                           \
        for (int r = 0; r < rows; ++r) a[r] = load4(in[r] + j0 + j);              \
        for (int32_t k = 0; k < reads; ++k) {                                     \
            v4 x = load4(X + (int64_t)rest * k + j);                              \
            for (int r = 0; r < rows; ++r) a[r] = a[r] + x * D[rows * k + r];     \
        }                                                                         \
        for (int r = 0; r < rows; ++r) {                                          \
            bad = bad + (a[r] - a[r]);                                            \
            store4(out[r] + j0 + j, a[r]);                                        \
        }                                                                         \
    }                                                                             \
    for (; j < rest; ++j)                                                         \
        for (int r = 0; r < rows; ++r) {                                          \
            double a = in[r][j0 + j];                                             \
            for (int32_t k = 0; k < reads; ++k) a = a + X[(int64_t)rest * k + j] * D[rows * k + r]; \
            bad[0] = bad[0] + (a - a);                                            \
            out[r][j0 + j] = a;                                                   \
        }                                                                         \
    for (int l = 0; l < 4; ++l) *finite &= bad[l] == 0.0;
KERNELS(rest, (double *const *out, const double *const *in, int32_t len, const double *X, const double *D,
               int32_t reads, int rows, int *finite), REST_BODY)

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
 * (matrix_plan: no weight of a block is read otherwise): the vectors packed
 * once for a run of blocks that read the same ones, the sums' gradients
 * block by block (read in place, four consecutive nodes: block_top; or
 * gathered group by group first, in node order: block_gt), two blocks at
 * once where they read the same vectors (AVX-512). The weights' gradients
 * start from `from` (the same layout as t->grad: the arena's column, or
 * t->grad). Where `from` is the arena's column (column), a block whose
 * gradients start from +0.0 every one (a step after Adam) sums into the
 * column itself (block_in_place: nothing to copy after, and one stream of
 * memory less; zeros again if the step goes back to the model code,
 * params.c), the others into t->grad. Whether every one came out finite
 * (checked as they are written; if not, the column as it was). */
int matrix_param_grads(tape_t *t, int32_t n, const double *from, double *column) {
    int finite = 1;
    void (*one)(CHUNKS_ARGS) = KERNEL_WIDE(chunks4), (*two)(CHUNKS_ARGS) = TWO_BLOCKS;
    int wide = two != NULL;
    t->blocks_paired = t->vectors_reused = 0;
    for (int32_t k = 0; k < t->mv_end[n - 1] && t->block_top == NULL; ++k) {
        const matvec_t *g = t->mv + k;
        double *dst = t->block_gt + SIDE * (int64_t)t->mv_read[k];
        for (int c = 0; c < SIDE; ++c) dst[c] = t->grad[g->top[c]];
    }
    int32_t reads = 0, skip = 0, next_skip = 0;  /* (a run's reads past n: the same positions) */
    for (int32_t b = 0; b < t->n_blocks; ++b) {
        int32_t len = t->block_len[b];
        int rows = rows_at(t, b, wide), pair = rows > SIDE;
        if (t->block_same[b]) t->vectors_reused += 1;
        else skip = first_read(t, b, n) - t->block_start[b], reads = pack_vectors(t, b, t->block_start[b] + skip);
        pack_sums(t, b, skip, reads, rows);
        int in_place = column != NULL;  /* (in cache: the kernel before asked for them, lines_ahead) */
        for (int h = 0; h < rows / SIDE; ++h) in_place &= all_zero(from + t->block_w0[b + h], SIDE * (int64_t)len);
        double *out[2 * SIDE];
        const double *in[2 * SIDE];
        for (int r = 0; r < rows; ++r) {
            int64_t w = t->block_w0[b + r / SIDE] + (int64_t)(r % SIDE) * len;
            out[r] = (in_place ? column : t->grad) + w;
            in[r] = from + w;
        }
        int32_t next = b + rows / SIDE;
        if (next < t->n_blocks) next_skip = t->block_same[next] ? skip : first_read(t, next, n) - t->block_start[next];
        int32_t n_ahead = lines_ahead(t, next, next_skip, from, wide);
        (pair ? two : one)(out, in, len, t->block_x, t->block_d, reads, t->block_ahead, n_ahead, &finite);
        if (len % CHUNK != 0)
            KERNEL(rest)(out, in, len, t->block_x + (int64_t)(len - len % CHUNK) * reads, t->block_d, reads, rows, &finite);
        t->block_in_place[b] = (uint8_t)in_place;
        if (pair) {
            t->block_in_place[++b] = (uint8_t)in_place;
            t->blocks_paired += 2;
            t->vectors_reused += 1;
        }
    }
    if (!finite && column != NULL) blocks_zero_again(t, column);
    return finite;
}

/* The blocks summed in the column (block_in_place) back to +0.0, as they were. */
void blocks_zero_again(const tape_t *t, double *column) {
    for (int32_t b = 0; b < t->n_blocks; ++b)
        if (t->block_in_place[b]) memset(column + t->block_w0[b], 0, SIDE * (size_t)t->block_len[b] * sizeof *column);
}

/* The packed buffers' sizes, stated once (weight_grads_plan, weight_grads_bytes):
 * X a vector of the longest block a position; D eight sums' gradients a
 * position; the lines ahead, two blocks' rows' lines (4 len / 8 each, rounded
 * up) and two blocks' reads (lines_ahead). */
static int64_t x_size(const tape_t *t) { return (int64_t)t->n_pos * t->block_x_len; }
static int64_t d_size(const tape_t *t) { return 2 * SIDE * (int64_t)t->n_pos; }
static int64_t ahead_size(const tape_t *t) { return t->block_x_len + 2 + 2 * (int64_t)t->n_pos; }

/* The packed vectors' and sums' buffers and the lines ahead, for the blocks
 * (matrix_plan, after their lengths). 0, or -1 out of memory. */
int weight_grads_plan(tape_t *t) {
    t->block_x_len = 0;
    for (int32_t b = 0; b < t->n_blocks; ++b)
        t->block_x_len = t->block_len[b] > t->block_x_len ? t->block_len[b] : t->block_x_len;
    return NEW(t->block_x, x_size(t)) && NEW(t->block_d, d_size(t)) && NEW(t->block_ahead, ahead_size(t)) ? 0 : -1;
}

size_t weight_grads_bytes(const tape_t *t) {
    return t->block_x == NULL ? 0 : (size_t)(x_size(t) + d_size(t)) * sizeof *t->block_x
                                    + (size_t)ahead_size(t) * sizeof *t->block_ahead;
}
