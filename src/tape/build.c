/* build.c: a tape from a recorded step, checked so that it can be replayed
 * exactly. Each phase is a function of the builder (internal.h, builder_t)
 * returning NULL or why the step cannot be replayed; tape_build runs them in
 * turn and cleans up in one place:
 *   give_back_unread                     (consume) the columns the copy does not read, released
 *   take_sizes, map_params, copy_graph   the step's graph out of the arena,
 *                                        local indices, one edge list
 *   check_tail                           the loss is the mean as model.mean_of builds it
 *   give_back_rows                       (consume) the arena's recorded rows' memory released
 *                                        (the last that reads them: before the tape's
 *                                        node-sized working arrays are touched)
 *   declare_derived, find_targets        what varies: derived numbers, target slots
 *   count_readers, fill_reads, token_slots (reads.c)  pull lists (chains found)
 *                                        and parameter reads
 *   order_pulls, verify_targets (order.c)  the backward order
 *   tape_pack (pack.c)                   the replay's program */
#include "builder.h"

static int32_t local_of(const builder_t *b, node_t i) {
    const record_t *r = b->r;
    if (i >= r->rec_start && i < b->rec_end) return (int32_t)(r->n_params + (i - r->rec_start));
    if (i >= 0 && i < r->rec_start) return b->pmap[i];
    return -1;
}

/* t->operand is calloc'd: +0.0 (all bits zero, unlike -0.0) is there already.
 * Most nodes are sums and products, whose operand is that: not writing it
 * leaves most of the array's pages untouched. */
static void put_operand(tape_t *t, int32_t L, double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    if (bits != 0) t->operand[L] = v;
}

static const char *take_sizes(builder_t *b) {
    const record_t *r = b->r;
    tape_t *t = b->t;
    int32_t P = r->n_params, N = r->n_pos, V = r->n_cand;
    if (N < 1 || V < 1) return "nothing to record";
    int64_t end = b->rec_end = r->pos_end[N - 1], M = end - r->rec_start;
    if (M < 1 || (int64_t)P + M > INT32_MAX) return "nothing to record";
    t->n_params = P;
    t->n_nodes = (int32_t)(P + M);
    t->n_pos = N;
    t->n_cand = V;
    b->arena_edge0 = b->a->child_start[r->rec_start];
    t->n_edges = b->a->child_start[end] - b->arena_edge0;
    if (t->n_edges > INT32_MAX) return "the step is too large to record";
    int32_t n = t->n_nodes;
    if (!NEW(t->kind, n) || !NEW(t->op, n) || !NEW(t->operand, n) || !NEW(t->child_start, n + 1)
        || !NEW(t->aux, n) || !NEW(t->dot_at, n)
        || !NEW(t->npull_start, n + 1) || !NEW(t->pos_end, N)
        || !NEW(t->loss_node, N) || !NEW(t->target_edge, N) || !NEW(t->target_owner, N)
        || !NEW(t->target_src, N) || !NEW(t->cand, (int64_t)N * V) || !NEW(t->logit, (int64_t)N * V) || !NEW(t->scratch, n)
        || !NEW(t->param_start, N + 1))
        return "out of memory";
    return NULL;
}

/* parameters: arena node -> slot */
static const char *map_params(builder_t *b) {
    const record_t *r = b->r;
    if (!NEW(b->pmap, r->rec_start)) return "out of memory";
    for (int64_t i = 0; i < r->rec_start; ++i) b->pmap[i] = -1;
    for (int32_t k = 0; k < r->n_params; ++k) {
        node_t i = r->params[k];
        if (i < 0 || i >= r->rec_start) return "a parameter is not a node made before recording";
        if (b->pmap[i] >= 0) return "a parameter is listed twice (a weight shared by two matrices, or a row given twice)";
        b->pmap[i] = k;
    }
    return NULL;
}

/* Is arena node i a compact chain (OP_DOT) as arena_push_dot makes it: pairs
 * (an even number of operands) or a row (w0 and at least one x), after its
 * constant 0 (made while recording)? */
static int compact_chain(const builder_t *b, int64_t i) {
    const arena_t *a = b->a;
    int64_t edges = a->child_start[i + 1] - a->child_start[i];
    return edges >= 2 && (edges % 2 == 0 || (a->tag[i] & TAG_ROW_DOT)) && i - 1 >= b->r->rec_start
        && a->op[i - 1] == OP_CONST && a->data[i - 1] == 0.0 && !signbit(a->data[i - 1]);
}

/* A row's weights, arena nodes w0 .. w0 + n - 1, are consecutive parameter
 * slots (its list keeps w0's slot only)? */
static int row_of_params(const builder_t *b, node_t w0, int64_t n) {
    if (w0 < 0 || w0 + n > b->r->rec_start || b->pmap[w0] < 0) return 0;
    for (int64_t k = 1; k < n; ++k)
        if (b->pmap[w0 + k] != b->pmap[w0] + k) return 0;
    return 1;
}

/* nodes and edges, in creation order; each position's loss; the compact
 * chains' products numbered (pair_base) */
static const char *copy_graph(builder_t *b) {
    const arena_t *a = b->a;
    const record_t *r = b->r;
    tape_t *t = b->t;
    int32_t P = t->n_params, N = t->n_pos;
    int64_t end = r->pos_end[N - 1];
    if (!NEW(b->pair_base, t->n_nodes)) return "out of memory";
    const node_t *arena_child = a->child + b->arena_edge0;  /* read before written, in place */
    t->child_in_arena = r->consume != 0;
    if (t->child_in_arena) t->child = (int32_t *)(b->a->child + b->arena_edge0);
    else if (!NEW(t->child, t->n_edges)) return "out of memory";
    t->child_room = t->child_in_arena ? b->a->cap_edges - b->arena_edge0 : t->n_edges;
    for (int32_t q = 0; q < N; ++q) t->pos_end[q] = (int32_t)(P + (r->pos_end[q] - r->rec_start));
    for (int32_t k = 0; k < P; ++k) t->kind[k] = K_CONST;
    for (int64_t i = r->rec_start; i < end; ++i) {
        int32_t L = (int32_t)(P + (i - r->rec_start));
        t->op[L] = a->op[i];
        t->child_start[L] = (int32_t)(a->child_start[i] - b->arena_edge0);
        if (a->op[i] == OP_CUSTOM) return "the step has a user-defined node (its local grads were given)";
        if (a->op[i] == OP_LEAF || a->op[i] == OP_CONST) { t->kind[L] = K_CONST; put_operand(t, L, a->data[i]); }
        else if (a->op[i] == OP_DOT) {
            if (!compact_chain(b, i)) return "a compact sum is not as the recording makes it";
            int64_t edges = a->child_start[i + 1] - a->child_start[i];
            if (a->tag[i] & TAG_ROW_DOT) {
                if (!row_of_params(b, arena_child[a->child_start[i] - b->arena_edge0], edges - 1))
                    return "a compact sum's weights are not consecutive parameters";
                t->op[L] = OP_ROW_DOT;
            }
            t->kind[L] = K_DOT;
            b->pair_base[L] = (int32_t)b->n_dot_pairs;
            b->n_dot_pairs += t->op[L] == OP_ROW_DOT ? edges - 1 : edges / 2;
            if (b->n_dot_pairs > INT32_MAX) return "the step is too large to record";
        }
        else { t->kind[L] = K_OP; put_operand(t, L, a->operand[i]); }
        for (int64_t e = a->child_start[i]; e < a->child_start[i + 1]; ++e) {
            int32_t c = local_of(b, arena_child[e - b->arena_edge0]);
            if (c < 0) return "the step reads a node made before recording that is not a parameter";
            t->child[e - b->arena_edge0] = c;
        }
    }
    for (int32_t L = 0; L < P; ++L) t->child_start[L] = 0;  /* parameters have no edges */
    t->child_start[t->n_nodes] = (int32_t)t->n_edges;
    for (int32_t q = 0; q < N; ++q) {
        t->loss_node[q] = local_of(b, r->loss_node[q]);
        if (t->loss_node[q] < 0 || pos_of(t, t->loss_node[q]) != q) return "a position's loss is not in its position";
        t->kind[t->loss_node[q]] = K_SEED;
    }
    return NULL;
}

/* derived constants: sign * max over sources made before them */
static const char *declare_derived(builder_t *b) {
    const record_t *r = b->r;
    tape_t *t = b->t;
    int32_t P = t->n_params;
    t->n_derived = r->n_derived;
    if (!NEW(t->derived_node, r->n_derived) || !NEW(t->src_start, r->n_derived + 1)
        || !NEW(t->src, r->src_start[r->n_derived]))
        return "out of memory";
    t->src_start[r->n_derived] = r->src_start[r->n_derived];
    for (int64_t j = 0; j < r->n_derived; ++j) {
        int32_t L = local_of(b, r->derived_node[j]);
        if (L < P || t->kind[L] != K_CONST) return "a derived number is not a constant of the step";
        t->derived_node[j] = L;
        t->kind[L] = K_DERIVED;
        t->operand[L] = r->derived_sign[j];
        t->src_start[j] = r->src_start[j];
        for (int64_t s = r->src_start[j]; s < r->src_start[j + 1]; ++s) {
            int32_t S = local_of(b, r->src[s]);
            if (S < P || S >= L) return "a derived number comes from nodes outside the step";
            t->src[s] = S;
        }
    }
    return NULL;
}

/* candidates, and each position's one edge that reads probs[target] */
static const char *find_targets(builder_t *b) {
    const record_t *r = b->r;
    tape_t *t = b->t;
    int32_t P = t->n_params, N = t->n_pos, V = t->n_cand, n = t->n_nodes;
    int32_t *cand_of = t->scratch;  /* local node -> p * V + v, or -1 */
    for (int32_t L = 0; L < n; ++L) cand_of[L] = -1;
    for (int64_t j = 0; j < (int64_t)N * V; ++j) {
        int32_t L = local_of(b, r->cand[j]);
        if (L < P || pos_of(t, L) != j / V || t->kind[L] != K_OP || cand_of[L] >= 0)
            return "a candidate is not a node of its position";
        t->cand[j] = L;
        t->logit[j] = local_of(b, r->logit[j]);  /* (only read: renumber keeps it or marks it -1) */
        cand_of[L] = (int32_t)j;
        t->kind[L] = K_CANDIDATE;
    }
    for (int32_t q = 0; q < N; ++q) t->target_edge[q] = -1;
    for (int32_t L = P; L < n; ++L)
        for (int64_t e = t->child_start[L]; e < t->child_start[L + 1]; ++e) {
            int32_t c = t->child[e], j = c >= 0 ? cand_of[c] : -1;
            if (j < 0) continue;
            int32_t q = j / V;
            if (pos_of(t, L) != q || t->target_edge[q] >= 0 || j % V != r->tokens[q + 1])
                return "probs is read other than at the target";
            t->target_edge[q] = e;
            t->target_owner[q] = L;
        }
    for (int32_t q = 0; q < N; ++q)
        if (t->target_edge[q] < 0) return "a position's loss does not read probs[target]";
    return NULL;
}

/* the tail, as model.mean_of builds it just after the last position:
 * ((0 + losses[0]) ... + losses[N-1]) * (1 / N), i.e. const 0, the N adds
 * (losses[0] + 0 first: sum() adds its start on the right), const 1/N, mul */
static const char *check_tail(builder_t *b) {
    const arena_t *a = b->a;
    const record_t *r = b->r;
    int32_t N = r->n_pos;
    node_t zero = (node_t)r->pos_end[N - 1], s = -1;
    int ok = a->op[zero] == OP_CONST && a->data[zero] == 0.0;
    for (int32_t q = 0; q < N && ok; ++q) {
        node_t add = zero + 1 + q;
        int64_t e = a->child_start[add];
        ok = a->op[add] == OP_ADD && a->child_start[add + 1] - e == 2
            && a->child[e] == (q == 0 ? r->loss_node[0] : s)
            && a->child[e + 1] == (q == 0 ? zero : r->loss_node[q]);
        s = add;
    }
    node_t c = zero + 1 + N, root = c + 1;
    ok = ok && root == r->root && a->op[c] == OP_CONST && a->data[c] == 1.0 / N
        && a->op[root] == OP_MUL && a->child[a->child_start[root]] == s
        && a->child[a->child_start[root] + 1] == c;
    return ok ? NULL : "the loss is not the mean of the positions' losses";
}

/* With consume, the recorded nodes' rows in the arena are read no more once
 * the graph is copied and its tail checked: their pages go back to the system
 * (they read as zeros after: a released row's; the row at rec_start stays, as
 * the release reads its edge start), and so do the edge columns' but child,
 * which the tape reads in place until tape_pack copies what it keeps
 * (renumber.c keep_read_pairs gives those back). Some 60 bytes a node and 9 an
 * edge where a node-by-node step wrote them. */
/* ... and, first of all (consume), the columns of those rows and edges that
 * the copy and the tail's check do not read (an arena's node column takes as
 * much as the tape's node arrays copy_graph fills: the two are not held at
 * once). Pages given back twice cost nothing. */
#define READ_BY_COPY(name) (!strcmp(#name, "data") || !strcmp(#name, "op") || !strcmp(#name, "tag") \
                            || !strcmp(#name, "operand"))
static const char *give_back_unread(builder_t *b) {
    arena_t *a = b->a;
    int64_t from = b->r->rec_start + 1, rows = a->cap_nodes - from, edge0 = a->child_start[b->r->rec_start];
    if (!b->r->consume || rows <= 0) return NULL;
#define GIVE_BACK(type, name, code, slid, zeroed) \
    if (!READ_BY_COPY(name)) discard_pages(a->name + from, (size_t)rows * sizeof(type));
    ARENA_NODE_COLUMNS(GIVE_BACK)
#undef GIVE_BACK
    discard_pages(a->local_grad + edge0, (size_t)(a->cap_edges - edge0) * sizeof *a->local_grad);
    discard_pages(a->lg_int + edge0, (size_t)(a->cap_edges - edge0) * sizeof *a->lg_int);
    return NULL;
}
#undef READ_BY_COPY

static const char *give_back_rows(builder_t *b) {
    arena_t *a = b->a;
    int64_t from = b->r->rec_start + 1, rows = a->cap_nodes - from;
    if (!b->r->consume || rows <= 0) return NULL;
    /* exponents first: the release after finds them by op byte, and a page of op
     * bytes given back reads 0 where the exponents' page (aligned apart) stays */
    arena_clear_rows(a, from, a->n_nodes, 0);
#define GIVE_BACK(type, name, code, slid, zeroed) discard_pages(a->name + from, (size_t)rows * sizeof(type));
    ARENA_NODE_COLUMNS(GIVE_BACK)
    discard_pages(a->child_start + from + 1, (size_t)rows * sizeof *a->child_start);
    discard_pages(a->local_grad + b->arena_edge0, (size_t)(a->cap_edges - b->arena_edge0) * sizeof *a->local_grad);
    discard_pages(a->lg_int + b->arena_edge0, (size_t)(a->cap_edges - b->arena_edge0) * sizeof *a->lg_int);
#undef GIVE_BACK
    return NULL;
}

tape_t *tape_build(arena_t *a, const record_t *r, const char **why) {
    tape_t *t = calloc(1, sizeof *t);
    if (t == NULL) { *why = "out of memory"; return NULL; }
    t->params_at = -1;
    builder_t b = {0};
    b.a = a;
    b.r = r;
    b.t = t;
    const char *(*const phases[])(builder_t *) = {
        give_back_unread, take_sizes, map_params, copy_graph, check_tail, give_back_rows, declare_derived,
        find_targets,
        count_readers, fill_reads, token_slots, order_pulls, verify_targets,
    };
    *why = NULL;
    for (size_t k = 0; k < sizeof phases / sizeof *phases && *why == NULL; ++k) *why = phases[k](&b);
    free(b.pmap);
    free(b.keys);
    free(b.pair_base);
    free(b.pair_rank);
    free(b.irregular);
    free(b.stack_node);
    free(b.stack_edge);
    b.pmap = NULL;
    if (*why == NULL) *why = tape_pack(t);
    if (*why != NULL && t->pairs_are_child) {  /* dot_pair is child: freed once, if the tape's */
        if (t->child_in_arena) t->dot_pair = NULL;
        t->child = NULL;
    }
    if (*why != NULL) { tape_free(t); return NULL; }
    return t;
}
