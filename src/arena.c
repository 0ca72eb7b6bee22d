/* arena.c: the columns: growth, release, reclaiming, and the forward half of a replay. */
#include "arena.h"

#include <string.h>

#define INITIAL_NODES 1024

size_t arena_node_bytes(void) {
    return 3 * sizeof(double)       /* data, grad, operand */
        + 2 * sizeof(uint8_t)       /* op, tag */
        + sizeof(epoch_t)           /* epoch */
        + sizeof(uint32_t)          /* visit (backward scratch) */
        + sizeof(void *)            /* held */
        + sizeof(int64_t)           /* child_start */
        + sizeof(node_t)            /* topo (backward scratch) */
        + sizeof(node_t) + sizeof(int64_t);  /* DFS stack (backward scratch) */
}

size_t arena_edge_bytes(void) {
    return sizeof(node_t) + sizeof(double) + sizeof(uint8_t);  /* child, local_grad, lg_int */
}

int arena_init(arena_t *a) {
    memset(a, 0, sizeof *a);
    a->cur_epoch = 1;
    a->cur_visit = 0;
    if (arena_grow_nodes(a, INITIAL_NODES) || arena_grow_edges(a, 2 * INITIAL_NODES)) {
        arena_free(a);
        return OP_NOMEM;
    }
    a->child_start[0] = 0;
    return OP_OK;
}

void arena_free(arena_t *a) {
    free(a->data); free(a->grad); free(a->operand); free(a->op); free(a->tag); free(a->epoch);
    free(a->visit); free(a->held); free(a->child_start); free(a->child); free(a->local_grad); free(a->lg_int);
    free(a->topo); free(a->stack_node); free(a->stack_edge);
    memset(a, 0, sizeof *a);
}

/* realloc one column to cap elements; on failure the old block stays valid */
static int grow(void **p, int64_t cap, size_t size) {
    void *q = realloc(*p, (size_t)cap * size);
    if (q == NULL) return 1;
    *p = q;
    return 0;
}

/* Double the node columns until need fits. Every column is grown before the
 * capacity is raised, so a failure leaves the arena consistent. */
int arena_grow_nodes(arena_t *a, int64_t need) {
    int64_t cap = a->cap_nodes ? a->cap_nodes : INITIAL_NODES;
    while (cap < need) cap *= 2;
    if (cap > (int64_t)INT32_MAX) {
        if (need > (int64_t)INT32_MAX) return OP_TOO_LARGE;
        cap = INT32_MAX;
    }
    if (grow((void **)&a->data, cap, sizeof(double)) ||
        grow((void **)&a->grad, cap, sizeof(double)) ||
        grow((void **)&a->operand, cap, sizeof(double)) ||
        grow((void **)&a->op, cap, sizeof(uint8_t)) ||
        grow((void **)&a->tag, cap, sizeof(uint8_t)) ||
        grow((void **)&a->epoch, cap, sizeof(epoch_t)) ||
        grow((void **)&a->child_start, cap + 1, sizeof(int64_t)) ||
        grow((void **)&a->topo, cap, sizeof(node_t)) ||
        grow((void **)&a->stack_node, cap, sizeof(node_t)) ||
        grow((void **)&a->stack_edge, cap, sizeof(int64_t)))
        return OP_NOMEM;
    /* new visit and held rows start unvisited and not held */
    uint32_t *visit = realloc(a->visit, (size_t)cap * sizeof(uint32_t));
    if (visit == NULL) return OP_NOMEM;
    memset(visit + a->cap_nodes, 0, (size_t)(cap - a->cap_nodes) * sizeof(uint32_t));
    a->visit = visit;
    void **held = realloc(a->held, (size_t)cap * sizeof(void *));
    if (held == NULL) return OP_NOMEM;
    memset(held + a->cap_nodes, 0, (size_t)(cap - a->cap_nodes) * sizeof(void *));
    a->held = held;
    a->cap_nodes = cap;
    return OP_OK;
}

int arena_grow_edges(arena_t *a, int64_t need) {
    int64_t cap = a->cap_edges ? a->cap_edges : 2 * INITIAL_NODES;
    while (cap < need) cap *= 2;
    if (grow((void **)&a->child, cap, sizeof(node_t)) ||
        grow((void **)&a->local_grad, cap, sizeof(double)) ||
        grow((void **)&a->lg_int, cap, sizeof(uint8_t)))
        return OP_NOMEM;
    a->cap_edges = cap;
    return OP_OK;
}

void arena_release(arena_t *a, int64_t mark) {
    if (mark < 0 || mark >= a->n_nodes) return;
    a->n_nodes = mark;
    a->n_edges = a->child_start[mark];
    /* every handle made before now fails the epoch check if its index is >= mark */
    a->cur_epoch++;
}

int64_t arena_reclaim(arena_t *a, int64_t from, int64_t *moved) {
    int64_t n = a->n_nodes;
    if (from < 0) from = 0;
    *moved = n;
    if (from >= n) return 0;
    node_t *child = a->child;
    int64_t *start = a->child_start;
    double *local_grad = a->local_grad;
    uint8_t *lg_int = a->lg_int;
    double *data = a->data, *grad = a->grad, *operand = a->operand;
    uint8_t *op = a->op, *tag = a->tag;
    epoch_t *epoch = a->epoch;
    uint32_t *visit = a->visit;
    void **held = a->held;
    /* mark: a live node makes its children live (they lie below it); a live
     * node's visit column gets a fresh stamp (a backward's scratch, free now) */
    uint32_t live = arena_stamp(a);
    for (int64_t i = n - 1; i >= from; --i) {
        if (visit[i] != live && !held[i]) continue;
        visit[i] = live;
        for (int64_t e = start[i], end = start[i + 1]; e < end; ++e)
            if (child[e] >= from) visit[child[e]] = live;
    }

    /* k[i]: live node i's new row (the backward's topo scratch; only live rows
     * are written, and only live rows are read: a live node's children are live).
     * The live nodes below the first reclaimed one stay where they are. */
    node_t *k = a->topo;
    int64_t i = from;
    for (; i < n && visit[i] == live; ++i) k[i] = (node_t)i;
    *moved = i;

    /* slide, a run of consecutive live nodes [i0, i1) at a time: its rows move
     * down to w, its edges down to we (moves, as blocks), its children are
     * renumbered. Rows and edges only move down, and each run's bounds are read
     * before the rows below them are written. */
    int64_t w = i, we = start[i];
    while (i < n) {
        while (i < n && visit[i] != live) ++i;
        if (i == n) break;
        int64_t i0 = i;
        while (i < n && visit[i] == live) ++i;
        int64_t len = i - i0, e0 = start[i0], ne = start[i] - e0, shift = e0 - we;
        for (int64_t j = 0; j < len; ++j) k[i0 + j] = (node_t)(w + j);
        for (int64_t j = 0; j < ne; ++j) {
            node_t c = child[e0 + j];
            child[we + j] = c >= from ? k[c] : c;  /* c < its parent: already renumbered */
        }
        for (int64_t j = 0; j < ne; ++j) local_grad[we + j] = local_grad[e0 + j];
        for (int64_t j = 0; j < ne; ++j) lg_int[we + j] = lg_int[e0 + j];
        for (int64_t j = 1; j <= len; ++j) start[w + j] = start[i0 + j] - shift;
        for (int64_t j = 0; j < len; ++j) {
            data[w + j] = data[i0 + j];
            grad[w + j] = grad[i0 + j];
            operand[w + j] = operand[i0 + j];
            op[w + j] = op[i0 + j];
            tag[w + j] = tag[i0 + j];
            epoch[w + j] = epoch[i0 + j];
            held[w + j] = held[i0 + j];
        }
        w += len;
        we += ne;
    }
    int64_t freed = n - w;
    a->n_nodes = w;
    a->n_edges = we;
    a->cur_epoch++;
    return freed;
}

status_t arena_replay(arena_t *a, int64_t from, int *custom) {
    double *d = a->data;
    const node_t *child = a->child;
    double x[2];
    *custom = 0;
    for (int64_t i = from < 0 ? 0 : from; i < a->n_nodes; ++i) {
        int64_t e = a->child_start[i], n = a->child_start[i + 1] - e;
        int op = a->op[i];
        if (op == OP_CUSTOM) { *custom = 1; return OP_OK; }
        for (int64_t j = 0; j < n && j < 2; ++j) x[j] = d[child[e + j]];
        status_t s = op_apply(op, x, a->operand[i], a->operand[i] - 1.0, &d[i], &a->local_grad[e]);
        if (s != OP_OK) return s;
        arena_tag(a, i, op, (a->tag[i] & TAG_K_INT) != 0);
        a->grad[i] = 0.0;
        a->tag[i] |= TAG_GRAD_INT;
    }
    return OP_OK;
}
