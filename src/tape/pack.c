/* pack.c: the replay's program, from the node lists the builder checked
 * (build.c, reads.c, order.c). Every rewrite here keeps each number's
 * operations and their order: it only changes how they are found
 * (internal.h). */
#include "internal.h"

/* Where the local gradient of node L's edge e is when the backward runs:
 * the other factor's value, L's own slot, or the 1.0; -1 for none. */
int32_t lg_src(const tape_t *t, int32_t L, int64_t e) {
    int64_t e0 = t->child_start[L];
    switch (t->op[L]) {
    case OP_ADD: return 2 * t->n_nodes;
    case OP_MUL: return t->child[e == e0 ? e0 + 1 : e0];
    case OP_DOT: case OP_ROW_DOT:  /* the other operand of its product */
        return chain_operand(t, L, t->child + e0, operand_of_edge(t, L, e) ^ 1);
    case OP_POW: case OP_LOG: case OP_EXP: case OP_RELU: return t->n_nodes + L;
    default: return -1;
    }
}

/* Position p's reads of parameters by compact chains (fill_reads stores none:
 * a compact chain's operands are its own edges), other than the chains in
 * skip (NULL: none): how many; each written, given room, as a kept read. */
static int64_t chain_param_reads(const tape_t *t, int32_t p, const uint8_t *skip,
                                 int32_t *child, int32_t *src, int32_t *parent) {
    int64_t k = 0;
    for (int32_t L = p > 0 ? t->pos_end[p - 1] : t->n_params; L < t->pos_end[p]; ++L) {
        if (!is_compact(t, L) || (skip != NULL && skip[L])) continue;
        const int32_t *list = t->child + t->child_start[L];
        for (int32_t j = 0; j < dot_len(t, L); ++j) {
            if (chain_operand(t, L, list, j) >= t->n_params) continue;
            if (child != NULL) {
                child[k] = chain_operand(t, L, list, j);
                src[k] = chain_operand(t, L, list, j ^ 1);  /* the other factor */
                parent[k] = L;
            }
            k++;
        }
    }
    return k;
}

/* Room for the chains' lists (dot_pair, each product's two operands, or a
 * row's w0 and x's): a compact chain's list is its own edges, in place, and the chains recorded
 * node by node (rmsnorm's sum of squares: few) get theirs written past the
 * edges where child has the room (or can be given it); else every list is
 * copied. A copy of a compact recording's would be two numbers a product,
 * 1.3 GB at n_layer 6, n_embd 128, block 128. */
static const char *chain_lists(tape_t *t, int64_t n_pairs, int64_t n_inner_pairs, int64_t longest) {
    int64_t in_place = t->n_edges + n_inner_pairs + longest;  /* (room to read a row's list as pairs) */
    if (in_place > t->child_room && !t->child_in_arena && in_place <= INT32_MAX) {
        int32_t *more = realloc(t->child, (size_t)in_place * sizeof *more);
        if (more != NULL) {
            t->child = more;
            t->child_room = in_place;
        }
    }
    t->pairs_are_child = in_place <= t->child_room && in_place <= INT32_MAX;
    t->n_pairs = t->pairs_are_child ? in_place : n_pairs;
    if (t->pairs_are_child) t->dot_pair = t->child;
    else if (!NEW(t->dot_pair, n_pairs)) return "out of memory";
    return NULL;
}

/* The node whose gradient stands for L's: a chain's top for its inner
 * products (their tops are kept in aux, unused there), else L itself. */
static int32_t top_of(const tape_t *t, int32_t L) {
    return t->kind[L] == K_INTERIOR ? t->aux[L] : L;
}

/* The replay's program from the checked node lists: the forward's and the
 * backward's instruction lists, the pulls with their local gradients' places,
 * a chain's inner products replaced by its top wherever their gradient is
 * read; then the builder's node-indexed lists are freed. */
const char *tape_pack(tape_t *t) {
    int32_t n = t->n_nodes, P = t->n_params, N = t->n_pos;
    /* the builder's scratch serves last_pow, ins_of, in_mv and renumber's map in turn */
    int32_t *last_pow = t->scratch;
    if (!NEW(t->fwd, n) || !NEW(t->fwd_code, n) || !NEW(t->fwd_end, N)
        || !NEW(t->bwd, n) || !NEW(t->bwd_end, N) || !NEW(t->pull_start, n + 1)) {
        return "out of memory";
    }
    for (int32_t L = 0; L < n; ++L) last_pow[L] = -1;
    int64_t n_pairs = 0, n_inner_pairs = 0, longest = 0;
    for (int32_t L = P; L < n; ++L)
        if (t->kind[L] == K_DOT && is_compact(t, L)) {
            n_pairs += t->child_start[L + 1] - t->child_start[L];
            if (dot_len(t, L) > longest) longest = dot_len(t, L);
        } else if (t->kind[L] == K_DOT) {
            int32_t s = t->aux[L];
            t->aux[s] = L;  /* an inner product's top (top_of) */
            for (int32_t m = s + 3; m < L; m += 2) t->aux[m] = L;
            n_inner_pairs += L - s;
        }
    const char *why = chain_lists(t, n_pairs + n_inner_pairs + longest, n_inner_pairs, longest);
    if (why != NULL) return why;

    /* the forward */
    int64_t nf = 0, pair = t->pairs_are_child ? t->n_edges : 0;  /* (nf: an instruction's index) */
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
            int in_place = t->pairs_are_child && is_compact(t, L);  /* its list: its edges */
            t->dot_at[nf] = (int32_t)(in_place ? t->child_start[L] : pair);
            for (int32_t e = t->child_start[L]; !in_place && is_compact(t, L) && e < t->child_start[L + 1]; ++e)
                t->dot_pair[pair++] = t->child[e];
            for (int32_t m = s; !is_compact(t, L) && m < L; m += (m == s ? 3 : 2)) {
                t->dot_pair[pair++] = t->child[t->child_start[m]];
                t->dot_pair[pair++] = t->child[t->child_start[m] + 1];
            }
            code = F_DOT;
            break;
        }
        default: {
            int64_t edges = t->child_start[L + 1] - t->child_start[L];
            if (t->op[L] == OP_ADD || t->op[L] == OP_MUL) {
                if (edges != 2) return "an operation with an unexpected number of children";
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
        case F_DOT: A[0] = t->dot_at[i]; A[1] = dot_init(t, L); A[2] = dot_len(t, L); break;
        default: break;  /* F_DERIVED: below */
        }
    }
    interleave_dots(t, nf, ins_of);
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
    for (int32_t p = N - 1; p >= 0; --p) {
        for (int64_t j = t->param_start[p]; j < t->param_start[p + 1]; ++j) {
            int32_t c = t->child[t->param_edge[j]];
            if (c < t->table_slot0 || c >= t->table_slot0 + t->table_rows * t->table_cols) t->first_pos[c] = p;
        }
        for (int32_t L = p > 0 ? t->pos_end[p - 1] : P; L < t->pos_end[p]; ++L)  /* (never the table's) */
            for (int32_t j = 0; is_compact(t, L) && j < dot_len(t, L); ++j) {
                int32_t c = chain_operand(t, L, t->child + t->child_start[L], j);
                if (c < P) t->first_pos[c] = p;
            }
    }
    group_dots(t, nf);
    int64_t n_mv = mark_matvecs(t, nf);
    uint8_t *in_mv = (uint8_t *)t->scratch;  /* the tops of the chains in those groups (ins_of is done with) */
    memset(in_mv, 0, (size_t)n);
    if (!NEW(t->mv, n_mv) || !NEW(t->mv_end, N)) return "out of memory";
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

    /* the backward: every node that takes a gradient. Only those have pull
     * lists, in creation order: the builder's lists become the backward's in
     * place (each entry's parent its top, its edge the local gradient's place;
     * the blocks as they are) */
    int64_t nb = 0;
    t->pull_parent = t->npull_parent;
    t->pull_src = t->npull_edge;
    t->pull_block = t->npull_block;
    t->npull_parent = t->npull_edge = t->npull_block = NULL;
    q = 0;
    int64_t k_out = 0;
    for (int32_t L = P; L < n; ++L) {
        while (L >= t->pos_end[q]) t->bwd_end[q++] = (int32_t)nb;
        uint8_t k = t->kind[L];
        if (k == K_CONST || k == K_DERIVED || k == K_INTERIOR) continue;
        t->bwd[nb] = L;
        t->pull_start[nb++] = k_out;
        if (k == K_SEED || k == K_CANDIDATE) continue;  /* their gradient comes from a slot */
        if (t->npull_start[L] != k_out) return "a node that takes no gradient has a pull list";
        for (; k_out < t->npull_start[L + 1]; ++k_out) {
            int32_t parent = t->pull_parent[k_out];
            t->pull_parent[k_out] = top_of(t, parent);
            t->pull_src[k_out] = lg_src(t, parent, t->pull_src[k_out]);
        }
    }
    if (t->npull_start[n] != k_out) return "a node that takes no gradient has a pull list";
    while (q < N) t->bwd_end[q++] = (int32_t)nb;
    t->pull_start[nb] = k_out;
    if (!NEW(t->bwd_group, nb) || !NEW(t->bwd_kind, nb) || !NEW(t->bwd_lanes, nb)) return "out of memory";
    for (int64_t b = 0; b < nb; ++b) t->bwd_kind[b] = t->kind[t->bwd[b]];

    /* parameter reads: a matrix row's are made by the backward from the
     * group's own lists (each parameter is read once a position, so a
     * position's reads may go in any order); the rest are kept, in order,
     * each position's compact chains' after its stored reads */
    int64_t kept = 0, tok = 0, room = t->param_start[N];  /* token_param lists reads in ascending order */
    for (int32_t p = 0; p < N; ++p) room += chain_param_reads(t, p, in_mv, NULL, NULL, NULL);
    int32_t *pchild = NULL, *psrc = NULL, *pparent = NULL;
    if (!NEW(pchild, room) || !NEW(psrc, room) || !NEW(pparent, room)) {
        free(pchild); free(psrc); free(pparent);
        return "out of memory";
    }
    for (int32_t p = 0; p < N; ++p) {
        int64_t from = t->param_start[p];
        t->param_start[p] = kept;
        for (int64_t j = from; j < t->param_start[p + 1]; ++j) {
            int32_t parent = t->param_parent[j];
            int64_t moved_to = -1;
            if (!(t->kind[parent] == K_INTERIOR && t->op[parent] == OP_MUL && in_mv[top_of(t, parent)])) {
                moved_to = kept;
                pchild[kept] = t->child[t->param_edge[j]];
                psrc[kept] = lg_src(t, parent, t->param_edge[j]);
                pparent[kept++] = top_of(t, parent);
            }
            while (tok < t->n_token_edges && t->token_param[tok] == j) t->token_param[tok++] = moved_to;
        }
        kept += chain_param_reads(t, p, in_mv, pchild + kept, psrc + kept, pparent + kept);
    }
    t->param_start[N] = kept;
    free(t->param_child); free(t->param_src); free(t->param_parent);
    t->param_child = pchild; t->param_src = psrc; t->param_parent = pparent;
    for (int32_t p = 0; p < N; ++p) {  /* a product's other child would take its grad from the slot */
        if (t->op[t->target_owner[p]] == OP_MUL || is_compact(t, t->target_owner[p]))
            return "probs[target] is read by a product";
        t->target_src[p] = lg_src(t, t->target_owner[p], t->target_edge[p]);
    }
    free(t->npull_start); free(t->npull_parent); free(t->npull_edge); free(t->npull_block); free(t->param_edge);
    t->npull_start = NULL; t->npull_parent = NULL; t->npull_edge = NULL; t->npull_block = NULL; t->param_edge = NULL;
    why = renumber(t);
    free(t->scratch);
    t->scratch = NULL;
    if (why == NULL) {  /* in the replay's numbering, where a vector's entries are consecutive nodes */
        matvec_records(t);
        share_derived(t);
        if (interleave_alike(t, nb) < 0) why = "out of memory";
        if (why == NULL) why = expand_aliases(t, nb);
        group_pulls(t, nb);
        if (drop_unread_pulls(t, nb) < 0) why = "out of memory";
    }
    if (why == NULL && keep_read_pairs(t) < 0) why = "out of memory";
    if (why == NULL && matrix_plan(t) < 0) why = "out of memory";
    if (why == NULL) mark_shifted_dots(t);
    if (why == NULL && level_plan(t) < 0) why = "out of memory";
    if (why == NULL && elementwise_plan(t) < 0) why = "out of memory";
    if (why == NULL && lane_plan(t) < 0) why = "out of memory";
    if (why == NULL && strided_plan(t) < 0) why = "out of memory";
    if (why == NULL && strided_pulls_plan(t) < 0) why = "out of memory";
    if (why == NULL && paired_plan(t) < 0) why = "out of memory";
    if (why == NULL && shift_plan(t) < 0) why = "out of memory";
    if (why == NULL && attention_plan(t) < 0) why = "out of memory";
    if (why == NULL) single_plan(t);
    if (why == NULL && (share_plan(t) < 0 || step_plan(t) < 0)) why = "out of memory";  /* (steps: the last) */
    if (why == NULL && params_plan(t) < 0) why = "out of memory";
    if (why == NULL && program_plan(t) < 0) why = "out of memory";  /* (last: it copies the plans') */
    return why;
}

