/* replay.c: running a tape, forward and backward (the layout: internal.h):
 * what a replay runs and in which order; the backward's loop over its steps
 * (steps.c) and their dispatch, each kind of step's in one place (the
 * forward's instructions: forward.c). */
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
    int by_levels = from == 0 && t->n_levels > 0;
    if (from == 0)  /* (a later from: the same parameters, as read then: a sampler's next position) */
        params_read_forward(t, a, params, by_levels && t->panel_units != NULL);
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
        if (t->panel_from != NULL) params_read(x, a->data, t, params);  /* (the units not reached: their rows) */
        transpose(t);  /* (after panels, which do not read wt: made now) */
        st = run_forward(t, from > 0 ? t->fwd_end[from - 1] : 0, t->fwd_end[n - 1]);
    }
    t->panel_from = NULL;
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

/* entries b, b-1, b-2, b-3 side by side, lists of one length from k0 (and the
 * entries below's), a parent past end adding nothing */
static void four_lists(tape_t *t, int32_t b, int64_t k0, int64_t count, int32_t end) {
    const int32_t *pp = t->pull_parent, *src = t->pull_src;
    const int64_t *ps = t->pull_start;
    const double *x = t->x;
    double *g = t->grad;
    int64_t k1 = ps[b - 1], k2 = ps[b - 2], k3 = ps[b - 3];
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
}

/* The sum over a list [k0, k1), a parent past end adding nothing. */
static inline double list_sum(const tape_t *t, int64_t k0, int64_t k1, int32_t end) {
    const int32_t *pp = t->pull_parent, *src = t->pull_src;
    const double *x = t->x, *g = t->grad;
    double acc = 0.0;
    for (int64_t k = k0; k < k1; ++k)
        if (pp[k] < end) acc += x[src[k]] * g[pp[k]];
    return acc;
}

/* What a step a few ahead reads, asked for early: its list, and its entries'
 * places in the arrays the kernels read by entry (the steps say where: a
 * piece's steps are too few, and far apart in those arrays, for the hardware
 * to find the streams itself). The steps are stored in the order the pieces
 * run, so near a piece's end the next piece's first steps are asked for:
 * a piece is some ten steps, and its first ones would find nothing asked. */
#define AHEAD 4
__attribute__((always_inline))  /* (else gcc may find it has no effect, and drop the call) */
static inline void ahead(const tape_t *t, const bwd_step_t *s) {
    __builtin_prefetch(t->pull_parent + s->k0);
    __builtin_prefetch(t->pull_src + s->k0);
    if (s->code == S_LANES) {  /* its steps, and its lanes' nodes (up to 64) */
        __builtin_prefetch(t->lane_stride + 2 * (int64_t)s->a);
        for (int32_t e = s->b - s->c + 1, k = 0; e <= s->b && k < 4; e += 16, ++k) __builtin_prefetch(t->bwd + e);
        return;
    }
    __builtin_prefetch(t->bwd + s->b);
    __builtin_prefetch(t->bwd + (s->b >= 12 ? s->b - 12 : 0));  /* (a run's lower entries) */
    __builtin_prefetch(t->bwd_lanes + s->b);
    __builtin_prefetch(t->pull_start + s->b);
}

/* The backward's pieces [i0, i1) (steps.c: a level of a position, or a
 * position), each entry's gradient from its parents': their steps, in order. */
static void run_backward(tape_t *t, int32_t i0, int32_t i1, void *arg) {
    const pull_ctx_t *ctx = arg;
    const int32_t *tokens = ctx->tokens, *pp = t->pull_parent, *src = t->pull_src;
    int32_t end = ctx->end;
    double *g = t->grad;
    const double *x = t->x;
    const bwd_step_t *s = t->steps + t->step_piece[i0], *s_end = t->steps + t->step_piece[i1];
    for (; s < s_end; ++s) {
        if (s + AHEAD < t->steps + t->n_steps) ahead(t, s + AHEAD);  /* (past the piece: the next one's) */
        int32_t b = s->b;
        switch (s->code) {
        case S_ATTENTION:
            attention_grads(t, b);
            break;
        case S_STRIDED:
            if (!strided_pulls(t, b, end)) four_lists(t, b, s->k0, s->n, end);
            break;
        case S_LANES:
            lane_grads(t, s, end);
            break;
        case S_SHIFTED:
            shifted_grads(t, b, s->k0, s->k0 + s->n, end);
            break;
        case S_MATRIX:
        case S_MATRIX_ROTATE:
            matrix_vector_grads(t, b, s->a, s->k0, s->k0 + s->n, end,
                                s->code == S_MATRIX_ROTATE ? tokens[s->c + 1] : -1);
            break;
        case S_FOUR:
            four_lists(t, b, s->k0, s->n, end);
            break;
        case S_SINGLES:
            single_grads(t, b, s->n, end);
            break;
        case S_SEED:
            g[s->L] = ctx->g_loss;
            break;
        case S_CANDIDATE: {
            int32_t q = s->c;
            double acc = 0.0;
            if (t->cand[(int64_t)q * t->n_cand + tokens[q + 1]] == s->L)
                acc += x[t->target_src[q]] * g[t->target_owner[q]];
            g[s->L] = acc;
            break;
        }
        case S_ROTATE: {  /* the target's parents last */
            int32_t tgt = tokens[s->c + 1];
            const int32_t *pb = t->pull_block;
            double acc = 0.0;
            for (int64_t k = s->k0; k < s->k0 + s->n; ++k)
                if (pb[k] != tgt && pp[k] < end) acc += x[src[k]] * g[pp[k]];
            for (int64_t k = s->k0; k < s->k0 + s->n; ++k)
                if (pb[k] == tgt && pp[k] < end) acc += x[src[k]] * g[pp[k]];
            g[s->L] = acc;
            break;
        }
        case S_STEPPED: {  /* every parent before end: list_sum's products and sums, without indices */
            int32_t p0 = pp[s->k0], s0 = src[s->k0];
            int64_t last = p0 + (int64_t)(s->n - 1) * s->a;
            /* either end past `end` (the step may be negative): the list, which skips such
             * parents one by one. In the GPT's graph a stepped list stays inside one position,
             * so its first parent decides; the second test guards a list that would not. */
            if (p0 >= end || last >= end) {
                g[s->L] = list_sum(t, s->k0, s->k0 + s->n, end);
                break;
            }
            const double *xs = x + s0, *gp = g + p0;
            int64_t dp = s->a, ds = s->c;
            double acc = 0.0;
            for (int64_t j = 0; j < s->n; ++j) acc += xs[j * ds] * gp[j * dp];
            g[s->L] = acc;
            break;
        }
        default:  /* S_LIST */
            g[s->L] = list_sum(t, s->k0, s->k0 + s->n, end);
        }
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
    else run_backward(t, piece_of(t, 0, n - 1), t->n_pos, &ctx);  /* (positions n - 1 down to 0) */
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
