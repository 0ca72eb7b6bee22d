/* tape.h: a recorded training step, replayed in C.
 *
 * A tape is built once from a step's graph while it is still in the arena
 * (positions 0..N-1 of one document, then the mean of their losses), and then
 * serves every document of up to N positions: the graph for n positions is the
 * first n positions of the recorded one plus the mean of their n losses.
 *
 * Local node indices: 0..P-1 are the parameters (their values are loaded from
 * the arena at every replay, their gradients added back to it), P.. are the
 * recorded nodes in creation order. What varies between documents is declared
 * when the tape is built, never guessed, and checked:
 *   token slots    the edges that read row tokens[p] of one parameter table
 *                  (the token embedding): re-pointed at every replay;
 *   target slots   the one edge of position p that reads probs[tokens[p + 1]]
 *                  from p's candidates: re-pointed at every replay;
 *   derived        constants computed from data in Python (the softmax's
 *                  largest logit, negated): recomputed from their sources.
 *
 * A chain sum(w * x ...) (products and adds alternating, each read once) is
 * one K_DOT instruction: the same products and additions in the same order,
 * kept in a register. Its inner nodes' gradients are the top's: each has one
 * reader with local gradient 1, and 0.0 + 1.0 * g is g for any gradient a sum
 * from 0.0 can give (never -0.0); so whatever reads an inner node's gradient
 * reads the top's.
 *
 * Local gradients are not stored per edge: they are read where they already
 * are when the backward runs. A product's local grad for one child is the
 * other child's value, an addition's is 1.0, and a one-child operation keeps
 * its own in x[n + i]. A pow of a node with the same exponent as the last pow
 * of that node (softmax's e / total, once per candidate) is computed once.
 *
 * Backward runs in "pull" form: nodes in reverse creation order, each summing
 * its parents' contributions in the order the reference's depth-first walk
 * would have added them. That order depends on the targets in one place only:
 * the walk enters the target's logit first, so a node read by every logit (the
 * final hidden state) adds the target's term last. Such "rotating" nodes keep
 * their parents with the index of the logit each belongs to, and a replay puts
 * the target's last. tape_build checks this rule against real depth-first
 * walks for other targets; a graph it does not fit is refused (not replayed).
 */
#ifndef MICROGPT_TAPE_H
#define MICROGPT_TAPE_H

#include "arena.h"

/* How a recorded node is recomputed forward and how its gradient is found. */
typedef enum {
    K_CONST = 0,     /* a constant (or a leaf made while recording): value kept */
    K_DERIVED = 1,   /* sign * max(sources' values): recomputed */
    K_OP = 2,        /* an operation (ops.h); gradient: sum over its parents in order */
    K_ROTATE = 3,    /* an operation read by every logit: the target's parents add last */
    K_CANDIDATE = 4, /* an entry of probs: its gradient comes from the target edge, if chosen */
    K_SEED = 5,      /* a position's loss: its gradient comes from the mean (the tail) */
    K_DOT = 6,       /* the top of a sum(w * x ...) chain, computed in one loop over its products */
    K_INTERIOR = 7   /* a node inside such a chain: no value of its own, its gradient the top's */
} kind_t;

/* Four rows of one matrix times one vector (an F_MV4 group, forward
 * instructions ins..ins+3): chain c sums x[w[c] + j] * v[j] for j = 0..len-1
 * from x[init[c]] into x[top[c]]; the rows are consecutive parameters. The
 * vector's entries v[j] are x[vec + j] where they are consecutive nodes
 * (vec >= 0: a layer's outputs), else x[dot_pair[pairs + 2 j + 1]] (every
 * other entry of row 0's list: heads' outputs side by side), gathered into
 * a copy before the rows read it. All that the
 * forward and the parameters' gradients read of the group, in one record. */
typedef struct {
    int32_t w[4], top[4], init[4];
    int32_t vec, len, ins;
    int64_t pairs;
} matvec_t;

typedef struct {
    /* sizes */
    int32_t n_params;       /* P */
    int32_t n_nodes;        /* n: P + recorded nodes (positions only; the tail is computed) */
    int32_t n_pos;          /* N: positions recorded */
    int32_t n_cand;         /* V: candidates per position (the vocabulary) */

    /* nodes, n_nodes each */
    uint8_t *kind;          /* kind_t */
    uint8_t *op;            /* op_t */
    double *operand;        /* K_OP pow: k; K_CONST: the value; K_DERIVED: the sign */
    int32_t *child_start;   /* n_nodes + 1: node i's edges [child_start[i], child_start[i+1])
                             * (the builder's edge indices are int32: a step of 2**31 edges
                             * or more is refused) */
    int32_t *pos;           /* the position a recorded node belongs to (-1: a parameter) */
    int32_t *aux;           /* K_DOT: its chain's first product; a shared pow: the node it copies */
    int32_t *dot_at;        /* K_DOT: its chain's first pair in dot_pair */
    double *x;              /* 2 n + 1 numbers: x[i] node i's value, x[n + i] the local grad of
                             * one-child node i, x[2 n] = 1.0 (an addition's local grads) */
    double *grad;           /* gradients (a chain's inner nodes have none: readers use its top's) */
    uint8_t *reached;       /* n_params: the last backward added to this parameter's gradient */

    /* edges: node i's children, local indices (slots re-pointed per replay) */
    int64_t n_edges;
    int32_t *child;

    /* the forward: nodes with work, creation order; position p's end at fwd_end[p] */
    int32_t *fwd;
    uint8_t *fwd_code;      /* how (F_* in tape_internal.h) */
    int32_t *fwd_arg;       /* 3 each: its operands (children, or where its chain's list is) */
    int32_t *fwd_end;
    int32_t *dot_pair;      /* each chain's products' two children, in order */
    int64_t n_pairs;
    matvec_t *mv;           /* the F_MV4 groups (four rows of one matrix times one vector) */
    int32_t *mv_end;        /* ... position p's end */

    /* the backward: nodes that take a gradient, creation order (run reversed);
     * entry b's parents [pull_start[b], pull_start[b+1]) in the reference's order,
     * each adding x[pull_src] * grad[pull_parent] */
    int32_t *bwd;
    int32_t *bwd_end;       /* position p's end */
    uint8_t *bwd_kind;      /* the node's kind_t */
    uint8_t *bwd_group;     /* 1: entries b, b-1, b-2, b-3 are summed side by side (tape_internal.h);
                             * 2: ... and they are a vector read by the rows of one matrix: the
                             * same parents, entry b-k's weight k before entry b's;
                             * 3: a run of bwd_lanes[b] such entries (several groups of 2) */
    int32_t *bwd_lanes;
    int64_t *pull_start;
    int32_t *pull_parent;   /* the parent (for a product inside a chain: the chain's top) */
    int32_t *pull_src;      /* where its local gradient is: the other factor's value, a
                             * one-child node's x[n + i], or the 1.0 */
    int32_t *pull_block;    /* K_ROTATE: the logit the parent belongs to; else -1 */

    /* parameter reads by position, other than the rows of F_MV4 groups (the
     * backward takes those from the group's lists): position p's are
     * [param_start[p], param_start[p+1]), each adding x[param_src] *
     * grad[param_parent] to grad[param_child] */
    int64_t *param_start;
    int32_t *param_child, *param_parent, *param_src;
    int32_t *first_pos;     /* n_params: the first position that reads the parameter (the token
                             * table's rows, which depend on the tokens: INT32_MAX) */

    /* positions: node ranges, losses, slots */
    int32_t *pos_end;       /* local index one past position p's last node */
    int32_t *graph_end;     /* ... counted in the recorded graph's nodes (P + nodes made) */
    int32_t *loss_node;     /* local index of -log(probs[target]) of position p */
    int64_t *target_edge;   /* the edge of position p that reads probs[target] */
    int32_t *target_owner;  /* the node that owns it (the position's log) */
    int32_t *target_src;    /* ... and where that edge's local gradient is */
    int64_t *target_arg;    /* ... and the forward operand it is (fwd_arg) */
    int32_t *cand;          /* n_pos * n_cand: local index of probs[v] at position p */
    int32_t table_slot0;    /* the token table: parameter slot of row 0, column 0 */
    int32_t table_rows, table_cols;
    int64_t n_token_edges;
    int64_t *token_edge;    /* edges that read a row of the token table (never a product's) */
    int64_t *token_arg;     /* ... the forward operand each is (fwd_arg) */
    int64_t *token_param;   /* ... and their parameter reads */
    int32_t *token_pos;     /* ... at this position */
    int32_t *token_col;     /* ... in this column */

    /* derived constants: node derived_node[j] = sign * max over sources */
    int64_t n_derived;
    int32_t *derived_node;
    int64_t *src_start;     /* n_derived + 1 */
    int32_t *src;           /* local indices */

    /* building only (freed when the tape is built): node-indexed pull lists (a chain's
     * inner nodes have none: each is read once, by the next node of its chain) */
    int32_t *npull_start;   /* n_nodes + 1 */
    int32_t *npull_parent;
    int32_t *npull_block;   /* a rotating node's entries: the logit the parent belongs to (the
                             * rest is never written: calloc'd pages untouched cost nothing) */
    int32_t *param_edge;    /* the edge of each parameter read */
    int32_t *scratch;       /* n_nodes: room the builder's short-lived node-indexed lists take
                             * in turn (memory touched for the first time costs far more than
                             * memory used again) */

    /* where the last replay stopped */
    int32_t n_used;         /* positions of the last forward */
    int64_t params_at;      /* set by the caller: the parameters are arena nodes params_at + k
                             * (then read and written as one block), or -1 */
    double loss;            /* its loss */
} tape_t;

/* What the recorder hands tape_build: the step's graph in the arena, and what
 * varies. Arena indices everywhere. */
typedef struct {
    const node_t *params;      /* P parameter nodes, in the optimizer's order */
    int32_t n_params;
    int64_t rec_start;         /* first node made while recording */
    int32_t n_pos;
    const int64_t *pos_end;    /* one past each position's last node (n_pos) */
    const node_t *loss_node;   /* each position's loss */
    node_t root;               /* the mean of the losses: the tail follows pos_end[N-1] */
    int32_t n_cand;
    const node_t *cand;        /* n_pos * n_cand: probs[v] of position p */
    const node_t *logit;       /* n_pos * n_cand: logits[v] of position p */
    const int32_t *tokens;     /* n_pos + 1 token ids the recording was made with */
    int32_t table_slot0, table_rows, table_cols;  /* the token table, in parameter slots */
    int64_t n_derived;
    const node_t *derived_node;
    const double *derived_sign;
    const int64_t *src_start;
    const node_t *src;
    int32_t verify_shifts;     /* other targets to check the backward rule with (0 = every one;
                                * -1 = none: a forward-only tape, whose backward must not run) */
} record_t;

/* Build a tape; returns NULL with *why set to a static reason when the
 * recording cannot be replayed exactly (the caller keeps the per-operation
 * path), or on out of memory (*why says so). The arena is left as it was. */
tape_t *tape_build(arena_t *a, const record_t *r, const char **why);
void tape_free(tape_t *t);

/* Forward over positions [from, n) for tokens[0..n] (n + 1 ids), positions
 * before from as the last forward left them (0: every position; a sampler's
 * cache grows a position per call); parameter values read from the arena.
 * The loss, of positions [0, n), into t->loss. Returns OP_OK or the status an
 * operation raised. */
status_t tape_forward(tape_t *t, const arena_t *a, const node_t *params,
                      const int32_t *tokens, int32_t from, int32_t n);
/* Backward of the last forward: parameter gradients added to the arena's.
 * A parameter the step reached has a float gradient after it (its int tag is
 * cleared, as float contributions make the pure engine's grad a float).
 * Returns 1; or 0, writing nothing, when a parameter's gradient is not finite:
 * then the caller takes the per-operation path for the step (a replay adds a
 * zero for a parent the reference's walk never reached, which is exact only
 * while every local gradient is finite). */
int tape_backward(tape_t *t, arena_t *a, const node_t *params, const int32_t *tokens);

/* probs[v] at position p after a forward: x[cand[p * n_cand + v]]. */
static inline double tape_prob(const tape_t *t, int32_t p, int32_t v) {
    return t->x[t->cand[(int64_t)p * t->n_cand + v]];
}

/* Bytes the tape holds. */
size_t tape_bytes(const tape_t *t);

#endif
