/* tape_pack.c: the replay's program, from the node lists tape_build.c checked.
 * Every rewrite here keeps each number's operations and their order: it only
 * changes how they are found (see tape.h and tape_internal.h). */
#include "tape_internal.h"

static void group_dots(tape_t *t, int64_t nf) {
    for (int64_t i = 0; i + SIDE <= nf; ++i) {
        int ok = 1;
        int32_t L0 = t->fwd[i];
        for (int k = 0; k < SIDE && ok; ++k) {
            int32_t L = t->fwd[i + k];
            ok = t->fwd_code[i + k] == F_DOT && L - t->aux[L] == L0 - t->aux[L0] && t->pos[L] == t->pos[L0];
            if (!ok) break;
            const int32_t *pr = t->dot_pair + t->dot_at[L];
            for (int32_t j = 0; j < L - t->aux[L] && ok; ++j)  /* reads no top of the group */
                for (int m = 0; m < k && ok; ++m) ok = pr[j] != t->fwd[i + m];
        }
        if (!ok) continue;
        t->fwd_code[i] = F_DOT4;
        i += SIDE - 1;
    }
}

/* A group of four chains that are four rows of one matrix times one vector:
 * chain c's k-th product is w_c[k] * v[k], with w_c[k] the parameter w_c[0] + k
 * and v[k] the same node for the four, at most MAX_LANES long. The same
 * products and sums, read through one record (matvec_t). Returns how many
 * groups were found. */
static int64_t mark_matvecs(tape_t *t, int64_t nf) {
    int64_t found = 0;
    for (int64_t i = 0; i + SIDE <= nf; ++i) {
        if (t->fwd_code[i] != F_DOT4) continue;
        const int32_t *A = t->fwd_arg + 3 * i, *p0 = t->dot_pair + A[0];
        int ok = 1;
        for (int c = 0; c < SIDE && ok; ++c) {
            const int32_t *pc = t->dot_pair + A[3 * c];
            for (int32_t j = 0; j < A[2] && ok; j += 2)
                ok = pc[j] == pc[0] + j / 2 && pc[0] + A[2] / 2 <= t->n_params
                    && pc[j + 1] == p0[j + 1] && pc[j + 1] >= t->n_params;
        }
        ok = ok && A[2] / 2 <= MAX_LANES;  /* a vector gathered by the replay fits its buffer */
        if (ok) { t->fwd_code[i] = F_MV4; found++; }
        i += SIDE - 1;
    }
    return found;
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

static void group_pulls(tape_t *t, int64_t nb) {
    for (int64_t b = nb - 1; b >= SIDE - 1; --b) {
        int ok = 1;
        int64_t count = t->pull_start[b + 1] - t->pull_start[b];
        for (int k = 0; k < SIDE && ok; ++k) {
            int64_t e = b - k;
            int32_t L = t->bwd[e];
            ok = (t->kind[L] == K_OP || t->kind[L] == K_DOT) && count > 1
                && t->pull_start[e + 1] - t->pull_start[e] == count;
            for (int64_t j = t->pull_start[e]; j < t->pull_start[e + 1] && ok; ++j)  /* no parent in the group */
                for (int m = 0; m < k && ok; ++m) ok = t->pull_parent[j] != t->bwd[b - m];
        }
        if (!ok) continue;
        t->bwd_group[b] = 1;
        /* four entries of one vector read by the rows of one matrix: the same
         * parents, and each row's weights side by side (see the backward) */
        int mv = 1;
        for (int k = 1; k < SIDE && mv; ++k) mv = rows_of_one_vector(t, b, b - k, k, 0);
        if (mv) t->bwd_group[b] = 2;
        b -= SIDE - 1;
    }
    /* runs of such groups, one after another, over the same parents with their
     * weights still side by side: a whole vector read by a matrix's rows */
    for (int64_t b = nb - 1; b >= SIDE - 1; --b) {
        if (t->bwd_group[b] != 2) continue;
        int64_t e = b;
        while (e - SIDE >= SIDE - 1 && b - (e - SIDE) + 1 <= MAX_LANES && t->bwd_group[e - SIDE] == 2
               && rows_of_one_vector(t, b, e - SIDE, (int32_t)(b - (e - SIDE)), SIDE - 1))
            e -= SIDE;
        if (e < b) {
            t->bwd_group[b] = 3;
            t->bwd_lanes[b] = (int32_t)(b - e + SIDE);
        }
        b = e - (SIDE - 1);
    }
}

/* Where the local gradient of node L's edge e is when the backward runs:
 * the other factor's value, L's own slot, or the 1.0; -1 for none. */
static int32_t lg_src(const tape_t *t, int32_t L, int64_t e) {
    int64_t e0 = t->child_start[L];
    switch (t->op[L]) {
    case OP_ADD: return 2 * t->n_nodes;
    case OP_MUL: return t->child[e == e0 ? e0 + 1 : e0];
    case OP_POW: case OP_LOG: case OP_EXP: case OP_RELU: return t->n_nodes + L;
    default: return -1;
    }
}

/* After packing, nothing refers to a chain's inner nodes (their gradients are
 * the top's, their values are never kept), and they are most of a step's
 * nodes. Number the rest 0.. in the same order (parameters first, as they
 * were), rewrite every reference, and keep per node only what a replay reads:
 * op, operand, position, value, local grad slot, gradient. The edge lists and
 * node kinds the builder needed go. */
#define RENUM(v) do { int32_t r_ = nw[(v)]; if (r_ < 0) goto inner; (v) = r_; } while (0)
static const char *renumber(tape_t *t) {
    int32_t n = t->n_nodes, N = t->n_pos, m = 0;
    int32_t *nw = t->scratch;
    for (int32_t L = 0; L < n; ++L) nw[L] = t->kind[L] == K_INTERIOR ? -1 : m++;
    int64_t n_fwd = t->fwd_end[N - 1], n_bwd = t->bwd_end[N - 1];
    uint8_t *op = NULL;
    double *operand = NULL, *x = NULL, *grad = NULL;
    int32_t *pos = NULL;
    if (!NEW(op, m) || !NEW(operand, m) || !NEW(pos, m) || !NEW(x, 2 * (int64_t)m + 1) || !NEW(grad, m)
        || !NEW(t->graph_end, N)) {
        free(op); free(operand); free(pos); free(x); free(grad);
        return "out of memory";
    }
    /* a local gradient's place: a node's value, a one-child node's slot, or the 1.0 */
#define SRC(v) do { int32_t s_ = (v), r_ = s_ == 2 * n ? 2 * m : s_ >= n ? nw[s_ - n] : nw[s_]; \
                     if (r_ < 0) goto inner;                                                  \
                     (v) = s_ == 2 * n ? r_ : s_ >= n ? m + r_ : r_; } while (0)
    for (int32_t L = 0; L < n; ++L) {
        if (nw[L] < 0) continue;
        op[nw[L]] = t->op[L];
        operand[nw[L]] = t->operand[L];
        pos[nw[L]] = t->pos[L];
        if (L >= t->n_params && t->kind[L] == K_CONST) x[nw[L]] = t->operand[L];  /* constants never change */
    }
    x[2 * (int64_t)m] = 1.0;
    for (int32_t p = 0; p < N; ++p) {
        t->graph_end[p] = t->pos_end[p];
        int32_t e = t->pos_end[p];
        while (e < n && nw[e] < 0) ++e;  /* the first kept node past position p */
        t->pos_end[p] = e < n ? nw[e] : m;
        RENUM(t->loss_node[p]);
        RENUM(t->target_owner[p]);
        SRC(t->target_src[p]);
    }
    for (int64_t j = 0; j < (int64_t)N * t->n_cand; ++j) RENUM(t->cand[j]);
    for (int64_t j = 0; j < t->n_derived; ++j) RENUM(t->derived_node[j]);
    for (int64_t j = 0; j < t->src_start[t->n_derived]; ++j) RENUM(t->src[j]);
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
    for (int64_t j = 0; j < t->n_pairs; ++j) RENUM(t->dot_pair[j]);
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
    free(t->op); free(t->operand); free(t->pos); free(t->x); free(t->grad);
    t->op = op; t->operand = operand; t->pos = pos; t->x = x; t->grad = grad;
    free(t->kind); free(t->aux); free(t->dot_at); free(t->child_start); free(t->child);
    t->kind = NULL; t->aux = NULL; t->dot_at = NULL; t->child_start = NULL; t->child = NULL;
    t->n_edges = 0;
    t->n_nodes = m;
    return NULL;
inner:
    free(op); free(operand); free(pos); free(x); free(grad);
    return "a chain's inner node is read from outside it";
}
#undef RENUM

/* Each F_MV4 group's record (tape.h), once the nodes are numbered as the
 * replay numbers them: its instruction's first operand becomes the record's
 * index. Where the vector's entries are consecutive nodes (a layer's
 * outputs, made one after another), the replay reads them in place. */
static void matvec_records(tape_t *t) {
    int32_t n_mv = t->mv_end[t->n_pos - 1];
    for (int32_t k = 0; k < n_mv; ++k) {
        matvec_t *g = t->mv + k;
        int32_t *A = t->fwd_arg + 3 * (int64_t)g->ins;
        g->pairs = A[0];
        g->len = A[2] / 2;
        const int32_t *v = t->dot_pair + g->pairs + 1;  /* the vector: every other entry of row 0's list */
        g->vec = v[0];
        for (int32_t j = 1; j < g->len && g->vec >= 0; ++j)
            if (v[2 * j] != v[0] + j) g->vec = -1;
        for (int c = 0; c < SIDE; ++c) {
            g->w[c] = t->dot_pair[A[3 * c]];
            g->init[c] = A[3 * c + 1];
            g->top[c] = t->fwd[g->ins + c];
        }
        A[0] = k;
    }
}

/* The replay's program from the checked node lists: the forward's and the
 * backward's instruction lists, the pulls with their local gradients' places,
 * a chain's inner products replaced by its top wherever their gradient is
 * read; then the builder's node-indexed lists are freed. */
const char *tape_pack(tape_t *t) {
    int32_t n = t->n_nodes, P = t->n_params, N = t->n_pos;
    /* the builder's scratch serves last_pow, ins_of, in_mv and renumber's map in turn */
    int32_t *top = NULL, *last_pow = t->scratch;
    if (!NEW(top, n) || !NEW(t->fwd, n) || !NEW(t->fwd_code, n) || !NEW(t->fwd_end, N)
        || !NEW(t->bwd, n) || !NEW(t->bwd_end, N) || !NEW(t->pull_start, n + 1)) {
        free(top);
        return "out of memory";
    }
    for (int32_t L = 0; L < n; ++L) { top[L] = L; last_pow[L] = -1; }
    int64_t n_pairs = 0;
    for (int32_t L = P; L < n; ++L)
        if (t->kind[L] == K_DOT) {
            int32_t s = t->aux[L];
            top[s] = L;
            for (int32_t m = s + 3; m < L; m += 2) top[m] = L;
            n_pairs += L - s;
        }
    if (!NEW(t->dot_pair, n_pairs)) { free(top); return "out of memory"; }
    t->n_pairs = n_pairs;

    /* the forward */
    int64_t nf = 0, pair = 0;
    int32_t q = 0;
    for (int32_t L = P; L < n; ++L) {
        while (L >= t->pos_end[q]) t->fwd_end[q++] = (int32_t)nf;
        uint8_t code;
        switch (t->kind[L]) {
        case K_CONST: continue;
        case K_INTERIOR: continue;
        case K_DERIVED: code = F_DERIVED; break;
        case K_DOT: {
            int32_t s = t->aux[L];
            t->dot_at[L] = (int32_t)pair;
            for (int32_t m = s; m < L; m += (m == s ? 3 : 2)) {
                t->dot_pair[pair++] = t->child[t->child_start[m]];
                t->dot_pair[pair++] = t->child[t->child_start[m] + 1];
            }
            code = F_DOT;
            break;
        }
        default: {
            int64_t edges = t->child_start[L + 1] - t->child_start[L];
            if (t->op[L] == OP_ADD || t->op[L] == OP_MUL) {
                if (edges != 2) { free(top); return "an operation with an unexpected number of children"; }
                code = t->op[L] == OP_ADD ? F_ADD : F_MUL;
            } else if (lg_src(t, L, t->child_start[L]) >= 0 && edges == 1) {
                code = F_ONE_CHILD;
                if (t->op[L] == OP_POW) {  /* the same pow of the same node as the last: copy it */
                    int32_t c = t->child[t->child_start[L]], k = last_pow[c];
                    if (k >= 0 && memcmp(&t->operand[k], &t->operand[L], sizeof(double)) == 0) {
                        code = F_COPY;
                        t->aux[L] = k;
                    } else {
                        last_pow[c] = L;
                    }
                }
            } else {
                free(top);
                return "an operation the replay does not know";
            }
        }
        }
        t->fwd[nf] = L;
        t->fwd_code[nf++] = code;
    }
    while (q < N) t->fwd_end[q++] = (int32_t)nf;

    /* each instruction's operands, and where the slots are among them */
    int32_t *ins_of = t->scratch;  /* last_pow is done with */
    memset(ins_of, 0, (size_t)n * sizeof *ins_of);
    if (!NEW(t->fwd_arg, 3 * nf) || !NEW(t->target_arg, N)
        || !NEW(t->token_arg, t->n_token_edges) || !NEW(t->first_pos, P)) {
        free(top);
        return "out of memory";
    }
    for (int64_t i = 0; i < nf; ++i) {
        int32_t L = t->fwd[i], *A = t->fwd_arg + 3 * i;
        int64_t e = t->child_start[L];
        ins_of[L] = (int32_t)i;
        switch (t->fwd_code[i]) {
        case F_ADD: case F_MUL: A[0] = t->child[e]; A[1] = t->child[e + 1]; break;
        case F_ONE_CHILD: A[0] = t->child[e]; break;
        case F_COPY: A[0] = t->aux[L]; break;
        case F_DOT: A[0] = t->dot_at[L]; A[1] = t->aux[L] + 1; A[2] = L - t->aux[L]; break;
        default: break;  /* F_DERIVED: below */
        }
    }
    for (int64_t j = 0; j < t->n_derived; ++j) t->fwd_arg[3 * (int64_t)ins_of[t->derived_node[j]]] = (int32_t)j;
    for (int32_t p = 0; p < N; ++p) {
        int32_t owner = t->target_owner[p];
        t->target_arg[p] = 3 * (int64_t)ins_of[owner] + (t->target_edge[p] - t->child_start[owner]);
    }
    for (int64_t j = 0; j < t->n_token_edges; ++j) {
        int32_t owner = t->param_parent[t->token_param[j]];  /* an addition or one-child operation */
        t->token_arg[j] = 3 * (int64_t)ins_of[owner] + (t->token_edge[j] - t->child_start[owner]);
    }
    for (int32_t k = 0; k < P; ++k) t->first_pos[k] = INT32_MAX;
    for (int32_t p = N - 1; p >= 0; --p)
        for (int64_t j = t->param_start[p]; j < t->param_start[p + 1]; ++j) {
            int32_t c = t->child[t->param_edge[j]];
            if (c < t->table_slot0 || c >= t->table_slot0 + t->table_rows * t->table_cols) t->first_pos[c] = p;
        }
    group_dots(t, nf);
    int64_t n_mv = mark_matvecs(t, nf);
    uint8_t *in_mv = (uint8_t *)t->scratch;  /* the tops of the chains in those groups (ins_of is done with) */
    memset(in_mv, 0, (size_t)n);
    if (!NEW(t->mv, n_mv) || !NEW(t->mv_end, N)) { free(top); return "out of memory"; }
    {
        int32_t k = 0, p = 0;
        for (int32_t i = 0; i < (int32_t)nf; ++i) {
            while (i >= t->fwd_end[p]) t->mv_end[p++] = k;
            if (t->fwd_code[i] != F_MV4) continue;
            t->mv[k++].ins = i;
            for (int c = 0; c < SIDE; ++c) in_mv[t->fwd[i + c]] = 1;
        }
        while (p < N) t->mv_end[p++] = k;
    }

    /* the backward: every node that takes a gradient */
    int64_t nb = 0, n_pulls = 0;
    for (int32_t L = P; L < n; ++L) {
        uint8_t k = t->kind[L];
        if (k == K_OP || k == K_ROTATE || k == K_DOT) n_pulls += t->npull_start[L + 1] - t->npull_start[L];
    }
    if (!NEW(t->pull_parent, n_pulls) || !NEW(t->pull_src, n_pulls) || !NEW(t->pull_block, n_pulls)) {
        free(top);
        return "out of memory";
    }
    q = 0;
    int64_t k_out = 0;
    for (int32_t L = P; L < n; ++L) {
        while (L >= t->pos_end[q]) t->bwd_end[q++] = (int32_t)nb;
        uint8_t k = t->kind[L];
        if (k == K_CONST || k == K_DERIVED || k == K_INTERIOR) continue;
        t->bwd[nb] = L;
        t->pull_start[nb++] = k_out;
        if (k == K_SEED || k == K_CANDIDATE) continue;  /* their gradient comes from a slot */
        for (int64_t j = t->npull_start[L]; j < t->npull_start[L + 1]; ++j, ++k_out) {
            int32_t parent = t->npull_parent[j];
            t->pull_parent[k_out] = top[parent];
            int64_t e = t->child_start[parent];  /* its first edge that reads L: a parent that reads */
            while (t->child[e] != L) ++e;        /* L twice (x * x, x + x) has the same local grad at both */
            t->pull_src[k_out] = lg_src(t, parent, e);
            t->pull_block[k_out] = k == K_ROTATE ? t->npull_block[j] : -1;  /* only theirs are written */
        }
    }
    while (q < N) t->bwd_end[q++] = (int32_t)nb;
    t->pull_start[nb] = k_out;
    if (!NEW(t->bwd_group, nb) || !NEW(t->bwd_kind, nb) || !NEW(t->bwd_lanes, nb)) { free(top); return "out of memory"; }
    for (int64_t b = 0; b < nb; ++b) t->bwd_kind[b] = t->kind[t->bwd[b]];
    group_pulls(t, nb);

    /* parameter reads: a matrix row's are made by the backward from the
     * group's own lists (each parameter is read once a position, so a
     * position's reads may go in any order); the rest are kept, in order */
    int64_t kept = 0, tok = 0;  /* token_param lists reads in ascending order: each follows its read */
    for (int32_t p = 0; p < N; ++p) {
        int64_t from = t->param_start[p];
        t->param_start[p] = kept;
        for (int64_t j = from; j < t->param_start[p + 1]; ++j) {
            int32_t parent = t->param_parent[j];
            int64_t moved_to = -1;
            if (!(t->kind[parent] == K_INTERIOR && t->op[parent] == OP_MUL && in_mv[top[parent]])) {
                moved_to = kept;
                t->param_child[kept] = t->child[t->param_edge[j]];
                t->param_src[kept] = lg_src(t, parent, t->param_edge[j]);
                t->param_parent[kept++] = top[parent];
            }
            while (tok < t->n_token_edges && t->token_param[tok] == j) t->token_param[tok++] = moved_to;
        }
    }
    t->param_start[N] = kept;
    for (int32_t p = 0; p < N; ++p) {  /* a product's other child would take its grad from the slot */
        if (t->op[t->target_owner[p]] == OP_MUL) { free(top); return "probs[target] is read by a product"; }
        t->target_src[p] = lg_src(t, t->target_owner[p], t->target_edge[p]);
    }
    free(top);
    free(t->npull_start); free(t->npull_parent); free(t->npull_block); free(t->param_edge);
    t->npull_start = NULL; t->npull_parent = NULL; t->npull_block = NULL; t->param_edge = NULL;
    const char *why = renumber(t);
    free(t->scratch);
    t->scratch = NULL;
    if (why == NULL) matvec_records(t);
    return why;
}

