/* strided_pulls.c: the backward's groups of four entries whose pull lists step
 * by constants (bwd_group 6), and runs of four such groups read at once. */
#include "internal.h"
#include "lanes.h"

/* The backward's groups of four entries (group.c, bwd_group 1) whose pull
 * lists each step by constants: an attention weight a_t's gradient sums
 * v_t[j] * g(head output j) over j, the values one node apart, the outputs a
 * constant step apart (bwd_group 6). Lane k is entry b - k: its pull j adds
 * x[s0[k] + j ss] * grad[p0[k] + j sp], in its list's order. top: the
 * largest parent (a replay that ends before it takes the lists). */
typedef struct strided_pulls {
    int32_t p0[SIDE], s0[SIDE];
    int32_t sp, ss, count, top;
    int32_t run_top;        /* in a run (below): the largest parent of its four groups */
    int8_t run;             /* D: the first group of a run, the others D, 2 D, 3 D entries
                             * below; -1: one of those (done with the first); 0: alone */
} strided_pulls_t;

static int pulls_runs(tape_t *t);

static int list_steps(const tape_t *t, int32_t e, strided_pulls_t *s, int k) {
    int64_t k0 = t->pull_start[e];
    const int32_t *pp = t->pull_parent + k0, *src = t->pull_src + k0;
    if (t->pull_start[e + 1] - k0 != s->count) return 0;
    if (k == 0) { s->sp = pp[1] - pp[0]; s->ss = src[1] - src[0]; }
    s->p0[k] = pp[0];
    s->s0[k] = src[0];
    for (int32_t j = 0; j < s->count; ++j) {
        if (pp[j] != pp[0] + j * s->sp || src[j] != src[0] + j * s->ss) return 0;
        if (pp[j] > s->top) s->top = pp[j];
    }
    return 1;
}

int strided_pulls_plan(tape_t *t) {
    int32_t nb = t->bwd_end[t->n_pos - 1], n = 0;
    for (int pass = 0; pass < 2; ++pass) {
        n = 0;
        for (int32_t b = SIDE - 1; b < nb; ++b) {
            if (t->bwd_group[b] != 1) continue;
            strided_pulls_t s = {.count = (int32_t)pull_count(t, b), .top = -1};
            int ok = s.count >= 2;
            for (int k = 0; k < SIDE && ok; ++k) ok = list_steps(t, b - k, &s, k);
            if (!ok) continue;
            if (pass == 1) {
                t->strided_pulls[n] = s;
                t->bwd_group[b] = 6;
                t->bwd_lanes[b] = n;
            }
            n++;
        }
        if (pass == 0 && !NEW(t->strided_pulls, n)) return -1;
    }
    t->n_strided_pulls = n;
    return pulls_runs(t);
}

/* Runs: four groups D = 4 or 8 entries apart (one head's attention weights at
 * one position, sixteen of them; between them, what reads the weights) whose
 * lanes all pull from the same parents (the head's outputs): run at once when
 * the first is met, sixteen lanes in four registers, each lane its list's
 * terms in order, if every parent is made after the first (its gradient is
 * done by then) and all are in one level's piece of one position. */
static int run_fits(const tape_t *t, int32_t b, int D) {
    const strided_pulls_t *s = t->strided_pulls + t->bwd_lanes[b];
    int32_t lo = b - D * (SIDE - 1) - (SIDE - 1), p = t->pos[t->bwd[b]];
    int64_t lowest = s->p0[0] + (s->sp < 0 ? (int64_t)(s->count - 1) * s->sp : 0);  /* its lowest parent */
    if (lo < (p > 0 ? t->bwd_end[p - 1] : 0) || lowest <= t->bwd[b]) return 0;
    if (t->bwd_level_at != NULL) {  /* (levels run a position's pieces apart) */
        const int32_t *ap = t->bwd_level_at + (int64_t)p * (t->n_levels + 1);
        for (int32_t l = 0; l < t->n_levels; ++l)
            if (b >= ap[l] && b < ap[l + 1] && lo < ap[l]) return 0;
    }
    for (int q = 0; q < SIDE; ++q) {
        int32_t e = b - D * q;
        if (t->bwd_group[e] != 6) return 0;
        const strided_pulls_t *r = t->strided_pulls + t->bwd_lanes[e];
        if (r->run != 0 || r->sp != s->sp || r->ss != s->ss || r->count != s->count) return 0;
        for (int k = 0; k < SIDE; ++k)
            if (r->p0[k] != s->p0[0]) return 0;
    }
    return 1;
}

static int pulls_runs(tape_t *t) {
    int32_t nb = t->bwd_end[t->n_pos - 1];
    for (int32_t b = nb - 1; b >= SIDE - 1; --b) {
        if (t->bwd_group[b] != 6 || t->strided_pulls[t->bwd_lanes[b]].run != 0) continue;
        for (int D = SIDE; D <= 2 * SIDE; D += SIDE) {
            if (!run_fits(t, b, D)) continue;
            int32_t top = -1;
            for (int q = 0; q < SIDE; ++q) {
                const strided_pulls_t *r = t->strided_pulls + t->bwd_lanes[b - D * q];
                if (r->top > top) top = r->top;
            }
            for (int q = 0; q < SIDE; ++q) {
                strided_pulls_t *r = t->strided_pulls + t->bwd_lanes[b - D * q];
                r->run = (int8_t)(q == 0 ? D : -1);
                r->run_top = top;
            }
            break;
        }
    }
    return 0;
}

/* The run whose first group is at entry b: lane k of group q is entry b - D q - k. */
#define PULLS16_BODY                                                                      \
    const double *x = t->x, *gp = t->grad + s->p0[0];                                     \
    const double *xs[SIDE * SIDE];                                                        \
    int64_t sp = s->sp, ss = s->ss;                                                       \
    for (int q = 0; q < SIDE; ++q)                                                        \
        for (int k = 0; k < SIDE; ++k)                                                    \
            xs[SIDE * q + k] = x + t->strided_pulls[t->bwd_lanes[b - D * q]].s0[k];       \
    v4 acc[SIDE];                                                                         \
    for (int q = 0; q < SIDE; ++q) acc[q] = (v4){0.0, 0.0, 0.0, 0.0};                     \
    for (int64_t j = 0; j < s->count; ++j) {                                              \
        double gj = gp[j * sp];                                                           \
        for (int q = 0; q < SIDE; ++q) {                                                  \
            const double *const *xq = xs + SIDE * q;                                      \
            v4 xv = {xq[0][j * ss], xq[1][j * ss], xq[2][j * ss], xq[3][j * ss]};         \
            acc[q] = acc[q] + xv * gj;                                                    \
        }                                                                                 \
    }                                                                                     \
    for (int q = 0; q < SIDE; ++q)                                                        \
        for (int k = 0; k < SIDE; ++k) t->grad[t->bwd[b - D * q - k]] = acc[q][k];
#define PULLS16_ARGS tape_t *t, const strided_pulls_t *s, int32_t b, int D
KERNELS(pulls16, (PULLS16_ARGS), PULLS16_BODY)

/* Group b's four sums (bwd_group 6), or the run's from it, or none (done
 * with its run's first); 0 if a parent is at or past end (then the lists). */
int strided_pulls(tape_t *t, int32_t b, int32_t end) {
    const strided_pulls_t *s = t->strided_pulls + t->bwd_lanes[b];
    if (s->run != 0 && s->run_top < end) {
        if (s->run > 0) KERNEL(pulls16)(t, s, b, s->run);
        return 1;
    }
    if (s->top >= end) return 0;
    const double *x = t->x, *g = t->grad;
    const double *x0 = x + s->s0[0], *x1 = x + s->s0[1], *x2 = x + s->s0[2], *x3 = x + s->s0[3];
    const double *g0 = g + s->p0[0], *g1 = g + s->p0[1], *g2 = g + s->p0[2], *g3 = g + s->p0[3];
    int64_t sp = s->sp, ss = s->ss;
    double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
    for (int64_t j = 0; j < s->count; ++j) {
        a0 += x0[j * ss] * g0[j * sp];
        a1 += x1[j * ss] * g1[j * sp];
        a2 += x2[j * ss] * g2[j * sp];
        a3 += x3[j * ss] * g3[j * sp];
    }
    const int32_t *e = t->bwd + b;
    t->grad[e[0]] = a0;
    t->grad[e[-1]] = a1;
    t->grad[e[-2]] = a2;
    t->grad[e[-3]] = a3;
    return 1;
}

size_t strided_pulls_bytes(const tape_t *t) { return (size_t)t->n_strided_pulls * sizeof *t->strided_pulls; }
