/* walk.c: the reference's depth-first walk over a recorded step, as ranks
 * (order.c sorts the pull lists by them and checks the rotating nodes' rule
 * against walks for other targets). */
#include "builder.h"

/* The walk finished product j of compact chain v (its k-th rank). Most
 * chains' products take consecutive ranks, the chain's own rank following
 * the last (a matrix's rows after the first, at every position after the
 * first: their operands were all reached before): those ranks are derived
 * from the chain's (pull_rank) and never written, and the pages of
 * pair_rank they would fill are never touched (at n_layer 6, n_embd 128,
 * block 128 it would hold 166 M ranks). A chain whose walk ranked another
 * node between two of its products is irregular: its ranks are written.
 * rank[v] holds its first product's rank, also once v is finished (nothing
 * compares a compact chain's own rank: its readers take its products'). */
static inline void product_done(builder_t *b, int32_t v, int64_t j, int32_t k) {
    if (j == 0) {
        b->irregular[v] = 0;
        b->rank[v] = k;
    } else if (k != b->rank[v] + j || b->irregular[v]) {
        int32_t *pr = b->pair_rank + b->pair_base[v];
        if (!b->irregular[v])
            for (int64_t i = 0; i < j; ++i) pr[i] = b->rank[v] + (int32_t)i;
        pr[j] = k;
        b->irregular[v] = 1;
    }
}

/* Room for the walk's stack: `depth` entries. 0, or -1 out of memory. */
static int stack_room(builder_t *b, int64_t depth) {
    if (depth <= b->stack_cap) return 0;
    int64_t cap = 2 * depth;
    int32_t *node = realloc(b->stack_node, (size_t)cap * sizeof *node);
    if (node != NULL) b->stack_node = node;
    int32_t *edge = realloc(b->stack_edge, (size_t)cap * sizeof *edge);
    if (edge != NULL) b->stack_edge = edge;
    if (node == NULL || edge == NULL) return -1;
    b->stack_cap = cap;
    return 0;
}

/* The walk through compact chain v (walk, below) from its operand *e: the
 * operands already reached and the leaves, and the products they finish (past
 * a product's two operands, the walk down its inner nodes would finish it,
 * then the constant 0 or the addition that reads it, which nothing else
 * reads), up to the first operand to descend into (returned, *e past it) or
 * the end (-1; the last product is the caller's to finish). A row's weights
 * (parameters, build.c row_of_params) are leaves: not visited. */
static int32_t chain_step(builder_t *b, int32_t v, int row, int64_t *e_at, int64_t end, int32_t *k_at) {
    const int32_t *start = b->t->child_start, *list = b->t->child + start[v];
    int32_t *rank = b->rank, k = *k_at, c = -1;
    int64_t e = *e_at;
    while (e < end) {
        if (e > 0 && !(e & 1)) {  /* product e / 2 - 1 finished (its rank derived if regular) */
            int64_t j = e / 2 - 1;
            if (j == 0 || b->irregular[v] || k != rank[v] + j) product_done(b, v, j, k);
            k++;
        }
        if (row && !(e & 1)) ++e;  /* w_j */
        c = row ? list[1 + (e >> 1)] : list[e];
        ++e;
        if (rank[c] == -1) {
            if (start[c] != start[c + 1]) break;
            rank[c] = 0;  /* a leaf (walk) */
        }
        c = -1;
    }
    *e_at = e;
    *k_at = k;
    return c;
}

/* The rank of every local node in the reference's depth-first post-order
 * (children in order, each node once), as the copied edges are now, but for
 * the leaves: a leaf is finished as soon as entered, so the others' order is
 * the same whether it takes a rank or not, and no leaf's rank is compared (a
 * leaf reads nothing: it is no node's parent). A reached leaf of the step is
 * marked 0; a row's weights (parameters) are not visited at all, halving the
 * walk over a matrix's rows, and their products' ranks stay consecutive. The walk
 * from the mean enters sum(losses) first, whose additions (check_tail) enter
 * losses[0], then losses[1], ...: the same walk as one from each loss in turn
 * with one visited set. -2 marks a node entered and not yet finished. 0, or
 * -1 out of memory. */
int order_walk(builder_t *b) {
    const tape_t *t = b->t;
    const int32_t *start = t->child_start, *child = t->child;
    int32_t *rank = b->rank, k = 0;
    for (int32_t i = 0; i < t->n_nodes; ++i) rank[i] = -1;  /* (a chain not reached: its products neither) */
    for (int32_t q = 0; q < t->n_pos; ++q) {
        int32_t v = t->loss_node[q];
        int compact = is_compact(t, v), row = t->op[v] == OP_ROW_DOT;
        /* e: the next edge, or of a compact chain the next operand (chain_operand) */
        int64_t e = compact ? 0 : start[v], end = compact ? dot_len(t, v) : start[v + 1], top = 0, e0 = compact ? 0 : e;
        if (rank[v] != -1) continue;
        rank[v] = -2;
        for (;;) {
            while (e < end) {
                int32_t c;
                if (compact) {
                    if ((c = chain_step(b, v, row, &e, end, &k)) < 0) break;
                } else {
                    c = child[e++];
                    if (rank[c] != -1) continue;
                    if (start[c] == start[c + 1]) { rank[c] = 0; continue; }  /* a leaf (see above) */
                }
                if (stack_room(b, top + 1) < 0) return -1;
                b->stack_node[top] = v;  /* descend into c; come back to v's edge e */
                b->stack_edge[top++] = (int32_t)e;
                rank[c] = -2;
                compact = is_compact(t, c);
                row = t->op[c] == OP_ROW_DOT;
                if (t->kind[c] == K_DOT && !compact) c = t->aux[c];  /* a chain: its first product (below) */
                v = c;
                e = e0 = compact ? 0 : start[c];
                end = compact ? dot_len(t, c) : start[c + 1];
            }
            if (compact) product_done(b, v, (e - e0) / 2 - 1, k++);  /* its last product */
            if (!compact) rank[v] = k;  /* every child done: post-order */
            k++;
            if (t->kind[v] == K_INTERIOR) {
                /* a chain's product (chains are read once, so met only here): the
                 * walk down its additions would finish it, then the constant 0
                 * after the first, then the addition that reads it; then the
                 * next product, or, after the top, the chain's reader */
                int32_t a = v + 1;
                if (t->kind[a] == K_CONST) rank[a++] = k++;
                rank[a] = k++;
                if (t->kind[a] != K_DOT) {
                    v = a + 1;
                    rank[v] = -2;
                    e = e0 = start[v];
                    end = start[v + 1];
                    continue;
                }
            }
            if (top == 0) break;
            v = b->stack_node[--top];
            e = b->stack_edge[top];
            compact = is_compact(t, v);
            row = t->op[v] == OP_ROW_DOT;
            e0 = compact ? 0 : start[v];
            end = compact ? dot_len(t, v) : start[v + 1];
        }
    }
    return 0;
}
