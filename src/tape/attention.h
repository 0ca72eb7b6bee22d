/* attention.h: a head's softmax rows (attention.c) as attention_plan.c
 * finds them and attention.c runs them, the values' runs (shifted.c) whose
 * sums the rows make as they run (attention_values.c), and the queries' and
 * keys' gradients the rows sum (attention_keys.c); read by those files only. */
#ifndef MICROGPT_TAPE_ATTENTION_H
#define MICROGPT_TAPE_ATTENTION_H

#include "internal.h"

#define SLOTS 7        /* entries a key: dot, mul, add, exp, sum, pow, weight */
#define MAX_HD 256     /* pulls a weight (the head's dimension) */
#define LD_STEP 32     /* keys a row of vt is padded to: four registers of eight */
#define AHEAD_KEYS 8   /* a head's first row copies its keys' values: their lines asked for so many keys ahead */

typedef struct attn_row {
    int32_t b_lo, T;        /* entries b_lo .. b_lo + SLOTS T - 1 */
    int32_t head;
    int32_t scale;          /* the logits' local gradient's place (mul_t = dot_t * scale) */
    int32_t pw0;            /* pow_0's node (every pow's value and local gradient) */
    int32_t next;           /* the row a whole backward meets next (-1: none): its lines asked for early */
    int32_t lo, hi, ex_lo, ex_hi;  /* the span of the nodes whose gradients it writes, and its exps' */
    int32_t lean;           /* it writes its logits' gradients only (attention_unread.c) */
    int32_t steps;          /* its logits' and exps' nodes step by constants: dot_t = dot0 + t ddot,
                             * exp_t = ex0 + t dex (read without their lists) */
    int32_t dot0, ddot, ex0, dex;
    int32_t ho0, sp;        /* the weights' parents: ho0 + i sp, i < hd (the head's outputs) */
    int64_t at;             /* its nodes: node[at + s T + t], slot s (SLOTS, then v_t's first value) */
    int32_t qn, qv, kn;     /* its head's qk: its query's entries' nodes qn + j, its values qv + j
                             * (j < hd), and the entries' nodes kn + j of its last key (key T - 1,
                             * whose sum it ends: attention_keys.c) */
    int32_t dots_read;      /* an entry not taken reads its logits' gradients: a lean row writes them */
} attn_row_t;

typedef struct attn_head {
    int32_t hd, ss;         /* pulls a weight; the values' step between them */
    int32_t key;            /* v_0's first value pulled (which head a row is) */
    int32_t longest;        /* its row of the most keys (whose values stand for all) */
    int64_t vt;             /* its block: vt[i ld + t] = x[v_t + i ss] */
    int64_t copied;         /* the backward its block was last filled in (attention_t's serial) */
    int64_t gv;             /* its values' gradients: gv[gv + t hdp + i] sums w(p, t) g(o_p[i]) over
                             * the rows run so far (-1: no run reads them, none summed) */
    int32_t hdp;            /* hd rounded up to eight (the lanes of a key) */
    int32_t last_first;     /* a backward meets its rows last position first (attention_values.c) */
    int32_t qk;             /* its rows sum its queries' and keys' gradients (attention_keys.c) */
    int64_t kt, gk;         /* its keys' values kt[kt + t hdp + j] = x[kv[h N + t] + j] (copied with vt),
                             * and their gradients' sums so far gk[gk + t hdp + j] (qk) */
} attn_head_t;

typedef struct attention {
    int32_t n_rows, n_heads, ld;
    attn_row_t *rows;
    attn_head_t *heads;
    int32_t *node;          /* the rows' nodes by slot */
    int64_t n_node;
    double *vt, *gw;        /* the values' blocks; room for one row's weights' gradients */
    double *gv, *wv;        /* the heads' values' gradients (attn_head_t gv); one row's weights */
    int32_t *gv_lane;       /* a run's lanes' places in gv (shift_run_t gv_at) */
    int64_t n_gv_lane;
    int64_t serial;         /* backwards begun (attention_begin) */
    double *kt, *gk, *gd;   /* the heads' keys' values and gradients (attn_head_t); one row's logits' gradients */
    double *ev;             /* one row's exps' values */
    int32_t *kv;            /* n_heads N: key t's values' first node, kv[h N + t] (qk heads) */
    uint8_t *takes;         /* by entry: the top of a query's or key's group whose sums the rows make */
    int32_t *taken_tops, n_taken;  /* ... those entries */
    int late;               /* attention_keys_late has run (the rows' dots_read are final) */
} attention_t;

/* A run of a head's values' entries (shifted.c): 1 to 4 heads' sixteen
 * entries, each head's from one list, its lanes' parents side by side. */
typedef struct shift_run {
    int32_t heads;          /* 1 to 4 heads' sixteen entries */
    int32_t count;          /* pulls a list */
    int64_t k[SIDE];        /* head h's list (its first group's) */
    int64_t gv_at;          /* lane m of head h is gv[gv_lane[gv_at + 16 h + m]], summed by the
                             * rows (attention_values.c); -1: from the lists */
    int32_t node0[SIDE];    /* where head h's lanes are consecutive nodes node0[h] + m, and its sums
                             * gv[gv15[h] + 15 - m] (a head's values' nodes run down from its first):
                             * those (-1: not so) */
    int32_t gv15[SIDE];
} shift_run_t;

/* attention_keys.c: a head's keys' values and sums at its first row of a
 * backward (n keys); a row's query's and last key's gradients */
void attention_keys_begin(const tape_t *t, const attn_head_t *h, int32_t head, int32_t n);
void attention_keys_row(tape_t *t, const attn_row_t *r, const attn_head_t *h);
void attention_keys_late(tape_t *t);  /* before the first backward */
int attention_keys_whole(const tape_t *t);

#endif
