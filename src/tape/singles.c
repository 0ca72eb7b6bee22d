/* singles.c: runs of consecutive backward entries each of whose gradient is
 * one parent's product (a number read once: most of the elementwise work),
 * taken in one tight loop rather than one dispatch an entry. */
#include "internal.h"

/* whether entry b is summed by replay.c's general loop with a list of one */
static int is_single(const tape_t *t, int32_t b) {
    uint8_t kind = t->bwd_kind[b];
    return t->bwd_group[b] == 0 && (kind == K_OP || kind == K_DOT)
           && pull_count(t, b) == 1;
}

/* Each group-0 entry's run: bwd_lanes[b] = how many entries from b down are
 * singles (0: b is not one). A run never reaches into a side-by-side group:
 * its top (group != 0) ends it first. */
void single_plan(tape_t *t) {
    int32_t run = 0;
    for (int32_t b = 0; b < t->bwd_end[t->n_pos - 1]; ++b) {
        run = is_single(t, b) ? run + 1 : 0;
        if (t->bwd_group[b] == 0) t->bwd_lanes[b] = run;
    }
}

/* Entries b, b-1, .. of b's run, n of them (steps.c), in that order (a later
 * one may read an earlier one's gradient): each 0.0 + its product, or 0.0
 * where its parent is past end (as the general loop). How many it took. */
int32_t single_grads(tape_t *t, int32_t b, int32_t n, int32_t end) {
    int32_t stop = b - n;
    const int32_t *pp = t->pull_parent, *src = t->pull_src, *bwd = t->bwd;
    const int64_t *ps = t->pull_start;
    const double *x = t->x;
    double *g = t->grad;
    double v = 0.0;  /* the last entry's gradient: the next one's parent, often (a chain of adds) */
    int32_t last = -1;
    for (int32_t e = b; e > stop; --e) {
        int64_t k = ps[e];
        int32_t p = pp[k];
        double c = x[src[k]];
        if (p == last)  /* (from the register, not from memory just written: the same number) */
            v = c == 1.0 ? v : 0.0 + c * v;  /* (0.0 + 1.0 * v is v: v, a sum from 0.0, is never -0.0) */
        else
            v = p < end ? 0.0 + c * g[p] : 0.0;
        last = bwd[e];
        g[last] = v;
    }
    return b - stop;
}

/* Whether entry b is taken by single_grads, the backward's entries below
 * b_end (b's run is two or more, or b is the last of the run above it). */
int single_in_run(const tape_t *t, int32_t b, int32_t b_end) {
    if (t->bwd_group[b] != 0 || t->bwd_lanes[b] == 0) return 0;
    return t->bwd_lanes[b] > 1 || (b + 1 < b_end && t->bwd_group[b + 1] == 0 && t->bwd_lanes[b + 1] > 1);
}

/* Whether entry b is taken by single_grads from the gradient of the entry
 * just before it in its run (its parent), kept in a register. */
int single_chained(const tape_t *t, int32_t b, int32_t b_end) {
    return single_in_run(t, b, b_end) && b + 1 < b_end && t->bwd_group[b + 1] == 0 && t->bwd_lanes[b + 1] > 1
           && t->pull_parent[t->pull_start[b]] == t->bwd[b + 1];
}
