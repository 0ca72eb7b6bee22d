/* arena.h: the Value graph in contiguous columns, in plain C99 (no Python.h).
 *
 * A node is an index i into the node columns. Nodes are appended in creation
 * order, which is a topological order: a node's children always have smaller
 * indices. Edges (child index, local gradient) are appended alongside, so the
 * children of node i are edges child_start[i] .. child_start[i + 1] - 1, in the
 * order the operation listed them. That is everything a replay needs: the op
 * code, the constant operand, the children in order; the local gradients are a
 * function of those and the forward values.
 *
 * Releasing to a mark drops every node from the mark on (a training step's or
 * a sample's graph) and bumps the arena's epoch, so handles into the dropped
 * part are recognised as stale: a handle is valid while index < n_nodes and
 * epoch[index] equals the epoch it was created with.
 */
#ifndef MICROGPT_ARENA_H
#define MICROGPT_ARENA_H

#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* What made a node (kept for inspection and replay). */
typedef enum {
    OP_LEAF = 0,  /* Value(x) made by the user: a parameter or an input */
    OP_CONST = 1, /* a plain number an operation wrapped as a leaf */
    OP_ADD = 2,   /* a + b          children (a, b)  local grads (1, 1) */
    OP_MUL = 3,   /* a * b          children (a, b)  local grads (b, a) */
    OP_POW = 4,   /* a ** k         children (a,)    local grad k * a ** (k - 1); operand k */
    OP_LOG = 5,   /* log(a)         children (a,)    local grad 1 / a */
    OP_EXP = 6,   /* exp(a)         children (a,)    local grad exp(a) */
    OP_RELU = 7,  /* max(0, a)      children (a,)    local grad 1.0 if a > 0 else 0.0 */
    OP_COUNT = 8
} op_t;

/* Status codes returned by the functions below; the glue turns them into exceptions. */
typedef enum {
    ARENA_OK = 0,
    ARENA_NOMEM = 1,       /* MemoryError */
    ARENA_ZERODIV = 2,     /* ZeroDivisionError: 0 ** negative */
    ARENA_DOMAIN = 3,      /* ValueError: log of x <= 0, negative ** fractional */
    ARENA_RANGE = 4,       /* OverflowError: exp or pow overflow */
    ARENA_TOO_LARGE = 5    /* MemoryError: more nodes than an int32 index holds */
} status_t;

typedef int32_t node_t;    /* a node index; -1 is "no node" */
typedef uint64_t epoch_t;  /* counts releases; 64 bits never wrap, so a stale handle never passes */

typedef struct {
    /* node columns, n_nodes used of cap_nodes */
    double *data;          /* forward value */
    double *grad;          /* d(root)/d(node), accumulated by backward */
    double *operand;       /* the exponent k of OP_POW; 0 elsewhere */
    uint8_t *op;           /* op_t */
    epoch_t *epoch;        /* arena epoch when the node was created */
    uint32_t *visit;       /* scratch for backward: stamp of the last walk that reached it */
    int64_t *child_start;  /* n_nodes + 1 entries: node i's edges are [child_start[i], child_start[i+1]) */
    int64_t n_nodes, cap_nodes;

    /* edge columns, n_edges used of cap_edges */
    node_t *child;         /* the child's node index */
    double *local_grad;    /* d(node)/d(child) at creation time */
    int64_t n_edges, cap_edges;

    /* backward scratch, grown with the node columns */
    node_t *topo;          /* depth-first post-order of the last walk */
    node_t *stack_node;    /* explicit DFS stack: node, and the next edge to visit */
    int64_t *stack_edge;

    epoch_t cur_epoch;     /* bumped by every release */
    uint32_t cur_visit;    /* bumped by every backward walk */
} arena_t;

int arena_init(arena_t *a);
void arena_free(arena_t *a);
int arena_grow_nodes(arena_t *a, int64_t need);
int arena_grow_edges(arena_t *a, int64_t need);
void arena_release(arena_t *a, int64_t mark);

/* Python's float ** float for real results: status for the cases Python raises on. */
status_t arena_pow(double x, double k, double *out);

/* Backward from root in the reference's order: depth-first post-order over
 * children in order, then the reverse of it. Returns the number of nodes walked
 * (>= 1), or -ARENA_NOMEM. */
int64_t arena_backward(arena_t *a, node_t root);
/* The depth-first order alone, written to a->topo; returns its length. */
int64_t arena_topo(arena_t *a, node_t root);
/* A plain sweep over indices root..0 (also a topological order): not the
 * reference's order, so gradients differ in their last bits. For measurement. */
void arena_backward_by_index(arena_t *a, node_t root);

/* Recompute nodes [from, n_nodes) in creation order from their op, operand
 * and children: the forward half of a replay. Leaves and constants keep their
 * values (a caller sets new leaf values first). Returns ARENA_OK, or the first
 * status an operation raised (the node it stopped at is left as it was). */
status_t arena_replay(arena_t *a, int64_t from);

/* Adam over n parameters at node indices idx, with the reference's arithmetic;
 * zeroes their grads. m, v: n doubles each. step counts from 0. Returns n, or
 * the index of the parameter where Python's arithmetic would have raised (g ** 2
 * overflowing, a division by zero), with *status saying which; the parameters
 * before it are updated, exactly as far as the reference loop gets. */
int64_t arena_adam(arena_t *a, const node_t *idx, int64_t n, double *m, double *v,
                   double lr_t, double beta1, double beta2, double eps, int64_t step,
                   status_t *status);

/* ---- appending nodes: inline, they are the per-operation hot path ---- */

static inline int arena_reserve(arena_t *a, int64_t nodes, int64_t edges) {
    if (a->n_nodes + nodes > a->cap_nodes && arena_grow_nodes(a, a->n_nodes + nodes))
        return ARENA_NOMEM;
    if (a->n_edges + edges > a->cap_edges && arena_grow_edges(a, a->n_edges + edges))
        return ARENA_NOMEM;
    return ARENA_OK;
}

/* Fill node i's columns; its edges [child_start[i], n_edges) are already written. */
static inline node_t arena_set_node(arena_t *a, int64_t i, uint8_t op, double x, double operand) {
    a->data[i] = x;
    a->grad[i] = 0.0;
    a->operand[i] = operand;
    a->op[i] = op;
    a->epoch[i] = a->cur_epoch;
    a->child_start[i + 1] = a->n_edges;
    return (node_t)i;
}

/* Append a node with no children; returns its index or -1 (out of memory). */
static inline node_t arena_leaf(arena_t *a, uint8_t op, double x) {
    if (arena_reserve(a, 1, 0)) return -1;
    return arena_set_node(a, a->n_nodes++, op, x, 0.0);
}

/* Append a node with one child c0 (local grad g0). */
static inline node_t arena_unary(arena_t *a, uint8_t op, double x, double operand,
                                 node_t c0, double g0) {
    assert(c0 >= 0 && c0 < a->n_nodes);
    if (arena_reserve(a, 1, 1)) return -1;
    int64_t e = a->n_edges;
    a->child[e] = c0;
    a->local_grad[e] = g0;
    a->n_edges = e + 1;
    return arena_set_node(a, a->n_nodes++, op, x, operand);
}

/* Append a node with children (c0, c1) and local grads (g0, g1). */
static inline node_t arena_binary(arena_t *a, uint8_t op, double x,
                                  node_t c0, double g0, node_t c1, double g1) {
    assert(c0 >= 0 && c0 < a->n_nodes && c1 >= 0 && c1 < a->n_nodes);
    if (arena_reserve(a, 1, 2)) return -1;
    int64_t e = a->n_edges;
    a->child[e] = c0;
    a->local_grad[e] = g0;
    a->child[e + 1] = c1;
    a->local_grad[e + 1] = g1;
    a->n_edges = e + 2;
    return arena_set_node(a, a->n_nodes++, op, x, 0.0);
}

#endif
