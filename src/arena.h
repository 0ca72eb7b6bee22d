/* arena.h: the Value graph in contiguous columns, in plain C99 (no Python.h).
 * (~450 lines: the layout, every arena function's contract, and the
 * per-operation path's appends, inline here so that every operation inlines them.)
 *
 * A node is an index i into the node columns. Nodes are appended in creation
 * order, which is a topological order: a node's children always have smaller
 * indices. Edges (child index, local gradient) are appended alongside, so the
 * children of node i are edges child_start[i] .. child_start[i + 1] - 1, in the
 * order the operation listed them. With the op code and the constant operand
 * that is everything a replay needs (ops.h computes a node from them).
 *
 * Releasing to a mark drops every node from the mark on (a training step's or
 * a sample's graph) and bumps the arena's epoch, so handles into the dropped
 * part are recognised as stale: a handle is valid while index < n_nodes and
 * epoch[index] equals the epoch it was created with (the second alone says it:
 * a row from n_nodes on holds 0, which no handle has, or the epoch of a node a
 * reclaim or a drop took, which no live handle named; a release, which makes
 * handles stale, clears the rows it drops, and rows are written with later
 * epochs only after).
 *
 * The held column names each node's live handle (an opaque pointer: the
 * Python object, which C never reads), or NULL. A new node's row starts NULL
 * or names its new handle, so below n_nodes it only ever names live handles
 * (rows past the end may still name handles of released nodes: nothing reads
 * them).
 *
 * Reclaiming (arena_reclaim) drops the nodes no handle reaches and slides the
 * rest down in order, each with its epoch and its held entry: the owner then
 * re-points each moved handle at its new row, and a stale one stays stale (the
 * nodes of its epoch all lie below the mark it was released at, and sliding
 * only moves nodes down).
 */
#ifndef MICROGPT_ARENA_H
#define MICROGPT_ARENA_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

#if defined(__GNUC__)
#define ARENA_LIKELY(x) __builtin_expect(!!(x), 1)  /* a hint for the register allocator's hot path */
/* the per-operation appends: inlined into each caller even where it calls them
 * twice, so an operation's code is specialised for its op code */
#define ARENA_APPEND static inline __attribute__((always_inline))
/* a fact the compiler cannot see (a row index fits a node_t): the caller's test
 * of a returned index against -1 then costs nothing */
#define ARENA_ASSUME(x) do { if (!(x)) __builtin_unreachable(); } while (0)
/* a compiler barrier (no instruction): the fields read before it are read again
 * after it, rather than held in registers meanwhile */
#define ARENA_FORGET_LOADS() __asm__ __volatile__("" ::: "memory")
/* a plain loop that clears or moves memory stays a loop (see zero() in arena.c) */
#if !defined(__clang__)
#define ARENA_NOT_MEMSET __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define ARENA_NOT_MEMSET
#endif
#else
#define ARENA_LIKELY(x) (x)
#define ARENA_NOT_MEMSET
#define ARENA_APPEND static inline
#define ARENA_ASSUME(x) ((void)0)
#define ARENA_FORGET_LOADS() ((void)0)
#endif

typedef int32_t node_t;    /* a node index; -1 is "no node" */
typedef uint64_t epoch_t;  /* counts releases and reclaims; 64 bits never wrap, so a stale handle never passes */
typedef uint32_t edge_t;   /* an edge index (child_start): the edge columns hold at most UINT32_MAX edges */
typedef uint8_t stamp_t;   /* a walk's mark (visit): 255 walks, then the column is cleared (arena_stamp) */

/* The columns, each stated once: X(type, name, code, slid, zeroed). code: its
 * array.array typecode (Arena.column; 0: not shown, an opaque pointer); slid:
 * arena_reclaim moves it with its node (or edge); zeroed: 1, new rows start at 0;
 * 2, every row from n_nodes on is 0 (new rows, and the rows a release, a reclaim
 * or a drop takes are cleared: an append then has nothing to write there), where
 * only an OP_POW or OP_CUSTOM row holds anything else (the only appends that
 * write an operand), so only those rows are cleared (a byte read a row, not 8
 * written); 3, as 2 (every row), after a release only: the rows a reclaim or a
 * drop takes keep their epochs, as no live handle names those nodes
 * (arena_clear_rows). A grad is written by its append (8 bytes in lines the
 * append writes anyway, where a clear would write every dropped row's line).
 * The struct, the bytes a node takes, growth, freeing, the reclaim's slide
 * and Arena.column all expand these tables. */
#define ARENA_NODE_COLUMNS(X)  /* n_nodes rows used of cap_nodes */ \
    X(double,   data,       'd', 1, 0)  /* forward value */ \
    X(double,   grad,       'd', 1, 0)  /* d(root)/d(node), accumulated by backward; 0 at the append */ \
    X(double,   operand,    'd', 1, 2)  /* the exponent k of OP_POW (and of an OP_CUSTOM power); 0 elsewhere */ \
    X(uint8_t,  op,         'B', 1, 0)  /* op_t */ \
    X(uint8_t,  tag,        'B', 1, 0)  /* TAG_* bits: which of the node's numbers the pure engine holds as ints */ \
    X(epoch_t,  epoch,      'Q', 1, 3)  /* arena epoch when the node was created; 0: no node */ \
    X(void *,   held,       0,   1, 1)  /* the node's live handle, or NULL (opaque here; set and cleared by the owner) */ \
    X(stamp_t,  visit,      'B', 0, 1)  /* scratch: stamp of the last walk that reached it (backward, reclaim) */ \
    X(node_t,   topo,       'i', 0, 0)  /* scratch: depth-first post-order of the last walk (a reclaim's new rows) */ \
    X(node_t,   stack_node, 'i', 0, 0)  /* scratch: the depth-first walk's frames (backward.c says how) ... */ \
    X(int64_t,  stack_edge, 'q', 0, 0)  /* ... and a many-children frame's next edge and node */
#define ARENA_EDGE_COLUMNS(X)  /* n_edges rows used of cap_edges */ \
    X(node_t,   child,      'i', 0, 0)  /* the child's node index (renumbered by a reclaim, not copied) */ \
    X(double,   local_grad, 'd', 1, 0)  /* d(node)/d(child) */ \
    X(uint8_t,  lg_int,     'B', 1, 0)  /* 1 where the pure engine's local grad is an int */

#define ARENA_COLUMN_FIELD(type, name, code, slid, zeroed) type *name;
typedef struct {
    ARENA_NODE_COLUMNS(ARENA_COLUMN_FIELD)
    edge_t *child_start;   /* n_nodes + 1 rows: node i's edges are [child_start[i], child_start[i+1]) */
    int64_t n_nodes, cap_nodes;

    ARENA_EDGE_COLUMNS(ARENA_COLUMN_FIELD)
    int64_t n_edges, cap_edges;

    epoch_t cur_epoch;     /* bumped by every release and every reclaim */
    stamp_t cur_visit;     /* bumped by every walk (backward, reclaim) */
    int64_t compact_made;  /* OP_DOT nodes appended so far (never lowered): backward looks
                            * for one in its order only where some were made */
} arena_t;
#undef ARENA_COLUMN_FIELD

/* Int tags. The pure engine keeps a Python int where the reference's arithmetic
 * gives one (Value(2), int + int, relu's max(0, x), a grad before any float reached
 * it); the columns keep the double and these bits say to present it as an int.
 * Ints are exact in a double below 2**53 (beyond, the double is rounded: the one
 * place the engines part), and an int is never a negative zero: an int-tagged
 * zero is stored as +0.0, so the doubles computed from it are the pure engine's. */
#define TAG_DATA_INT 1     /* data is an int */
#define TAG_GRAD_INT 2     /* grad is an int (every node starts with the int 0) */
#define TAG_K_INT 4        /* OP_POW: the exponent k was an int */
#define TAG_NO_BACKWARD 8  /* an OP_DOT node: the arena's backward refuses it (arena_push_dot) */
#define TAG_TWO_EDGES 16   /* an add or a multiply (arena_push_binary): backward takes its two
                            * edges without a loop, and without reading where they end */
#define TAG_ROW_DOT 32     /* an OP_DOT node whose children are a row: w0, x0, x1, ... (arena_push_dot) */

/* Bytes the columns take per node (node columns and backward scratch) and per
 * edge: the one place that knows the layout's sizes. */
size_t arena_node_bytes(void);
size_t arena_edge_bytes(void);
/* The column called name, for inspection: its rows (*rows of them), its
 * array.array typecode and the bytes of one row. Returns 0 for a name that is
 * not a shown column. arena_column_names(): every column's name, ", " between. */
int arena_column(const arena_t *a, const char *name, const void **rows, int64_t *n, char *code, size_t *size);
const char *arena_column_names(void);

int arena_init(arena_t *a);
void arena_free(arena_t *a);
int arena_grow_nodes(arena_t *a, int64_t need);
int arena_grow_edges(arena_t *a, int64_t need);
void arena_release(arena_t *a, int64_t mark);
/* Rows [from, to) of every cleared column (zeroed 2 and 3 in ARENA_NODE_COLUMNS)
 * back to 0: the rows a release (released 1), a reclaim or a drop takes. */
void arena_clear_rows(arena_t *a, int64_t from, int64_t to, int released);

/* Reclaim the nodes of [from, n_nodes) that nothing reaches (reclaim.c). A
 * node is live if held (a handle names it) or a child of a live node:
 * children have smaller indices than their parents, so one sweep from the top
 * down marks everything reachable. Live nodes then slide down in creation
 * order (their columns, edges, epochs and held entries with them; child
 * indices remapped), so children stay below parents and every node keeps its
 * floats. Nodes below from are neither moved
 * nor reclaimed (they may still be children). The epoch is bumped: whatever
 * cached node indices checks it. Returns the number of nodes reclaimed; the
 * live nodes that moved are the rows from *moved to n_nodes. */
int64_t arena_reclaim(arena_t *a, int64_t from, int64_t *moved);
/* Drop the nodes on top that no handle names, down to floor at most, where
 * there are `least` or more of them (else drop none): nothing reaches such a
 * node (its parents lie above it, dropped before it), so this is a reclaim
 * that moves nothing, of the nodes a dropped top handle leaves (the last of a
 * graph's handles to go is most often its top's). The rows are cleared as a
 * release clears them; the epoch is not bumped, as no handle names a dropped
 * node. Returns the number dropped. */
int64_t arena_pop(arena_t *a, int64_t floor, int64_t least);
/* The first row from i on (i itself, or below n_nodes) that names a handle, or
 * n_nodes: how the owner finds the handles of the rows a reclaim moved. */
int64_t arena_next_held(const arena_t *a, int64_t i);

/* A fresh stamp for a walk that marks nodes in the visit column (a backward's
 * depth-first order, a reclaim's live nodes): no node carries it yet. A byte a
 * node (denser for the walk's random tests than a wider stamp): once every 255
 * walks the column is cleared (arena_clear_stamps). */
void arena_clear_stamps(arena_t *a);
static inline stamp_t arena_stamp(arena_t *a) {
    stamp_t stamp = ++a->cur_visit;
    if (stamp == 0) {  /* wrapped */
        arena_clear_stamps(a);
        stamp = a->cur_visit = 1;
    }
    return stamp;
}

/* backward.c: the reference's order. The depth-first post-order from root over
 * children in order, each node once, written to a->topo without the leaves
 * (the root always); returns its length. */
int64_t arena_topo(arena_t *a, node_t root);
/* Backward from root: grad[root] = 1, then for each node of the post-order
 * reversed, for each edge in order, child.grad += local_grad * node.grad.
 * Returns the number of nodes walked; or -2 where the walk meets a compact sum
 * (OP_DOT, arena_push_dot), whose terms it cannot add in the reference's order
 * (before any gradient is written). */
int64_t arena_backward(arena_t *a, node_t root);

/* Recompute nodes [from, n_nodes) in creation order from their op, operand
 * and children (ops.h), zeroing their grads: the forward half of a replay.
 * Leaves and constants keep their values (a caller sets new leaf values
 * first). Returns OP_OK, or the first status an operation raised (the node it
 * stopped at is left as it was). A custom node cannot be recomputed: the
 * replay stops there with OP_OK and *custom set. */
status_t arena_replay(arena_t *a, int64_t from, int *custom);

/* adam.c: Adam over n parameters at node indices idx, with the reference's
 * arithmetic; zeroes their grads. m, v: n doubles each. step counts from 0.
 * Returns n, or the index of the parameter where Python's arithmetic would
 * have raised (g ** 2 overflowing, a division by zero), with *status saying
 * which; the parameters before it are updated, as far as the reference loop
 * gets. one_block: idx[i] == idx[0] + i for every i (the caller knows it; the
 * parameters are then read and written as blocks). No index may appear twice
 * (a block reads every grad before it zeroes any). t: the exponent of the bias
 * corrections, step + 1 as Python computes it (a double, as float ** t takes it). */
int64_t arena_adam(arena_t *a, const node_t *idx, int one_block, int64_t n, double *m, double *v,
                   double lr_t, double beta1, double beta2, double eps, double t,
                   status_t *status);

/* pow(g, 2.0) and pow(x, 0.5), the same doubles, mostly without calling pow (adam.c) */
double adam_square(double g);
double adam_sqrt(double x);
/* the lanes Adam takes (lanes.h's LANES_*), capped at cap from now on where cap >= 0 (for tests) */
int adam_lanes(int cap);

/* ---- appending nodes: inline, they are the per-operation hot path ---- */

static inline int arena_reserve(arena_t *a, int64_t nodes, int64_t edges) {
    if (a->n_nodes + nodes > a->cap_nodes && arena_grow_nodes(a, a->n_nodes + nodes))
        return OP_NOMEM;
    if (a->n_edges + edges > a->cap_edges && arena_grow_edges(a, a->n_edges + edges))
        return OP_NOMEM;
    return OP_OK;
}

/* Fill node i's columns, its epoch cur (the arena's, which the caller read); its
 * edges [child_start[i], n_edges) are already written.
 * Not its held row: rows past the end may still name handles of released or
 * moved nodes, so each append below either clears it or is followed at once by
 * its maker noting the node's handle there (arena_push_binary).
 * The stores go by type: doubles, then 64-bit integers, then bytes, each
 * column's pointer read just before it is written. A byte store may alias the
 * struct and a 64-bit one its counters, so a field read before such a store
 * and needed after it is read twice; in this order none is, and few values are
 * live at once (no registers to save on the per-operation path). */
ARENA_APPEND node_t arena_set_node(arena_t *a, int64_t i, uint8_t op, double x, double operand,
                                    uint8_t tag, epoch_t cur) {
    int64_t n_edges = a->n_edges;
    a->data[i] = x;
    a->grad[i] = 0.0;  /* written here, in the lines the append writes anyway: a drop clears no grads */
    /* its operand is 0 already (a cleared column: ARENA_NODE_COLUMNS) */
    uint64_t bits;
    memcpy(&bits, &operand, sizeof bits);
    if (bits != 0) a->operand[i] = operand;  /* (not +0.0, the callers' constant: no test left) */
    a->epoch[i] = cur;
    a->child_start[i + 1] = n_edges;
    uint8_t *opc = a->op, *tg = a->tag;
    opc[i] = op;
    tg[i] = tag;
    return (node_t)i;
}

/* Append a node with no children; returns its index or -1 (out of memory). */
static inline node_t arena_leaf(arena_t *a, uint8_t op, double x) {
    if (arena_reserve(a, 1, 0)) return -1;
    a->held[a->n_nodes] = NULL;
    return arena_set_node(a, a->n_nodes++, op, x, 0.0, TAG_GRAD_INT, a->cur_epoch);
}

/* Append a node of op over n children c (n <= 2 here, or any n for OP_CUSTOM)
 * with value x and local grads lg. */
static inline node_t arena_node(arena_t *a, uint8_t op, double x, double operand,
                                int n, const node_t *c, const double *lg) {
    if (arena_reserve(a, 1, n)) return -1;
    int64_t e = a->n_edges;
    for (int j = 0; j < n; ++j) {
        assert(c[j] >= 0 && c[j] < a->n_nodes);
        a->child[e + j] = c[j];
        a->local_grad[e + j] = lg[j];
        a->lg_int[e + j] = 0;
    }
    a->n_edges = e + n;
    a->held[a->n_nodes] = NULL;
    return arena_set_node(a, a->n_nodes++, op, x, operand, TAG_GRAD_INT, a->cur_epoch);
}

/* The int tags of a + b (OP_ADD) or a * b (OP_MUL), from the operands'
 * TAG_DATA_INT bits da, db (0 or 1): the local grads' lg_int, written to lgi[0..1]
 * (add (1, 1), mul (b, a)), and the node's TAG_DATA_INT bit, returned (int op int
 * is an int). Branch-free: the per-operation path runs it on every add and mul. */
ARENA_APPEND int binary_tags(int op, int da, int db, uint8_t *lgi) {
    assert((da | db) <= 1);
    int add = op == OP_ADD;
    lgi[0] = (uint8_t)(add | db);
    lgi[1] = (uint8_t)(add | da);
    return da & db;
}

/* ---- the per-operation path's appends: the caller made room (arena_reserve) ---- */

/* Append a number an operation wrapped as an OP_CONST leaf; is_int: it was a
 * Python int. Returns its index. */
ARENA_APPEND node_t arena_push_const(arena_t *a, double c, int is_int) {
    assert(a->n_nodes < a->cap_nodes);
    a->held[a->n_nodes] = NULL;  /* a constant has no handle */
    return arena_set_node(a, a->n_nodes++, OP_CONST, c, 0.0,
                          (uint8_t)(TAG_GRAD_INT | (is_int ? TAG_DATA_INT : 0)), a->cur_epoch);
}

/* x + y (OP_ADD) or x * y (OP_MUL) over nodes x and y appended: its value and
 * local grads (ops.h), its edges and its int tags; its epoch in *epoch; the
 * caller notes its handle in its held row at once (nothing runs in between).
 * Returns its index, or -1 with nothing appended where two ints give a result
 * no double holds (inf: the pure engine's int is exact, and the caller refuses
 * it). try: the per-operation path's attempt, which also returns -1 where the
 * arena has no room for the node and its two edges or both operands are ints
 * (rare in a model, left to the caller's generic path, which checks the
 * overflow): its node is then always a float's. The room is checked first, and
 * the counters read again where they are used rather than held through the
 * arithmetic: fewer registers live at once. */
ARENA_APPEND node_t arena_binary_at(arena_t *a, int op, node_t x, node_t y, int try,
                                    epoch_t *epoch) {
    assert(x >= 0 && x < a->n_nodes && y >= 0 && y < a->n_nodes);
    if (try && (a->n_nodes >= a->cap_nodes || a->n_edges + 2 > a->cap_edges)) return -1;
    /* the children first, while their indices are at hand (rows past the end: a
     * refused operation leaves them as unread as before) */
    int64_t e = a->n_edges;
    node_t *child = a->child;
    child[e] = x;
    child[e + 1] = y;
    const double *data = a->data;
    const uint8_t *tag = a->tag;
    double out, lg[2];
    if (op == OP_ADD)
        op_add(data[x], data[y], &out, lg);
    else
        op_mul(data[x], data[y], &out, lg);
    uint8_t lgi[2];
    int data_int = binary_tags(op, tag[x] & TAG_DATA_INT, tag[y] & TAG_DATA_INT, lgi);
    if (data_int) {
        if (try || !isfinite(out)) return -1;  /* nothing appended */
        /* an int is never -0.0: 0 * -1 is the int 0 (an int sum is never -0.0, as
         * no int-tagged operand is) */
        if (op == OP_MUL) out += 0.0;
    }
    /* the columns written below are read again there, not held since the checks
     * (fewer registers live at once on the per-operation path, fewer to save) */
    ARENA_FORGET_LOADS();
    int64_t i = a->n_nodes;
    epoch_t cur = a->cur_epoch;
    assert(i < a->cap_nodes && e + 2 <= a->cap_edges);
    ARENA_ASSUME(i >= 0 && i < INT32_MAX);  /* cap_nodes <= INT32_MAX (arena_grow_nodes) */
    uint8_t *lg_int = a->lg_int;
    lg_int[e] = lgi[0];
    lg_int[e + 1] = lgi[1];
    a->local_grad[e] = lg[0];
    a->local_grad[e + 1] = lg[1];
    a->n_edges = e + 2;
    a->n_nodes = i + 1;
    arena_set_node(a, i, (uint8_t)op, out, 0.0,
                   (uint8_t)(TAG_GRAD_INT | TAG_TWO_EDGES | (data_int ? TAG_DATA_INT : 0)), cur);
    *epoch = cur;
    return (node_t)i;
}

/* arena_binary_at where the caller made room (arena_reserve). */
ARENA_APPEND node_t arena_push_binary(arena_t *a, int op, node_t x, node_t y) {
    epoch_t epoch;
    return arena_binary_at(a, op, x, y, 0, &epoch);
}

/* arena_binary_at's attempt (try): -1 for no room or two ints too. */
ARENA_APPEND node_t arena_try_binary(arena_t *a, int op, node_t x, node_t y, epoch_t *epoch) {
    return arena_binary_at(a, op, x, y, 1, epoch);
}

/* Append sum(w_k * x_k) over n >= 1 pairs compactly (a recorded step's, or a
 * forward's whose values only are read: a sampler's): the
 * constant 0 (sum's start, the int 0) and one OP_DOT node with the value
 * the chain's nodes compute: w0 * x0 + 0, then + w_k * x_k, left to right
 * (every product a float: an int times an int takes the node-by-node path).
 * Its children, written by the caller at child[n_edges ..], come in one of
 * two forms: pairs (row 0), 2 n children w0, x0, w1, x1, ...; or a row
 * (row 1, TAG_ROW_DOT), n + 1 children w0, x0, x1, ..., where the weights
 * are the consecutive nodes w0, w0 + 1, ..., w0 + n - 1 (a matrix row's
 * parameters: half the edges). arena_dot_operand reads either form as pairs.
 * Its inner nodes are not made and its edges' local grads are not written
 * (each is its product's other factor: Value._local_grads derives them; writing
 * them would touch some 9 bytes an edge that nothing reads, 200 MB at n_layer
 * 4, n_embd 64, block 64): a
 * tape's builder takes the chain whole (src/tape), and the arena's backward
 * refuses the node (TAG_NO_BACKWARD; its order inside the chain is the walk's
 * through the inner nodes, which a node of 2 n edges cannot follow). A row's
 * weights are reached through w0's edge only: nothing may reclaim while one is
 * in the arena (the caller makes rows only while a step is recorded). The
 * caller made room for 2 nodes and 2 n edges and notes the top's handle.
 * Returns the top's index. */
static inline node_t arena_dot_operand(const arena_t *a, int64_t i, int64_t k) {
    const node_t *c = a->child + a->child_start[i];
    if (!(a->tag[i] & TAG_ROW_DOT)) return c[k];
    return k % 2 ? c[1 + k / 2] : c[0] + (node_t)(k / 2);
}
static inline node_t arena_push_dot(arena_t *a, int64_t n, int row) {
    assert(n >= 1 && a->n_nodes + 2 <= a->cap_nodes && a->n_edges + 2 * n <= a->cap_edges);
    const double *data = a->data;
    const node_t *c = a->child + a->n_edges;
    double acc;
    if (row) {
        const double *w = data + c[0];
        acc = w[0] * data[c[1]] + 0.0;
        for (int64_t k = 1; k < n; ++k) acc = acc + w[k] * data[c[1 + k]];
    } else {
        acc = data[c[0]] * data[c[1]] + 0.0;
        for (int64_t k = 1; k < n; ++k) acc = acc + data[c[2 * k]] * data[c[2 * k + 1]];
    }
    a->held[a->n_nodes] = NULL;
    arena_set_node(a, a->n_nodes++, OP_CONST, 0.0, 0.0, TAG_GRAD_INT | TAG_DATA_INT, a->cur_epoch);
    a->n_edges += row ? n + 1 : 2 * n;
    int64_t i = a->n_nodes++;
    a->compact_made++;
    return arena_set_node(a, i, OP_DOT, acc, 0.0,
                          (uint8_t)(TAG_GRAD_INT | TAG_NO_BACKWARD | (row ? TAG_ROW_DOT : 0)), a->cur_epoch);
}

/* Set the int tags of node i (already appended, its children's tags set) as the
 * pure engine's types come out of op's arithmetic; k_int: OP_POW's exponent was
 * an int. Leaves, constants and custom nodes are tagged by their maker. An int
 * result that is zero becomes +0.0 (0 * -1 is the int 0, not -0.0). */
static inline void arena_tag(arena_t *a, int64_t i, int op, int k_int) {
    int64_t e = a->child_start[i];
    const node_t *c = a->child + e;
    uint8_t *lgi = a->lg_int + e;
    int d0 = 0, d1 = 0, data_int = 0;
    if (a->child_start[i + 1] > e) d0 = a->tag[c[0]] & TAG_DATA_INT;
    if (a->child_start[i + 1] > e + 1) d1 = a->tag[c[1]] & TAG_DATA_INT;
    switch (op) {
    case OP_ADD: case OP_MUL: data_int = binary_tags(op, d0, d1, lgi); break;
    case OP_POW: {  /* int ** int >= 0 is an int; k * x ** (k - 1) too when k - 1 >= 0 */
        double k = a->operand[i];
        data_int = d0 && k_int && k >= 0.0;
        lgi[0] = d0 && k_int && k >= 1.0;
        break;
    }
    case OP_RELU:  /* max(0, x): the int 0 unless x > 0; float(x > 0) */
        data_int = d0 || !(a->data[c[0]] > 0.0);
        lgi[0] = 0;
        break;
    case OP_LOG: case OP_EXP: lgi[0] = 0; break;
    default: return;
    }
    a->tag[i] = (uint8_t)((a->tag[i] & ~(TAG_DATA_INT | TAG_K_INT))
                          | (data_int ? TAG_DATA_INT : 0) | (k_int ? TAG_K_INT : 0));
    if (data_int && a->data[i] == 0.0) a->data[i] = 0.0;
}

#endif
