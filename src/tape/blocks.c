/* blocks.c: what matrix.c's kernels need to know, found once a tape is
 * packed: the row blocks (four consecutive rows of one matrix, the
 * parameters w0 .. w0 + 4 len - 1, read by F_MV4 groups), each block's
 * groups by position, and runs of four groups of one matrix times one vector
 * that the forward computes at once. */
#include "internal.h"

typedef struct { int32_t w0, pos, mv; } read_t;

static int by_block_then_last_position(const void *pa, const void *pb) {
    const read_t *a = pa, *b = pb;
    if (a->w0 != b->w0) return a->w0 < b->w0 ? -1 : 1;
    return a->pos > b->pos ? -1 : a->pos < b->pos ? 1 : 0;
}

/* Groups k .. k + 3: consecutive instructions at one position, rows of one
 * matrix (blocks one after another) times the same vector read in place? */
static int one_run(const tape_t *t, int32_t k) {
    const matvec_t *g = t->mv + k;
    for (int i = 1; i < SIDE; ++i) {
        const matvec_t *h = g + i;
        if (h->ins != g->ins + SIDE * i || h->pos != g->pos || h->len != g->len || g->vec < 0 || h->vec != g->vec)
            return 0;
    }
    return 1;
}

/* Can the weights' gradients be summed block by block, every position inside
 * (matrix_param_grads)? Only if no weight of a block is read but by its
 * groups: the token table's rows and the other parameter reads are not. */
static int blocks_own_grads(const tape_t *t, uint8_t *other) {
    memset(other, 0, (size_t)t->n_params);
    for (int32_t k = 0; k < t->table_rows * t->table_cols; ++k) other[t->table_slot0 + k] = 1;
    for (int64_t k = 0; k < t->param_start[t->n_pos]; ++k) other[t->param_child[k]] = 1;
    for (int32_t b = 0; b < t->n_blocks; ++b)
        for (int32_t k = 0; k < SIDE * t->block_len[b]; ++k)
            if (other[t->block_w0[b] + k]) return 0;
    return 1;
}

/* Where each read's four rows' sums are: consecutive nodes (a block's
 * gradients read them in place, block_top), or else gathered into block_gt. 0,
 * or -1 out of memory. */
static int block_sums(tape_t *t, int32_t n_mv) {
    int consecutive = 1;
    for (int32_t k = 0; k < n_mv && consecutive; ++k)
        for (int c = 1; c < SIDE; ++c) consecutive &= t->mv[k].top[c] == t->mv[k].top[0] + c;
    if (!consecutive) return NEW(t->block_gt, SIDE * (int64_t)n_mv) ? 0 : -1;
    if (!NEW(t->block_top, n_mv)) return -1;
    for (int32_t k = 0; k < n_mv; ++k) t->block_top[t->mv_read[k]] = t->mv[k].top[0];
    return 0;
}

/* Does block b read what block b - 1 reads: the same positions' same
 * vectors (weight_grads.c then packs the vectors once for both)? */
static int same_reads(const tape_t *t, int32_t b) {
    int32_t r0 = t->block_start[b - 1], r1 = t->block_start[b], count = r1 - r0;
    if (t->block_start[b + 1] - r1 != count || t->block_len[b] != t->block_len[b - 1]) return 0;
    for (int32_t k = 0; k < count; ++k) {
        const matvec_t *g = t->mv + t->block_mv[r0 + k], *h = t->mv + t->block_mv[r1 + k];
        if (t->block_pos[r0 + k] != t->block_pos[r1 + k] || g->vec != h->vec) return 0;
        for (int32_t j = 0; j < g->len && g->vec < 0; ++j)
            if (t->dot_pair[g->pairs + 1 + 2 * j] != t->dot_pair[h->pairs + 1 + 2 * j]) return 0;
    }
    return 1;
}

/* The blocks, their reads and the runs; a tape whose groups do not form
 * disjoint blocks keeps none (n_blocks 0: the forward then reads the rows in
 * place, a group at a time). 0, or -1 out of memory. */
int matrix_plan(tape_t *t) {
    int32_t n_mv = t->mv_end[t->n_pos - 1], p = 0;
    for (int32_t k = 0; k < n_mv; ++k) {
        while (t->mv[k].ins >= t->fwd_end[p]) ++p;
        t->mv[k].pos = p;
        t->mv[k].run = 1;
    }
    read_t *reads = NULL;
    uint8_t *other = NULL;
    if (!NEW(reads, n_mv) || !NEW(t->block_w0, n_mv) || !NEW(t->block_len, n_mv)
        || !NEW(t->block_start, n_mv + 1) || !NEW(t->block_mv, n_mv) || !NEW(t->wt, t->n_params)
        || !NEW(t->mv_read, n_mv) || !NEW(t->block_pos, n_mv) || !NEW(t->block_vec, n_mv)
        || !NEW(other, t->n_params)) {
        free(reads);
        return -1;
    }
    for (int32_t k = 0; k < n_mv; ++k) reads[k] = (read_t){t->mv[k].w[0], t->mv[k].pos, k};
    qsort(reads, (size_t)n_mv, sizeof *reads, by_block_then_last_position);
    int32_t nb = 0, ok = 1;
    for (int32_t k = 0; k < n_mv && ok; ++k) {
        const matvec_t *g = t->mv + reads[k].mv;
        for (int c = 1; c < SIDE; ++c) ok &= g->w[c] == g->w[0] + c * g->len;
        if (nb == 0 || reads[k].w0 != t->block_w0[nb - 1]) {
            ok &= nb == 0 || reads[k].w0 >= t->block_w0[nb - 1] + SIDE * t->block_len[nb - 1];  /* disjoint */
            t->block_start[nb] = k;
            t->block_w0[nb] = reads[k].w0;
            t->block_len[nb++] = g->len;
        } else {
            ok &= g->len == t->block_len[nb - 1] && reads[k].pos != reads[k - 1].pos;
        }
        t->block_mv[k] = reads[k].mv;
        t->mv_read[reads[k].mv] = k;
        t->block_pos[k] = g->pos;
        t->block_vec[k] = g->vec;
    }
    t->block_start[nb] = n_mv;
    t->n_blocks = ok ? nb : 0;
    free(reads);
    t->blocks_own_grads = t->n_blocks > 0 && blocks_own_grads(t, other);
    free(other);
    if (t->n_blocks > 0)
        for (int32_t k = 0; k + SIDE <= n_mv; ++k)
            if (one_run(t, k)) { t->mv[k].run = SIDE; k += SIDE - 1; }
    if (!t->blocks_own_grads) return 0;
    if (!NEW(t->block_same, t->n_blocks) || !NEW(t->block_in_place, t->n_blocks)) return -1;
    for (int32_t b = 1; b < t->n_blocks; ++b) t->block_same[b] = (uint8_t)same_reads(t, b);
    if (weight_grads_plan(t) < 0) return -1;
    return block_sums(t, n_mv);
}
