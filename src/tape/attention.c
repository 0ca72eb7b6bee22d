/* attention.c: one head's softmax at one position, its backward taken whole
 * (bwd_group 7): from the attention weights down to the logits, 7 T entries
 * for T keys, in one call instead of one dispatch an entry, the weights'
 * gradients in lanes across the keys. The rows are found and every pull of
 * theirs checked in attention_plan.c; attention.h is what the two share.
 *
 * Position p's row of head h (T = p + 1 keys t) is made as
 *   dot_t = q . k_t, mul_t = dot_t * scale, add_t = mul_t + (-max),
 *   exp_t = exp(add_t), sum_0 = 0 + exp_0, sum_t = sum_(t-1) + exp_t,
 *   pow_t = sum_(T-1) ** -1 (one a key, all one number), w_t = exp_t * pow_t,
 * and its 7 T backward entries are one range of the backward, dot_0 lowest
 * (the rest in any order: interleave.c alternates alike operations). Each
 * entry's gradient is the sum of its pull list (internal.h) from 0.0, in the
 * list's order; row_fits checks every entry's list against the sums
 * attention_grads computes, pull by pull (parent and local gradient's
 * place), and a row that
 * differs in anything is not taken. A weight w_t pulls from the head's
 * outputs o_i times the values v_t[i] (i < hd): the values are the same
 * nodes in every row of a head, so they are copied once a backward into a
 * dense block (vt, key-major by pull i), and the weights' sums run as lanes
 * of keys, each lane its own sum in its list's order (no FMA, as lanes.h).
 * A row also adds its terms of its head's values' gradients (gv: each
 * value's sum over the rows, attention_values.c), its weights times the
 * outputs' gradients it holds.
 *
 * The rows of a head are taken only all together (one a position, every
 * position): the first met in a backward, the last position's, copies the
 * values. Every parent outside a row is an external node whose gradient the
 * original order has made before the row's top entry (the weights' parents),
 * so computing the row's entries slot by slot (weights, pows, the total, the
 * sums last to first, exps, adds, then each mul before its dot) reads every
 * gradient after it is made, as the entries one by one would. */
#include "attention.h"
#include "lanes.h"

void attention_free(tape_t *t) {
    attention_t *a = t->attn;
    free(t->shift_runs);
    if (a == NULL) return;
    free(a->rows); free(a->heads); free(a->node); free(a->vt); free(a->gw); free(a->wv); free(a->gv); free(a->gv_lane);
    free(a->kt); free(a->gk); free(a->gd); free(a->ev); free(a->kv); free(a->takes); free(a->taken_tops);
    free(a);
}

size_t attention_bytes(const tape_t *t) {
    const attention_t *a = t->attn;
    if (a == NULL) return 0;
    size_t vt = 0, nb = a->takes != NULL ? (size_t)t->bwd_end[t->n_pos - 1] : 0;
    for (int32_t h = 0; h < a->n_heads; ++h)
        vt += (size_t)(a->heads[h].hd + a->heads[h].hdp * (1 + 2 * a->heads[h].qk)) * (size_t)a->ld;
    return sizeof *a + (size_t)a->n_rows * sizeof *a->rows + (size_t)a->n_heads * sizeof *a->heads
        + (size_t)a->n_node * sizeof *a->node + (vt + 4 * (size_t)a->ld) * sizeof *a->vt
        + (size_t)a->n_gv_lane * sizeof *a->gv_lane + nb + (a->kv != NULL ? (size_t)a->n_heads * t->n_pos * 4 : 0);
}

int32_t attention_width(const tape_t *t, int32_t b) { return SLOTS * t->attn->rows[t->bwd_lanes[b]].T; }

/* Rows a replay of n positions runs (which 3: that write no logits' gradients). */
int32_t attention_count(const tape_t *t, int32_t n, int which) {
    int32_t c = 0, whole = which == 3 && t->attn != NULL && attention_keys_whole(t);
    for (int32_t r = 0; t->attn != NULL && r < t->attn->n_rows; ++r) {
        const attn_row_t *w = t->attn->rows + r;
        c += w->T <= n && (which == 0 || (which == 1 && w->lean) || (which == 2 && w->steps)
                           || (which == 3 && w->lean && !w->dots_read && whole));
    }
    return c;
}

/* The weights' gradients of a row of T keys, lanes across keys (W a
 * register, four registers at once): gw[t] = 0.0 + vt[0 ld + t] gh[0] + ...,
 * in the pulls' order. */
#define WGRADS_CHUNKS(V, LOAD, STORE, W)                                          \
    for (int32_t t0 = 0; t0 < T; t0 += 4 * W) {                                   \
        V acc[4];                                                                 \
        memset(acc, 0, sizeof acc);                                               \
        for (int32_t i = 0; i < hd; ++i) {                                        \
            const double *v = vt + (int64_t)i * ld + t0;                          \
            double gi = gh[i];                                                    \
            for (int u = 0; u < 4; ++u) acc[u] = acc[u] + LOAD(v + W * u) * gi;   \
        }                                                                         \
        for (int u = 0; u < 4; ++u) STORE(gw + t0 + W * u, acc[u]);              \
    }
#define WGRADS_ARGS double *restrict gw, const double *restrict vt, int32_t ld, const double *gh, int32_t hd, int32_t T
KERNELS(wgrads, (WGRADS_ARGS), WGRADS_CHUNKS(v4, load4, store4, 4))
WIDE(wgrads, (WGRADS_ARGS), WGRADS_CHUNKS(v8, load8, store8, 8))

/* The values' gradients a row adds to (attention_values.c): key t's hdp
 * lanes gv[t hdp + i] += w_t g(o_i), each lane its own sum, the rows met
 * last position first (W a register). */
#define VGRADS_R(V, LOAD, STORE, W, R)  /* (hdp R W: gh in R registers) */           \
    {                                                                                   \
        V q[R];                                                                         \
        for (int u = 0; u < R; ++u) q[u] = LOAD(gh + W * u);                            \
        for (int32_t k = 0; k < T; ++k) {                                               \
            double wk = wv[k], *v = gv + (int64_t)k * (R * W);                          \
            for (int u = 0; u < R; ++u) STORE(v + W * u, LOAD(v + W * u) + wk * q[u]);  \
        }                                                                               \
    }
#define VGRADS_BODY(V, LOAD, STORE, W)                                          \
    if (hdp == 4 * W) VGRADS_R(V, LOAD, STORE, W, 4)                          \
    else if (hdp == 2 * W) VGRADS_R(V, LOAD, STORE, W, 2)                     \
    else if (hdp == W) VGRADS_R(V, LOAD, STORE, W, 1)                         \
    else for (int32_t k = 0; k < T; ++k) {                                    \
        double wk = wv[k];                                                    \
        double *v = gv + (int64_t)k * hdp;                                    \
        for (int32_t i = 0; i < hdp; i += W) STORE(v + i, LOAD(v + i) + wk * LOAD(gh + i)); \
    }
#define VGRADS_ARGS double *restrict gv, int32_t hdp, const double *wv, const double *gh, int32_t T
KERNELS(vgrads, (VGRADS_ARGS), VGRADS_BODY(v4, load4, store4, 4))
WIDE(vgrads, (VGRADS_ARGS), VGRADS_BODY(v8, load8, store8, 8))

/* A row's pows' terms of its total, lanes across keys: gd[k] = lg_pow (0.0 +
 * ev[k] gw[k]) (added up last key first after), and its weights' values
 * wv[k] = ev[k] pow_value (exp times pow, as the forward's). */
#define TERMS_BODY(V, LOAD, STORE, W)                                                  \
    for (int32_t k = 0; k < T; k += W) {                                               \
        V e = LOAD(ev + k);                                                            \
        STORE(gd + k, lg_pow * (0.0 + e * LOAD(gw + k)));                              \
        STORE(wv + k, e * pow_value);                                                  \
    }
#define TERMS_ARGS double *restrict gd, double *restrict wv, const double *ev, const double *gw, double lg_pow, \
                   double pow_value, int32_t T
KERNELS(terms, (TERMS_ARGS), TERMS_BODY(v4, load4, store4, 4))
WIDE(terms, (TERMS_ARGS), TERMS_BODY(v8, load8, store8, 8))

/* A lean row's logits' gradients, lanes across keys: key k's sum's gradient
 * is s, the total's taken once through 0.0 + 1.0 * s (one is 1.0: renumber.c),
 * which the chain of sums repeats to every key but the last (0.0 + 1.0 * v is
 * v but for -0.0, made 0.0: doing it again changes nothing); then each key's
 * exp, add, product and logit as the entries would (the last key's: after). */
#define LEAN_BODY(V, LOAD, STORE, W)                                                   \
    for (int32_t k = 0; k < T; k += W) {                                               \
        V e = (0.0 + pow_value * LOAD(gw + k)) + one * s;                              \
        V add = 0.0 + LOAD(ev + k) * e, m = 0.0 + one * add;                           \
        STORE(gd + k, 0.0 + scale * m);                                                \
    }
#define LEAN_ARGS double *restrict gd, const double *ev, const double *gw, double pow_value, double one, \
                  double scale, double s, int32_t T
KERNELS(lean, (LEAN_ARGS), LEAN_BODY(v4, load4, store4, 4))
WIDE(lean, (LEAN_ARGS), LEAN_BODY(v8, load8, store8, 8))

/* Row r's queries' and keys' gradients from its logits' (gd): its terms of
 * the keys' added as the values' (gh: room), then its query's and its last
 * key's sums written (attention_keys.c). */
static void row_keys(tape_t *t, const attn_row_t *r, const attn_head_t *h, const double *gd, double *gh) {
    for (int32_t j = 0; j < h->hd; ++j) gh[j] = t->x[r->qv + j];
    KERNEL_WIDE(vgrads)(t->attn->gk + h->gk, h->hdp, gd, gh, r->T);
    attention_keys_row(t, r, h);
}

/* A backward begins: every head's values are copied again at its first row. */
void attention_begin(tape_t *t) {
    if (t->attn != NULL) t->attn->serial++;
    if (t->attn != NULL && !t->attn->late) attention_keys_late(t);
}

/* The lines the row after r reads and writes, asked for while r runs (a
 * backward meets a head's rows far apart in the tape): its nodes' lists, its
 * exps' values, its entries' gradients, its pow's value and local gradient,
 * its outputs' gradients, its record and its top entry's; and the tape's
 * lines at the entry below r, which the backward meets next (it asks for
 * lines a few entries ahead of each entry it meets: a row skips 7 T). */
static void ahead_row(const tape_t *t, const attention_t *a, const attn_row_t *r) {
    int32_t e = r->b_lo > 0 ? r->b_lo - 1 : 0;
    __builtin_prefetch(t->bwd + e);
    __builtin_prefetch(t->bwd_group + e);
    __builtin_prefetch(t->bwd_kind + e);
    __builtin_prefetch(t->bwd_lanes + e);
    __builtin_prefetch(t->pull_start + e);
    if (r->next < 0) return;
    const attn_row_t *q = a->rows + r->next;
    const char *nd = (const char *)(a->node + q->at);  /* (lean: logits' and exps' lists only) */
    for (int64_t o = 0; o < 16 * (int64_t)q->T && !(q->lean && q->steps); o += 64)
        if (!q->lean || o < 4 * q->T || o + 64 > 12 * (int64_t)q->T) __builtin_prefetch(nd + o);
    for (int32_t L = q->ex_lo; L <= q->ex_hi; L += 8) __builtin_prefetch(t->x + L);
    for (int32_t L = q->lo; L <= q->hi && (!q->lean || q->dots_read); L += 8) __builtin_prefetch(t->grad + L, 1);
    __builtin_prefetch(t->x + q->pw0);
    __builtin_prefetch(t->x + t->n_nodes + q->pw0);
    __builtin_prefetch(t->grad + q->ho0);
    __builtin_prefetch(t->bwd_lanes + q->b_lo + SLOTS * q->T - 1);
    for (int32_t j = 0; a->heads[q->head].qk && j < a->heads[q->head].hd; j += 8) {  /* its query's values, and
                                   * the query's and key's gradients it writes (attention_keys.c) */
        __builtin_prefetch(t->x + q->qv + j);
        if (q->qn >= 0) __builtin_prefetch(t->grad + q->qn + j, 1);
        if (q->kn >= 0) __builtin_prefetch(t->grad + q->kn + j, 1);
    }
    if (q->next >= 0) __builtin_prefetch(a->rows + q->next);
}

/* The row whose top entry is b (bwd_group 7): its 7 T entries' gradients, as
 * row_fits checked them; returns how many entries it took. */
int32_t attention_grads(tape_t *t, int32_t b) {
    attention_t *a = t->attn;
    const attn_row_t *r = a->rows + t->bwd_lanes[b];
    attn_head_t *h = a->heads + r->head;
    int32_t T = r->T, n = t->n_nodes, hd = h->hd;
    const double *x = t->x;
    double *g = t->grad, *vt = a->vt + h->vt, gh[MAX_HD];
    const int32_t *nd = a->node + r->at, *dot = nd, *mul = nd + T, *ad = nd + 2 * T, *ex = nd + 3 * T;
    const int32_t *sm = nd + 4 * T;
    const int steps = r->steps;  /* (its logits' and exps' nodes from first nodes and steps: attention_values.c) */
#define EX(k) (steps ? r->ex0 + (k) * r->dex : ex[k])
#define DOT(k) (steps ? r->dot0 + (k) * r->ddot : dot[k])
    ahead_row(t, a, r);
    /* every pow's value and local gradient are pow_0's (row_fits): asked for
     * first, as the lines far apart in memory they are */
    const double one = x[2 * (int64_t)n], scale = x[r->scale], pow_value = x[r->pw0], lg_pow = x[n + r->pw0];
    if (h->copied != a->serial) {  /* a head's first row of this backward: its values, key by key
                                    * (the longest row's nodes: every row's, as attention_plan checked) */
        const attn_row_t *lr = a->rows + h->longest;
        const int32_t *vl = a->node + lr->at + SLOTS * lr->T;
        for (int32_t k = 0; k < t->n_used; ++k) {
            for (int32_t i = 0; i < hd && k + AHEAD_KEYS < t->n_used; i += h->ss == 1 ? 8 : 1)
                __builtin_prefetch(x + vl[k + AHEAD_KEYS] + (int64_t)i * h->ss);  /* (far apart in memory) */
            for (int32_t i = 0; i < hd; ++i) vt[(int64_t)i * a->ld + k] = x[vl[k] + (int64_t)i * h->ss];
        }
        if (h->gv >= 0) memset(a->gv + h->gv, 0, (size_t)t->n_used * (size_t)h->hdp * sizeof *a->gv);
        if (h->qk) attention_keys_begin(t, h, r->head, t->n_used);  /* (its keys' values, attention_keys.c) */
        h->copied = a->serial;
    }
    for (int32_t i = 0; i < hd; ++i) gh[i] = g[r->ho0 + (int64_t)i * r->sp];
    for (int32_t i = hd; i < h->hdp; ++i) gh[i] = 0.0;  /* (lanes no run reads) */
    KERNEL_WIDE(wgrads)(a->gw, vt, a->ld, gh, hd, T);
    /* the weights and pows, and the total over its pows last to first; then each
     * key's sum (down the chain from the total), exp, add, mul and dot. An exp's
     * local gradient is its value; a weight's value is its exp's times its pow's
     * (row_fits: a product), the same float as the forward's. The weights', pows'
     * and sums' gradients are read by the row only (row_fits): kept in registers
     * and gw, not written, but the first sum's */
    const double *gw = a->gw;
    double acc = 0.0, *wv = a->wv, *gd = a->gd, *ev = a->ev;  /* (gd: the logits' gradients, for the
                                   * queries and keys; ev: the exps' values) */
    for (int32_t k = 0; k < T; ++k) ev[k] = x[EX(k)];
    KERNEL_WIDE(terms)(gd, wv, ev, gw, lg_pow, pow_value, T);
    for (int32_t k = T - 1; k >= 0; --k) acc += gd[k];
    if (h->gv >= 0) KERNEL_WIDE(vgrads)(a->gv + h->gv, h->hdp, wv, gh, T);
    double sum = acc;
    if (r->lean) {  /* (nothing else reads but the logits': attention_unread.c) */
        KERNEL_WIDE(lean)(gd, ev, gw, pow_value, one, scale, 0.0 + one * sum, T);
        double e = (0.0 + pow_value * gw[T - 1]) + one * sum, add = 0.0 + ev[T - 1] * e, m = 0.0 + one * add;
        gd[T - 1] = 0.0 + scale * m;  /* (the last key's sum is the total's) */
        for (int32_t k = 0; k < T && r->dots_read; ++k) g[DOT(k)] = gd[k];  /* (else none reads them) */
        if (h->qk) row_keys(t, r, h, gd, gh);
        return SLOTS * T;
    }
    for (int32_t k = T - 1; k >= 0; --k) {
        if (k < T - 1) sum = 0.0 + one * sum;  /* (the total's is acc) */
        double e = (0.0 + pow_value * gw[k]) + one * sum;
        g[ex[k]] = e;
        double add = 0.0 + x[ex[k]] * e, m = 0.0 + one * add;
        g[ad[k]] = add;
        g[mul[k]] = m;
        g[dot[k]] = gd[k] = 0.0 + scale * m;
    }
    g[sm[0]] = sum;
    if (h->qk) row_keys(t, r, h, gd, gh);
    return SLOTS * T;
#undef EX
#undef DOT
}
