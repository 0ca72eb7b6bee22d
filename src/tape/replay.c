/* replay.c: running a tape, forward and backward (the layout: internal.h):
 * what a replay runs and in which order; the backward's loop and its dispatch,
 * each kind of entry's in one place (the forward's instructions: forward.c). */
#include "internal.h"

/* the four gradients of a side-by-side group of backward entries b, b-1, b-2, b-3 */
static inline void put_pulled(double *g, const int32_t *entry_b, double a0, double a1, double a2, double a3) {
    g[entry_b[0]] = a0;
    g[entry_b[-1]] = a1;
    g[entry_b[-2]] = a2;
    g[entry_b[-3]] = a3;
}

static status_t run_forward(tape_t *t, int64_t i0, int64_t i1) {
    double m = 0.0;
    return forward_range(t, i0, i1, &m);
}

/* The row blocks' weights transposed for matrix.c's kernels, unless they are already. */
static void transpose(tape_t *t) {
    if (t->n_blocks > 0 && t->wt_stale) matrix_transpose(t);
    t->wt_stale = 0;
}

status_t tape_forward(tape_t *t, const arena_t *a, const node_t *params,
                      const int32_t *tokens, int32_t from, int32_t n) {
    double *x = t->x;
    int32_t *arg = t->fwd_arg;
    if (from == 0)  /* (a later from: the same parameters, as read then: a sampler's next position) */
        params_read(x, a->data, t, params);
    int by_levels = from == 0 && t->n_levels > 0;
    t->wt_stale |= from == 0;  /* (new weights; a later from: the same as the last forward's) */
    if (!by_levels || t->panel_units == NULL) transpose(t);  /* (matrix.c's kernels read wt) */
    for (int64_t j = 0; j < t->n_token_edges; ++j) {
        int32_t q = t->token_pos[j];
        if (q >= from && q < n) {
            int32_t slot = t->table_slot0 + tokens[q] * t->table_cols + t->token_col[j];
            arg[t->token_arg[j]] = slot;
            t->param_child[t->token_param[j]] = slot;
        }
    }
    for (int32_t q = from; q < n; ++q)
        arg[t->target_arg[q]] = t->cand[(int64_t)q * t->n_cand + tokens[q + 1]];

    /* a whole forward layer by layer where the tape allows (levels.c), or its
     * positions from `from` by their levels; one that fails runs again in order,
     * to stop where the reference stops */
    status_t st = OP_OK;
    if (by_levels) st = level_forward(t, n, run_forward);
    else if (t->prog != NULL)  /* a position at a time (the sampler's), its levels in order */
        st = program_positions(t, from, n);
    if (st != OP_OK || (!by_levels && t->prog == NULL)) {
        transpose(t);  /* (after panels, which do not read wt: made now) */
        st = run_forward(t, from > 0 ? t->fwd_end[from - 1] : 0, t->fwd_end[n - 1]);
    }
    if (st != OP_OK) {
        t->n_used = 0;  /* nothing after a failed position can be trusted */
        return st;
    }
    /* the mean, as sum() and (1 / n) * builds it */
    double s = x[t->loss_node[0]] + 0.0;
    for (int32_t q = 1; q < n; ++q) s = s + x[t->loss_node[q]];
    t->loss = s * (1.0 / n);
    t->n_used = n;
    return OP_OK;
}


/* What the backward's entries read besides the tape. */
typedef struct {
    const int32_t *tokens;
    int32_t end;        /* one past the last position's nodes: parents past it add nothing */
    double g_loss;      /* each position's loss's gradient */
} pull_ctx_t;

/* The tape's lines a few entries below b, asked for early (entries run last
 * to first, each list below the one before). A level's piece of a position
 * is a few hundred entries, too short for the hardware to find its streams
 * (bwd, kinds, groups, list starts, lists) before the piece is done. */
static inline void ahead(const tape_t *t, int32_t b) {
    int32_t e = b >= 64 ? b - 64 : 0;
    int64_t k = t->pull_start[b] >= 48 ? t->pull_start[b] - 48 : 0;
    __builtin_prefetch(t->bwd + e);
    __builtin_prefetch(t->bwd_group + e);
    __builtin_prefetch(t->bwd_kind + e);
    __builtin_prefetch(t->bwd_lanes + (b >= 32 ? b - 32 : 0));
    __builtin_prefetch(t->pull_start + (b >= 24 ? b - 24 : 0));
    __builtin_prefetch(t->pull_parent + k);
    __builtin_prefetch(t->pull_src + k);
}

/* Backward entries b1 - 1 down to b0, each its gradient from its parents'. */
static void run_backward(tape_t *t, int32_t b1, int32_t b0, void *arg) {
    const pull_ctx_t *ctx = arg;
    const int32_t *tokens = ctx->tokens;
    int32_t end = ctx->end, V = t->n_cand;
    double g_loss = ctx->g_loss, *g = t->grad;
    const double *x = t->x;
    const int32_t *pp = t->pull_parent, *src = t->pull_src, *pb = t->pull_block;
    const int64_t *ps = t->pull_start;
    for (int32_t b = b1 - 1; b >= b0; --b) {
        ahead(t, b);
        int32_t L = t->bwd[b];
        uint8_t group = t->bwd_group[b];
        if (group == 7) { b -= attention_grads(t, b) - 1; continue; }  /* a head's softmax row (attention.c) */
        if (group == 6 && strided_pulls(t, b, end)) {  /* four strided lists (strided.c) */
            b -= SIDE - 1;
            continue;
        }
        group = group == 6 ? 1 : group;  /* (a parent past end: the lists, as a group of four) */
        if (group == 5) {  /* a vector's entries with strided pull lists, in lanes (pull_lanes.c) */
            lane_grads(t, b, end);
            b -= lane_width(t, b) - 1;
            continue;
        }
        if (group == 4 && b >= SIDE - 1) {  /* four entries' parents side by side (matrix.c) */
            shifted_grads(t, b, ps[b], ps[b + 1], end);
            b -= SIDE - 1;
            continue;
        }
        if (group >= 2 && b >= SIDE - 1) {  /* a vector read by a matrix's rows (matrix.c) */
            int32_t lanes = t->bwd_group[b] == 3 ? t->bwd_lanes[b] : SIDE;
            int32_t tgt = t->bwd_kind[b] == K_ROTATE ? tokens[t->pos[L] + 1] : -1;
            matrix_vector_grads(t, b, lanes, ps[b], ps[b + 1], end, tgt);
            b -= lanes - 1;
            continue;
        }
        if (group && b >= SIDE - 1) {  /* b, b-1, b-2, b-3 side by side (a parent past end adds nothing) */
            int64_t k0 = ps[b], k1 = ps[b - 1], k2 = ps[b - 2], k3 = ps[b - 3], count = ps[b + 1] - k0;
            double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
            for (int64_t j = 0; j < count; ++j) {
                double t0 = x[src[k0 + j]] * g[pp[k0 + j]], t1 = x[src[k1 + j]] * g[pp[k1 + j]];
                double t2 = x[src[k2 + j]] * g[pp[k2 + j]], t3 = x[src[k3 + j]] * g[pp[k3 + j]];
                a0 = pp[k0 + j] < end ? a0 + t0 : a0;
                a1 = pp[k1 + j] < end ? a1 + t1 : a1;
                a2 = pp[k2 + j] < end ? a2 + t2 : a2;
                a3 = pp[k3 + j] < end ? a3 + t3 : a3;
            }
            put_pulled(g, t->bwd + b, a0, a1, a2, a3);
            b -= SIDE - 1;
            continue;
        }
        if (group == 0 && t->bwd_lanes[b] > 1) {  /* a run of lists of one (singles.c) */
            b -= single_grads(t, b, b0, end) - 1;
            continue;
        }
        double acc = 0.0;
        switch (t->bwd_kind[b]) {
        case K_SEED:
            acc = g_loss;
            break;
        case K_CANDIDATE: {
            int32_t q = t->pos[L];
            if (t->cand[(int64_t)q * V + tokens[q + 1]] == L)
                acc += x[t->target_src[q]] * g[t->target_owner[q]];
            break;
        }
        case K_ROTATE: {
            int32_t tgt = tokens[t->pos[L] + 1];
            for (int64_t k = ps[b]; k < ps[b + 1]; ++k)
                if (pb[k] != tgt && pp[k] < end) acc += x[src[k]] * g[pp[k]];
            for (int64_t k = ps[b]; k < ps[b + 1]; ++k)
                if (pb[k] == tgt && pp[k] < end) acc += x[src[k]] * g[pp[k]];
            break;
        }
        default:  /* K_OP, K_DOT */
            for (int64_t k = ps[b]; k < ps[b + 1]; ++k)
                if (pp[k] < end) acc += x[src[k]] * g[pp[k]];
        }
        g[L] = acc;
    }
}

int tape_backward(tape_t *t, arena_t *a, const node_t *params, const int32_t *tokens) {
    int32_t n = t->n_used;
    double *g = t->grad;
    const double *x = t->x;

    /* the tail: loss = s * (1/n) with grad 1, then the chain of adds: each loss gets this */
    double g_s = 0.0 + (1.0 / n) * 1.0;
    double g_loss = 0.0 + 1.0 * (0.0 + 1.0 * g_s);

    pull_ctx_t ctx = {tokens, t->pos_end[n - 1], g_loss};
    attention_begin(t);
    if (t->bwd_level_at != NULL) level_backward(t, n, run_backward, &ctx);  /* (levels.c) */
    else run_backward(t, t->bwd_end[n - 1], 0, &ctx);
    /* parameters: each is read at most once a position; positions last to first */
    const double *from = params_read_grads(g, a->grad, t, params);  /* (the blocks': from there) */
    const int32_t *pc = t->param_child, *ppar = t->param_parent, *psrc = t->param_src;
    const int64_t *pstart = t->param_start;
    double *column = from != g ? a->grad + t->params_at : NULL;  /* (the blocks may sum there) */
    int blocks_finite = t->blocks_own_grads && matrix_param_grads(t, n, from, column);  /* (rows read by them only) */
    if (t->blocks_own_grads && !blocks_finite) return 0;  /* (nothing written: params_write_grads) */
    for (int32_t q = n - 1; q >= 0; --q) {
        for (int32_t m = q > 0 ? t->mv_end[q - 1] : 0; m < t->mv_end[q] && !t->blocks_own_grads; ++m)
            matrix_group_grads(t, t->mv + m);
        for (int64_t k = pstart[q]; k < pstart[q + 1]; ++k)
            g[pc[k]] += x[psrc[k]] * g[ppar[k]];
    }
    return params_write_grads(t, a, params, tokens, blocks_finite);
}
