/* paired_plan.c: which of a level's first vectors (paired.c) run first, and
 * which positions' run together: the facts paired.c's header states, checked
 * from the tape, and where each group's list and nodes are, found once. */
#include "internal.h"

/* The group that position p's level s ends with, if it may run first (its
 * lanes; 0 if not): a matrix-row group, not a rotating one, every parent
 * made at a later level (lvl) at p. */
static int32_t first_group(const tape_t *t, int32_t p, int32_t s, const int32_t *lvl) {
    const int32_t *ap = t->bwd_level_at + (int64_t)p * (t->n_levels + 1) + s;
    int32_t b = ap[1] - 1;
    if (b < ap[0] || b < SIDE - 1 || (t->bwd_group[b] != 2 && t->bwd_group[b] != 3) || t->bwd_kind[b] == K_ROTATE)
        return 0;
    int32_t lanes = t->bwd_group[b] == 3 ? t->bwd_lanes[b] : SIDE;
    if (b - (lanes - 1) < ap[0]) return 0;
    for (int64_t k = t->pull_start[b]; k < t->pull_start[b + 1]; ++k) {
        int32_t q = t->pull_parent[k];
        if (lvl[q] <= s || t->pos[q] != p) return 0;
    }
    return lanes;
}

/* Position p's first group at level s, found once (internal.h first_group_t). */
static first_group_t first_record(const tape_t *t, int32_t b, int32_t lanes) {
    first_group_t f = {t->pull_start[b], b, (int32_t)pull_count(t, b), 0, 0, 0, t->bwd[b - (lanes - 1)], lanes, -1, {0}};
    f.parent0 = t->pull_parent[f.k0];
    f.src0 = t->pull_src[f.k0];
    for (int32_t i = 0; i < lanes; ++i)
        if (t->bwd[b - (lanes - 1 - i)] != f.node0 + i) f.node0 = -1;
    return f;
}

/* Do positions p and p - 1's first groups read the same weights, in the same
 * order? 0 if not, 3 if their parents differ by one constant too, else 1. */
static int same_rows(const tape_t *t, int32_t bp, int32_t bq) {
    int64_t kp = t->pull_start[bp], kq = t->pull_start[bq], count = t->pull_start[bp + 1] - kp;
    if (t->pull_start[bq + 1] - kq != count) return 0;
    if (memcmp(t->pull_src + kp, t->pull_src + kq, (size_t)count * sizeof *t->pull_src) != 0) return 0;
    int shifted = 1;
    for (int64_t j = 1; j < count && shifted; ++j)
        shifted = t->pull_parent[kp + j] - t->pull_parent[kq + j] == t->pull_parent[kp] - t->pull_parent[kq];
    return shifted ? 3 : 1;
}

/* Position p's first group's list at level s, if its parents are consecutive
 * nodes last first (its rows' sums) and its sources (the rows' weights) step
 * by a constant: the step (the list is then read without its indices); else 0. */
static int32_t list_step(const tape_t *t, int32_t p, int32_t s) {
    int32_t b = t->bwd_level_at[(int64_t)p * (t->n_levels + 1) + s + 1] - 1;
    int64_t k0 = t->pull_start[b], count = t->pull_start[b + 1] - k0;
    const int32_t *pp = t->pull_parent + k0, *src = t->pull_src + k0;
    int32_t step = count > 1 ? src[1] - src[0] : 0;
    for (int64_t j = 0; j < count && step != 0; ++j)
        if (pp[j] != pp[0] - j || src[j] != src[0] + j * (int64_t)step) step = 0;
    return step;
}

int paired_plan(tape_t *t) {
    int32_t nl = t->n_levels, N = t->n_pos;
    if (t->bwd_level_at == NULL || t->level_at == NULL) return 0;
    int32_t *lvl = NULL;
    if (!NEW(lvl, t->n_nodes) || !NEW(t->first_lanes, (int64_t)N * nl) || !NEW(t->paired, (int64_t)N * nl)
        || !NEW(t->first_groups, (int64_t)N * nl)) {
        free(lvl);
        return -1;
    }
    for (int32_t L = 0; L < t->n_nodes; ++L) lvl[L] = INT32_MAX;  /* (no instruction makes it: never a level's) */
    for (int32_t p = 0; p < N; ++p)
        for (int32_t s = 0; s < nl; ++s)
            for (int64_t i = t->level_at[p * (nl + 1) + s]; i < t->level_at[p * (nl + 1) + s + 1]; ++i)
                lvl[t->fwd[i]] = s;
    for (int32_t p = 0; p < N; ++p)
        for (int32_t s = 0; s < nl; ++s) {
            t->first_lanes[(int64_t)p * nl + s] = first_group(t, p, s, lvl);
            int32_t lanes = t->first_lanes[(int64_t)p * nl + s];
            if (lanes == 0) continue;
            *group_at(t, p, s) = first_record(t, t->bwd_level_at[(int64_t)p * (nl + 1) + s + 1] - 1, lanes);
            group_at(t, p, s)->step = list_step(t, p, s);
        }
    for (int32_t p = 1; p < N; ++p)
        for (int32_t s = 0; s < nl; ++s) {
            int32_t lp = t->first_lanes[(int64_t)p * nl + s], lq = t->first_lanes[(int64_t)(p - 1) * nl + s];
            int32_t bp = t->bwd_level_at[(int64_t)p * (nl + 1) + s + 1] - 1;
            int32_t bq = t->bwd_level_at[(int64_t)(p - 1) * (nl + 1) + s + 1] - 1;
            t->paired[(int64_t)p * nl + s] = lp > 0 && lp == lq ? (uint8_t)same_rows(t, bp, bq) : 0;
        }
    free(lvl);
    return 0;
}

/* After share_plan: a first group that leads a shared list (the heads'
 * outputs, the last head the level's top) runs every head's lanes, the
 * heads' weights one row's consecutive columns (share_plan checks), its
 * gradients copied to each head's nodes; positions pair where their widths
 * agree too. */
void paired_shares(tape_t *t) {
    int32_t nl = t->n_levels, N = t->n_pos;
    if (t->first_groups == NULL || t->n_share == 0) return;
    for (int32_t p = 0; p < N; ++p)
        for (int32_t s = 0; s < nl; ++s) {
            first_group_t *f = group_at(t, p, s);
            int32_t lanes = t->first_lanes[(int64_t)p * nl + s], at = lanes > 0 ? share_index(t, f->b) : -1;
            if (at < 0 || t->share_n[at] <= 0) continue;  /* (a chain of own lists is never a level's top) */
            f->share = at;
            f->lanes = lanes * t->share_n[at];
            f->node0 = -1;
            for (int32_t h = 0; h < t->share_n[at]; ++h)  /* (share_b: the last head first) */
                f->head[h] = t->bwd[t->share_b[at + t->share_n[at] - 1 - h]] - (lanes - 1);
        }
    for (int32_t p = 1; p < N; ++p)
        for (int32_t s = 0; s < nl; ++s)
            if (group_at(t, p, s)->lanes != group_at(t, p - 1, s)->lanes) t->paired[(int64_t)p * nl + s] = 0;
}
