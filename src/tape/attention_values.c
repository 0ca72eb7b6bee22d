/* attention_values.c: a head's values' gradients summed by its rows as they
 * run, not read back from every later position's weights and outputs.
 *
 * Value v_t[j] of a head (its key t, pull j) is read by the head's output
 * o_p[j] of every position p >= t, with weight w(p, t): its gradient is
 * 0.0 + w(N-1, t) g(o_(N-1)[j]) + ... + w(t, t) g(o_t[j]), the later
 * position first (the reference's walk meets the later outputs first). A
 * run of such entries (shifted.c) read that list pull by pull: a weight and
 * sixteen outputs' gradients at every pull, each far from the last in
 * memory. The row of position p (attention.c) already holds the g(o_p[j])
 * and reads its weights' nodes: it adds w(p, t) g(o_p[j]) to lane j of key t
 * in its head's block (gv, L2-sized), for every key, and the run copies its
 * lanes from there. The rows of a head are met last position first, all
 * before the run (plan checks it, and each lane's list pull by pull), so each
 * lane adds the same products in its list's order. A replay of n positions
 * meets the rows of positions below n only, as the list's pulls past its
 * end add nothing. */
#include "attention.h"

/* The run from entry b (bwd_lanes), its lanes from the rows' sums. */
void attention_values(tape_t *t, const shift_run_t *s, const int32_t *dst) {
    const double *gv = t->attn->gv;
    const int32_t *lane = t->attn->gv_lane + s->gv_at;
    double *g = t->grad;
    for (int32_t h = 0; h < s->heads; ++h) {
        if (s->node0[h] >= 0) {  /* (without the lists of places) */
            double *to = g + s->node0[h];
            const double *from = gv + s->gv15[h];
            for (int m = 0; m < 16; ++m) to[m] = from[15 - m];
            continue;
        }
        for (int m = 0; m < 16; ++m) g[dst[-16 * h - 15 + m]] = gv[lane[16 * h + m]];
    }
}

/* Entries of runs summed by the rows, at run tops below b (tape_counts). */
int64_t attention_values_count(const tape_t *t, int32_t b) {
    int64_t c = 0;
    for (int32_t e = 0; e < b && t->attn != NULL; ++e)
        if (t->bwd_group[e] == 4 && t->bwd_lanes[e] > 0 && t->shift_runs[t->bwd_lanes[e] - 1].gv_at >= 0)
            c += 16 * t->shift_runs[t->bwd_lanes[e] - 1].heads;
    return c;
}

/* rank[b]: when a whole backward meets entry b (0 first): level by level
 * (each level's vectors run first) or last entry first (levels.c). */
static void backward_rank(const tape_t *t, int32_t *rank) {
    int32_t N = t->n_pos, nb = t->bwd_end[N - 1], r = 0, nl = t->n_levels;
    if (t->bwd_level_at == NULL) {
        for (int32_t b = nb - 1; b >= 0; --b) rank[b] = r++;
        return;
    }
    for (int32_t s = nl - 1; s >= 0; --s)
        for (int pass = 0; pass < 2; ++pass)
            for (int32_t p = N - 1; p >= 0; --p) {
                const int32_t *ap = t->bwd_level_at + (int64_t)p * (nl + 1) + s;
                int32_t first = t->first_lanes != NULL ? t->first_lanes[(int64_t)p * nl + s] : 0;
                int32_t hi = pass == 0 ? ap[1] : ap[1] - first, lo = pass == 0 ? ap[1] - first : ap[0];
                for (int32_t b = hi - 1; b >= lo; --b) rank[b] = r++;
            }
}

static int32_t row_top(const attn_row_t *r) { return r->b_lo + SLOTS * r->T - 1; }

/* Which pull j of head A's key t node L is (-1: none). */
static int32_t value_index(const attention_t *a, int32_t A, int32_t t, int32_t L) {
    const attn_head_t *h = a->heads + A;
    const attn_row_t *lr = a->rows + h->longest;
    int32_t d = L - a->node[lr->at + SLOTS * lr->T + t];
    if (h->ss == 0) return d == 0 ? 0 : -1;
    return d % h->ss == 0 && d / h->ss >= 0 && d / h->ss < h->hd ? d / h->ss : -1;
}

/* Lane m (node L, list k0 of count pulls, parents less 15 - m) is value j
 * of head A's key t, summed as the rows sum it? row_at: head A's row of
 * each position. */
static int lane_fits(const tape_t *t, const int32_t *row_at, int32_t A, int32_t key, int32_t j, int m,
                     int64_t k0, int32_t count) {
    const attention_t *a = t->attn;
    int32_t N = t->n_pos;
    if (count != N - key) return 0;
    for (int32_t q = 0; q < count; ++q) {
        int32_t p = N - 1 - q, parent = t->pull_parent[k0 + q] - 15 + m;
        const attn_row_t *r = a->rows + row_at[(int64_t)A * N + p];
        if (parent != r->ho0 + j * r->sp || t->pos[t->pull_parent[k0 + q]] != p
            || t->pull_src[k0 + q] != a->node[r->at + 6 * (int64_t)r->T + key]) return 0;
    }
    return 1;
}

/* The run topped at b: each of its lanes a value of a head's key (vmap:
 * A N + key by node, -1) whose rows all run before it, last position first
 * (ok: by head); their places in gv into lane, their heads marked used. */
static int run_fits(const tape_t *t, int32_t b, const int32_t *row_at, const int32_t *rank, const uint8_t *ok,
                    const int32_t *vmap, int32_t *lane, uint8_t *used) {
    const attention_t *a = t->attn;
    const shift_run_t *s = t->shift_runs + t->bwd_lanes[b] - 1;
    int32_t N = t->n_pos;
    for (int32_t m = 0; m < 16 * s->heads; ++m) {
        int32_t hh = m / 16, L = t->bwd[b - 16 * hh - 15 + m % 16], A = vmap[L] < 0 ? 0 : vmap[L] / N, key = vmap[L] % N;
        int32_t j = vmap[L] < 0 || !ok[A] ? -1 : value_index(a, A, key, L);
        if (j < 0 || rank[row_top(a->rows + row_at[(int64_t)A * N + key])] > rank[b]
            || !lane_fits(t, row_at, A, key, j, m % 16, s->k[hh], s->count)) return 0;
        lane[m] = (int32_t)(a->heads[A].gv + (int64_t)key * a->heads[A].hdp + j);
    }
    for (int32_t m = 0; m < 16 * s->heads; ++m) used[vmap[t->bwd[b - 16 * (m / 16) - 15 + m % 16]] / N] = 1;
    return 1;
}

/* Each row's next (the rows in the order a whole backward meets them) and
 * the spans of nodes attention.c's ahead_row asks for. rank_of: nb, scratch. */
static void rows_ahead(const tape_t *t, const int32_t *rank, int32_t *rank_of) {
    attention_t *a = t->attn;
    int32_t nb = t->bwd_end[t->n_pos - 1], last = -1;
    for (int32_t r = 0; r < a->n_rows; ++r) {
        attn_row_t *w = a->rows + r;
        w->next = -1;
        w->lo = w->ex_lo = INT32_MAX;
        w->hi = w->ex_hi = -1;
        for (int64_t q = 0; q < 4 * (int64_t)w->T; ++q) {  /* logits, products, adds, exps */
            int32_t L = a->node[w->at + q];
            w->lo = L < w->lo && (q < w->T || !w->lean) ? L : w->lo;
            w->hi = L > w->hi && (q < w->T || !w->lean) ? L : w->hi;
            if (q >= 3 * w->T) w->ex_lo = L < w->ex_lo ? L : w->ex_lo, w->ex_hi = L > w->ex_hi ? L : w->ex_hi;
        }
    }
    for (int32_t r = 0; r < a->n_rows; ++r) {  /* logits and exps stepping by constants */
        attn_row_t *w = a->rows + r;
        const int32_t *dot = a->node + w->at, *ex = dot + 3 * w->T;
        w->dot0 = dot[0], w->ex0 = ex[0];
        w->ddot = w->T > 1 ? dot[1] - dot[0] : 0, w->dex = w->T > 1 ? ex[1] - ex[0] : 0;
        w->steps = 1;
        for (int32_t k = 0; k < w->T; ++k) w->steps &= dot[k] == w->dot0 + k * w->ddot && ex[k] == w->ex0 + k * w->dex;
    }
    for (int32_t b = 0; b < nb; ++b) rank_of[rank[b]] = b;
    for (int32_t q = 0; q < nb; ++q)
        if (t->bwd_group[rank_of[q]] == 7) {
            int32_t r = t->bwd_lanes[rank_of[q]];
            if (last >= 0) a->rows[last].next = r;
            last = r;
        }
}

/* The heads' blocks, and the runs whose lanes they sum (gv_at). 0, or -1
 * out of memory. After shifted_runs. */
int attention_values_plan(tape_t *t) {
    attention_t *a = t->attn;
    int32_t N = t->n_pos, nb = t->bwd_end[N - 1], *rank = NULL, *rank_of = NULL, *row_at = NULL, *vmap = NULL;
    uint8_t *ok = NULL, *used = NULL;
    int64_t room = 0, cap = 0;
    for (int32_t h = 0; h < a->n_heads; ++h) {
        a->heads[h].hdp = (a->heads[h].hd + 7) / 8 * 8;
        a->heads[h].gv = room;
        room += (int64_t)a->heads[h].hdp * a->ld;
    }
    if (a->n_heads == 0) return 0;
    int rc = -1;
    if (!NEW(a->gv, room) || !NEW(rank, nb) || !NEW(row_at, (int64_t)a->n_heads * N) || !NEW(ok, a->n_heads)
        || !NEW(used, a->n_heads) || !NEW(vmap, t->n_nodes)
        || !NEW(rank_of, nb)) goto done;
    for (int32_t L = 0; L < t->n_nodes; ++L) vmap[L] = -1;
    for (int32_t h = 0; h < a->n_heads; ++h) {  /* every head's values (its longest row's: every row's) */
        const attn_row_t *lr = a->rows + a->heads[h].longest;
        for (int32_t key = 0; key < N; ++key)
            for (int32_t j = 0; j < a->heads[h].hd; ++j)
                vmap[a->node[lr->at + SLOTS * lr->T + key] + (int64_t)j * a->heads[h].ss] = h * N + key;
    }
    backward_rank(t, rank);
    for (int32_t r = 0; r < a->n_rows; ++r) row_at[(int64_t)a->rows[r].head * N + a->rows[r].T - 1] = r;
    rows_ahead(t, rank, rank_of);
    for (int32_t h = 0; h < a->n_heads; ++h) {  /* its rows met last position first */
        ok[h] = 1;
        for (int32_t p = 0; p + 1 < N; ++p)
            ok[h] &= rank[row_top(a->rows + row_at[(int64_t)h * N + p + 1])] < rank[row_top(a->rows + row_at[(int64_t)h * N + p])];
        a->heads[h].last_first = ok[h];
    }
    for (int32_t b = 0; b < nb; ++b) {
        if (t->bwd_group[b] != 4 || t->bwd_lanes[b] <= 0) continue;
        shift_run_t *s = t->shift_runs + t->bwd_lanes[b] - 1;
        if (a->n_gv_lane + 16 * SIDE > cap) {
            cap = 2 * cap + 16 * SIDE;
            int32_t *more = realloc(a->gv_lane, (size_t)cap * sizeof *more);
            if (more == NULL) goto done;
            a->gv_lane = more;
        }
        if (!run_fits(t, b, row_at, rank, ok, vmap, a->gv_lane + a->n_gv_lane, used)) continue;
        s->gv_at = a->n_gv_lane;
        for (int32_t hh = 0; hh < s->heads; ++hh) {
            const int32_t *lane = a->gv_lane + a->n_gv_lane + 16 * hh, *node = t->bwd + b - 16 * hh - 15;
            int down = 1;
            for (int m = 0; m < 16; ++m) down &= node[m] == node[0] + m && lane[m] == lane[15] + 15 - m;
            s->node0[hh] = down ? node[0] : -1;
            s->gv15[hh] = lane[15];
        }
        a->n_gv_lane += 16 * s->heads;
    }
    for (int32_t h = 0; h < a->n_heads; ++h)
        if (!used[h]) a->heads[h].gv = -1;  /* (no run reads it: its rows sum nothing) */
    rc = 0;
done:
    free(rank); free(rank_of); free(row_at); free(ok); free(used); free(vmap);
    return rc;
}
