/* params.c: the parameters' numbers between the arena's columns and the tape
 * (its first n_params nodes). */
#include "internal.h"

/* the parameters' numbers from an arena column (data or grad): one block
 * copy where they are consecutive nodes */
void params_read(double *dst, const double *column, const tape_t *t, const node_t *params) {
    if (t->params_at >= 0) memcpy(dst, column + t->params_at, (size_t)t->n_params * sizeof *dst);
    else for (int32_t k = 0; k < t->n_params; ++k) dst[k] = column[params[k]];
}

/* params_outside's size: the ranges' ends, two a range, and one more */
static int64_t outside_size(const tape_t *t) { return 2 * (int64_t)t->n_params_outside + 1; }

/* Where a forward by panels copies each unit's rows itself as it reaches them
 * (panels.c rows_ahead: from the cache, asked for while the unit before
 * computes), the other parameters as ranges, copied first. Only where nothing
 * but the units reads their rows: no node but a block's groups reads a
 * block's weight (blocks_own_grads), and with panels every group is a
 * unit's (levels.c). 0, or -1 out of memory. */
int params_outside_plan(tape_t *t) {
    int32_t P = t->n_params, nu = t->level_units[t->n_levels], n = 0;
    uint8_t *in_unit = NULL;
    if (!t->blocks_own_grads || P == 0) return 0;
    if (!NEW(in_unit, P)) return -1;
    for (int32_t u = 0, lo, hi; u < nu; ++u) {
        panel_rows(t, u, &lo, &hi);
        memset(in_unit + lo, 1, (size_t)(hi - lo));
    }
    for (int32_t k = 0; k < P; ++k) n += !in_unit[k] && (k == 0 || in_unit[k - 1]);
    t->n_params_outside = n;
    if (!NEW(t->params_outside, outside_size(t))) {
        free(in_unit);
        return -1;
    }
    for (int32_t k = 0, r = 0; k < P; ++k) {
        if (!in_unit[k] && (k == 0 || in_unit[k - 1])) t->params_outside[2 * r] = k;
        if (!in_unit[k] && (k + 1 == P || in_unit[k + 1])) t->params_outside[2 * r++ + 1] = k + 1;
    }
    free(in_unit);
    return 0;
}

size_t params_outside_bytes(const tape_t *t) {
    return t->params_outside != NULL ? (size_t)outside_size(t) * sizeof *t->params_outside : 0;
}

/* A forward's parameters from position 0 into x: all of them; or, by panels
 * where the parameters are one block of the arena (and params_outside_plan
 * found the units' rows read by them only), those outside the units, the
 * units' own from panel_from as the forward reaches them. */
void params_read_forward(tape_t *t, const arena_t *a, const node_t *params, int by_panels) {
    int own = by_panels && t->params_outside != NULL && t->params_at >= 0;
    t->panel_from = own ? a->data + t->params_at : NULL;
    if (!own) {
        params_read(t->x, a->data, t, params);
        return;
    }
    for (int32_t r = 0; r < t->n_params_outside; ++r) {
        int32_t lo = t->params_outside[2 * r], hi = t->params_outside[2 * r + 1];
        memcpy(t->x + lo, t->panel_from + lo, (size_t)(hi - lo) * sizeof *t->x);
    }
}

/* The parameters outside the row blocks, as ranges [*lo, *hi): the one before
 * block b (b = n_blocks: after the last). The blocks are disjoint, by
 * ascending w0 (blocks.c). */
static void outside_blocks(const tape_t *t, int32_t b, int32_t *lo, int32_t *hi) {
    *lo = b == 0 ? 0 : t->block_w0[b - 1] + SIDE * t->block_len[b - 1];
    *hi = b == t->n_blocks ? t->n_params : t->block_w0[b];
}

/* The parameters' gradients from the arena's grad column into dst, except
 * the row blocks' weights where the parameters are one block of the arena
 * and the blocks sum their own (matrix_param_grads then starts from the
 * column itself: one pass over most of the parameters less). Returns where
 * the blocks' gradients start from: the column's parameters, or dst. */
const double *params_read_grads(double *dst, const double *column, const tape_t *t, const node_t *params) {
    if (!t->blocks_own_grads || t->params_at < 0) {
        params_read(dst, column, t, params);
        return dst;
    }
    const double *from = column + t->params_at;
    for (int32_t b = 0, lo, hi; b <= t->n_blocks; ++b) {
        outside_blocks(t, b, &lo, &hi);
        memcpy(dst + lo, from + lo, (size_t)(hi - lo) * sizeof *dst);
    }
    return from;
}

/* The parameters' first positions (pack.c: one a parameter) as runs of
 * consecutive parameters read first at the same position (a matrix's rows
 * all at 0, a row of the position table at its position): the tags a
 * backward clears, a run at a time. 0, or -1 out of memory. */
int params_plan(tape_t *t) {
    const int32_t *first = t->first_pos;
    int32_t P = t->n_params, runs = 0, *run = NULL;
    for (int32_t k = 0; k < P; ++k) runs += k == 0 || first[k] != first[k - 1];
    if (!NEW(run, 2 * (int64_t)runs + 1)) return -1;
    for (int32_t k = 0, r = 0; k < P; ++k)
        if (k == 0 || first[k] != first[k - 1]) {
            run[2 * r] = k;
            run[2 * r++ + 1] = first[k];
        }
    run[2 * runs] = P;
    free(t->first_pos);
    t->first_pos = run;
    t->n_first_runs = runs;
    return 0;
}

/* whether every one of g[0..n) is finite: an exponent of all ones is inf or
 * nan (integer tests, with no branch: the loop vectorizes) */
int grads_finite(const double *g, int64_t n) {
    const uint64_t EXP = 0x7ff0000000000000ull;
    uint64_t bad = 0;
    for (int64_t k = 0; k < n; ++k) {
        uint64_t u;
        memcpy(&u, g + k, sizeof u);
        bad |= (u & EXP) == EXP;
    }
    return bad == 0;
}

/* ... every parameter's but the row blocks' weights' (blocks_checked: the
 * blocks found theirs finite as they wrote them, matrix_param_grads) */
static int params_finite(const tape_t *t, int blocks_checked) {
    if (!blocks_checked) return grads_finite(t->grad, t->n_params);
    for (int32_t b = 0, lo, hi; b <= t->n_blocks; ++b) {
        outside_blocks(t, b, &lo, &hi);
        if (!grads_finite(t->grad + lo, hi - lo)) return 0;
    }
    return 1;
}

/* The tags of the parameters positions [0, n) read: their gradients are
 * floats now. A run of them at a time, through locals (a store to a tag, a
 * byte, could be to anything the compiler would otherwise read again: a
 * run's ends, the tag pointer), so that a run in one block clears a vector
 * register's bytes at once. */
static void clear_grad_int(const tape_t *t, uint8_t *tag, const node_t *params, int32_t n) {
    const int32_t *run = t->first_pos;
    const uint8_t keep = (uint8_t)~TAG_GRAD_INT;
    for (int32_t r = 0, runs = t->n_first_runs; r < runs; ++r) {
        int32_t k0 = run[2 * r], k1 = run[2 * r + 2];
        if (run[2 * r + 1] >= n) continue;
        if (t->params_at >= 0) {
            uint8_t *tg = tag + t->params_at;
            for (int32_t k = k0; k < k1; ++k) tg[k] &= keep;
        } else
            for (int32_t k = k0; k < k1; ++k) tag[params[k]] &= keep;
    }
}

/* The backward's parameter gradients (t->grad[0..n_params)) into the arena,
 * when every one is finite (0: nothing written, else 1); blocks_checked: the
 * row blocks' weights' are known finite (and those of block_in_place are in
 * the column already, matrix_param_grads). */
int params_write_grads(const tape_t *t, arena_t *a, const node_t *params, const int32_t *tokens, int blocks_checked) {
    int32_t n = t->n_used, P = t->n_params;
    const double *g = t->grad;
    double *column = t->params_at >= 0 ? a->grad + t->params_at : NULL;
    if (!params_finite(t, blocks_checked)) {  /* nothing written (the blocks summed in the column: zeros again) */
        if (blocks_checked && column != NULL) blocks_zero_again(t, column);
        return 0;
    }
    /* a reached parameter's gradient is a float now: one its positions read,
     * or an entry of a row of the token table the documents chose */
    if (column != NULL && blocks_checked) {  /* but the blocks that summed in the column */
        for (int32_t b = 0, lo, hi; b <= t->n_blocks; ++b) {
            outside_blocks(t, b, &lo, &hi);
            if (b < t->n_blocks && !t->block_in_place[b]) hi = t->block_w0[b] + SIDE * t->block_len[b];
            memcpy(column + lo, g + lo, (size_t)(hi - lo) * sizeof *g);
        }
    } else if (column != NULL) memcpy(column, g, (size_t)P * sizeof *g);
    else for (int32_t k = 0; k < P; ++k) a->grad[params[k]] = g[k];
    clear_grad_int(t, a->tag, params, n);
    for (int32_t q = 0; q < n; ++q)
        for (int32_t c = 0; c < t->table_cols; ++c) {
            int32_t k = t->table_slot0 + tokens[q] * t->table_cols + c;
            a->tag[t->params_at >= 0 ? t->params_at + k : params[k]] &= (uint8_t)~TAG_GRAD_INT;
        }
    return 1;
}
