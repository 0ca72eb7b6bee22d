/* builder.h: the build's working state (build.c, reads.c, order.c), kept
 * apart from the program a replay runs (internal.h's struct tape): once
 * tape_build returns, nothing here is left. */
#ifndef MICROGPT_TAPE_BUILDER_H
#define MICROGPT_TAPE_BUILDER_H

#include "internal.h"

/* A pull entry's place in the order (order.c), and its edge. */
typedef struct { int64_t key; int32_t edge; } pull_key_t;

/* The builder's working state (build.c, order.c): what it borrows, and what
 * it owns until tape_build's one cleanup. */
typedef struct {
    arena_t *a;             /* the recorded graph, read only (copy_graph, check_tail), but for
                             * its recorded edges with r->consume (rewritten by copy_graph) */
    const record_t *r;
    tape_t *t;
    int32_t *pmap;          /* arena node below the recording -> parameter slot, or -1 */
    int64_t n_param_edges;
    int32_t *rank;          /* local node -> its place in a depth-first post-order, -1: not reached
                             * (t->scratch, once the pull lists are filled) */
    int64_t arena_edge0;    /* the arena's edge index of local edge 0 */
    int64_t rec_end;        /* the arena node after the last position's (local_of) */
    pull_key_t *keys;       /* sort_pulls' room for a long list's keys (keys_cap of them) */
    int32_t *pair_base;     /* a compact chain's first product among all compact chains' products */
    int32_t *pair_rank;     /* ... each product's rank in the last walk, where its chain is
                             * irregular (order.c product_done; calloc'd: the rest untouched) */
    uint8_t *irregular;     /* local node: a compact chain whose ranks pair_rank holds */
    int64_t n_dot_pairs;    /* the compact chains' products */
    int64_t keys_cap;
    int32_t *stack_node, *stack_edge;  /* the walk's stack (stack_cap entries) */
    int64_t stack_cap;
} builder_t;

/* reads.c: phases of tape_build (build.c) */
const char *count_readers(builder_t *b);
const char *fill_reads(builder_t *b);
const char *token_slots(builder_t *b);

/* order.c */
int32_t block_of(const builder_t *b, int32_t q);  /* the logit of its position node q is in, or -1 */
int32_t block_at(const builder_t *b, int32_t q, int32_t p);  /* ... node q of position p */
const char *order_pulls(builder_t *b);     /* sorted, rotations found, the rule checked */
const char *verify_targets(builder_t *b);  /* ... against walks for other targets */
int order_walk(builder_t *b);                /* walk.c: every node's rank in the walk (0, or -1 out of memory) */

#endif
