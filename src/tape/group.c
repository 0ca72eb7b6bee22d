/* group.c: instructions side by side (internal.h, SIDE): four chains of one
 * length, four rows of one matrix times one vector (one record, matvec_t),
 * and in the backward four entries, or a whole vector, whose sums are
 * independent. Each sum keeps its own operations in its own order. */
#include "internal.h"

/* Four F_DOT chains of one length at one position, none reading another's top. */
void group_dots(tape_t *t, int64_t nf) {
    for (int64_t i = 0; i + SIDE <= nf; ++i) {
        int ok = 1;
        int32_t L0 = t->fwd[i];
        for (int k = 0; k < SIDE && ok; ++k) {
            int32_t L = t->fwd[i + k];
            ok = t->fwd_code[i + k] == F_DOT && dot_len(t, L) == dot_len(t, L0) && pos_of(t, L) == pos_of(t, L0);
            if (!ok) break;
            /* reads no top of the group: no entry of its list from the first top on (a
             * row's weights, from its first entry, are parameters) */
            const int32_t *pr = t->dot_pair + t->dot_at[i + k];
            for (int32_t j = t->op[L] == OP_ROW_DOT; j < list_entries(t, L, dot_len(t, L)) && ok; ++j)
                for (int m = 0; m < k && ok && pr[j] >= L0; ++m) ok = pr[j] != t->fwd[i + m];
        }
        if (!ok) continue;
        t->fwd_code[i] = F_DOT4;
        i += SIDE - 1;
    }
}

/* Retag as code every F_DOT4 group of forward instructions [0, nf) that fits
 * (fits reads the group's four chains' operand lists from A, its fwd_arg, and
 * their tops L);
 * returns how many were retagged. */
static int64_t retag_dot4s(tape_t *t, int64_t nf, int (*fits)(const tape_t *, const int32_t *A, const int32_t *L),
                           uint8_t code) {
    int64_t found = 0;
    for (int64_t i = 0; i + SIDE <= nf; ++i) {
        if (t->fwd_code[i] != F_DOT4) continue;
        if (fits(t, t->fwd_arg + 3 * i, t->fwd + i)) { t->fwd_code[i] = code; found++; }
        i += SIDE - 1;
    }
    return found;
}

/* Four rows of one matrix times one vector: chain c's k-th product is
 * w_c[k] * v[k], with w_c[k] the parameter w_c[0] + k and v[k] the same node
 * for the four, at most MAX_LANES long (a vector gathered by the replay fits
 * its buffer). */
static int is_matvec(const tape_t *t, const int32_t *A, const int32_t *L) {
    const int32_t *p0 = t->dot_pair + A[0];
    for (int c = 0; c < SIDE; ++c) {
        const int32_t *pc = t->dot_pair + A[3 * c];
        int32_t w0 = chain_operand(t, L[c], pc, 0);
        for (int32_t j = 0; j < A[2]; j += 2) {
            int32_t x = chain_operand(t, L[c], pc, j + 1);
            if (!(chain_operand(t, L[c], pc, j) == w0 + j / 2 && w0 + A[2] / 2 <= t->n_params
                  && x == chain_operand(t, L[0], p0, j + 1) && x >= t->n_params)) return 0;
        }
    }
    return A[2] / 2 <= MAX_LANES;
}

/* A group of four chains that are four rows of one matrix times one vector:
 * the same products and sums, read through one record (matvec_t). Returns how
 * many groups were found. */
int64_t mark_matvecs(tape_t *t, int64_t nf) {
    return retag_dot4s(t, nf, is_matvec, F_MV4);
}

/* Do backward entries b and e read the same parents, in the same order, with
 * e's weights `shift` places before b's (and `reach` more still inside the
 * values)? Then they are entries of one vector read by one matrix's rows. */
static int rows_of_one_vector(const tape_t *t, int64_t b, int64_t e, int32_t shift, int32_t reach) {
    int64_t k0 = t->pull_start[b], kk = t->pull_start[e], count = t->pull_start[b + 1] - k0;
    if (t->pull_start[e + 1] - kk != count) return 0;
    for (int64_t j = 0; j < count; ++j)
        if (t->pull_parent[kk + j] != t->pull_parent[k0 + j] || t->pull_src[kk + j] != t->pull_src[k0 + j] - shift
            || t->pull_src[k0 + j] - shift - reach < 0)
            return 0;
    return 1;
}

/* Or do they read the same values (their local gradients) of parents
 * `shift` nodes apart, at one position? Then they are entries of vectors
 * summed entry by entry (a head's values, each entry read by the same entry
 * of every later position's output, times one attention weight): the four
 * lanes' parents' gradients are consecutive numbers (see the backward). */
static int parents_side_by_side(const tape_t *t, int64_t b, int64_t e, int32_t shift) {
    int64_t k0 = t->pull_start[b], kk = t->pull_start[e], count = t->pull_start[b + 1] - k0;
    if (t->pull_start[e + 1] - kk != count) return 0;
    for (int64_t j = 0; j < count; ++j) {
        int32_t parent = t->pull_parent[k0 + j];
        if (t->pull_src[kk + j] != t->pull_src[k0 + j] || t->pull_parent[kk + j] != parent - shift
            || parent - (SIDE - 1) < 0 || t->pos[parent - (SIDE - 1)] != t->pos[parent])
            return 0;
    }
    return 1;
}

void group_pulls(tape_t *t, int64_t nb) {
    for (int64_t b = nb - 1; b >= SIDE - 1; --b) {
        if (t->bwd_group[b]) { b -= bwd_width(t, b) - 1; continue; }  /* a vector grouped already (aliases.c) */
        int ok = 1, rotating = t->bwd_kind[b] == K_ROTATE;  /* (a vector read by every logit's row) */
        int64_t count = pull_count(t, b);
        for (int k = 0; k < SIDE && ok; ++k) {
            int64_t e = b - k;
            ok = (rotating ? t->bwd_kind[e] == K_ROTATE : t->bwd_kind[e] == K_OP || t->bwd_kind[e] == K_DOT)
                && count > 0 && pull_count(t, e) == count && !t->bwd_group[e];
            for (int64_t j = t->pull_start[e]; j < t->pull_start[e + 1] && ok; ++j)  /* no parent in the group */
                for (int m = 0; m < k && ok; ++m) ok = t->pull_parent[j] != t->bwd[b - m];
        }
        if (!ok) continue;
        /* four entries of one vector read by the rows of one matrix: the same
         * parents, and each row's weights side by side (see the backward);
         * rotating entries only so (their target's row added last, matrix.c) */
        int mv = 1;
        for (int k = 1; k < SIDE && mv; ++k) mv = rows_of_one_vector(t, b, b - k, k, 0);
        if (!mv && rotating) continue;
        t->bwd_group[b] = mv ? 2 : 1;
        int shifted = !mv;
        for (int k = 1; k < SIDE && shifted; ++k) shifted = parents_side_by_side(t, b, b - k, k);
        if (shifted) t->bwd_group[b] = 4;
        b -= SIDE - 1;
    }
    /* runs of such groups, one after another, over the same parents with their
     * weights still side by side: a whole vector read by a matrix's rows */
    for (int64_t b = nb - 1; b >= SIDE - 1; --b) {
        if (t->bwd_group[b] != 2) continue;
        int64_t e = b;
        while (e - SIDE >= SIDE - 1 && b - (e - SIDE) + 1 <= MAX_LANES && t->bwd_group[e - SIDE] == 2
               && t->bwd_kind[e - SIDE] == t->bwd_kind[b]
               && rows_of_one_vector(t, b, e - SIDE, (int32_t)(b - (e - SIDE)), SIDE - 1))
            e -= SIDE;
        if (e < b) {
            t->bwd_group[b] = 3;
            t->bwd_lanes[b] = (int32_t)(b - e + SIDE);
        }
        b = e - (SIDE - 1);
    }
}

/* Each F_MV4 group's record (tape.h), once the nodes are numbered as the
 * replay numbers them: its instruction's first operand becomes the record's
 * index. Where the vector's entries are consecutive nodes (a layer's
 * outputs, made one after another), the replay reads them in place. */
void matvec_records(tape_t *t) {
    int32_t n_mv = t->mv_end[t->n_pos - 1];
    for (int32_t k = 0; k < n_mv; ++k) {
        matvec_t *g = t->mv + k;
        int32_t *A = t->fwd_arg + 3 * (int64_t)g->ins;
        g->pairs = A[0];
        g->len = A[2] / 2;
        const int32_t *pr = t->dot_pair + g->pairs, *L = t->fwd + g->ins;  /* the vector: row 0's x's */
        g->vec = chain_operand(t, L[0], pr, 1);
        for (int32_t j = 1; j < g->len && g->vec >= 0; ++j)
            if (chain_operand(t, L[0], pr, 2 * j + 1) != g->vec + j) g->vec = -1;
        for (int c = 0; c < SIDE; ++c) {
            g->w[c] = t->dot_pair[A[3 * c]];  /* (w0: the first entry, in either form) */
            g->init[c] = A[3 * c + 1];
            g->top[c] = t->fwd[g->ins + c];
        }
        A[0] = k;
    }
}


/* The backward reads a matrix-row group's pulls from its top entry only (the
 * same parents for every lane, the weights side by side): the other lanes'
 * lists are dropped, most of a step's pulls. The entries are met as the
 * backward meets them, from the last down; a replay of fewer positions starts
 * at a position's loss, never inside a group (a loss is never grouped), and
 * so meets the same groups. 0, or -1 out of memory. */
int drop_unread_pulls(tape_t *t, int64_t nb) {
    uint8_t *unread = NULL;
    if (!NEW(unread, nb)) return -1;
    for (int64_t b = nb - 1; b >= 0; --b) {
        int32_t width = t->bwd_group[b] == 3 ? t->bwd_lanes[b] : t->bwd_group[b] && b >= SIDE - 1 ? SIDE : 1;
        if (t->bwd_group[b] >= 2 && width > 1)
            for (int32_t k = 1; k < width; ++k) unread[b - k] = 1;
        b -= width - 1;
    }
    int64_t out = 0, lo = t->pull_start[0];
    for (int64_t b = 0; b < nb; ++b) {
        int64_t hi = t->pull_start[b + 1];
        t->pull_start[b] = out;
        for (int64_t k = lo; k < hi && !unread[b]; ++k, ++out) {
            t->pull_parent[out] = t->pull_parent[k];
            t->pull_src[out] = t->pull_src[k];
            t->pull_block[out] = t->pull_block[k];
        }
        lo = hi;
    }
    t->pull_start[nb] = out;
    free(unread);
    size_t keep = (size_t)(out > 0 ? out : 1);
    int32_t *pp = realloc(t->pull_parent, keep * sizeof *pp);
    if (pp != NULL) t->pull_parent = pp;
    int32_t *ps = realloc(t->pull_src, keep * sizeof *ps);
    if (ps != NULL) t->pull_src = ps;
    int32_t *pb = realloc(t->pull_block, keep * sizeof *pb);
    if (pb != NULL) t->pull_block = pb;
    return 0;
}

/* A softmax's largest logit enters the graph once per logit (each val - m
 * wraps its own constant), every copy the max of the same logits. A derived
 * number whose sources are those of the derived number before it at the
 * same position takes that max instead of a new pass (its second operand,
 * 1): the same number, without the softmax's square. In the replay's
 * numbering; positions are computed whole, so the one before is computed. */
void share_derived(tape_t *t) {
    int64_t nf = t->fwd_end[t->n_pos - 1], before = -1;
    for (int64_t i = 0; i < nf; ++i) {
        if (t->fwd_code[i] != F_DERIVED) continue;
        int32_t *A = t->fwd_arg + 3 * i, j = A[0];
        if (before >= 0 && t->pos[t->fwd[before]] == t->pos[t->fwd[i]]) {
            int32_t k = t->fwd_arg[3 * before];
            int64_t len = t->src_start[j + 1] - t->src_start[j];
            A[1] = len == t->src_start[k + 1] - t->src_start[k]
                && memcmp(t->src + t->src_start[j], t->src + t->src_start[k], (size_t)len * sizeof *t->src) == 0;
        }
        before = i;
    }
}

/* The same node times consecutive nodes (a head's outputs: chain c sums
 * a_t * v_t[j + c] over t). */
static int is_shifted(const tape_t *t, const int32_t *A, const int32_t *L) {
    (void)L;  /* (the lists are pairs by now: keep_read_pairs) */
    const int32_t *p0 = t->dot_pair + A[0];
    for (int c = 1; c < SIDE; ++c) {
        const int32_t *pc = t->dot_pair + A[3 * c];
        for (int32_t j = 0; j < A[2]; j += 2)
            if (pc[j] != p0[j] || pc[j + 1] != p0[j + 1] + c) return 0;
    }
    return 1;
}

/* Four chains (an F_DOT4) that read the same node times consecutive nodes:
 * one register of four v_t entries times a_t per step (F_SHIFT4). In the
 * replay's numbering, once the lists read are final (keep_read_pairs). */
void mark_shifted_dots(tape_t *t) {
    retag_dot4s(t, t->fwd_end[t->n_pos - 1], is_shifted, F_SHIFT4);
}
