/* internal.h: the tape's layout and what its files share (not part of the
 * public contract, tape.h). About 560 lines: one struct every file reads; the
 * build's working state is builder.h's (build.c, reads.c, order.c, walk.c only).
 *   build.c     a recorded step copied out of the arena, its slots declared and
 *               checked; each phase a function (builder_t holds the working state)
 *   reads.c     who reads each node: pull lists, parameter reads, token slots;
 *               the chains recorded node by node found
 *   order.c     the pull lists in the reference's backward order, the rule
 *               checked against real depth-first walks;  walk.c  such a walk, as ranks
 *   pack.c      the replay's program from the checked node lists
 *   group.c     side-by-side groups: four chains, matrix rows, vectors' lanes
 *   aliases.c   the pull list a vector read by a matrix's rows shares, its groups' own;
 *               short vectors whose lists are one list (a matrix's row read by heads' outputs)
 *   renumber.c  one index space for what the replay keeps;  interleave.c  alternating ops, side by side
 *   blocks.c    row blocks and runs for matrix.c's kernels;  shifted.c  a head's sums in lanes
 *   weight_grads.c  the row blocks' weights' gradients, from their reads packed in order
 *   levels.c    a whole step layer by layer;  lanes.h  SIMD registers (the kernels' files)
 *   elementwise.c  a vector's elementwise work as runs;  strided.c  sums read at constant steps
 *   program.c   the forward between the matrices as one stream of records, in level order
 *               (program_plan.c writes them; program.h their kinds)
 *   panels.c    a level's matrices over every position at once, lanes across positions
 *   strided_pulls.c  the backward's groups of four whose lists step by constants, four at once
 *   pull_lanes.c   a vector's gradients in lanes, one pull list for all;  paired.c  four positions'
 *                  vectors read by one matrix, their gradients at once (paired_plan.c: which)
 *   params.c    the parameters' numbers in and out of the arena
 *   attention.c  a head's softmax at one position, its backward whole (weights to logits);
 *                attention_plan.c  such rows found and checked; attention.h  what they share;
 *                attention_values.c  the values' gradients summed as the rows run;
 *                attention_unread.c  the rows' gradients nothing else reads;
 *                attention_keys.c  the queries' and keys' gradients summed as the rows run
 *   replay.c    forward and backward;  forward.c  instructions one by one, in order
 *   steps.c     the backward's dispatch as one record a step, made at build time
 *   tape.c      sizes, counts, accessors, free
 *
 * A chain sum(w * x ...) (products and adds alternating, each read once) is
 * one F_DOT instruction: the same products and additions in the same order,
 * kept in a register. Its inner nodes' gradients are the top's: each has one
 * reader with local gradient 1, and 0.0 + 1.0 * g is g for any gradient a sum
 * from 0.0 can give (never -0.0); so whatever reads an inner node's gradient
 * reads the top's. A chain comes in one of two forms: recorded node by node
 * (found by fuse_dots: its top's aux is its first product, its inner nodes
 * K_INTERIOR), or recorded compactly (an OP_DOT node: its edges are the
 * products' operands w0, x0, w1, x1, ..., the constant 0 its sum starts from
 * is the node just before it, and there are no inner nodes; arena.h
 * arena_push_dot). A read of a node by the compact form's k-th product is a
 * pull whose edge says which product (its rank in a walk is the product's,
 * b->pair_rank).
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
 * the target's last. order.c checks this rule against real depth-first walks
 * for other targets; a graph it does not fit is refused (not replayed). */
#ifndef MICROGPT_TAPE_INTERNAL_H
#define MICROGPT_TAPE_INTERNAL_H

#include "tape.h"

#include <limits.h>
#include <string.h>

#define NEW(p, n) ((p) = calloc((size_t)((n) > 0 ? (n) : 1), sizeof *(p)))

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
 * other entry of row 0's list: heads' outputs side by side), gathered into a copy
 * first. All that the forward and the weights' gradients read of it, in one record. */
typedef struct {
    int32_t w[4], top[4], init[4];
    int32_t vec, len, ins;
    int32_t pos, run;       /* its position; 4: it and the next three are one matrix's rows
                             * times one vector, computed at once (blocks.c), else 1 */
    int64_t pairs;
} matvec_t;

struct tape {
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
    int32_t *pos;           /* a kept node's position (-1: a parameter); made by renumber (the
                             * builder finds a node's by pos_of) */
    int32_t *aux;           /* K_DOT: its chain's first product; a shared pow: the node it copies */
    int32_t *dot_at;        /* an F_DOT instruction's first pair in dot_pair (by instruction: the
                             * few written of its n_nodes are all its pages that are touched) */
    double *x;              /* 2 n + 1 numbers: x[i] node i's value, x[n + i] the local grad of
                             * one-child node i, x[2 n] = 1.0 (an addition's local grads) */
    double *grad;           /* gradients (a chain's inner nodes have none: readers use its top's) */

    /* edges: node i's children, local indices (slots re-pointed per replay) */
    int64_t n_edges;
    int32_t *child;
    int child_in_arena;     /* child is the recorded nodes' edges in the arena, rewritten
                             * (record_t consume): not the tape's to free */
    int64_t child_room;     /* int32 entries at child: its edges, and room past them (the arena's
                             * edge column's capacity, with consume) */
    int pairs_are_child;    /* dot_pair is child itself: a compact chain's list is its edges,
                             * a chain recorded node by node's is written past them, until
                             * keep_read_pairs copies what a replay reads (child is then freed
                             * with dot_pair, not alone) */

    /* the forward: nodes with work, creation order; position p's end at fwd_end[p] */
    int32_t *fwd;
    uint8_t *fwd_code;      /* how (fwd_code_t) */
    int32_t *fwd_arg;       /* 3 each: its operands (children, or where its chain's list is) */
    int32_t *fwd_end;
    int32_t *dot_pair;      /* each chain's products' two children, in order */
    int64_t n_pairs;
    matvec_t *mv;           /* the F_MV4 groups (four rows of one matrix times one vector) */
    int32_t *mv_end;        /* ... position p's end */
    /* row blocks (blocks.c, matrix.c): four consecutive rows of one matrix, parameters
     * block_w0[b] .. + 4 block_len[b], read by the groups block_mv[block_start[b] ..
     * block_start[b + 1]), positions last to first. n_blocks 0: none (rows read in place) */
    int32_t n_blocks;
    int32_t *block_w0, *block_len, *block_start, *block_mv;
    double *wt;             /* n_params: each block's weights transposed, wt[w0 + 4 j + c] */
    int blocks_own_grads;   /* no block's weight is read but by its groups: their gradients are
                             * summed block by block (else position by position) */
    int32_t *block_pos, *block_vec;  /* by read (block order): its position, its vector in
                             * place (or -1: the group's record gathers it) */
    int32_t *mv_read;       /* by group: its read's index in block order */
    int32_t *block_top;     /* by read: the first of its rows' sums, four consecutive nodes (NULL:
                             * not every read's are; then block_gt) */
    double *block_gt;       /* 4 a read: its rows' sums' gradients (gathered group by group) */
    double *block_x;        /* n_pos block_x_len: a run of blocks' reads' vectors, packed (weight_grads.c) */
    int32_t block_x_len;    /* the longest block's rows */
    double *block_d;        /* 8 n_pos: a block's (or two blocks') reads' sums' gradients, packed */
    const double **block_ahead;  /* block_x_len + 2 + 2 n_pos: lines a kernel asks for (weight_grads.c) */
    uint8_t *block_same;    /* by block: it reads what the block before reads (the same positions' vectors) */
    uint8_t *block_in_place;  /* by block: the last backward summed it in the arena's column (weight_grads.c) */
    /* levels.c: level s of position p: instructions [level_at[p (L + 1) + s], .. + 1), L = n_levels
     * (0: in order), its backward entries bwd_level_at (NULL: in order); level s's matrix units
     * [level_units[s], .. + 1), unit u at position p's first group level_mv[u N + p] */
    int32_t n_levels, *level_at, *bwd_level_at, *level_units, *level_mv;

    /* the backward: nodes that take a gradient, creation order (run reversed);
     * entry b's parents [pull_start[b], pull_start[b+1]) in the reference's order,
     * each adding x[pull_src] * grad[pull_parent] */
    int32_t *bwd;
    int32_t *bwd_end;       /* position p's end */
    uint8_t *bwd_kind;      /* the node's kind_t */
    uint8_t *bwd_group;     /* 1: entries b, b-1, b-2, b-3 are summed side by side (SIDE);
                             * 2: ... and they are a vector read by the rows of one matrix: the
                             * same parents, entry b-k's weight k before entry b's;
                             * 3: a run of bwd_lanes[b] such entries (several groups of 2);
                             * 4: entries b-k read the same values as b, of parents k before b's;
                             * of a group of 2, 3 or 4 only entry b keeps its pull list;
                             * 5: a run of entries whose lists step by constants (pull_lanes.c);
                             * 6: a group of 1 whose four lists each step by constants (strided.c);
                             * 7: a head's softmax row, its weights down to its logits (attention.c) */
    int32_t *bwd_lanes;     /* group 3: its lanes; 5, 6, 7: its record's index; 4: its run's
                             * index + 1, -1 in a run after its first, 0 alone (shifted.c) */
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
                             * table's rows, which depend on the tokens: INT32_MAX); then, from
                             * params_plan on, as runs: run r is the parameters [first_pos[2 r],
                             * first_pos[2 r + 2]), read first at first_pos[2 r + 1] */
    int32_t n_first_runs;

    /* positions: node ranges, losses, slots */
    int32_t *pos_end;       /* local index one past position p's last node */
    int32_t *graph_end;     /* ... counted in the recorded graph's nodes (P + nodes made) */
    int32_t *loss_node;     /* local index of -log(probs[target]) of position p */
    int64_t *target_edge;   /* the edge of position p that reads probs[target] */
    int32_t *target_owner;  /* the node that owns it (the position's log) */
    int32_t *target_src;    /* ... and where that edge's local gradient is */
    int64_t *target_arg;    /* ... and the forward operand it is (fwd_arg) */
    int32_t *cand;          /* n_pos * n_cand: local index of probs[v] at position p */
    int32_t *logit;         /* n_pos * n_cand: ... of logits[v] (-1: not kept; a sampler reads them) */
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
    int32_t *npull_edge;    /* ... and the parent's edge that reads the node (a compact chain's
                             * product, its local gradient's place) */
    int32_t *npull_block;   /* a rotating node's entries: the logit the parent belongs to (the
                             * rest is never written: calloc'd pages untouched cost nothing) */
    int32_t *alias_base;    /* a node whose pull list is not stored (0: it is): the vector entry
                             * its list is that of, edges (and so weights) alias_shift[L] on;
                             * the entries of a vector read by a matrix's rows (reads.c) */
    int32_t *alias_shift;
    int32_t *param_edge;    /* the edge of each parameter read */
    int32_t *scratch;       /* n_nodes: room the builder's short-lived node-indexed lists take
                             * in turn (memory touched for the first time costs far more than
                             * memory used again) */

    /* where the last replay stopped */
    int32_t n_used;         /* positions of the last forward */
    int64_t short_vectors;  /* vectors the backwards so far summed in one pass over their lists (matrix.c) */
    int64_t vectors_shared_list;  /* ... of those, summed beside another vector over one list (matrix.c) */
    int64_t vectors_side_by_side;  /* ... beside others, each its own list (matrix.c) */
    int32_t n_share;        /* share_b, share_n: short vectors summed together (aliases.c share_plan); share_b
                             * descending, a lead (share_n its count, 2 to 4: one list, the lead's; -4 to -2:
                             * each its own, the lead's consecutive entries from it down) then its others
                             * (share_n 0) */
    int32_t share_hint;     /* where share_index looks first: the place after the last it found */
    int32_t *share_b, *share_n;
    int64_t blocks_paired;  /* row blocks the last backward ran two at once (weight_grads.c) */
    int64_t vectors_reused; /* row blocks the last backward summed from vectors packed for a block before */
    int64_t params_at;      /* set by the caller: the parameters are arena nodes params_at + k
                             * (then read and written as one block), or -1 */
    double loss;            /* its loss */

    /* elementwise.c: runs of elementwise instructions (F_RUN at a run's first instruction,
     * whose third operand is the run's index); pull_lanes.c: backward entries side by side
     * with strided lists (bwd_group 5 at the run's top entry, bwd_lanes its index) */
    int32_t n_runs, n_lane_runs;
    struct elem_run *runs;
    struct run_slot *run_slots;
    struct lane_run *lane_runs;
    int32_t *lane_stride;   /* 2 a pull of a lane run's list: its parent's and its source's steps */
    int32_t n_strided;      /* strided.c: F_STRIDED4 groups (first operand: the record's index) */
    struct strided4 *strided;
    int32_t n_strided_pulls; /* ... and backward groups of four strided lists (bwd_group 6) */
    struct strided_pulls *strided_pulls;
    int32_t *first_lanes;   /* paired.c: N L, position p's level s ends with a vector read by a
                             * matrix's rows, run first: its lanes (0: none) */
    uint8_t *paired;        /* ... and it is run with position p - 1's (the same rows); 3: and its
                             * parents are p - 1's, shifted by one constant */
    struct first_group *first_groups;  /* ... N L: where each such group's list and nodes are */
    struct prog *prog;      /* program.c: level s of position p's work but its matrices, records
                             * [prog_at[s N + p], .. + 1) (NULL: no program, the instructions) */
    int64_t n_prog, *prog_at;
    int32_t *prog_list;     /* ... the lists its records read, in their order */
    int64_t n_prog_list;
    struct panel_unit *panel_units;  /* panels.c: each level's matrix units (NULL: none, matrix.c) */
    struct panel_read *panel_reads;  /* ... unit u at position p: [u N + p] */
    double *panel_buf;      /* the positions' vectors, eight a block; then their sums' first numbers */
    int32_t panel_len;      /* the longest unit's rows */
    int32_t *params_outside;  /* params.c: the parameters outside every unit's rows, ranges [lo, hi)
                             * (NULL: the units' rows are read by others too) */
    int32_t n_params_outside;
    const double *panel_from;  /* during a forward by panels: the arena's parameters, each unit's
                             * rows copied from there as the forward reaches it (NULL: all copied) */
    int wt_stale;           /* wt is not the weights' transpose (a forward by panels needs none) */
    struct attention *attn; /* attention.c: the heads' softmax rows taken whole (bwd_group 7) */
    struct shift_run *shift_runs;  /* shifted.c: runs of groups of 4 (bwd_lanes of their tops) */
    int32_t n_shift_runs;
    struct bwd_step *steps; /* steps.c: the backward's steps, piece by piece as it runs them, */
    int32_t n_steps;        /* each piece's top to bottom; piece i's from step_piece[i] */
    int32_t *step_piece;
};

/* What runs a backward step (steps.c, replay.c run_backward). */
typedef enum { S_NONE, S_ATTENTION, S_STRIDED, S_LANES, S_SHIFTED, S_MATRIX, S_MATRIX_ROTATE, S_FOUR,
               S_SINGLES, S_SEED, S_CANDIDATE, S_ROTATE, S_LIST, S_STEPPED } step_code_t;

/* One step of the backward: entry b's (node L's) group or own sum; its list
 * [k0, k0 + n) (S_SINGLES: n entries from b down); S_MATRIX: a its lanes;
 * S_LANES: its lowest entry's list, a its steps' place, c its lanes (lane_step);
 * S_STEPPED: pull j's parent pull_parent[k0] + j a, its source pull_src[k0] + j c;
 * S_MATRIX_ROTATE, S_CANDIDATE, S_ROTATE: c the node's position. */
typedef struct bwd_step {
    int64_t k0;
    int32_t b, L, n, a, c;
    uint8_t code;           /* step_code_t */
} bwd_step_t;
int step_plan(tape_t *t);  /* 0, or -1 out of memory */
int32_t piece_of(const tape_t *t, int32_t s, int32_t p);  /* level s's piece of position p (s: 0 without levels) */
size_t step_bytes(const tape_t *t);
void lane_step(const tape_t *t, int32_t b, bwd_step_t *s);  /* pull_lanes.c: a run's step */
void lane_grads(tape_t *t, const bwd_step_t *s, int32_t end);
void step_counts(const tape_t *t, int32_t n, int64_t *steps, int64_t *stepped);  /* positions [0, n) */

#define SHARE_MAX 4  /* short vectors summed together at most (aliases.c share_plan) */

/* Where a level's first group (paired.c) is, found once (a backward reads it
 * a step, and the tape's lists are far apart in memory): its top entry, its
 * list's start and length, first parent and first source, its list's step where it is
 * read without indices (0: it is not), and its entries' nodes where
 * they are consecutive (node0 + i for lane i), else -1. Where it leads a shared list
 * (share >= 0, its place in share_b), its lanes are all the heads' (lanes: the
 * whole width, share_n heads, the first head's lanes first, head h's nodes
 * head[h] + i). */
typedef struct first_group {
    int64_t k0;
    int32_t b, count, parent0, src0, step, node0, lanes, share, head[SHARE_MAX];
} first_group_t;

/* One slot of an elementwise run's pattern (elementwise.c): its node and operands at
 * repetition 0 and their steps (k the pow's exponent). serial: it reads its own earlier
 * result. program.c writes a lone instruction as a slot of one repetition. */
typedef struct run_slot {
    int32_t L, a, b, dL, da, db;
    uint8_t code, op, serial;
    uint8_t shared;         /* derived: every repetition after the first takes the first's max,
                             * with the same sign, its nodes a constant step apart */
    uint8_t fresh;          /* derived (shared): the first finds its own max (not the one before the run's) */
    double k;               /* pow: the exponent; derived (shared): the sign */
} run_slot_t;
int32_t strided16_parts(const tape_t *t, int64_t i, run_slot_t *s, int32_t *b, int32_t *init, int32_t *out,
                        int *groups);

/* How the forward computes a node. */
typedef enum { F_ADD, F_MUL, F_ONE_CHILD, F_DOT, F_DERIVED, F_COPY, F_DOT4, F_MV4, F_SHIFT4,
               F_RUN,      /* a run of elementwise instructions (elementwise.c) */
               F_STRIDED4  /* four chains read at constant steps (strided.c) */ } fwd_code_t;

/* Side by side. A sum in a register waits for its last addition (a few cycles)
 * before the next; four independent sums of the same length, each added in
 * its own order, fill those cycles. The forward runs four chains of one
 * length at once (the rows of one matrix) where none reads another's result;
 * the backward sums four nodes' pulls at once where none is a parent of
 * another. Each sum is the same sequence of additions as alone. */
#define SIDE 4
#define MAX_LANES 1024  /* the longest vector summed as a run, or read by a matrix's rows (its
                         * sums, or a gathered copy of it, live on the stack) */

/* Position p's first group at level s: level by level, a level's positions
 * side by side (the backward reads several positions' of one level at once). */
static inline first_group_t *group_at(const tape_t *t, int32_t p, int32_t s) {
    return t->first_groups + (int64_t)s * t->n_pos + p;
}

/* A compact chain whose list is a row (arena.h TAG_ROW_DOT): w0, x0, x1, ...,
 * its weights the consecutive parameters w0, w0 + 1, ...: the tape's own op
 * code, until keep_read_pairs writes the pairs of the lists a replay reads. */
#define OP_ROW_DOT (OP_DOT + 1)

/* A chain recorded compactly (internal.h's top): an OP_DOT node, either form. */
static inline int is_compact(const tape_t *t, int32_t L) {
    return t->op[L] == OP_DOT || t->op[L] == OP_ROW_DOT;
}

/* A chain's top L: its products' operands as pairs (two a product: dot_len of
 * them), and the constant 0 its sum starts from. */
static inline int32_t dot_len(const tape_t *t, int32_t L) {
    int32_t edges = t->child_start[L + 1] - t->child_start[L];
    return t->op[L] == OP_ROW_DOT ? 2 * (edges - 1) : is_compact(t, L) ? edges : L - t->aux[L];
}

/* Operand k (0 <= k < dot_len) of chain L, whose list starts at list: w_j for
 * k = 2 j, x_j for k = 2 j + 1, in either form. */
static inline int32_t chain_operand(const tape_t *t, int32_t L, const int32_t *list, int32_t k) {
    if (t->op[L] != OP_ROW_DOT) return list[k];
    return k & 1 ? list[1 + (k >> 1)] : list[0] + (k >> 1);
}

/* Entries of chain L's list for `operands` operands (dot_len): a row's are
 * w0 and the x's. */
static inline int32_t list_entries(const tape_t *t, int32_t L, int32_t operands) {
    return t->op[L] == OP_ROW_DOT ? operands / 2 + 1 : operands;
}

/* The operand compact chain L's edge e holds (its index in chain_operand). */
static inline int32_t operand_of_edge(const tape_t *t, int32_t L, int64_t e) {
    int32_t k = (int32_t)(e - t->child_start[L]);
    return t->op[L] == OP_ROW_DOT ? (k == 0 ? 0 : 2 * (k - 1) + 1) : k;
}
static inline int32_t dot_init(const tape_t *t, int32_t L) {
    return is_compact(t, L) ? L - 1 : t->aux[L] + 1;
}

/* pack.c: the replay's program from the builder's checked node lists
 * (kinds, pull lists in the reference's order, parameter reads); frees those
 * lists and keeps only the nodes a replay reads. NULL, or why not. */
const char *tape_pack(tape_t *t);
int32_t lg_src(const tape_t *t, int32_t L, int64_t e);

/* group.c */
void group_dots(tape_t *t, int64_t nf);
int64_t mark_matvecs(tape_t *t, int64_t nf);
void group_pulls(tape_t *t, int64_t nb);
const char *expand_aliases(tape_t *t, int64_t nb);  /* aliases.c */
int drop_unread_pulls(tape_t *t, int64_t nb);
void matvec_records(tape_t *t);
void share_derived(tape_t *t);
void mark_shifted_dots(tape_t *t);

/* blocks.c, matrix.c: a matrix's rows side by side (0, or -1 out of memory) */
int matrix_plan(tape_t *t);
void matrix_transpose(tape_t *t);
void matrix_forward(tape_t *t, const matvec_t *g, const matvec_t *h);  /* h: the same rows' (or NULL) */
void matrix_vector_grads(tape_t *t, int32_t b, int32_t lanes, int64_t k0, int64_t k1, int32_t end, int32_t tgt);
int matrix_param_grads(tape_t *t, int32_t n, const double *from, double *column);  /* weight_grads.c: 1 if
                             * finite; column: the arena's (the blocks may sum there) or NULL */
void blocks_zero_again(const tape_t *t, double *column);
int weight_grads_plan(tape_t *t);  /* the packed buffers (matrix_plan): 0, or -1 out of memory */
size_t weight_grads_bytes(const tape_t *t);
void matrix_group_grads(tape_t *t, const matvec_t *m);  /* one group's weights' gradients */
void shifted_grads(tape_t *t, int32_t b, int64_t k0, int64_t k1, int32_t end);
int64_t shifted_dots(tape_t *t, int64_t i);  /* the instructions it ran (4, or 16: shift_plan) */
/* sixteen chains side by side (shifted.c, strided.c), from init[k] into node out[k] */
void shift16(double *x, const int32_t *p, int32_t len, const double *init, const int32_t *out);
int shift_plan(tape_t *t);  /* 0, or -1 out of memory */
/* levels.c: 0, or -1 out of memory; the forward of positions [0, n) */
int level_plan(tape_t *t);
status_t level_forward(tape_t *t, int32_t n, status_t (*run)(tape_t *, int64_t, int64_t));
void level_backward(tape_t *t, int32_t n, void (*run)(tape_t *, int32_t, int32_t, void *), void *arg);  /* run:
                             * the pieces [i0, i1) (steps.c) */

/* elementwise.c: runs of elementwise instructions, each slot of a short repeated pattern
 * over every repetition at once; pull_lanes.c: the backward's entries with strided pull
 * lists, side by side (0, or -1 out of memory) */
int elementwise_plan(tape_t *t);
status_t elementwise_run(tape_t *t, int64_t i, double *m);
uint8_t elementwise_code(const tape_t *t, int64_t i);  /* instruction i's own code under F_RUN */
int64_t elementwise_len(const tape_t *t, int64_t i);
const run_slot_t *elementwise_slots(const tape_t *t, int64_t i, int *period, int32_t *reps);  /* F_RUN at i */
status_t elementwise_slot(tape_t *t, const run_slot_t *s, int32_t R, int64_t ins, int T, double *m);
/* program.c (0, or -1 out of memory); forward.c: instructions [i0, i1), m the last derived max */
int program_plan(tape_t *t);
status_t program_run(tape_t *t, int32_t s, int32_t p);
status_t program_positions(tape_t *t, int32_t from, int32_t n);  /* positions [from, n), in order */
size_t program_bytes(const tape_t *t);
void program_counts(const tape_t *t, int32_t n, int64_t *records, int64_t *by_steps, int64_t *scaled);  /* positions [0, n) */
int panel_plan(tape_t *t);  /* panels.c: 0, or -1 out of memory */
void panel_level(tape_t *t, int32_t s, int32_t n);
size_t panel_bytes(const tape_t *t);
int64_t panel_count(const tape_t *t, int32_t n);
void panel_rows(const tape_t *t, int32_t u, int32_t *lo, int32_t *hi);  /* unit u's parameters [lo, hi) */
status_t forward_range(tape_t *t, int64_t i0, int64_t i1, double *m);
int lane_plan(tape_t *t);
int strided_plan(tape_t *t);
void strided_dots(tape_t *t, int64_t i);
void strided16(double *x, int32_t a0, int64_t sa, int64_t sb, int32_t len, const int32_t *b,
               const double *init, const int32_t *out);
int strided_pulls_plan(tape_t *t);
int strided_pulls(tape_t *t, int32_t b, int32_t end);
size_t elementwise_bytes(const tape_t *t), lane_bytes(const tape_t *t);
size_t strided_bytes(const tape_t *t);  /* strided.c */
size_t strided_pulls_bytes(const tape_t *t);  /* strided_pulls.c */
int paired_plan(tape_t *t);
void paired_grads(tape_t *t, int32_t p, int32_t s, int k);  /* positions p .. p - k + 1 */
int paired_width(const tape_t *t, int32_t p, int32_t s);
int32_t lane_width(const tape_t *t, int32_t b);
void params_read(double *dst, const double *column, const tape_t *t, const node_t *params);  /* params.c */
const double *params_read_grads(double *dst, const double *column, const tape_t *t, const node_t *params);
int params_plan(tape_t *t);
int params_outside_plan(tape_t *t);  /* (after panel_plan) 0, or -1 out of memory */
size_t params_outside_bytes(const tape_t *t);
void params_read_forward(tape_t *t, const arena_t *a, const node_t *params, int by_panels);
int params_write_grads(const tape_t *t, arena_t *a, const node_t *params, const int32_t *tokens, int blocks_checked);
int grads_finite(const double *g, int64_t n);
void single_plan(tape_t *t);  /* singles.c */
int share_plan(tape_t *t);  /* aliases.c */
int32_t share_index(tape_t *t, int32_t b);  /* b's place in share_b, or -1 */
void paired_shares(tape_t *t);  /* paired.c: first groups that lead shared lists, all their heads' lanes */
int32_t single_grads(tape_t *t, int32_t b, int32_t n, int32_t end);
int single_in_run(const tape_t *t, int32_t b, int32_t b_end);
int single_chained(const tape_t *t, int32_t b, int32_t b_end);

/* attention.c (0, or -1 out of memory) */
int attention_plan(tape_t *t);
void attention_begin(tape_t *t);  /* before a backward */
int32_t attention_grads(tape_t *t, int32_t b);  /* the row whose top is b: the entries it took */
int32_t attention_width(const tape_t *t, int32_t b);
int32_t attention_count(const tape_t *t, int32_t n, int which);  /* rows of n positions (which 1: lean, 2: steps,
                                                                  * 3: writing no logits' gradients) */
size_t attention_bytes(const tape_t *t);
void attention_free(tape_t *t);  /* (and the runs of shifted.c) */
int attention_unread_plan(tape_t *t);  /* attention_unread.c: 0, or -1 out of memory */
/* attention_values.c: the values' runs whose sums the rows make (after shifted_runs) */
int attention_values_plan(tape_t *t);  /* 0, or -1 out of memory */
void attention_values(tape_t *t, const struct shift_run *s, const int32_t *dst);
int64_t attention_values_count(const tape_t *t, int32_t b);  /* entries of such runs below b */
/* attention_keys.c: the queries' and keys' gradients the rows sum (after attention_values_plan) */
int attention_keys_plan(tape_t *t);  /* 0, or -1 out of memory */
int attention_takes(const tape_t *t, int32_t b);  /* group top b's lanes written by the rows: no step */
int64_t attention_keys_count(const tape_t *t, int32_t b);  /* lanes of such groups below b */
void backward_tops(const tape_t *t, uint8_t *met);  /* met[b] = 1: the backward meets b as a top */
void backward_range(const tape_t *t, int32_t p, int32_t b, int32_t *lo, int32_t *hi);  /* pull_lanes.c */
int32_t backward_piece(const tape_t *t, int32_t p, int32_t b);  /* the first entry of b's range */
int shifted_runs(tape_t *t);

/* Entry b's pulls (its list's length). */
static inline int64_t pull_count(const tape_t *t, int32_t b) { return t->pull_start[b + 1] - t->pull_start[b]; }

/* How many backward entries the one at b spans as the backward meets it (a group's top). */
int32_t bwd_width(const tape_t *t, int32_t b);  /* pull_lanes.c */

/* interleave.c */
void interleave_dots(tape_t *t, int64_t nf, int32_t *ins_of);
int interleave_alike(tape_t *t, int64_t nb);

/* renumber.c */
const char *renumber(tape_t *t);
int keep_read_pairs(tape_t *t);

/* The builder's edges go: freed, unless they are the arena's (consume). */
static inline void free_child(tape_t *t) {
    if (!t->child_in_arena && !t->pairs_are_child) free(t->child);
    t->child = NULL;
}

/* Give the whole pages inside [p, p + bytes) back to the system; they read as
 * zeros after (rows nothing reads again: a consumed recording's). Elsewhere
 * than Linux, nothing. (tape.c) */
void discard_pages(void *p, size_t bytes);

/* [p, p + bytes) in huge pages (Linux's transparent ones, where they are given
 * on request): for what a replay reads all over every step (the nodes' values
 * and gradients, the pull lists), where with small pages nearly every new
 * place read costs a walk of the page tables (a 4/64/64 step: 12.6 MB of
 * values, 6.3 of gradients, 11.7 of lists). Elsewhere than Linux, nothing. (tape.c) */
void huge_pages(void *p, size_t bytes);

/* p's bytes moved to memory of their own that begins at a huge page's start
 * (huge_pages then covers every page: an array's own first and last few MB
 * would not), p freed; what is returned is freed with free(). p itself where
 * that is not to be had (short, out of memory, elsewhere than Linux). (tape.c) */
void *huge_copy(void *p, size_t bytes);

/* Which of n ascending ends is the first past v (the last, if none): the
 * position a node (pos_end) or a backward entry (bwd_end, steps.c) is in. */
static inline int32_t first_past(const int32_t *end, int32_t n, int32_t v) {
    int32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        if (v < end[mid]) hi = mid; else lo = mid + 1;
    }
    return lo;
}

/* The position node L belongs to (-1: a parameter), from the positions' ends:
 * a builder's node has no position of its own (a node-sized array less); the
 * replay's kept nodes do (pos). */
static inline int32_t pos_of(const tape_t *t, int32_t L) {
    return L < t->n_params ? -1 : first_past(t->pos_end, t->n_pos, L);
}

/* An F_MV4 group's vector: its entries in place where they are consecutive
 * nodes, else gathered from row 0's list (every other entry) into buf
 * (MAX_LANES long: mark_matvecs takes no longer rows). */
static inline const double *matvec_vector(const double *x, const int32_t *pair, const matvec_t *g, double *buf) {
    if (g->vec >= 0) return x + g->vec;
    const int32_t *v = pair + g->pairs + 1;
    for (int32_t j = 0; j < g->len; ++j) buf[j] = x[v[2 * j]];
    return buf;
}

#endif
