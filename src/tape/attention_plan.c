/* attention_plan.c: a head's softmax rows (attention.c) found at build
 * time, each row's every pull checked against the sums attention_grads
 * computes (row_fits), a head taken only with one row at every position (the
 * rows' sizes, counts and kernel: attention.c). */
#include "attention.h"

/* Entry e's list is exactly these n pulls (parent[k], src[k]), summed as an
 * operation's (not a rotating node's, candidate or seed). */
static int list_is(const tape_t *t, int32_t e, int n, const int32_t *parent, const int32_t *src) {
    if (e < 0 || (t->bwd_kind[e] != K_OP && t->bwd_kind[e] != K_DOT) || pull_count(t, e) != n) return 0;
    const int64_t k0 = t->pull_start[e];
    for (int k = 0; k < n; ++k)
        if (t->pull_parent[k0 + k] != parent[k] || t->pull_src[k0 + k] != src[k]) return 0;
    return 1;
}

static int one_pull(const tape_t *t, int32_t e, int32_t parent, int32_t src) {
    return list_is(t, e, 1, &parent, &src);
}

/* Where the entries of one position are (they are not all in creation order:
 * interleave.c alternates alike operations): map[L - base] is node L's
 * entry, or -1; lo, hi: the range a row must lie in. */
typedef struct {
    int32_t *map, base, size, cap, lo, hi;
} scan_t;

/* The entry of node L inside [lo, hi), or -1. */
static int32_t entry_of(const scan_t *sc, int32_t L) {
    int32_t e = L >= sc->base && L < sc->base + sc->size ? sc->map[L - sc->base] : -1;
    return e >= sc->lo && e < sc->hi ? e : -1;
}

/* Entry e's only pull's parent's entry (-1: e has not one pull). */
static int32_t up(const tape_t *t, const scan_t *sc, int32_t e) {
    if (e < 0 || pull_count(t, e) != 1) return -1;
    return entry_of(sc, t->pull_parent[t->pull_start[e]]);
}

/* The keys of a row whose first logit is entry b (0: none): its sums, from
 * the one that adds exp_0 up its chain to the total (the one whose pulls are
 * not the 1.0 of an addition), which must pull from as many pows. */
static int32_t row_keys(const tape_t *t, const scan_t *sc, int32_t b) {
    int32_t ex = up(t, sc, up(t, sc, up(t, sc, b))), one = 2 * t->n_nodes, T = 1;
    if (t->bwd_kind[b] != K_DOT || ex < 0 || pull_count(t, ex) != 2) return 0;
    int32_t s = entry_of(sc, t->pull_parent[t->pull_start[ex] + 1]);
    while (s >= 0 && pull_count(t, s) == 1 && t->pull_src[t->pull_start[s]] == one && T <= sc->hi - sc->lo) {
        s = up(t, sc, s);
        T++;
    }
    return s >= 0 && pull_count(t, s) == T ? T : 0;
}

/* Does the row of T keys from entry b (entries [b, b + SLOTS T), inside the
 * scan's range) pull exactly as attention_grads sums? Its nodes by slot into nd (8 T),
 * its scale and weights' parents into r, the weights' pulls and values' step
 * into *hd, *ss. taken: SLOTS T zeros, left so. */
static int row_fits(const tape_t *t, const scan_t *sc, int32_t b, int32_t T, attn_row_t *r, int32_t *nd,
                    int32_t *hd, int32_t *ss, uint8_t *taken) {
    const int32_t n = t->n_nodes, one = 2 * n;
    int32_t *dot = nd, *mul = nd + T, *ad = nd + 2 * T, *ex = nd + 3 * T, *sm = nd + 4 * T, *pw = nd + 5 * T;
    int32_t *w = nd + 6 * T, *vs = nd + 7 * T, k = 0;
    for (int32_t q = b; q < b + SLOTS * T; ++q)  /* the logits, in order: key t's is the t-th */
        if (t->bwd_kind[q] == K_DOT) {
            if (k == T) return 0;
            dot[k++] = t->bwd[q];
        }
    if (k != T) return 0;
    r->scale = t->pull_src[t->pull_start[b]];
    for (k = 0; k < T; ++k) {  /* up each key's chain: dot, mul, add, exp, then its weight, pow and sum */
        int32_t e = entry_of(sc, dot[k]);
        if (pull_count(t, e) != 1) return 0;
        mul[k] = t->pull_parent[t->pull_start[e]];
        int32_t em = entry_of(sc, mul[k]);
        if (em < 0 || pull_count(t, em) != 1) return 0;
        ad[k] = t->pull_parent[t->pull_start[em]];
        int32_t ea = entry_of(sc, ad[k]);
        if (ea < 0 || pull_count(t, ea) != 1) return 0;
        ex[k] = t->pull_parent[t->pull_start[ea]];
        int32_t ee = entry_of(sc, ex[k]);
        if (ee < 0 || pull_count(t, ee) != 2) return 0;
        int64_t k0 = t->pull_start[ee];
        w[k] = t->pull_parent[k0];
        pw[k] = t->pull_src[k0];
        sm[k] = t->pull_parent[k0 + 1];
        int32_t pair[2] = {w[k], sm[k]}, pair_src[2] = {pw[k], one};
        if (!one_pull(t, e, mul[k], r->scale) || !one_pull(t, em, ad[k], one) || !one_pull(t, ea, ex[k], n + ex[k])
            || !list_is(t, ee, 2, pair, pair_src) || !one_pull(t, entry_of(sc, pw[k]), w[k], ex[k]))
            return 0;
    }
    for (k = 0; k < T - 1; ++k)
        if (!one_pull(t, entry_of(sc, sm[k]), sm[k + 1], one)) return 0;
    /* an exp's local gradient is its value (ops.h op_exp writes both from one
     * number), and pows of one node by one exponent have one value and one local
     * gradient (deterministic functions of the two; a copy copies them): the
     * sums read x[ex_t] and pow_0's, not x[n + ...] and every pow's; a weight
     * is a product of its exp and pow (their lists say they are its children):
     * x[ex_t] times pow_0's value is its value */
    for (k = 0; k < T; ++k)
        if (t->op[ex[k]] != OP_EXP || t->op[pw[k]] != OP_POW || t->op[w[k]] != OP_MUL
            || memcmp(&t->operand[pw[k]], &t->operand[pw[0]], sizeof(double)) != 0) return 0;
    /* nothing but the row reads its weights', pows' and sums' gradients (but
     * the first sum's, whose other child is not known here): each is an
     * operation, not a chain's top, whose children are all in the row (a
     * weight multiplies its exp and pow, a pow has one, the total; a sum adds
     * the one before and its exp). attention_grads writes none of them */
    for (k = 0; k < T; ++k)
        if (t->bwd_kind[entry_of(sc, w[k])] != K_OP || t->bwd_kind[entry_of(sc, pw[k])] != K_OP
            || (k > 0 && (t->op[sm[k]] != OP_ADD || t->bwd_kind[entry_of(sc, sm[k])] != K_OP))) return 0;
    int32_t total = entry_of(sc, sm[T - 1]);  /* the pows, last to first (the total is their one child) */
    int64_t kt = total >= 0 ? t->pull_start[total] : 0;
    if (total < 0 || pull_count(t, total) != T || (t->bwd_kind[total] != K_OP && t->bwd_kind[total] != K_DOT)) return 0;
    for (k = 0; k < T; ++k)
        if (t->pull_parent[kt + k] != pw[T - 1 - k] || t->pull_src[kt + k] != n + pw[T - 1 - k]) return 0;
    int32_t w0 = entry_of(sc, w[0]);  /* the weights: hd pulls stepping alike */
    int64_t count = w0 >= 0 ? pull_count(t, w0) : 0, k0 = w0 >= 0 ? t->pull_start[w0] : 0;
    if (count < 1 || count > MAX_HD) return 0;
    r->ho0 = t->pull_parent[k0];
    r->sp = count > 1 ? t->pull_parent[k0 + 1] - t->pull_parent[k0] : 0;
    *ss = count > 1 ? t->pull_src[k0 + 1] - t->pull_src[k0] : 0;
    *hd = (int32_t)count;
    for (k = 0; k < T; ++k) {
        int32_t e = entry_of(sc, w[k]);
        if (e < 0 || pull_count(t, e) != count || (t->bwd_kind[e] != K_OP && t->bwd_kind[e] != K_DOT)) return 0;
        int64_t kw = t->pull_start[e];
        vs[k] = t->pull_src[kw];
        for (int64_t i = 0; i < count; ++i)
            if (t->pull_parent[kw + i] != r->ho0 + i * r->sp || t->pull_src[kw + i] != vs[k] + i * *ss) return 0;
    }
    /* the SLOTS T nodes are the row's entries, each once */
    int ok = 1;
    for (int32_t q = 0; q < SLOTS * T && ok; ++q) {
        int32_t e = entry_of(sc, nd[q]);
        ok = e >= b && e < b + SLOTS * T && !taken[e - b];
        if (ok) taken[e - b] = 1;
    }
    for (int32_t q = 0; q < SLOTS * T; ++q) taken[q] = 0;
    return ok;
}

/* May the backward go on below a row from entry b? Yes if it meets entry
 * b - 1 as a top, or as an entry of a group whose top is in the row and whose
 * entries each keep their own list (groups 1 and 6: side by side, or alone,
 * the same sums): the row takes its top, and those below are met alone. */
static int cut_ok(const tape_t *t, const uint8_t *met, int32_t b) {
    int32_t m = b - 1;
    while (!met[m]) ++m;
    return m == b - 1 || t->bwd_group[m] == 1 || t->bwd_group[m] == 6;
}

/* Room for one more row of T keys: rows and nodes grown. 0, or -1 out of memory. */
static int room_for(attention_t *a, int32_t *cap, int64_t *node_cap, int32_t T, int32_t **info) {
    if (a->n_rows == *cap) {
        *cap = 2 * *cap + 16;
        attn_row_t *rows = realloc(a->rows, (size_t)*cap * sizeof *rows);
        if (rows != NULL) a->rows = rows;
        int32_t *more = realloc(*info, (size_t)*cap * 2 * sizeof *more);
        if (more != NULL) *info = more;
        if (rows == NULL || more == NULL) return -1;
    }
    if (a->n_node + 8 * (int64_t)T > *node_cap) {
        *node_cap = 2 * *node_cap + 8 * (int64_t)T;
        int32_t *node = realloc(a->node, (size_t)*node_cap * sizeof *node);
        if (node == NULL) return -1;
        a->node = node;
    }
    return 0;
}

/* The rows: found (row_keys), checked (row_fits) and met whole by the
 * backward as planned; each one's hd and ss into info (two a row). 0, or -1
 * out of memory. */
static int find_rows(tape_t *t, attention_t *a, const uint8_t *met, int32_t **info) {
    int32_t cap = 0;
    int64_t node_cap = 0;
    uint8_t *taken = NULL;
    scan_t sc = {0};
    int rc = NEW(taken, (int64_t)SLOTS * t->n_pos) ? 0 : -1;
    *info = NULL;
    for (int32_t p = 0; p < t->n_pos && rc == 0; ++p) {
        int32_t b0 = p > 0 ? t->bwd_end[p - 1] : 0, b1 = t->bwd_end[p], lo_node = INT32_MAX, hi_node = -1;
        for (int32_t b = b0; b < b1; ++b) {  /* the position's map */
            if (t->bwd[b] < lo_node) lo_node = t->bwd[b];
            if (t->bwd[b] > hi_node) hi_node = t->bwd[b];
        }
        sc.base = lo_node;
        sc.size = hi_node >= lo_node ? hi_node - lo_node + 1 : 0;
        if (sc.size > sc.cap) {
            free(sc.map);
            sc.cap = 2 * sc.size;
            if (!NEW(sc.map, sc.cap)) { rc = -1; break; }
        }
        for (int32_t k = 0; k < sc.size; ++k) sc.map[k] = -1;
        for (int32_t b = b0; b < b1; ++b) sc.map[t->bwd[b] - sc.base] = b;
        for (int32_t b = b0; b < b1; ++b) {
            int32_t hd, ss;
            if (t->bwd_kind[b] != K_DOT) continue;
            backward_range(t, p, b, &sc.lo, &sc.hi);
            int32_t T = row_keys(t, &sc, b);
            if (T != p + 1 || b + SLOTS * T > sc.hi || !met[b + SLOTS * T - 1] || (b > sc.lo && !cut_ok(t, met, b)))
                continue;
            if (room_for(a, &cap, &node_cap, T, info) < 0) { rc = -1; break; }
            attn_row_t r = {.b_lo = b, .T = T, .at = a->n_node};
            if (!row_fits(t, &sc, b, T, &r, a->node + a->n_node, &hd, &ss, taken)) continue;
            r.pw0 = a->node[r.at + 5 * (int64_t)T];
            (*info)[2 * a->n_rows] = hd;
            (*info)[2 * a->n_rows + 1] = ss;
            a->rows[a->n_rows++] = r;
            a->n_node += 8 * (int64_t)T;
            b += SLOTS * T - 1;
        }
    }
    free(taken);
    free(sc.map);
    return rc;
}

/* v_t's first value pulled, for each key of row r */
static const int32_t *values_of(const attention_t *a, const attn_row_t *r) { return a->node + r->at + SLOTS * r->T; }

/* Each row's head (by v_0's first value); a head is kept only if it has one
 * row a position, every position, all alike (hd, ss) and reading the same
 * values for each key as its longest row. Rows of the others get head -1.
 * The heads kept, or -1 out of memory. */
static int32_t group_heads(tape_t *t, attention_t *a, const int32_t *info) {
    int32_t N = t->n_pos, nh = 0, kept = 0, *map = NULL;
    uint8_t *seen = NULL, *bad = NULL;
    if (!NEW(a->heads, a->n_rows) || !NEW(map, a->n_rows) || !NEW(bad, a->n_rows)) goto fail;
    for (int32_t r = 0; r < a->n_rows; ++r) {
        int32_t h = 0, key = values_of(a, a->rows + r)[0];
        while (h < nh && a->heads[h].key != key) ++h;
        if (h == nh) a->heads[nh++] = (attn_head_t){.hd = info[2 * r], .ss = info[2 * r + 1], .key = key, .longest = r};
        a->rows[r].head = h;
        if (a->rows[r].T > a->rows[a->heads[h].longest].T) a->heads[h].longest = r;
    }
    if (!NEW(seen, (int64_t)nh * N)) goto fail;
    for (int32_t r = 0; r < a->n_rows; ++r) {
        const attn_row_t *w = a->rows + r;
        int32_t h = w->head;
        const int32_t *v = values_of(a, w), *vl = values_of(a, a->rows + a->heads[h].longest);
        int ok = info[2 * r] == a->heads[h].hd && info[2 * r + 1] == a->heads[h].ss && !seen[(int64_t)h * N + w->T - 1];
        for (int32_t k = 0; k < w->T && ok; ++k) ok = v[k] == vl[k];
        seen[(int64_t)h * N + w->T - 1] = 1;
        bad[h] |= !ok;
    }
    for (int32_t h = 0; h < nh; ++h) {
        int ok = !bad[h];
        for (int32_t p = 0; p < N && ok; ++p) ok = seen[(int64_t)h * N + p];
        map[h] = ok ? kept : -1;
        if (ok) a->heads[kept++] = a->heads[h];
    }
    for (int32_t r = 0; r < a->n_rows; ++r) a->rows[r].head = map[a->rows[r].head];
    free(map); free(seen); free(bad);
    return kept;
fail:
    free(map); free(seen); free(bad);
    return -1;
}

/* The rows, then the values' runs (shifted.c): 0, or -1 out of memory. After
 * every other plan of the backward but the singles' (singles.c), whose runs
 * then end at a row's top. */
int attention_plan(tape_t *t) {
    int32_t nb = t->bwd_end[t->n_pos - 1], *info = NULL;
    uint8_t *met = NULL;
    attention_t *a = NULL;
    if (!NEW(met, nb) || !NEW(a, 1)) {
        free(met);
        return -1;
    }
    t->attn = a;
    backward_tops(t, met);
    int rc = find_rows(t, a, met, &info);
    free(met);
    int32_t kept = rc == 0 ? group_heads(t, a, info) : -1;
    free(info);
    if (kept < 0) return -1;
    int32_t n = 0;
    for (int32_t r = 0; r < a->n_rows; ++r)
        if (a->rows[r].head >= 0) a->rows[n++] = a->rows[r];
    a->n_rows = n;
    a->n_heads = kept;
    a->ld = (t->n_pos + LD_STEP - 1) / LD_STEP * LD_STEP;
    int64_t room = 0;
    for (int32_t h = 0; h < kept; ++h) {
        a->heads[h].vt = room;
        room += (int64_t)a->heads[h].hd * a->ld;
    }
    if (!NEW(a->vt, room) || !NEW(a->gw, a->ld) || !NEW(a->wv, a->ld) || !NEW(a->ev, a->ld)
        || !NEW(a->gd, a->ld)) return -1;
    for (int32_t r = 0; r < n; ++r) {
        int32_t top = a->rows[r].b_lo + SLOTS * a->rows[r].T - 1;
        t->bwd_group[top] = 7;
        t->bwd_lanes[top] = r;
    }
    if (shifted_runs(t) < 0) return -1;  /* the values' gradients (shifted.c) */
    if (attention_unread_plan(t) < 0) return -1;  /* the rows that write their logits' gradients only */
    if (attention_values_plan(t) < 0) return -1;  /* ... summed by the rows where they fit */
    return attention_keys_plan(t);       /* the queries' and keys' gradients, likewise */
}
