/* interleave.c: operations that alternate with others, stored side by
 * side where the order of the work allows (then group.c groups them). A
 * softmax's pieces come alternating: each attention logit's sum of products
 * and then its division, each e * total ** -1 after its own copy of the pow.
 * In a window of eight instructions (or backward entries) of one position,
 * the four alike ones (every other) run first, then the other four, each
 * four in their order, when nothing among the eight reads what runs after
 * it. Each number keeps its own operations in its own order. */
#include "internal.h"

static const int WINDOW[8] = {0, 2, 4, 6, 1, 3, 5, 7};  /* new place k runs old entry b - WINDOW[k] */

/* The forward: instructions i, i+2, i+4, i+6 chains of one length, the ones
 * between them not; a chain reads no node made in the window (the other four
 * read what they like: the chains now run before them). */
static int dots_fit(const tape_t *t, int64_t i) {
    int32_t L0 = t->fwd[i];
    for (int k = 0; k < 8; ++k) {
        int32_t L = t->fwd[i + k];
        if ((t->fwd_code[i + k] == F_DOT) != (k % 2 == 0)) return 0;
        if (k % 2 == 0 && dot_len(t, L) != dot_len(t, L0)) return 0;  /* either form of chain */
    }
    for (int k = 0; k < 8; k += 2) {
        const int32_t *A = t->fwd_arg + 3 * (i + k), *pr = t->dot_pair + A[0];
        for (int m = 0; m < 8; ++m) {
            int32_t made = t->fwd[i + m];
            if (A[1] == made) return 0;
            for (int32_t j = 0; j < A[2]; ++j)
                if (pr[j] == made) return 0;
        }
    }
    return 1;
}

/* Before the forward's slots are found (ins_of: node -> instruction, kept up to date). */
void interleave_dots(tape_t *t, int64_t nf, int32_t *ins_of) {
    for (int64_t i = 0, q = 0; i + 8 <= nf; ++i) {
        while (i >= t->fwd_end[q]) ++q;
        if (i + 8 > t->fwd_end[q] || !dots_fit(t, i)) continue;
        int32_t node[8], arg[24], at[8];
        uint8_t code[8];
        for (int k = 0; k < 8; ++k) {  /* new instruction i + k runs old i + WINDOW[k] */
            int64_t o = i + WINDOW[k];
            node[k] = t->fwd[o];
            code[k] = t->fwd_code[o];
            at[k] = t->dot_at[o];
            memcpy(arg + 3 * k, t->fwd_arg + 3 * o, 3 * sizeof *arg);
        }
        for (int k = 0; k < 8; ++k) {
            t->fwd[i + k] = node[k];
            t->fwd_code[i + k] = code[k];
            t->dot_at[i + k] = at[k];
            memcpy(t->fwd_arg + 3 * (i + k), arg + 3 * k, 3 * sizeof *arg);
            ins_of[node[k]] = (int32_t)(i + k);
        }
        i += 7;
    }
}

/* The backward: entries b, b-2, b-4, b-6 alike (their pull lists as long),
 * the ones between them not; no entry's parent in the window runs after it
 * (each keeps its pull list, in its order). In the replay's numbering. */
static int alike(const tape_t *t, int64_t b, int64_t e) {
    int64_t count = pull_count(t, b);
    return t->bwd_kind[e] == K_OP && pull_count(t, e) == count && count > 1;
}

static int window_fits(const tape_t *t, int64_t b) {
    for (int k = 0; k < 8; ++k) {  /* entry run k-th: no parent among those run after it */
        int64_t e = b - WINDOW[k];
        if (t->bwd_kind[e] != K_OP && t->bwd_kind[e] != K_DOT) return 0;  /* (all it reads: its pulls) */
        for (int64_t j = t->pull_start[e]; j < t->pull_start[e + 1]; ++j)
            for (int m = k + 1; m < 8; ++m)
                if (t->pull_parent[j] == t->bwd[b - WINDOW[m]]) return 0;
    }
    return 1;
}

/* 0, or -1 out of memory */
int interleave_alike(tape_t *t, int64_t nb) {
    int64_t cap = 0;
    int32_t *tmp = NULL;
    for (int64_t b = nb - 1, q = t->n_pos - 1; b >= 7; --b) {
        while (q > 0 && b < t->bwd_end[q - 1]) --q;
        int64_t first = q > 0 ? t->bwd_end[q - 1] : 0;
        if (b - 7 < first || !alike(t, b, b - 2) || !alike(t, b, b - 4) || !alike(t, b, b - 6)
            || alike(t, b, b - 1) || !window_fits(t, b))
            continue;
        int64_t k0 = t->pull_start[b - 7], len = t->pull_start[b + 1] - k0, at = 0;
        if (len > cap) {
            free(tmp);
            cap = 2 * len;
            if (!NEW(tmp, 3 * cap)) return -1;
        }
        int32_t node[8];
        uint8_t kind[8];
        int64_t start[8];
        for (int k = 7; k >= 0; --k) {  /* new entry b - k, ascending */
            int64_t e = b - WINDOW[k], s = t->pull_start[e], c = t->pull_start[e + 1] - s;
            node[k] = t->bwd[e];
            kind[k] = t->bwd_kind[e];
            start[k] = k0 + at;
            memcpy(tmp + at, t->pull_parent + s, (size_t)c * sizeof *tmp);
            memcpy(tmp + cap + at, t->pull_src + s, (size_t)c * sizeof *tmp);
            memcpy(tmp + 2 * cap + at, t->pull_block + s, (size_t)c * sizeof *tmp);
            at += c;
        }
        memcpy(t->pull_parent + k0, tmp, (size_t)len * sizeof *tmp);
        memcpy(t->pull_src + k0, tmp + cap, (size_t)len * sizeof *tmp);
        memcpy(t->pull_block + k0, tmp + 2 * cap, (size_t)len * sizeof *tmp);
        for (int k = 0; k < 8; ++k) {
            t->bwd[b - k] = node[k];
            t->bwd_kind[b - k] = kind[k];
            t->pull_start[b - k] = start[k];
        }
        b -= 7;
    }
    free(tmp);
    return 0;
}
