/* tape.h: a recorded training step, replayed in C. The public contract:
 * what the recorder hands over (record_t), and functions; the tape's layout
 * is internal.h's.
 *
 * A tape is built once from a step's graph while it is still in the arena
 * (positions 0..N-1 of one document, then the mean of their losses), and then
 * serves every document of up to N positions: the graph for n positions is the
 * first n positions of the recorded one plus the mean of their n losses. What
 * varies between documents is declared when the tape is built, never guessed,
 * and checked:
 *   token slots    the reads of row tokens[p] of one parameter table (the
 *                  token embedding): re-pointed at every replay;
 *   target slots   the one read at position p of probs[tokens[p + 1]] among
 *                  p's candidates: re-pointed at every replay;
 *   derived        constants computed from data in Python (the softmax's
 *                  largest logit, negated): recomputed from their sources.
 * The replay does every recorded operation with the same floats, in the same
 * order, sums included; its backward adds each node's terms in the order the
 * reference's depth-first walk does, a rule the build checks against real
 * walks for other targets (a graph it does not fit is refused). */
#ifndef MICROGPT_TAPE_H
#define MICROGPT_TAPE_H

#include "arena.h"

typedef struct tape tape_t;

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
    int32_t consume;           /* 1: the build takes every node and edge of the arena from
                                * rec_start on (the tail and the root included): it rewrites the
                                * recorded edges in place (to its own indices), may use the edge
                                * column's room past them, and gives the rows' and edges' pages
                                * back (on Linux they read as zeros after; nothing relies on it).
                                * The caller releases the arena from rec_start once the tape is
                                * built or refused, and reads none of those nodes before */
    int32_t verify_shifts;     /* other targets to check the backward rule with (0 = every one;
                                * -1 = none: a forward-only tape, whose backward must not run) */
} record_t;

/* What a replay of n positions runs (tape_counts). */
typedef struct {
    int64_t nodes;              /* the recorded graph's nodes of those positions (a compact sum: 2) */
    int64_t kept_nodes;         /* nodes the tape keeps (a chain's inner nodes are not kept) */
    int64_t forward, backward;  /* forward instructions, backward entries */
    int64_t forward_side_by_side; /* ... forward instructions of four (or more) sums at once */
    int64_t pulls;              /* gradient terms */
    int64_t pulls_side_by_side; /* ... of them summed four (or more) entries at once */
    int64_t pulls_by_matrix_rows; /* ... of them as a vector read by a matrix's rows */
    int64_t other_param_reads;  /* parameter reads other than matrix-row groups' */
    int64_t forward_runs;       /* runs of elementwise instructions (one instruction each) */
    int64_t forward_in_runs;    /* ... the instructions they run */
    int64_t forward_strided;    /* groups of four sums whose operands step by constants */
    int64_t pulls_in_lanes;     /* gradient terms of a vector's entries summed in lanes, one list for all */
    int64_t pulls_strided;      /* ... of groups of four whose lists step by constants (read from the steps) */
    int64_t pulls_single_runs;  /* ... of runs of entries whose lists are one pull each (singles.c) */
    int64_t pulls_single_chained; /* ... of them whose parent is the entry just before (its gradient
                                 * kept in a register) */
    int64_t vectors_paired;     /* vectors read by a matrix's rows whose gradients run with other
                                 * positions' (two, four or eight at once) */
    int64_t vectors_by_eight;   /* ... of them eight at once (with AVX-512) */
    int64_t forward_records;    /* records of the forward's program between the matrices (0: none,
                                 * the instructions run one by one) */
    int64_t forward_by_steps;   /* ... of them sums read from first nodes and steps, not lists */
    int64_t forward_scaled;     /* products of such sums by one number (a logit's scale) run in the
                                 * sums' record, not as records of their own */
    int64_t matrix_panels;      /* a matrix's rows times a position's vector, run for every position
                                 * at once (0: position by position) */
    int64_t weight_blocks_paired; /* row blocks whose weights' gradients the last backward ran two
                                 * at once (they read the same vectors; with AVX-512) */
    int64_t weight_vectors_reused; /* row blocks whose weights' gradients the last backward summed
                                 * from vectors packed for a block before (they read the same ones) */
    int64_t short_vectors;      /* vectors of 16 or 32 entries read by rows whose gradients the tape's
                                 * backwards so far summed in one pass over their lists (attention heads') */
    int64_t vectors_shared_list;  /* ... of those, summed with 1 to 3 others over one list (heads' outputs) */
    int64_t vectors_side_by_side; /* ... summed with 1 to 3 others at once, each its own list (a position's
                                 * heads' queries, or keys) */
    int64_t attention_rows;     /* heads' softmax rows whose backward runs whole (attention.c) */
    int64_t attention_rows_lean; /* ... of them writing only their logits' gradients (nothing else
                                 * reads the others': attention_unread.c) */
    int64_t attention_rows_stepped; /* ... of them reading their logits' and exps' nodes from first
                                 * nodes and steps, not lists */
    int64_t values_from_rows;   /* entries of runs of a head's values whose sums the head's softmax
                                 * rows make as they run (attention_values.c) */
    int64_t logits_unwritten;   /* heads' softmax rows that write no logits' gradients: nothing but
                                 * the rows' own sums of the queries' and keys' reads them */
    int64_t keys_from_rows;     /* entries of a head's queries and keys whose gradients its softmax
                                 * rows sum as they run, not their lists (attention_keys.c) */
    int64_t shifted_in_runs;    /* entries of groups of 4 whose parents step with them (a head's
                                 * values), run sixteen or more from one list (shifted.c) */
    int64_t backward_steps;     /* the backward's steps (a group, a run, or an entry alone: steps.c) */
    int64_t pulls_stepped;      /* gradient terms of lists whose parents and sources step by constants,
                                 * summed without their indices */
} tape_counts_t;

/* Build a tape; returns NULL with *why set to a static reason when the
 * recording cannot be replayed exactly (the caller keeps the per-operation
 * path), or on out of memory (*why is then "out of memory"). The arena is
 * left as it was, but with r->consume for everything from r->rec_start on. */
tape_t *tape_build(arena_t *a, const record_t *r, const char **why);
void tape_free(tape_t *t);

/* Forward over positions [from, n) for tokens[0..n] (n + 1 ids), positions
 * before from as the last forward left them (0: every position; a sampler's
 * cache grows a position per call); parameter values read from the arena.
 * Returns OP_OK (the loss of positions [0, n) is tape_loss) or the status an
 * operation raised (then no position counts as computed). */
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

/* The parameters are arena nodes at + k (read and written as one block), or
 * at = -1: through the params array. Set before each forward and backward. */
void tape_set_params_at(tape_t *t, int64_t at);
int tape_params_in_one_block(const tape_t *t);

int32_t tape_positions(const tape_t *t);   /* N: positions recorded */
int32_t tape_computed(const tape_t *t);    /* positions of the last forward (0: none) */
int32_t tape_token_limit(const tape_t *t); /* token ids must be below this */
double tape_loss(const tape_t *t);         /* the last forward's loss */
/* probs[v] at position p after a forward over it */
double tape_prob(const tape_t *t, int32_t p, int32_t v);
/* Whether position p's logits are kept (a sampler can read them:
 * tape_tempered_probs); then, after a forward over position p, the
 * sampler's probabilities there, softmax(logits / temperature) as the model
 * code computes it, k = temperature ** -1: V floats into out. OP_OK, or the
 * status the model code's first failing operation would raise. */
int tape_logits_kept(const tape_t *t, int32_t p);
status_t tape_tempered_probs(const tape_t *t, int32_t p, double k, double *out);
tape_counts_t tape_counts(const tape_t *t, int32_t n);  /* 1 <= n <= tape_positions */
size_t tape_bytes(const tape_t *t);
/* The widest SIMD lanes the kernels take here: 0 plain, 1 AVX2, 2 AVX-512
 * (the processor's, or fewer as MICROGPT_SIMD says: lanes.h). */
int tape_lanes(void);

#endif
