/* renumber.c: one index space for what a replay keeps (tape_pack's last step). */
#include "internal.h"

/* After packing, nothing refers to a chain's inner nodes (their gradients are
 * the top's, their values are never kept), and they are most of a step's
 * nodes. Number the rest 0.. in the same order (parameters first, as they
 * were; a position's nodes one range, a vector read by a matrix's rows
 * consecutive, the constants last), rewrite every reference, and keep per node only what a replay reads:
 * op, operand, position, value, local grad slot, gradient. The edge lists and
 * node kinds the builder needed go. */
static int is_const(const tape_t *t, int32_t L) {
    return L >= t->n_params && t->kind[L] == K_CONST;
}

/* The recorded constants (every sum's 0, rmsnorm's 1e-5, ...), each value
 * once, numbered from m on, after every position's nodes: nothing writes
 * them or takes their gradient, and out of the way the nodes of a vector
 * (a matrix's row sums, a head's output) are consecutive. How many. */
static int32_t share_constants(tape_t *t, int32_t *nw, int32_t m) {
    int32_t cap = 64, count = 0;
    uint64_t *bits = malloc((size_t)cap * sizeof *bits);
    if (bits == NULL) return -1;
    for (int32_t L = t->n_params; L < t->n_nodes; ++L) {
        if (!is_const(t, L)) continue;
        uint64_t b;
        memcpy(&b, &t->operand[L], sizeof b);
        int32_t k = 0;
        while (k < count && bits[k] != b) ++k;  /* a step has a handful of distinct constants */
        if (k == count) {
            if (count == cap) {
                uint64_t *more = realloc(bits, (size_t)(cap *= 2) * sizeof *bits);
                if (more == NULL) { free(bits); return -1; }
                bits = more;
            }
            bits[count++] = b;
        }
        nw[L] = m + k;
    }
    free(bits);
    return count;
}

/* Where a matrix's rows read a vector whose entries are not consecutive
 * nodes (the heads' outputs side by side: each head's softmax is made
 * between them), the entries are numbered one after another where the last
 * is made, all in one position (a position's nodes stay one range): the
 * replay then reads the vector in place. Marks in nw: -1 not kept, -2 an
 * entry numbered later, -3 - k the last entry of the k-th such vector
 * (vec_at[k]: the forward instruction of the row whose x's they are). */
static int64_t *gather_vectors(tape_t *t, int32_t *nw) {
    int64_t nf = t->fwd_end[t->n_pos - 1], count = 0;
    int64_t *vec_at = NULL;
    if (!NEW(vec_at, nf / SIDE + 1)) return NULL;
    for (int64_t i = 0; i < nf; ++i) {
        if (t->fwd_code[i] != F_MV4) continue;
        const int32_t *A = t->fwd_arg + 3 * i, *pr = t->dot_pair + A[0];
        int32_t L = t->fwd[i], len = A[2] / 2, v0 = chain_operand(t, L, pr, 1);
        int ok = nw[v0] == 0 && v0 >= t->n_params;
        for (int32_t j = 1; j < len && ok; ++j) {
            int32_t v = chain_operand(t, L, pr, 2 * j + 1);
            ok = nw[v] == 0 && v > chain_operand(t, L, pr, 2 * j - 1) && pos_of(t, v) == pos_of(t, v0);
        }
        if (ok && len > 1) {
            for (int32_t j = 0; j + 1 < len; ++j) nw[chain_operand(t, L, pr, 2 * j + 1)] = -2;
            nw[chain_operand(t, L, pr, 2 * len - 1)] = (int32_t)(-3 - count);
            vec_at[count++] = i;
        }
        i += SIDE - 1;
    }
    return vec_at;
}

/* nw: each kept node's number (constants: share_constants), a position's
 * nodes one range, ending at new_end[p]; how many. -1: out of memory. */
static int32_t number_nodes(tape_t *t, int32_t *nw, int32_t *new_end) {
    int32_t n = t->n_nodes, m = 0, p = 0;
    for (int32_t L = 0; L < n; ++L) nw[L] = t->kind[L] == K_INTERIOR || is_const(t, L) ? -1 : 0;
    int64_t *vec_at = gather_vectors(t, nw);
    if (vec_at == NULL) return -1;
    for (int32_t L = 0; L < n; ++L) {
        while (L >= t->n_params && L >= t->pos_end[p]) new_end[p++] = m;
        if (nw[L] == 0) nw[L] = m++;
        else if (nw[L] <= -3) {  /* a vector's last entry: the vector, in order */
            int64_t i = vec_at[-3 - nw[L]];
            const int32_t *pr = t->dot_pair + t->fwd_arg[3 * i];
            for (int32_t j = 0; chain_operand(t, t->fwd[i], pr, 2 * j + 1) != L; ++j)
                nw[chain_operand(t, t->fwd[i], pr, 2 * j + 1)] = m++;
            nw[L] = m++;
        }
    }
    while (p < t->n_pos) new_end[p++] = m;
    free(vec_at);
    return m;
}

/* The shared pull lists' nodes (reads.c share_vector_reads) in the new
 * numbering, m nodes: a vector's entries and their list's node are kept
 * (they take gradients). 0, or -1 out of memory. */
static int share_renumbered(tape_t *t, const int32_t *nw, int32_t m) {
    int32_t *base = NULL, *shift = NULL;
    if (!NEW(base, m) || !NEW(shift, m)) { free(base); return -1; }
    for (int32_t L = t->n_params; L < t->n_nodes; ++L)
        if (t->alias_base[L] && nw[L] >= 0 && nw[t->alias_base[L]] >= 0) {
            base[nw[L]] = nw[t->alias_base[L]];
            shift[nw[L]] = t->alias_shift[L];
        }
    free(t->alias_base);
    free(t->alias_shift);
    t->alias_base = base;
    t->alias_shift = shift;
    return 0;
}

#define RENUM(v) do { int32_t r_ = nw[(v)]; if (r_ < 0) goto inner; (v) = r_; } while (0)
const char *renumber(tape_t *t) {
    int32_t n = t->n_nodes, N = t->n_pos;
    int32_t *nw = t->scratch, *new_end = NULL;
    if (!NEW(new_end, N)) return "out of memory";
    int32_t m = number_nodes(t, nw, new_end);
    int32_t n_const = m < 0 ? -1 : share_constants(t, nw, m);
    if (n_const < 0) { free(new_end); return "out of memory"; }
    m += n_const;
    int64_t n_fwd = t->fwd_end[N - 1], n_bwd = t->bwd_end[N - 1];
    uint8_t *op = NULL;
    double *operand = NULL, *x = NULL, *grad = NULL;
    int32_t *pos = NULL;
    if (!NEW(op, m) || !NEW(operand, m) || !NEW(pos, m) || !NEW(x, 2 * (int64_t)m + 1) || !NEW(grad, m)
        || !NEW(t->graph_end, N)) {
        free(op); free(operand); free(pos); free(x); free(grad); free(new_end);
        return "out of memory";
    }
    advise_huge_pages(x, (2 * (size_t)m + 1) * sizeof *x);
    advise_huge_pages(grad, (size_t)m * sizeof *grad);
    /* a local gradient's place: a node's value, a one-child node's slot, or the 1.0 */
#define SRC(v) do { int32_t s_ = (v), r_ = s_ == 2 * n ? 2 * m : s_ >= n ? nw[s_ - n] : nw[s_]; \
                     if (r_ < 0) goto inner;                                                  \
                     (v) = s_ == 2 * n ? r_ : s_ >= n ? m + r_ : r_; } while (0)
    for (int32_t L = 0, p = 0; L < n; ++L) {
        while (L >= t->n_params && L >= t->pos_end[p]) ++p;
        if (nw[L] < 0) continue;  /* (a shared constant is written once per copy: the same numbers) */
        op[nw[L]] = t->op[L];
        operand[nw[L]] = t->operand[L];
        pos[nw[L]] = L < t->n_params ? -1 : p;
        if (L >= t->n_params && t->kind[L] == K_CONST) x[nw[L]] = t->operand[L];  /* constants never change */
    }
    x[2 * (int64_t)m] = 1.0;
    for (int32_t p = 0; p < N; ++p) {
        t->graph_end[p] = t->pos_end[p];
        t->pos_end[p] = new_end[p];
        RENUM(t->loss_node[p]);
        RENUM(t->target_owner[p]);
        SRC(t->target_src[p]);
    }
    for (int64_t j = 0; j < (int64_t)N * t->n_cand; ++j) RENUM(t->cand[j]);
    for (int64_t j = 0; j < (int64_t)N * t->n_cand; ++j)  /* (a logit not kept: no sampling on this tape) */
        t->logit[j] = t->logit[j] >= t->n_params && t->logit[j] < n && nw[t->logit[j]] >= 0 ? nw[t->logit[j]] : -1;
    for (int64_t j = 0; j < t->n_derived; ++j) RENUM(t->derived_node[j]);
    for (int64_t j = 0; j < t->src_start[t->n_derived]; ++j) RENUM(t->src[j]);
    for (int64_t i = 0; i < n_fwd; ++i) {  /* each chain's list (A[0], A[2] long), through the chain's
                                            * instruction: the lists may be the edges, whose other
                                            * entries are never read again */
        const int32_t *A = t->fwd_arg + 3 * i;
        int64_t entries = list_entries(t, t->fwd[i], A[2]);
        for (int64_t j = A[0]; t->kind[t->fwd[i]] == K_DOT && j < (int64_t)A[0] + entries; ++j) RENUM(t->dot_pair[j]);
    }
    for (int64_t i = 0; i < n_fwd; ++i) {
        int32_t *A = t->fwd_arg + 3 * i;
        switch (t->fwd_code[i]) {
        case F_ADD: case F_MUL: RENUM(A[0]); RENUM(A[1]); break;
        case F_ONE_CHILD: case F_COPY: RENUM(A[0]); break;
        case F_DOT: case F_DOT4: case F_MV4: RENUM(A[1]); break;  /* a group's members are F_DOT or F_DOT4 too */
        default: break;  /* F_DERIVED: an index of the derived list */
        }
        RENUM(t->fwd[i]);
    }
    for (int64_t b = 0; b < n_bwd; ++b) RENUM(t->bwd[b]);
    for (int64_t k = 0; k < t->pull_start[n_bwd]; ++k) {
        RENUM(t->pull_parent[k]);
        SRC(t->pull_src[k]);
    }
    for (int64_t k = 0; k < t->param_start[N]; ++k) {
        RENUM(t->param_parent[k]);
        SRC(t->param_src[k]);
    }
#undef SRC
    if (t->alias_base != NULL && share_renumbered(t, nw, m) < 0) {
        free(op); free(operand); free(pos); free(x); free(grad); free(new_end);
        return "out of memory";
    }
    free(t->op); free(t->operand); free(t->pos); free(t->x); free(t->grad);
    t->op = op; t->operand = operand; t->pos = pos; t->x = x; t->grad = grad;
    free(t->kind); free(t->aux); free(t->dot_at); free(t->child_start); free_child(t);
    t->kind = NULL; t->aux = NULL; t->dot_at = NULL; t->child_start = NULL; t->child = NULL;
    t->n_edges = 0;
    t->n_nodes = m;
    free(new_end);
    return NULL;
inner:
    free(op); free(operand); free(pos); free(x); free(grad); free(new_end);
    return "a chain's inner node is read from outside it";
}
#undef RENUM


/* Chain L's list (either form) as its `operands` pairs, written to out; a
 * row is a chain of pairs from here on. */
static void write_pairs(tape_t *t, int32_t L, const int32_t *list, int32_t operands, int32_t *out) {
    for (int32_t k = 0; k < operands; ++k) out[k] = chain_operand(t, L, list, k);
    if (t->op[L] == OP_ROW_DOT) t->op[L] = OP_DOT;
}

/* The chains' lists of products (dot_pair) that a replay reads: an F_DOT's
 * or an F_DOT4's, and a matrix-row group's vector where it is listed (row 0's
 * list); a group whose vector is read in place keeps none (its record holds
 * the rows). Called once the groups' records are made. 0, or -1 out of memory. */
int keep_read_pairs(tape_t *t) {
    int64_t nf = t->fwd_end[t->n_pos - 1], kept = 0, room = 0;
    int32_t *pairs = NULL;
    for (int64_t i = 0; i < nf; ++i) {  /* a row's list grows to its pairs */
        const int32_t *A = t->fwd_arg + 3 * i;
        int chains = t->fwd_code[i] == F_DOT4 ? SIDE : t->fwd_code[i] == F_DOT ? 1 : 0;
        for (int c = 0; c < chains; ++c) room += A[3 * c + 2];
        if (t->fwd_code[i] == F_MV4 && t->mv[A[0]].vec < 0) room += 2 * t->mv[A[0]].len;
        if (chains == SIDE || t->fwd_code[i] == F_MV4) i += SIDE - 1;
    }
    if (!NEW(pairs, room)) return -1;
    for (int64_t i = 0; i < nf; ++i) {
        int32_t *A = t->fwd_arg + 3 * i;
        int chains = t->fwd_code[i] == F_DOT4 ? SIDE : t->fwd_code[i] == F_DOT ? 1 : 0;
        for (int c = 0; c < chains; ++c) {  /* an F_DOT4's chains are instructions i .. i + 3 */
            int32_t *Ac = A + 3 * c;
            write_pairs(t, t->fwd[i + c], t->dot_pair + Ac[0], Ac[2], pairs + kept);
            Ac[0] = (int32_t)kept;
            kept += Ac[2];
        }
        if (t->fwd_code[i] == F_MV4) {
            matvec_t *g = t->mv + A[0];
            if (g->vec < 0) {
                write_pairs(t, t->fwd[i], t->dot_pair + g->pairs, 2 * g->len, pairs + kept);
                g->pairs = kept;
                kept += 2 * g->len;
            } else {
                g->pairs = -1;
            }
        }
        if (chains == SIDE || t->fwd_code[i] == F_MV4) i += SIDE - 1;
    }
    if (!t->pairs_are_child || !t->child_in_arena) free(t->dot_pair);
    else discard_pages(t->dot_pair, (size_t)t->n_pairs * sizeof *t->dot_pair);  /* the arena's: consumed */
    t->pairs_are_child = 0;
    int32_t *shrunk = realloc(pairs, (size_t)(kept > 0 ? kept : 1) * sizeof *pairs);
    t->dot_pair = shrunk != NULL ? shrunk : pairs;
    t->n_pairs = kept;
    return 0;
}
