/* attention_keys.c: a head's queries' and keys' gradients summed by its
 * softmax rows (attention.c) as they run, not read back from their lists.
 *
 * Row p of a head (T = p + 1 keys) has the logits dot_t = q_p . k_t (chains
 * of products q_p[j] k_t[j]) and finds their gradients g(dot_t). Query
 * q_p[j] is read by the row's logits only: its gradient is
 * 0.0 + g(dot_(T-1)) k_(T-1)[j] + ... + g(dot_0) k_0[j], the last key first
 * (the reference's walk meets a row's logits in key order, so adds their
 * terms last key first). Key k_t[j] is read by the logits dot(p, t) of the
 * rows p >= t: its gradient is 0.0 + g(dot(N-1, t)) q_(N-1)[j] + ... +
 * g(dot(t, t)) q_t[j], the last position first. The row sums its query
 * whole, in lanes of j (its keys' values copied once a backward into a
 * dense block, kt), and adds its terms of the keys' to its head's block of
 * sums (gk); the rows, met last position first (attention_values.c checks
 * it), add them in the lists' order, and row t, the last to add to key t,
 * writes key t's sum. The entries' own steps (a vector's lanes from one
 * list, matrix.c) are then none (steps.c asks attention_takes). A replay of
 * n positions runs the rows below n only, as the lists skip the parents at
 * or past their end.
 *
 * Nothing is assumed of the order: every such group's list is checked here
 * pull by pull against those sums (its parent: which row's logit of which
 * key; its local gradient's place: which key's or query's values). A head
 * is taken only if its rows are met last position first and the checked
 * lists name every row's query's values and every key's; a query or key
 * whose group is not checked keeps its list (the rows still write their
 * logits' gradients). */
#include "attention.h"
#include "lanes.h"

typedef struct {
    int32_t *dot_row, *dot_key;  /* by node: the row whose logit it is, and its key (-1: none) */
    int32_t *row_at;             /* h N + p: head h's row of position p */
} keys_scan_t;

/* Group top b (L lanes, lane i node0 + i, lane i's local gradients L - 1 - i
 * before its list's) as row r's query: pull k from logit T - 1 - k, its
 * local gradient at that key's values kv + i. */
static int as_query(tape_t *t, const keys_scan_t *sc, int32_t r, int32_t b, int32_t L, int32_t node0) {
    attention_t *a = t->attn;
    attn_row_t *w = a->rows + r;
    int32_t T = w->T, *kv = a->kv + (int64_t)w->head * t->n_pos;
    int64_t k0 = t->pull_start[b];
    if (pull_count(t, b) != T || w->qn >= 0) return 0;
    for (int32_t k = 0; k < T; ++k) {
        int32_t q = t->pull_parent[k0 + k], key = T - 1 - k, s = t->pull_src[k0 + k] - (L - 1);
        if (sc->dot_row[q] != r || sc->dot_key[q] != key || (kv[key] >= 0 && kv[key] != s)) return 0;
    }
    for (int32_t k = 0; k < T; ++k) kv[T - 1 - k] = t->pull_src[k0 + k] - (L - 1);
    w->qn = node0;
    return 1;
}

/* ... as head h's key t: pull k from the logit of key t of the row at
 * position N - 1 - k, its local gradient at that row's query's values qv + i. */
static int as_key(tape_t *t, const keys_scan_t *sc, int32_t h, int32_t b, int32_t L, int32_t node0) {
    attention_t *a = t->attn;
    int32_t N = t->n_pos, key = sc->dot_key[t->pull_parent[t->pull_start[b]]];
    const int32_t *row_at = sc->row_at + (int64_t)h * N;
    int64_t k0 = t->pull_start[b];
    if (pull_count(t, b) != N - key || a->rows[row_at[key]].kn >= 0) return 0;
    for (int32_t k = 0; k < N - key; ++k) {
        int32_t q = t->pull_parent[k0 + k], r = sc->dot_row[q], s = t->pull_src[k0 + k] - (L - 1);
        if (r != row_at[N - 1 - k] || sc->dot_key[q] != key || (a->rows[r].qv >= 0 && a->rows[r].qv != s)) return 0;
    }
    for (int32_t k = 0; k < N - key; ++k) a->rows[row_at[N - 1 - k]].qv = t->pull_src[k0 + k] - (L - 1);
    a->rows[row_at[key]].kn = node0;
    return 1;
}

/* Group top b whose first parent is row r's logit: a query or a key of r's
 * head, checked (1), or not (0). */
static int group_fits(tape_t *t, const keys_scan_t *sc, int32_t r, int32_t b) {
    const attention_t *a = t->attn;
    int32_t h = a->rows[r].head, L = t->bwd_group[b] == 3 ? t->bwd_lanes[b] : SIDE, node0 = t->bwd[b - L + 1];
    if (L != a->heads[h].hd) return 0;
    for (int32_t i = 0; i < L; ++i)
        if (t->bwd[b - L + 1 + i] != node0 + i) return 0;
    return as_query(t, sc, r, b, L, node0) || as_key(t, sc, h, b, L, node0);
}

/* Are head h's sums the lists'? Its rows met last position first, each
 * row's query's values and each key's known (the sums read them all); a
 * query or key whose entries are no checked group (qn, kn -1: the last
 * key's, a list of one, is not a vector's group) keeps its list. */
static int head_whole(const attention_t *a, int32_t h, int32_t N) {
    for (int32_t r = 0; r < a->n_rows; ++r)
        if (a->rows[r].head == h && a->rows[r].qv < 0) return 0;
    for (int32_t k = 0; k < N; ++k)
        if (a->kv[(int64_t)h * N + k] < 0) return 0;
    return a->heads[h].last_first;
}

/* Each row's dots_read: whether an entry of the backward reads its logits'
 * gradients (their children's entries: its query's and keys') other than a
 * group the rows take (takes), as the whole backward meets them; and the
 * groups taken (taken_tops, for attention_keys_late). 0, or -1 out of memory. */
static int logits_read(tape_t *t, const int32_t *dot_row) {
    attention_t *a = t->attn;
    int32_t nb = t->bwd_end[t->n_pos - 1], w;
    for (int32_t r = 0; r < a->n_rows; ++r) a->rows[r].dots_read = 0;
    a->n_taken = 0;
    for (int32_t b = nb - 1; b >= 0; b -= w) {
        w = bwd_width(t, b);
        a->n_taken += a->takes[b];
        for (int64_t k = t->pull_start[b - w + 1]; k < t->pull_start[b + 1] && !a->takes[b]; ++k)
            if (dot_row[t->pull_parent[k]] >= 0) a->rows[dot_row[t->pull_parent[k]]].dots_read = 1;
    }
    if (!NEW(a->taken_tops, a->n_taken)) return -1;
    for (int32_t b = 0, n = 0; b < nb; ++b)
        if (a->takes[b]) a->taken_tops[n++] = b;
    return 0;
}

/* Before the first backward (its steps are made after every plan, steps.c):
 * whether every group taken is skipped (whole); if one is run after all (it leads others not taken, aliases.c
 * share_plan, or a level runs it first, levels.c), every row writes its
 * logits' gradients. */
int attention_keys_whole(const tape_t *t) {
    const attention_t *a = t->attn;
    int32_t lo, hi, whole = 1;
    for (int32_t i = 0; i < a->n_taken; ++i) {
        int32_t b = a->taken_tops[i];
        backward_range(t, first_past(t->bwd_end, t->n_pos, b), b, &lo, &hi);
        whole &= attention_takes(t, b) && b < hi;
    }
    return whole;
}

void attention_keys_late(tape_t *t) {
    attention_t *a = t->attn;
    int whole = attention_keys_whole(t);
    for (int32_t r = 0; r < a->n_rows && !whole; ++r) a->rows[r].dots_read = 1;
    a->late = 1;
}

/* The heads whose rows sum their queries' and keys' gradients (qk), and the
 * groups they take (takes). After attention_values_plan. 0, or -1 out of memory. */
int attention_keys_plan(tape_t *t) {
    attention_t *a = t->attn;
    int32_t N = t->n_pos, nb = t->bwd_end[N - 1];
    keys_scan_t sc = {0};
    int rc = -1;
    if (a->n_heads == 0) return 0;
    if (!NEW(sc.dot_row, t->n_nodes) || !NEW(sc.dot_key, t->n_nodes) || !NEW(sc.row_at, (int64_t)a->n_heads * N)
        || !NEW(a->kv, (int64_t)a->n_heads * N) || !NEW(a->takes, nb)) goto done;
    for (int32_t L = 0; L < t->n_nodes; ++L) sc.dot_row[L] = -1;
    for (int64_t k = 0; k < (int64_t)a->n_heads * N; ++k) a->kv[k] = -1;
    for (int32_t r = 0; r < a->n_rows; ++r) {
        attn_row_t *w = a->rows + r;
        w->qn = w->qv = w->kn = -1;
        sc.row_at[(int64_t)w->head * N + w->T - 1] = r;
        for (int32_t k = 0; k < w->T; ++k) sc.dot_row[a->node[w->at + k]] = r, sc.dot_key[a->node[w->at + k]] = k;
    }
    for (int32_t b = SIDE - 1; b < nb; ++b) {
        uint8_t g = t->bwd_group[b];
        if ((g != 2 && g != 3) || t->bwd_kind[b] == K_ROTATE || pull_count(t, b) == 0) continue;
        int32_t r = sc.dot_row[t->pull_parent[t->pull_start[b]]];
        if (r < 0) continue;
        if (group_fits(t, &sc, r, b)) a->takes[b] = 1;
    }
    int64_t room = 0;
    for (int32_t h = 0; h < a->n_heads; ++h) {
        attn_head_t *hh = a->heads + h;
        hh->qk = head_whole(a, h, N);
        hh->kt = hh->gk = room;
        room += hh->qk ? (int64_t)hh->hdp * a->ld : 0;
    }
    for (int32_t b = 0; b < nb; ++b)
        if (a->takes[b]) a->takes[b] = (uint8_t)a->heads[a->rows[sc.dot_row[t->pull_parent[t->pull_start[b]]]].head].qk;
    if (!NEW(a->kt, room) || !NEW(a->gk, room)) goto done;
    rc = logits_read(t, sc.dot_row);
    if (rc == 0) a->late = 0;
done:
    free(sc.dot_row); free(sc.dot_key); free(sc.row_at);
    return rc;
}

/* Does the backward skip group top b's step (the rows write its lanes)? A
 * group that leads others (aliases.c share_plan: it sums theirs too) only if
 * the rows write theirs too. */
int attention_takes(const tape_t *t, int32_t b) {
    const attention_t *a = t->attn;
    if (a == NULL || a->takes == NULL || !a->takes[b]) return 0;
    int32_t lo = 0, hi = t->n_share;
    while (lo < hi) {  /* (share_b descending) */
        int32_t mid = lo + (hi - lo) / 2;
        if (t->share_b[mid] == b) lo = hi = mid;
        else if (t->share_b[mid] > b) lo = mid + 1;
        else hi = mid;
    }
    if (lo >= t->n_share || t->share_b[lo] != b || t->share_n[lo] == 0) return 1;
    int32_t n = t->share_n[lo] < 0 ? -t->share_n[lo] : t->share_n[lo];
    for (int32_t j = 0; j < n; ++j)
        if (!a->takes[t->share_n[lo] < 0 ? b - j * t->bwd_lanes[b] : t->share_b[lo + j]]) return 0;
    return 1;
}

/* Lanes of the groups skipped below entry b (tape_counts). */
int64_t attention_keys_count(const tape_t *t, int32_t b) {
    int64_t c = 0;
    for (int32_t e = 0; e < b && t->attn != NULL; ++e) c += attention_takes(t, e) ? bwd_width(t, e) : 0;
    return c;
}

/* A row's query, lanes across j (W a register; all its R registers at once
 * where it has 1, 2 or 4, else four, then one): gq[j] = 0.0 + gd[T-1]
 * kt[(T-1) hdp + j] + ... + gd[0] kt[j]. */
#define QGRADS_R(V, LOAD, STORE, W, R)                                               \
    {                                                                                \
        V acc[R];                                                                    \
        memset(acc, 0, sizeof acc);                                                  \
        for (int32_t k = T - 1; k >= 0; --k) {                                       \
            const double *v = kt + (int64_t)k * (R * W);                             \
            double gk = gd[k];                                                       \
            for (int u = 0; u < R; ++u) acc[u] = acc[u] + LOAD(v + W * u) * gk;      \
        }                                                                            \
        for (int u = 0; u < R; ++u) STORE(gq + W * u, acc[u]);                       \
        return;                                                                      \
    }
#define QGRADS_BODY(V, LOAD, STORE, W)                                               \
    if (hdp == 2 * W) QGRADS_R(V, LOAD, STORE, W, 2)                                 \
    if (hdp == W) QGRADS_R(V, LOAD, STORE, W, 1)                                     \
    int32_t j0 = 0;                                                                  \
    for (; j0 + 4 * W <= hdp; j0 += 4 * W) {                                         \
        V acc[4];                                                                    \
        memset(acc, 0, sizeof acc);                                                  \
        for (int32_t k = T - 1; k >= 0; --k) {                                       \
            const double *v = kt + (int64_t)k * hdp + j0;                            \
            double gk = gd[k];                                                       \
            for (int u = 0; u < 4; ++u) acc[u] = acc[u] + LOAD(v + W * u) * gk;      \
        }                                                                            \
        for (int u = 0; u < 4; ++u) STORE(gq + j0 + W * u, acc[u]);                  \
    }                                                                                \
    for (; j0 < hdp; j0 += W) {                                                      \
        V acc;                                                                       \
        memset(&acc, 0, sizeof acc);                                                 \
        for (int32_t k = T - 1; k >= 0; --k) acc = acc + LOAD(kt + (int64_t)k * hdp + j0) * gd[k]; \
        STORE(gq + j0, acc);                                                         \
    }
#define QGRADS_ARGS double *restrict gq, const double *restrict kt, int32_t hdp, const double *gd, int32_t T
KERNELS(qgrads, (QGRADS_ARGS), QGRADS_BODY(v4, load4, store4, 4))
WIDE(qgrads, (QGRADS_ARGS), QGRADS_BODY(v8, load8, store8, 8))

/* A head's keys' values into its block, its sums from 0.0: at its first row
 * of a backward (n keys). */
void attention_keys_begin(const tape_t *t, const attn_head_t *h, int32_t head, int32_t n) {
    const attention_t *a = t->attn;
    const int32_t *kv = a->kv + (int64_t)head * t->n_pos;
    double *kt = a->kt + h->kt;
    for (int32_t k = 0; k < n; ++k) {
        for (int32_t j = 0; j < h->hd && k + AHEAD_KEYS < n; j += 8) __builtin_prefetch(t->x + kv[k + AHEAD_KEYS] + j);
        for (int32_t j = 0; j < h->hd; ++j) kt[(int64_t)k * h->hdp + j] = t->x[kv[k] + j];
    }
    memset(a->gk + h->gk, 0, (size_t)n * (size_t)h->hdp * sizeof *a->gk);
}

/* Row r's query's gradients, and its last key's (its terms of the keys'
 * added by attention.c), from its logits' (a->gd). */
void attention_keys_row(tape_t *t, const attn_row_t *r, const attn_head_t *h) {
    const attention_t *a = t->attn;
    double gq[MAX_HD], *g = t->grad;
    const double *gk = a->gk + h->gk + (int64_t)(r->T - 1) * h->hdp;
    if (r->qn >= 0) {
        KERNEL_WIDE(qgrads)(gq, a->kt + h->kt, h->hdp, a->gd, r->T);
        for (int32_t j = 0; j < h->hd; ++j) g[r->qn + j] = gq[j];
    }
    for (int32_t j = 0; j < h->hd && r->kn >= 0; ++j) g[r->kn + j] = gk[j];
}
