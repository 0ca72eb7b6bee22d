/* attention.h: a head's softmax rows (attention.c) as attention_plan.c
 * finds them and attention.c runs them; read by those two files only. */
#ifndef MICROGPT_TAPE_ATTENTION_H
#define MICROGPT_TAPE_ATTENTION_H

#include "internal.h"

#define SLOTS 7        /* entries a key: dot, mul, add, exp, sum, pow, weight */
#define MAX_HD 256     /* pulls a weight (the head's dimension) */
#define LD_STEP 32     /* keys a row of vt is padded to: four registers of eight */

typedef struct attn_row {
    int32_t b_lo, T;        /* entries b_lo .. b_lo + SLOTS T - 1 */
    int32_t head;
    int32_t scale;          /* the logits' local gradient's place (mul_t = dot_t * scale) */
    int32_t ho0, sp;        /* the weights' parents: ho0 + i sp, i < hd (the head's outputs) */
    int64_t at;             /* its nodes: node[at + s T + t], slot s (SLOTS, then v_t's first value) */
} attn_row_t;

typedef struct attn_head {
    int32_t hd, ss;         /* pulls a weight; the values' step between them */
    int32_t key;            /* v_0's first value pulled (which head a row is) */
    int32_t longest;        /* its row of the most keys (whose values stand for all) */
    int64_t vt;             /* its block: vt[i ld + t] = x[v_t + i ss] */
    int64_t copied;         /* the backward its block was last filled in (attention_t's serial) */
} attn_head_t;

typedef struct attention {
    int32_t n_rows, n_heads, ld;
    attn_row_t *rows;
    attn_head_t *heads;
    int32_t *node;          /* the rows' nodes by slot */
    int64_t n_node;
    double *vt, *gw;        /* the values' blocks; room for one row's weights' gradients */
    int64_t serial;         /* backwards begun (attention_begin) */
} attention_t;

#endif
