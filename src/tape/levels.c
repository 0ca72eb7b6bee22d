/* levels.c: a whole step (forward and backward) run layer by layer instead
 * of position by position, so that a matrix's rows meet every position's vector while their
 * weights are in cache (a 16-row run's are 8 KB at n_embd 64) instead of
 * coming back from L2 once a position.
 *
 * A position's instructions are cut into levels: a new level begins at each
 * matrix (F_MV4 groups) that follows other work. Position p of level s reads
 * only levels before s, and level s of positions up to p (attention reads the
 * earlier positions' keys and values of its own layer). So the forward may run
 * level by level: the level's matrix groups for every position (one group
 * over all positions, then the next), then the rest of the level position by
 * position. Each instruction computes the same numbers from the same operands;
 * only the order between independent instructions changes. level_plan checks
 * every operand of every instruction against this order and keeps no levels
 * (the forward stays position by position) for a tape that does not fit it.
 * The backward runs the levels last to first, each level's positions last to
 * first; backward_levels checks every entry's parents likewise. A forward
 * from a later position (the sampler's, a position a call) runs in order. */
#include "internal.h"

/* The units of one position's forward: where the next instruction starts. */
static int64_t unit_width(const tape_t *t, int64_t i) {
    switch (t->fwd_code[i]) {
    case F_MV4: return SIDE * (int64_t)t->mv[t->fwd_arg[3 * i]].run;
    case F_DOT4: case F_SHIFT4: return SIDE;
    default: return 1;
    }
}

/* How many levels position p has (and, with at != NULL, where each begins). */
static int32_t cut_levels(const tape_t *t, int32_t p, int32_t *at) {
    int64_t i0 = p > 0 ? t->fwd_end[p - 1] : 0, i1 = t->fwd_end[p];
    int32_t s = 0;
    if (at != NULL) at[0] = (int32_t)i0;
    for (int64_t i = i0, before = -1; i < i1; before = i, i += unit_width(t, i))
        if (t->fwd_code[i] == F_MV4 && before >= 0 && t->fwd_code[before] != F_MV4) {
            ++s;
            if (at != NULL) at[s] = (int32_t)i;
        }
    if (at != NULL) at[s + 1] = (int32_t)i1;
    return s + 1;
}

typedef struct {
    const tape_t *t;
    const int32_t *lvl;  /* node -> the level that makes it (-1: nobody in the forward) */
    int32_t s, p;
    int matrix;          /* a matrix group: it reads only earlier levels or its own position */
} reader_t;

static int fits(const reader_t *r, int32_t node) {
    int32_t l = r->lvl[node];
    if (l < r->s) return 1;
    if (l > r->s) return 0;
    return r->matrix ? r->t->pos[node] == r->p : r->t->pos[node] <= r->p;
}

static int list_fits(const reader_t *r, const int32_t *pr, int32_t count, int32_t shift) {
    for (int32_t j = 0; j < count; ++j)
        for (int32_t c = 0; c <= shift; ++c)
            if (!fits(r, pr[j] + c)) return 0;
    return 1;
}

/* Does the unit at instruction i read only what the level order has made? */
static int unit_fits(const reader_t *r, int64_t i) {
    const tape_t *t = r->t;
    const int32_t *A = t->fwd_arg + 3 * i;
    switch (t->fwd_code[i]) {
    case F_ADD: case F_MUL: return fits(r, A[0]) && fits(r, A[1]);
    case F_COPY: return fits(r, A[0]);
    case F_DOT: return fits(r, A[1]) && list_fits(r, t->dot_pair + A[0], A[2], 0);
    case F_DOT4: case F_SHIFT4: {
        int shift = t->fwd_code[i] == F_SHIFT4 ? SIDE - 1 : 0;  /* (lane c reads the node c after) */
        for (int c = 0; c < SIDE; ++c)
            if (!fits(r, A[3 * c + 1]) || !list_fits(r, t->dot_pair + A[3 * c], A[3 * c + 2], shift)) return 0;
        return 1;
    }
    case F_MV4: {
        for (int32_t k = 0; k < t->mv[A[0]].run; ++k) {
            const matvec_t *g = t->mv + A[0] + k;
            for (int c = 0; c < SIDE; ++c)
                if (!fits(r, g->init[c])) return 0;
            const int32_t *v = t->dot_pair + g->pairs + 1;
            for (int32_t j = 0; j < g->len; ++j)
                if (!fits(r, g->vec >= 0 ? g->vec + j : v[2 * j])) return 0;
        }
        return 1;
    }
    case F_DERIVED: {
        for (int64_t k = t->src_start[A[0]]; k < t->src_start[A[0] + 1]; ++k)
            if (!fits(r, t->src[k])) return 0;
        return 1;
    }
    default: return fits(r, A[0]);  /* F_ONE_CHILD */
    }
}

/* Where the matrix groups that begin instructions [i, i1) end. */
static int64_t matrix_end(const tape_t *t, int64_t i, int64_t i1) {
    while (i < i1 && t->fwd_code[i] == F_MV4) i += unit_width(t, i);
    return i;
}

/* Every position's levels alike (the same matrix groups at the same places),
 * every operand made before it is read, and a shared max (share_derived) only
 * after its own level's first derived number (each level's rest runs in one
 * piece: the max is still there). */
static int levels_fit(const tape_t *t, const int32_t *at, int32_t nl, int32_t *lvl) {
    for (int32_t L = 0; L < t->n_nodes; ++L) lvl[L] = -1;
    for (int32_t p = 0; p < t->n_pos; ++p)
        for (int32_t s = 0; s < nl; ++s)
            for (int64_t i = at[p * (nl + 1) + s]; i < at[p * (nl + 1) + s + 1]; ++i) lvl[t->fwd[i]] = s;
    for (int32_t p = 0; p < t->n_pos; ++p) {
        const int32_t *ap = at + (int64_t)p * (nl + 1);
        for (int32_t s = 0; s < nl; ++s) {
            int64_t e = matrix_end(t, ap[s], ap[s + 1]);
            if (e - ap[s] != matrix_end(t, at[s], at[s + 1]) - at[s]) return 0;
            reader_t r = {t, lvl, s, p, 1};
            int derived = 0;
            for (int64_t i = ap[s]; i < ap[s + 1]; i += unit_width(t, i)) {
                r.matrix = i < e;
                if (r.matrix) {  /* the same rows as position 0's at this place */
                    const matvec_t *g = t->mv + t->fwd_arg[3 * i];
                    const matvec_t *g0 = t->mv + t->fwd_arg[3 * (i - ap[s] + at[s])];
                    if (g->run != g0->run || g->w[0] != g0->w[0] || g->len != g0->len) return 0;
                }
                if (t->fwd_code[i] == F_DERIVED) {
                    if (t->fwd_arg[3 * i + 1] && !derived) return 0;
                    derived = 1;
                }
                if (!unit_fits(&r, i)) return 0;
            }
        }
    }
    return 1;
}

/* The backward's entries of each position cut by their nodes' levels (each
 * level one range, in order), so that the backward may run the levels last to
 * first, each over positions last to first. An entry pulls from its parents:
 * each must be at a later level, or the same level and a later or the same
 * position (the same: a later entry of its range). A group of entries summed
 * side by side lies inside one range. 1 if it fits, 0 if not. */
static int backward_levels(tape_t *t, int32_t nl, const int32_t *lvl, int32_t *at) {
    const int32_t *pp = t->pull_parent;
    for (int32_t p = 0; p < t->n_pos; ++p) {
        int32_t b0 = p > 0 ? t->bwd_end[p - 1] : 0, b1 = t->bwd_end[p], s = 0;
        int32_t *ap = at + (int64_t)p * (nl + 1);
        ap[0] = b0;
        for (int32_t b = b0; b < b1; ++b) {
            int32_t l = lvl[t->bwd[b]];
            if (l < s) return 0;
            while (s < l) ap[++s] = b;
        }
        while (s < nl) ap[++s] = b1;
        for (s = 0; s < nl; ++s)
            for (int32_t b = ap[s + 1] - 1; b >= ap[s]; --b) {
                int32_t width = t->bwd_group[b] == 3 ? t->bwd_lanes[b] : t->bwd_group[b] && b >= SIDE - 1 ? SIDE : 1;
                if (b - (width - 1) < ap[s]) return 0;
                int32_t shift = t->bwd_group[b] == 4 && width > 1 ? SIDE - 1 : 0;
                for (int64_t k = t->pull_start[b]; k < t->pull_start[b + 1]; ++k)
                    for (int32_t c = 0; c <= shift; ++c) {
                        int32_t q = pp[k] - c, l = lvl[q];
                        if (l < s || (l == s && t->pos[q] < p)) return 0;
                    }
                if (t->bwd_kind[b] == K_CANDIDATE) {
                    int32_t q = t->target_owner[p];
                    if (lvl[q] < s || (lvl[q] == s && t->pos[q] < p)) return 0;
                }
                b -= width - 1;
            }
    }
    return 1;
}

/* Each level's matrix groups by unit, then position (level_mv): the forward
 * meets them in this order, the records' places at hand. 1, or 0 out of memory. */
static int matrix_units(tape_t *t) {
    int32_t nl = t->n_levels, N = t->n_pos;
    if (!NEW(t->level_units, nl + 1)) return 0;
    for (int32_t s = 0; s < nl; ++s) {
        int32_t units = 0;
        for (int64_t i = t->level_at[s], e = matrix_end(t, i, t->level_at[s + 1]); i < e; i += unit_width(t, i)) ++units;
        t->level_units[s + 1] = t->level_units[s] + units;
    }
    if (!NEW(t->level_mv, (int64_t)t->level_units[nl] * N)) return 0;
    for (int32_t s = 0; s < nl; ++s) {
        int32_t u = t->level_units[s];
        for (int64_t i = t->level_at[s], e = matrix_end(t, i, t->level_at[s + 1]); i < e; i += unit_width(t, i), ++u)
            for (int32_t p = 0; p < N; ++p)
                t->level_mv[(int64_t)u * N + p] = t->fwd_arg[3 * (i - t->level_at[s] + t->level_at[(int64_t)p * (nl + 1) + s])];
    }
    return 1;
}

int level_plan(tape_t *t) {
    t->n_levels = 0;
    if (t->n_blocks == 0) return 0;  /* (the matrix kernels' transposed weights) */
    int32_t nl = cut_levels(t, 0, NULL);
    for (int32_t p = 1; p < t->n_pos; ++p)
        if (cut_levels(t, p, NULL) != nl) return 0;
    int32_t *lvl = NULL;
    if (!NEW(t->level_at, (int64_t)t->n_pos * (nl + 1)) || !NEW(lvl, t->n_nodes)) {
        free(lvl);
        return -1;
    }
    for (int32_t p = 0; p < t->n_pos; ++p) cut_levels(t, p, t->level_at + (int64_t)p * (nl + 1));
    int ok = levels_fit(t, t->level_at, nl, lvl);
    if (ok && NEW(t->bwd_level_at, (int64_t)t->n_pos * (nl + 1)) == NULL) {
        free(lvl);
        return -1;
    }
    if (ok && !backward_levels(t, nl, lvl, t->bwd_level_at)) {
        free(t->bwd_level_at);
        t->bwd_level_at = NULL;
    }
    free(lvl);
    if (!ok) {
        free(t->level_at);
        t->level_at = NULL;
        return 0;
    }
    t->n_levels = nl;
    return matrix_units(t) ? panel_plan(t) : -1;
}

/* The forward of positions [0, n) level by level (level_plan): run(t, i0, i1)
 * computes instructions [i0, i1) of one position. */
status_t level_forward(tape_t *t, int32_t n, status_t (*run)(tape_t *, int64_t, int64_t)) {
    int32_t nl = t->n_levels;
    for (int32_t s = 0; s < nl; ++s) {
        if (t->panel_units != NULL) panel_level(t, s, n);  /* every position at once (panels.c) */
        for (int32_t u = t->level_units[s]; u < t->level_units[s + 1] && t->panel_units == NULL; ++u) {
            const int32_t *mv = t->level_mv + (int64_t)u * t->n_pos;
            int32_t p = 0;
            for (; p + 1 < n; p += 2) {  /* two positions at once: the weights loaded once */
                for (int32_t q = p + 2; q < p + 4 && q < n; ++q) {  /* (positions far apart) */
                    const matvec_t *h = t->mv + mv[q];
                    __builtin_prefetch(h);
                    __builtin_prefetch(t->x + h->top[0], 1);
                    if (h->vec >= 0) __builtin_prefetch(t->x + h->vec);
                }
                matrix_forward(t, t->mv + mv[p], t->mv + mv[p + 1]);
            }
            if (p < n) matrix_forward(t, t->mv + mv[p], NULL);
        }
        int64_t skip = matrix_end(t, t->level_at[s], t->level_at[s + 1]) - t->level_at[s];  /* the same
                                   * matrix groups at every position */
        for (int32_t p = 0; p < n; ++p) {
            const int32_t *ap = t->level_at + (int64_t)p * (nl + 1) + s;
            if (p + 1 < n && t->prog == NULL) {  /* the next position's piece starts far away: its first lines now */
                int64_t i = ap[nl + 1] + skip;
                __builtin_prefetch(t->fwd + i);
                __builtin_prefetch(t->fwd_code + i);
                __builtin_prefetch(t->fwd_arg + 3 * i);
            }
            status_t st = t->prog != NULL ? program_run(t, s, p) : run(t, ap[0] + skip, ap[1]);  /* (program.c) */
            if (st != OP_OK) return st;
        }
    }
    return OP_OK;
}

/* The backward of positions [0, n) level by level, last to first, each
 * level's positions last to first (backward_levels): run(t, i0, i1) takes
 * the pieces [i0, i1) (steps.c: a piece is one position's entries of one
 * level, in this order), a level's n positions at once. */
void level_backward(tape_t *t, int32_t n, void (*run)(tape_t *, int32_t, int32_t, void *), void *arg) {
    int32_t nl = t->n_levels;
    for (int32_t s = nl - 1; s >= 0; --s) {
        for (int32_t p = n - 1; p >= 0 && t->first_lanes != NULL; --p) {  /* the vectors first (paired.c) */
            if (p >= 16) {  /* (the positions' entries are far apart, and gone from the caches since
                             * the last level: asked for well before) */
                __builtin_prefetch(t->first_lanes + (int64_t)(p - 16) * nl + s);
                __builtin_prefetch(t->paired + (int64_t)(p - 16) * nl + s);
                __builtin_prefetch(t->bwd_level_at + (int64_t)(p - 16) * (nl + 1) + s);
            }
            int32_t lanes = t->first_lanes[(int64_t)p * nl + s], b = t->bwd_level_at[(int64_t)p * (nl + 1) + s + 1] - 1;
            int k = paired_width(t, p, s);  /* positions p, p - 1, ... reading one matrix's rows alike */
            if (k > 1) {
                paired_grads(t, p, s, k);
                p -= k - 1;
            } else if (lanes > 0) matrix_vector_grads(t, b, lanes, t->pull_start[b], t->pull_start[b + 1], t->pos_end[n - 1], -1);
        }
        int32_t i = piece_of(t, s, n - 1);
        run(t, i, i + n, arg);  /* (one call: the pieces of positions n - 1 down to 0 are consecutive) */
    }
}
