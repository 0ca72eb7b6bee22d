/* steps.c: the backward's dispatch made once, at build time: each piece of
 * the backward (levels.c's level of a position, or a position) as the list
 * of steps run_backward takes in it, top to bottom, one record a step (a
 * group's top entry, what runs it, its list's start and length).
 *
 * The steps are stored in the order the backward runs them, piece after
 * piece (step_piece: piece i's first step).
 *
 * Why: a piece's groups span 4 to 200 entries, so a backward that walks the
 * entries meets each group's top at a new place in five entry-indexed arrays
 * (bwd, bwd_group, bwd_kind, bwd_lanes, pull_start), a line from memory each.
 * The steps are one array read in order that says where each list starts,
 * so what a step reads is asked for a few steps early (replay.c ahead), also
 * across a piece's end: a piece is some ten steps. A run's later groups
 * (shifted.c's -1) are no steps at all. A list whose parents and local
 * gradients' places step by constants (a norm's scale, read by the vector's
 * entries) is summed without its indices. Every step computes what the
 * entry-by-entry walk computed, in the same order (replay.c). */
#include "internal.h"

/* A list whose parents and sources step by constants: at least this long. */
#define MIN_STEPPED 8

/* Whether entry b's list (k0, n pulls) steps by constants: *dp, *ds. */
static int stepped(const tape_t *t, int64_t k0, int32_t n, int32_t *dp, int32_t *ds) {
    if (n < MIN_STEPPED) return 0;
    const int32_t *pp = t->pull_parent + k0, *src = t->pull_src + k0;
    *dp = pp[1] - pp[0];
    *ds = src[1] - src[0];
    for (int32_t j = 1; j < n; ++j)
        if (pp[j] - pp[j - 1] != *dp || src[j] - src[j - 1] != *ds) return 0;
    return 1;
}

/* The step at b of a piece whose lowest entry is lo, as run_backward once
 * decided it entry by entry; *width: the entries it takes (0: none, b is
 * taken by its run's first group). */
static bwd_step_t step_at(const tape_t *t, int32_t b, int32_t lo, int32_t *width) {
    uint8_t group = t->bwd_group[b], kind = t->bwd_kind[b];
    int64_t k0 = t->pull_start[b];
    bwd_step_t s = {k0, b, t->bwd[b], (int32_t)pull_count(t, b), 0, 0, S_LIST};
    *width = 1;
    if (group == 7) {  /* a head's softmax row (attention.c) */
        s.code = S_ATTENTION;
        *width = attention_width(t, b);
    } else if (group == 6) {  /* four strided lists, or (a parent past end) the lists as four */
        s.code = S_STRIDED;
        *width = SIDE;
    } else if (group == 5) {  /* a vector's entries with strided lists, in lanes (pull_lanes.c) */
        s.code = S_LANES;
        lane_step(t, b, &s);
        *width = s.c;
    } else if (group == 4 && b >= SIDE - 1) {  /* four entries' parents side by side (shifted.c) */
        s.code = t->bwd_lanes[b] < 0 ? S_NONE : S_SHIFTED;
        *width = SIDE;
    } else if (group >= 2 && b >= SIDE - 1) {  /* a vector read by a matrix's rows (matrix.c) */
        s.code = attention_takes(t, b) ? S_NONE : kind == K_ROTATE ? S_MATRIX_ROTATE : S_MATRIX;  /* (none:
                                   * a head's query or key, written by its rows, attention_keys.c) */
        s.c = t->pos[s.L];
        s.a = group == 3 ? t->bwd_lanes[b] : SIDE;
        *width = s.a;
    } else if (group && b >= SIDE - 1) {  /* b, b-1, b-2, b-3 side by side */
        s.code = S_FOUR;
        *width = SIDE;
    } else if (group == 0 && t->bwd_lanes[b] > 1) {  /* a run of lists of one (singles.c), inside the piece */
        s.code = S_SINGLES;
        s.n = t->bwd_lanes[b] < b - lo + 1 ? t->bwd_lanes[b] : b - lo + 1;
        *width = s.n;
    } else if (kind == K_SEED) s.code = S_SEED;
    else if (kind == K_CANDIDATE || kind == K_ROTATE) {
        s.code = kind == K_CANDIDATE ? S_CANDIDATE : S_ROTATE;
        s.c = t->pos[s.L];  /* (read here: pos is node-indexed, and far from anything else a step reads) */
    }
    else if (stepped(t, k0, s.n, &s.a, &s.c)) s.code = S_STEPPED;
    return s;
}

/* Piece i's entries [*lo, *hi) and its position and level: the pieces in
 * the order the backward runs them (levels.c: levels last to first, each
 * over positions last to first; without levels, positions last to first). */
static void piece_range(const tape_t *t, int32_t i, int32_t *lo, int32_t *hi) {
    int32_t N = t->n_pos, nl = t->n_levels, p = N - 1 - i % N;
    *lo = p > 0 ? t->bwd_end[p - 1] : 0;
    *hi = t->bwd_end[p];
    if (t->bwd_level_at == NULL) return;
    int32_t s = nl - 1 - i / N;
    const int32_t *ap = t->bwd_level_at + (int64_t)p * (nl + 1);
    *lo = ap[s];
    *hi = ap[s + 1] - (t->first_lanes != NULL ? t->first_lanes[(int64_t)p * nl + s] : 0);
}

static int32_t n_pieces(const tape_t *t) { return t->bwd_level_at != NULL ? t->n_levels * t->n_pos : t->n_pos; }

int32_t piece_of(const tape_t *t, int32_t s, int32_t p) {  /* piece_range's i for level s, position p */
    return (t->bwd_level_at != NULL ? (t->n_levels - 1 - s) * t->n_pos : 0) + t->n_pos - 1 - p;
}

/* Piece i's steps, top to bottom, into out (NULL: counted only); how many. */
static int32_t piece_steps(const tape_t *t, int32_t i, bwd_step_t *out) {
    int32_t n = 0, lo, hi, w;
    piece_range(t, i, &lo, &hi);
    for (int32_t b = hi - 1; b >= lo; b -= w) {
        bwd_step_t s = step_at(t, b, lo, &w);
        if (s.code == S_NONE) continue;
        if (out != NULL) out[n] = s;
        ++n;
    }
    return n;
}

/* The arrays the backward reads by entry in huge pages (tape.c huge_pages): a
 * step reads them where its group's top is, a new place a step (each piece,
 * a position's level, is a position's entries away from the one before), and
 * with small pages nearly every such read walks the page tables (6/128/128:
 * 3.2 M entries, 47 MB of these arrays). */
static void entries_in_huge_pages(tape_t *t) {
    size_t nb = (size_t)t->bwd_end[t->n_pos - 1];
    t->bwd = huge_copy(t->bwd, nb * sizeof *t->bwd);
    t->bwd_lanes = huge_copy(t->bwd_lanes, nb * sizeof *t->bwd_lanes);
    t->pull_start = huge_copy(t->pull_start, (nb + 1) * sizeof *t->pull_start);
    t->bwd_group = huge_copy(t->bwd_group, nb * sizeof *t->bwd_group);
    t->bwd_kind = huge_copy(t->bwd_kind, nb * sizeof *t->bwd_kind);
}

int step_plan(tape_t *t) {
    int32_t n = 0, np = n_pieces(t);
    for (int32_t i = 0; i < np; ++i) n += piece_steps(t, i, NULL);
    free(t->steps);
    free(t->step_piece);
    t->step_piece = NULL;
    if (!NEW(t->steps, n) || !NEW(t->step_piece, np + 1)) return -1;
    for (int32_t i = 0; i < np; ++i)
        t->step_piece[i + 1] = t->step_piece[i] + piece_steps(t, i, t->steps + t->step_piece[i]);
    t->n_steps = n;
    entries_in_huge_pages(t);
    return 0;
}

void step_counts(const tape_t *t, int32_t n, int64_t *steps, int64_t *stepped) {
    *steps = *stepped = 0;
    for (int32_t i = 0; i < n_pieces(t); ++i) {
        if (t->n_pos - 1 - i % t->n_pos >= n) continue;  /* (a position a replay of n does not run) */
        *steps += t->step_piece[i + 1] - t->step_piece[i];
        for (int32_t k = t->step_piece[i]; k < t->step_piece[i + 1]; ++k)
            *stepped += t->steps[k].code == S_STEPPED ? t->steps[k].n : 0;
    }
}

size_t step_bytes(const tape_t *t) {
    return (size_t)t->n_steps * sizeof *t->steps + (size_t)(n_pieces(t) + 1) * sizeof *t->step_piece;
}
