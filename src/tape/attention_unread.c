/* attention_unread.c: the rows (attention.c) whose products', adds', exps'
 * and first sum's gradients nothing outside the row reads, so that the row
 * writes only its logits' (lean).
 *
 * A node's gradient is read by its children's entries only (each pull is an
 * edge; a chain's inner nodes read its top's, and a row's nodes are no
 * chain's tops: their entries are plain operations). Of a row's nodes, an
 * exp has one child, the row's add; a product mul_t = dot_t * scale's other
 * child is the scale, an add add_t = mul_t + c's and the first sum's
 * 0 + exp_0's are read from their forward instructions: each must be a
 * constant (numbered after every position's nodes) or a derived number
 * (the softmax's largest logit, negated), which take no gradient. */
#include "attention.h"

/* c takes no gradient: a constant or a derived number. */
static int no_gradient(const tape_t *t, const uint8_t *derived, int32_t c) {
    return c >= t->pos_end[t->n_pos - 1] || (c >= t->n_params && derived[c]);
}

/* Binary operation L (ins: its instruction) adds `known` and a node taking
 * no gradient? */
static int adds_unread(const tape_t *t, const int64_t *ins, const uint8_t *derived, int32_t L, int32_t known) {
    if (t->op[L] != OP_ADD || ins[L] < 0) return 0;
    const int32_t *A = t->fwd_arg + 3 * ins[L];
    return (A[0] == known && no_gradient(t, derived, A[1])) || (A[1] == known && no_gradient(t, derived, A[0]));
}

/* Every row's lean. 0, or -1 out of memory. */
int attention_unread_plan(tape_t *t) {
    attention_t *a = t->attn;
    int64_t nf = t->fwd_end[t->n_pos - 1], *ins = NULL;
    int32_t nb = t->bwd_end[t->n_pos - 1], *entry = NULL;
    uint8_t *derived = NULL;
    if (a->n_rows == 0) return 0;
    if (!NEW(ins, t->n_nodes) || !NEW(entry, t->n_nodes) || !NEW(derived, t->n_nodes)) {
        free(ins); free(entry);
        return -1;
    }
    for (int32_t L = 0; L < t->n_nodes; ++L) ins[L] = entry[L] = -1;
    for (int64_t i = 0; i < nf; ++i)
        if (t->fwd_code[i] == F_ADD || t->fwd_code[i] == F_RUN) ins[t->fwd[i]] = i;
    for (int32_t b = 0; b < nb; ++b) entry[t->bwd[b]] = b;
    for (int64_t j = 0; j < t->n_derived; ++j) derived[t->derived_node[j]] = 1;
    for (int32_t r = 0; r < a->n_rows; ++r) {
        attn_row_t *w = a->rows + r;
        int32_t T = w->T;
        const int32_t *nd = a->node + w->at, *dot = nd, *mul = nd + T, *ad = nd + 2 * T, *ex = nd + 3 * T;
        const int32_t *sm = nd + 4 * T;
        int lean = no_gradient(t, derived, w->scale) && t->bwd_kind[entry[sm[0]]] == K_OP
                   && adds_unread(t, ins, derived, sm[0], ex[0]);
        for (int32_t k = 0; k < T && lean; ++k)
            lean = t->op[mul[k]] == OP_MUL && t->bwd_kind[entry[mul[k]]] == K_OP && t->bwd_kind[entry[ad[k]]] == K_OP
                   && t->bwd_kind[entry[ex[k]]] == K_OP && adds_unread(t, ins, derived, ad[k], mul[k])
                   && dot[k] != w->scale;
        w->lean = lean;
    }
    free(ins); free(entry); free(derived);
    return 0;
}
