/* pull_lanes.c: the backward's entries of one vector side by side, their
 * pull lists read once.
 *
 * The entries of a vector take their gradients from parents that step with
 * them: a key's entries k_t[j] (j = 0..15) pull from the same attention
 * logits, each times q_p[j] (the same parents, local gradients one node
 * apart); a norm's inputs x[j] pull from the sum of squares and from x[j] *
 * scale (a parent one node apart, the same local gradient). Where R >=
 * MIN_LANES consecutive entries of one position have pull lists of one
 * length whose parents and local gradients' places each step by a constant
 * from one entry to the next (the step of pull j its own), the lowest
 * entry's list and the steps stand for all (bwd_group 5): the entries are
 * summed four at a time in the lanes of a register, each lane its entry's
 * terms in its list's order, a parent past the replay's last position adding
 * nothing, as alone. lane_plan checks every entry's list against the steps,
 * and that no entry of a run is a parent of another (their sums are
 * independent). */
#include "internal.h"
#include "lanes.h"

#define MIN_LANES 4

typedef struct lane_run {
    int32_t bottom, lanes;  /* entries bottom .. bottom + lanes - 1 */
    int32_t count;          /* pulls an entry */
    int64_t k;              /* the lowest entry's list (pull_start) */
    int64_t steps;          /* its pulls' steps: lane_stride[2 (steps + j)], + 1 */
} lane_run_t;

static int summed(uint8_t kind) { return kind == K_OP || kind == K_DOT; }

/* Does entry e's list step from entry e + 1's as the steps d say (d NULL:
 * any steps, written to st)? */
static int steps_hold(const tape_t *t, int32_t e, int64_t count, const int32_t *d, int32_t *st) {
    const int64_t *ps = t->pull_start;
    if (ps[e + 1] - ps[e] != count || ps[e + 2] - ps[e + 1] != count) return 0;
    for (int64_t j = 0; j < count; ++j) {
        int32_t dp = t->pull_parent[ps[e + 1] + j] - t->pull_parent[ps[e] + j];
        int32_t ds = t->pull_src[ps[e + 1] + j] - t->pull_src[ps[e] + j];
        if ((dp != 0 && dp != 1) || (ds != 0 && ds != 1)) return 0;  /* (in place, or one node on) */
        if (d == NULL) { st[2 * j] = dp; st[2 * j + 1] = ds; }
        else if (dp != d[2 * j] || ds != d[2 * j + 1]) return 0;
    }
    return 1;
}

/* No entry of bottom .. top is a parent of another. mark: n_nodes, zero, left so. */
static int independent(const tape_t *t, int32_t bottom, int32_t top, uint8_t *mark) {
    int ok = 1;
    for (int32_t e = bottom; e <= top; ++e) mark[t->bwd[e]] = 1;
    for (int64_t k = t->pull_start[bottom]; k < t->pull_start[top + 1] && ok; ++k) ok = !mark[t->pull_parent[k]];
    for (int32_t e = bottom; e <= top; ++e) mark[t->bwd[e]] = 0;
    return ok;
}

/* The lowest entry a run from top may reach: its position's (and level's) first. */
static int32_t floor_of(const tape_t *t, int32_t p, int32_t top) {
    int32_t lo = p > 0 ? t->bwd_end[p - 1] : 0;
    if (t->bwd_level_at == NULL) return lo;
    const int32_t *ap = t->bwd_level_at + (int64_t)p * (t->n_levels + 1);
    for (int32_t s = 0; s < t->n_levels; ++s)
        if (top >= ap[s] && top < ap[s + 1]) return ap[s];
    return top + 1;  /* (not inside a level: no run) */
}

int lane_plan(tape_t *t) {
    uint8_t *mark = NULL;
    int32_t *st = NULL;
    int64_t most = 0, nb = t->bwd_end[t->n_pos - 1];
    for (int64_t b = 0; b < nb; ++b)
        if (pull_count(t, b) > most) most = pull_count(t, b);
    if (!NEW(mark, t->n_nodes) || !NEW(st, 2 * most)) {
        free(mark);
        return -1;
    }
    int rc = 0;
    int64_t n_steps = 0;
    for (int pass = 0; pass < 2 && rc == 0; ++pass) {  /* count, then write */
        int32_t n_runs = 0;
        n_steps = 0;
        for (int32_t p = t->n_pos - 1; p >= 0; --p) {
            int32_t b0 = p > 0 ? t->bwd_end[p - 1] : 0;
            for (int32_t b = t->bwd_end[p] - 1; b >= b0;) {
                int32_t w = bwd_width(t, b);
                int64_t count = pull_count(t, b);
                int32_t e = b, lo = floor_of(t, p, b);
                if (!(w > 1 && t->bwd_group[b] >= 2) && summed(t->bwd_kind[b]) && count > 0
                    && b - 1 >= lo && summed(t->bwd_kind[b - 1]) && t->bwd_group[b - 1] < 2
                    && steps_hold(t, b - 1, count, NULL, st)) {
                    e = b - 1;
                    while (e - 1 >= lo && summed(t->bwd_kind[e - 1]) && !(t->bwd_group[e - 1] >= 2 && e - 1 >= SIDE - 1)
                           && steps_hold(t, e - 1, count, st, NULL))
                        --e;
                }
                for (int32_t m = e; m <= b; ++m)  /* a group of four it would cut stays whole */
                    if (t->bwd_group[m] == 1 && m >= SIDE - 1 && m - (SIDE - 1) < e) e = m + 1;
                if (b - e + 1 < MIN_LANES || !independent(t, e, b, mark)) {
                    b -= w;
                    continue;
                }
                if (pass == 1) {
                    lane_run_t *r = t->lane_runs + n_runs;
                    r->bottom = e; r->lanes = b - e + 1; r->count = (int32_t)count;
                    r->k = t->pull_start[e]; r->steps = n_steps;
                    memcpy(t->lane_stride + 2 * n_steps, st, (size_t)(2 * count) * sizeof *st);
                    for (int32_t m = e; m < b; ++m) t->bwd_group[m] = 0;
                    t->bwd_group[b] = 5;
                    t->bwd_lanes[b] = n_runs;
                }
                n_runs++;
                n_steps += count;
                b = e - 1;
            }
        }
        if (pass == 0 && (!NEW(t->lane_runs, n_runs) || !NEW(t->lane_stride, 2 * n_steps))) rc = -1;
        t->n_lane_runs = n_runs;
    }
    free(mark);
    free(st);
    return rc;
}

size_t lane_bytes(const tape_t *t) {
    const lane_run_t *last = t->n_lane_runs > 0 ? t->lane_runs + t->n_lane_runs - 1 : NULL;
    size_t steps = last != NULL ? (size_t)(last->steps + last->count) : 0;
    return (size_t)t->n_lane_runs * sizeof *t->lane_runs + 2 * steps * sizeof *t->lane_stride;
}

int32_t lane_width(const tape_t *t, int32_t b) { return t->lane_runs[t->bwd_lanes[b]].lanes; }

int32_t bwd_width(const tape_t *t, int32_t b) {
    uint8_t g = t->bwd_group[b];
    return g == 7 ? attention_width(t, b) : g == 5 ? lane_width(t, b) : g == 3 ? t->bwd_lanes[b] : g && b >= SIDE - 1 ? SIDE : 1;
}

/* The backward range entry b of position p runs in, as run_backward meets it:
 * the position's, or its level's piece less the vector run first (levels.c). */
void backward_range(const tape_t *t, int32_t p, int32_t b, int32_t *lo, int32_t *hi) {
    *lo = p > 0 ? t->bwd_end[p - 1] : 0;
    *hi = t->bwd_end[p];
    if (t->bwd_level_at == NULL) return;
    int32_t nl = t->n_levels;
    const int32_t *ap = t->bwd_level_at + (int64_t)p * (nl + 1);
    for (int32_t s = 0; s < nl; ++s)
        if (b >= ap[s] && b < ap[s + 1]) {
            *lo = ap[s];
            *hi = ap[s + 1] - (t->first_lanes != NULL ? t->first_lanes[(int64_t)p * nl + s] : 0);
            return;
        }
}

int32_t backward_piece(const tape_t *t, int32_t p, int32_t b) {
    int32_t lo, hi;
    backward_range(t, p, b, &lo, &hi);
    return lo;
}

/* met[b] = 1 where the backward, as planned so far, meets entry b as a
 * group's top (or alone): a row is taken only where it is met whole. */
void backward_tops(const tape_t *t, uint8_t *met) {
    for (int32_t p = 0; p < t->n_pos; ++p) {
        int32_t b0 = p > 0 ? t->bwd_end[p - 1] : 0;
        for (int32_t top = t->bwd_end[p] - 1; top >= b0;) {
            int32_t lo, hi;
            backward_range(t, p, top, &lo, &hi);
            for (int32_t b = hi - 1; b >= lo; b -= bwd_width(t, b)) met[b] = 1;
            top = lo - 1;
        }
    }
}

/* Lanes r0 .. r0 + n - 1 (n <= 4) of a run, from lane `from` on: each lane's
 * sum over the lowest entry's list stepped r times. Where the steps allow, four
 * numbers in one load. */
#define LANES_BODY                                                                        \
    for (int32_t r0 = from; r0 < r->lanes; r0 += SIDE) {                                  \
        int32_t n = r->lanes - r0 < SIDE ? r->lanes - r0 : SIDE;                          \
        v4 acc = {0.0, 0.0, 0.0, 0.0};                                                    \
        for (int32_t j = 0; j < r->count; ++j) {                                          \
            int32_t dp = d[2 * j], ds = d[2 * j + 1];                                     \
            int64_t p = pp[j] + (int64_t)r0 * dp, s = src[j] + (int64_t)r0 * ds;          \
            v4 xv, gv;                                                                    \
            if (ds == 0) xv = (v4){x[s], x[s], x[s], x[s]};                               \
            else if (ds == 1 && n == SIDE) xv = load4(x + s);                             \
            else for (int l = 0; l < SIDE; ++l) xv[l] = x[s + (l < n ? l : 0) * (int64_t)ds]; \
            if (dp == 0) {                                                                \
                if (p >= end) continue;                                                   \
                gv = (v4){g[p], g[p], g[p], g[p]};                                        \
                acc = acc + xv * gv;                                                      \
                continue;                                                                 \
            }                                                                             \
            if (dp == 1 && n == SIDE && p + SIDE - 1 < end) {                             \
                acc = acc + xv * load4(g + p);                                            \
                continue;                                                                 \
            }                                                                             \
            for (int l = 0; l < SIDE; ++l) {  /* a parent past end adds nothing */        \
                int64_t q = p + (l < n ? l : 0) * (int64_t)dp;                            \
                gv[l] = q < end ? g[q] : 0.0;                                             \
            }                                                                             \
            v4 term = xv * gv;                                                            \
            for (int l = 0; l < SIDE; ++l)                                                \
                if (p + (l < n ? l : 0) * (int64_t)dp >= end) term[l] = 0.0;              \
            acc = acc + term;  /* (+ 0.0 leaves a sum from 0.0 as it is: never -0.0) */    \
        }                                                                                 \
        for (int l = 0; l < n; ++l) g[bwd[r->bottom + r0 + l]] = acc[l];                  \
    }
#define LANES_ARGS const lane_run_t *r, double *g, const double *x, const int32_t *pp, const int32_t *src, \
                   const int32_t *d, const int32_t *bwd, int64_t end, int32_t from
KERNELS(lanes, (LANES_ARGS), LANES_BODY)

/* The same four registers at a time where a run has 4 W lanes from r0 on (V,
 * LOAD, W: a register's type, load and lanes): four sums in flight, each lane
 * as above, the per-pull work (its steps, its parent's end) done once for all;
 * the rest of the run as above. */
#define LANES_CHUNKS(V, LOAD, W, REST)                                                    \
    int32_t r0 = from;                                                                    \
    for (; r0 + 4 * W <= r->lanes; r0 += 4 * W) {                                         \
        V acc[4];                                                                         \
        memset(acc, 0, sizeof acc);                                                       \
        for (int32_t j = 0; j < r->count; ++j) {                                          \
            int32_t dp = d[2 * j], ds = d[2 * j + 1];                                     \
            int64_t p = pp[j] + (int64_t)r0 * dp, s = src[j] + (int64_t)r0 * ds;          \
            V xv[4];                                                                      \
            for (int u = 0; u < 4; ++u)                                                   \
                for (int l = 0; l < W && ds != 1; ++l) xv[u][l] = x[s + (int64_t)(W * u + l) * ds]; \
            if (ds == 1)                                                                  \
                for (int u = 0; u < 4; ++u) xv[u] = LOAD(x + s + W * u);                  \
            if (dp == 0) {                                                                \
                if (p >= end) continue;                                                   \
                double gp = g[p];                                                         \
                for (int u = 0; u < 4; ++u) acc[u] = acc[u] + xv[u] * gp;                 \
            } else if (dp == 1 && p + 4 * W - 1 < end) {                                  \
                for (int u = 0; u < 4; ++u) acc[u] = acc[u] + xv[u] * LOAD(g + p + W * u); \
            } else {                                                                      \
                for (int u = 0; u < 4; ++u) {  /* a parent past end adds nothing */       \
                    V gv, term;                                                           \
                    for (int l = 0; l < W; ++l) {                                         \
                        int64_t q = p + (int64_t)(W * u + l) * dp;                        \
                        gv[l] = q < end ? g[q] : 0.0;                                     \
                    }                                                                     \
                    term = xv[u] * gv;                                                    \
                    for (int l = 0; l < W; ++l)                                           \
                        if (p + (int64_t)(W * u + l) * dp >= end) term[l] = 0.0;          \
                    acc[u] = acc[u] + term;                                               \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
        for (int u = 0; u < 4; ++u)                                                       \
            for (int l = 0; l < W; ++l) g[bwd[r->bottom + r0 + W * u + l]] = acc[u][l];   \
    }                                                                                     \
    if (r0 < r->lanes) REST(r, g, x, pp, src, d, bwd, end, r0);
KERNELS(chunks, (LANES_ARGS), LANES_CHUNKS(v4, load4, 4, KERNEL(lanes)))
WIDE(chunks, (LANES_ARGS), LANES_CHUNKS(v8, load8, 8, lanes_avx2))

/* The step of the run whose top entry is b (bwd_group 5; steps.c): its
 * lowest entry's list and its length, its steps' place (an index below the
 * pulls': an int32) and its lanes, so that the backward reads no record. */
void lane_step(const tape_t *t, int32_t b, bwd_step_t *s) {
    const lane_run_t *r = t->lane_runs + t->bwd_lanes[b];
    s->k0 = r->k;
    s->n = r->count;
    s->a = (int32_t)r->steps;
    s->c = r->lanes;
}

/* The run of step s (lane_step); end: parents from it on add nothing. */
void lane_grads(tape_t *t, const bwd_step_t *s, int32_t end) {
    lane_run_t r = {s->b - s->c + 1, s->c, s->n, s->k0, s->a};
    void (*kernel)(LANES_ARGS) = KERNEL_WIDE(chunks);
    kernel(&r, t->grad, t->x, t->pull_parent + r.k, t->pull_src + r.k, t->lane_stride + 2 * r.steps, t->bwd, end, 0);
}
