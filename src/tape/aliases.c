/* aliases.c: the pull lists a vector's entries share (reads.c
 * share_vector_reads), made the backward's. A vector of n entries read by the
 * rows of one matrix has one list stored, its first entry's; entry d reads
 * the same parents with the weights d on. The backward reads such a vector in
 * groups of lanes (bwd_group 2, 3: the top entry's list, the lanes' weights
 * side by side), so only each group's top entry needs a list; the entries left
 * over below the last group (fewer than SIDE) get their own. In the replay's
 * numbering, once the backward's entries are in their final order. */
#include "internal.h"

/* One column of the pull lists (parent, src or block) anew: each kept
 * entry's list, its own or the one it shares (first[b], the weights `shift`
 * on: src only), at start[b]. A column at a time, the old one freed before
 * the next is made (the lists are most of what the build holds); zeros are
 * not written (calloc'd: most of the block column's pages stay untouched).
 * 0, or -1 out of memory. */
static int new_column(tape_t *t, int32_t **column, int shifted, const int64_t *first, const int64_t *start,
                      const uint8_t *keep, int64_t nb) {
    int32_t *old = *column, *col = NULL;
    if (!NEW(col, start[nb])) return -1;
    for (int64_t b = 0; b < nb; ++b) {
        if (!keep[b]) continue;
        int64_t from = first[b] >= 0 ? first[b] : b, lo = t->pull_start[from];
        int32_t shift = first[b] >= 0 && shifted ? t->alias_shift[t->bwd[b]] : 0;
        for (int64_t k = 0; k < t->pull_start[from + 1] - lo; ++k)
            if (old[lo + k] + shift != 0) col[start[b] + k] = old[lo + k] + shift;
    }
    free(old);
    *column = col;
    if (column != &t->pull_block) huge_pages(col, (size_t)start[nb] * sizeof *col);  /* (the block column: mostly untouched) */
    return 0;
}

/* The runs: entry b shares the list of entry b - shift (its vector's first),
 * as every entry between does. first[b]: that entry, or -1 (b's list is its
 * own). Entries moved apart since the lists were shared (interleave.c) are
 * found within its window. NULL where an entry's list is lost. */
static const char *find_runs(const tape_t *t, int64_t nb, int64_t *first) {
    for (int64_t b = 0; b < nb; ++b) {
        int32_t L = t->bwd[b], base = t->alias_base[L], d = t->alias_shift[L];
        first[b] = -1;
        if (!base) continue;
        int64_t at = b - d;
        if (at >= 0 && t->bwd[at] == base && (d == 1 || (first[b - 1] == at && t->alias_shift[t->bwd[b - 1]] == d - 1))) {
            first[b] = at;
            continue;
        }
        for (at = b - d - 8; at <= b - d + 8 && at < nb; ++at)  /* (a window of interleave.c) */
            if (at >= 0 && t->bwd[at] == base) break;
        if (at > b - d + 8 || at >= nb) return "a vector's shared pull list is lost";
        first[b] = at;  /* its list is copied, not shared: first[b] == b - d tells runs */
    }
    return NULL;
}

const char *expand_aliases(tape_t *t, int64_t nb) {
    if (t->alias_base == NULL) return NULL;
    int64_t *first = NULL, *start = NULL;
    uint8_t *keep = NULL;
    const char *why = NULL;
    if (!NEW(first, nb) || !NEW(start, nb + 1) || !NEW(keep, nb)) { why = "out of memory"; goto done; }
    why = find_runs(t, nb, first);
    if (why != NULL) goto done;
    /* groups: from each run's top down, SIDE lanes at least, MAX_LANES at most,
     * each its top's list; the entries left over below keep theirs */
    for (int64_t b = nb - 1; b >= 0; --b) {
        keep[b] = 1;
        if (first[b] < 0 || first[b] != b - t->alias_shift[t->bwd[b]]) continue;
        int64_t lo = first[b], top = b;
        while (top - lo + 1 >= SIDE) {
            int64_t lanes = (top - lo + 1) / SIDE * SIDE;
            if (lanes > MAX_LANES) lanes = MAX_LANES;
            t->bwd_group[top] = lanes == SIDE ? 2 : 3;
            t->bwd_lanes[top] = lanes == SIDE ? 0 : (int32_t)lanes;
            keep[top] = 1;
            for (int64_t e = top - lanes + 1; e < top; ++e) keep[e] = 0;
            top -= lanes;
        }
        for (int64_t e = lo; e <= top; ++e) keep[e] = 1;
        b = lo;
    }
    int64_t total = 0;
    for (int64_t b = 0; b < nb; ++b) {
        int64_t from = first[b] >= 0 ? first[b] : b;
        start[b] = total;
        if (keep[b]) total += pull_count(t, from);
    }
    start[nb] = total;
    if (new_column(t, &t->pull_parent, 0, first, start, keep, nb) < 0
        || new_column(t, &t->pull_src, 1, first, start, keep, nb) < 0
        || new_column(t, &t->pull_block, 0, first, start, keep, nb) < 0) {
        why = "out of memory";
        goto done;
    }
    for (int64_t b = 0; b <= nb; ++b) t->pull_start[b] = start[b];
done:
    free(first); free(start); free(keep);
    free(t->alias_base); free(t->alias_shift);
    t->alias_base = t->alias_shift = NULL;
    return why;
}

/* Short vectors (bwd_group 3, 16 or 32 lanes, not rotating) one list serves:
 * the heads' outputs a matrix's rows read (x_attn into attn_wo), a head's
 * entries consecutive nodes, the heads' consecutive too, each head its own
 * backward group and list (the same parents in the same order, each its own
 * weights), a head's attention between them. The first met (top, the last
 * head) sums all of them, side by side (matrix.c); the others are skipped.
 * Exact to move: their lists' parents are final before the first's (they
 * are its parents too), nothing between reads their gradients (a reader runs
 * after what it reads), and each gradient is the same sum in the same order.
 * All in one position's piece of a level (levels.c runs a piece's entries in
 * order); the lead may be the piece's top, which may run apart (paired.c, a
 * level's first vectors across positions), if the heads' weights are one
 * row's consecutive columns: paired.c then runs all the heads as one vector.
 * 0, or -1 out of memory. */
/* Entry b's place in share_b, or -1. (A level's piece meets its entries in
 * share_b's order: the place after the last one found is tried first.) */
int32_t share_index(tape_t *t, int32_t b) {
    int32_t lo = 0, hi = t->n_share, h = t->share_hint;
    if (h < hi && t->share_b[h] == b) lo = h, hi = h + 1;
    while (lo < hi) {
        int32_t mid = (lo + hi) / 2;
        if (t->share_b[mid] == b) {
            t->share_hint = mid + 1;
            return mid;
        }
        if (t->share_b[mid] > b) lo = mid + 1; else hi = mid;
    }
    return -1;
}
static int short_vector(const tape_t *t, int32_t b) {
    int32_t lanes = t->bwd_lanes[b];
    return t->bwd_group[b] == 3 && (lanes == 16 || lanes == 32) && t->bwd_kind[b] != K_ROTATE;
}
/* Entry b's weights those of lead's list, d lanes before (the heads' columns of one row). */
static int weights_before(const tape_t *t, int32_t lead, int32_t b, int32_t d) {
    const int32_t *a = t->pull_src + t->pull_start[lead], *c = t->pull_src + t->pull_start[b];
    for (int64_t k = 0; k < pull_count(t, lead); ++k)
        if (c[k] != a[k] - d) return 0;
    return 1;
}
static int same_list(const tape_t *t, int32_t a, int32_t b) {
    int64_t ka = t->pull_start[a], kb = t->pull_start[b], n = t->pull_start[a + 1] - ka;
    if (t->bwd_lanes[a] != t->bwd_lanes[b] || t->pull_start[b + 1] - kb != n) return 0;
    for (int32_t i = 1; i < t->bwd_lanes[b]; ++i)
        if (t->bwd[b - i] != t->bwd[b] - i) return 0;
    return memcmp(t->pull_parent + ka, t->pull_parent + kb, (size_t)n * sizeof *t->pull_parent) == 0;
}
/* Short vectors b and m (of chain, the k before m) summed at once, each its
 * own list: as long, parents at the same positions pull by pull (a parent
 * past a replay's end is past it in all), and no parent of one a node of another. */
static int alongside(const tape_t *t, const int32_t *chain, int32_t k, int32_t m) {
    int64_t n = pull_count(t, chain[0]), km = t->pull_start[m], lanes = t->bwd_lanes[m];
    if (t->bwd_lanes[chain[0]] != lanes || pull_count(t, m) != n) return 0;
    for (int64_t i = 0; i < n; ++i)
        if (t->pos[t->pull_parent[km + i]] != t->pos[t->pull_parent[t->pull_start[chain[0]] + i]]) return 0;
    for (int32_t j = 0; j < k; ++j) {
        int32_t c = chain[j], lo = t->bwd[c] - (int32_t)lanes + 1, mlo = t->bwd[m] - (int32_t)lanes + 1;
        for (int64_t i = 0; i < n; ++i) {
            int32_t qc = t->pull_parent[t->pull_start[c] + i], qm = t->pull_parent[km + i];
            if ((qc >= mlo && qc <= t->bwd[m]) || (qm >= lo && qm <= t->bwd[c])) return 0;
        }
    }
    return 1;
}

/* The chain of short vectors from lead b sharing its list (heads' outputs):
 * their number (1: none). */
static int32_t heads_chain(const tape_t *t, int32_t b, const int32_t *top_of, const uint8_t *edge, int32_t *chain) {
    int32_t k = 1, lanes = t->bwd_lanes[b];
    while (k < SHARE_MAX) {
        int32_t first = t->bwd[chain[k - 1] - lanes + 1], m = first > 0 ? top_of[first - 1] : -1;
        if (m < 0 || m >= chain[k - 1] || !same_list(t, b, m)) break;
        chain[k++] = m;
    }
    int whole = 1;  /* the heads' weights one row's consecutive columns: one vector of k lanes wide */
    for (int32_t j = 1; j < k; ++j) whole &= weights_before(t, b, chain[j], j * lanes);
    for (int32_t e = chain[k - 1]; k >= 2 && e <= b; ++e)
        if (edge[e] && (e < b || !whole)) k = 1;
    return k;
}

/* ... or of consecutive entries from b down, each its own list (a head's
 * queries, or keys, at one position). */
static int32_t own_chain(const tape_t *t, int32_t b, const int32_t *top_of, const uint8_t *edge, int32_t *chain) {
    int32_t k = 1, lanes = t->bwd_lanes[b];
    while (k < SHARE_MAX) {
        int32_t m = chain[k - 1] - lanes;
        if (m < 0 || !short_vector(t, m) || top_of[t->bwd[m]] != m || !same_list(t, m, m) || !alongside(t, chain, k, m))
            break;
        chain[k++] = m;
    }
    for (int32_t e = chain[k - 1]; k >= 2 && e <= b; ++e)
        if (edge[e]) k = 1;
    return k;
}

int share_plan(tape_t *t) {
    int32_t nb = t->bwd_end[t->n_pos - 1], nn = 0, nl = t->n_levels;
    for (int32_t b = 0; b < nb; ++b) nn = t->bwd[b] >= nn ? t->bwd[b] + 1 : nn;
    int32_t *top_of = NULL;  /* node -> the short vector's top entry whose last node it is, or -1 */
    uint8_t *edge = NULL;    /* 1: a level piece's top entry */
    int32_t *sb = NULL, *sn = NULL, n = 0;
    if (!NEW(top_of, nn) || !NEW(edge, nb) || !NEW(sb, nb) || !NEW(sn, nb)) goto fail;
    for (int32_t i = 0; i < nn; ++i) top_of[i] = -1;
    for (int32_t b = 0; b < nb; ++b) if (short_vector(t, b)) top_of[t->bwd[b]] = b;
    for (int64_t i = 0; t->bwd_level_at != NULL && i < (int64_t)t->n_pos * (nl + 1); ++i)
        if (t->bwd_level_at[i] > 0) edge[t->bwd_level_at[i] - 1] = 1;
    for (int32_t b = nb - 1; b >= 0; --b) {
        if (!short_vector(t, b) || top_of[t->bwd[b]] != b || !same_list(t, b, b)) continue;
        int32_t chain[SHARE_MAX] = {b}, k = heads_chain(t, b, top_of, edge, chain), own = k < 2;
        if (own) k = own_chain(t, b, top_of, edge, chain);
        for (int32_t j = 0; j < k && k >= 2; ++j) {
            top_of[t->bwd[chain[j]]] = -1;  /* (taken) */
            sb[n] = chain[j];
            sn[n++] = j > 0 ? 0 : own ? -k : k;
        }
    }
    for (int32_t i = 1; i < n; ++i)  /* (descending, for share_index: else nothing shares) */
        if (sb[i] >= sb[i - 1]) n = 0;
    free(top_of); free(edge);
    t->share_b = sb; t->share_n = sn; t->n_share = n;
    paired_shares(t);
    return 0;
fail:
    free(top_of); free(edge); free(sb); free(sn);
    return -1;
}
