/* reads.c: who reads each node. Parameters are read by position (the token
 * table's reads become token slots); every other node gets a pull list, the
 * parents whose gradients it adds (order.c sorts them), but the inner nodes of
 * the chains sum(w * x ...) recorded node by node (found here, on the
 * counts). Phases of tape_build (build.c): NULL, or why the step cannot be
 * replayed. */
#include "builder.h"

/* Count each node's readers (a parameter's by position); a node read by
 * several logits rotates (checked further once its pull list is sorted). */
const char *count_readers(builder_t *b) {
    tape_t *t = b->t;
    int32_t P = t->n_params, n = t->n_nodes;
    int32_t *first_block = t->scratch;  /* the logit of a node's first reader (-2: none yet) */
    for (int32_t L = 0; L < n; ++L) first_block[L] = -2;
    b->n_param_edges = 0;
    for (int32_t L = P, p = 0; L < n; ++L) {
        while (L >= t->pos_end[p]) ++p;  /* L's position */
        int compact = is_compact(t, L);
        int32_t blk = t->child_start[L + 1] > t->child_start[L] ? block_at(b, L, p) : -1;  /* L's logit */
        for (int64_t e = t->child_start[L]; e < t->child_start[L + 1]; ++e) {
            int32_t c = t->child[e];
            if (c < P) {  /* (a compact chain's are read from its edges: tape_pack, check_table_reads) */
                if (!compact) { b->n_param_edges++; t->param_start[p + 1]++; }
                continue;
            }
            uint8_t kc = t->kind[c];
            if (kc == K_SEED) return "a position's loss is read inside the step";
            if (kc == K_CANDIDATE || kc == K_CONST || kc == K_DERIVED) continue;
            t->npull_start[c + 1]++;
            if (first_block[c] == -2) first_block[c] = blk;
            else if (blk != first_block[c]) t->kind[c] = K_ROTATE;
        }
    }
    return NULL;
}

/* How many edges read node m: fuse_dots runs on the counts, before they are
 * summed into the pull lists' starts. */
static int32_t readers(const tape_t *t, int32_t m) {
    return t->npull_start[m + 1];
}

/* Is node m a product read once? (By the addition the caller found reading it.) */
static int product_read_once(const tape_t *t, int32_t m) {
    return t->kind[m] == K_OP && t->op[m] == OP_MUL && readers(t, m) == 1;
}

/* Is node a the addition (x, y) of two children? */
static int adds(const tape_t *t, int32_t a, int32_t x, int32_t y) {
    int64_t e = t->child_start[a];
    return t->kind[a] == K_OP && t->op[a] == OP_ADD && t->child_start[a + 1] - e == 2
        && t->child[e] == x && t->child[e + 1] == y;
}

/* Find the chains sum(w * x ...) builds: m0, const 0, a0 = m0 + 0, then
 * (m_k, a_k = a_(k-1) + m_k) pairs, every inner node read once, by the next.
 * Nothing that something else refers to (a derived number's source) is inner,
 * nor a rotating node (marked before). */
static void fuse_dots(tape_t *t) {
    uint8_t *source = (uint8_t *)t->scratch;  /* the rotation marks are done with it */
    memset(source, 0, (size_t)t->n_nodes);
    for (int64_t s = 0; s < t->src_start[t->n_derived]; ++s) source[t->src[s]] = 1;
    for (int32_t s = t->n_params; s + 2 < t->n_nodes; ++s) {
        int32_t c0 = s + 1, a = s + 2;
        if (!(t->kind[c0] == K_CONST && t->operand[c0] == 0.0 && adds(t, a, s, c0)
              && product_read_once(t, s) && !source[s]))
            continue;
        int32_t end = t->pos_end[pos_of(t, s)];  /* a chain stays in its position */
        while (a + 2 < end && adds(t, a + 2, a, a + 1)
               && product_read_once(t, a + 1) && !source[a] && !source[a + 1]
               && readers(t, a) == 1)
            a += 2;
        t->kind[a] = K_DOT;
        t->aux[a] = s;
        t->kind[s] = K_INTERIOR;
        for (int32_t i = s + 2; i < a; ++i) t->kind[i] = K_INTERIOR;
        s = a;
    }
}

/* A node that takes a gradient as an operation's or a chain's, whose list
 * may be another's (its readers the same, one operand on). */
static int plain_entry(const tape_t *t, int32_t L) {
    return t->kind[L] == K_OP || t->kind[L] == K_DOT;
}

/* The entries of a vector read by a matrix's rows: node c read only by rows
 * (OP_ROW_DOT), each of which reads, just before c, the node p that takes
 * its gradient just before c (the backward's previous entry, at c's position),
 * and by no other: c's pull list is p's, each edge one on, the weight one on.
 * Such a list is not stored (t->alias_base, alias_shift; the counts of those
 * nodes are zeroed): a matrix's rows reading a vector of n entries are n times
 * fewer pulls to hold (n_layer 6, n_embd 128, block 128: 180 M of them).
 * On the counts, before they are summed; 0, or -1 out of memory. */
static int share_vector_reads(tape_t *t) {
    int32_t P = t->n_params, n = t->n_nodes, *prev = NULL, *match = NULL;
    if (!NEW(prev, n) || !NEW(match, n) || !NEW(t->alias_base, n) || !NEW(t->alias_shift, n)) {
        free(prev); free(match);
        return -1;
    }
    for (int32_t L = P, last = -1, p = 0; L < n; ++L) {  /* prev: the entry before, at one position */
        if (L == P || L >= t->pos_end[p]) { last = -1; while (L >= t->pos_end[p]) ++p; }
        prev[L] = last;
        uint8_t k = t->kind[L];
        if (k != K_CONST && k != K_DERIVED && k != K_INTERIOR) last = L;
    }
    for (int32_t L = P; L < n; ++L) {
        if (t->op[L] != OP_ROW_DOT) continue;
        for (int32_t e = t->child_start[L] + 2; e < t->child_start[L + 1]; ++e) {
            int32_t c = t->child[e];
            if (c >= P && prev[c] >= P && t->child[e - 1] == prev[c]) match[c]++;
        }
    }
    for (int32_t c = P; c < n; ++c) {
        int32_t p = prev[c], count = t->npull_start[c + 1];
        if (p < P || count == 0 || match[c] != count || !plain_entry(t, c) || !plain_entry(t, p)) continue;
        int32_t base = t->alias_base[p] ? t->alias_base[p] : p;
        if (t->npull_start[base + 1] != count) continue;
        t->alias_base[c] = base;
        t->alias_shift[c] = t->alias_shift[p] + 1;
    }
    for (int32_t c = P; c < n; ++c)
        if (t->alias_base[c]) t->npull_start[c + 1] = 0;
    free(prev);
    free(match);
    return 0;
}

/* Chains first (fuse_dots, on the counts): their inner nodes take no pull
 * list (each is read once, by the next node of its chain, and its gradient
 * is the top's); a vector's entries read by a matrix's rows share one
 * (share_vector_reads); a forward-only tape (a sampler's) has none, its
 * backward never running (tape_pack then makes its backward's entries with
 * empty lists, and groups none). Then the lists and the parameter reads
 * (the token table's are the forward's token slots), filled in creation
 * order, but each pull list from its end: readers made later come first, as
 * the backward mostly adds them (order.c sort_pulls). */
const char *fill_reads(builder_t *b) {
    tape_t *t = b->t;
    int32_t P = t->n_params, N = t->n_pos, n = t->n_nodes;
    fuse_dots(t);
    int forward_only = b->r->verify_shifts < 0;  /* its backward never runs: no pull lists */
    for (int32_t L = P; L < n; ++L)
        if (t->kind[L] == K_INTERIOR || forward_only) t->npull_start[L + 1] = 0;
    if (!forward_only && share_vector_reads(t) < 0) return "out of memory";
    for (int32_t q = 0; q < N; ++q) t->param_start[q + 1] += t->param_start[q];
    for (int32_t L = 0; L < n; ++L) t->npull_start[L + 1] += t->npull_start[L];
    int64_t n_pulls = t->npull_start[n], n_param_edges = b->n_param_edges;
    int64_t *pfill = NULL;
    if (!NEW(t->npull_parent, n_pulls) || !NEW(t->npull_edge, n_pulls) || !NEW(t->npull_block, n_pulls)
        || !NEW(t->param_edge, n_param_edges) || !NEW(t->param_parent, n_param_edges) || !NEW(pfill, N))
        return "out of memory";
    int32_t *fill = t->scratch;  /* fuse_dots is done with it */
    for (int32_t L = 0; L < n; ++L) fill[L] = t->npull_start[L + 1];
    for (int32_t q = 0; q < N; ++q) pfill[q] = t->param_start[q];
    for (int32_t L = P, p = 0; L < n; ++L) {
        while (L >= t->pos_end[p]) ++p;  /* L's position */
        for (int64_t e = t->child_start[L]; e < t->child_start[L + 1]; ++e) {
            int32_t c = t->child[e];
            if (c < P) {
                if (is_compact(t, L)) continue;
                int64_t k = pfill[p]++;
                t->param_edge[k] = (int32_t)e;
                t->param_parent[k] = L;
            } else if (t->npull_start[c + 1] > t->npull_start[c] && t->kind[c] != K_SEED) {
                /* the edge: a compact chain may read c in several products, each
                 * its own term (its rank and its local grad are the product's) */
                int32_t k = --fill[c];
                t->npull_parent[k] = L;
                t->npull_edge[k] = (int32_t)e;
            }
        }
    }
    free(pfill);
    return NULL;
}

/* Position q's compact chains read no parameter that another read at q
 * reads (seen: the position that last read each), and nothing of the token
 * table (their reads are products). */
static const char *check_chain_reads(const tape_t *t, int32_t q, int32_t *seen, int64_t table_end) {
    for (int32_t L = q > 0 ? t->pos_end[q - 1] : t->n_params; L < t->pos_end[q]; ++L) {
        if (!is_compact(t, L)) continue;
        const int32_t *list = t->child + t->child_start[L];
        int32_t entries = t->child_start[L + 1] - t->child_start[L];
        for (int32_t k = 0; k < entries; ++k) {  /* a row's first entry: its n weights from w0 */
            int32_t run = k == 0 && t->op[L] == OP_ROW_DOT ? dot_len(t, L) / 2 : 1;
            int64_t c0 = list[k], c1 = c0 + run < t->n_params ? c0 + run : t->n_params;  /* [c0, c1): parameters */
            if (c0 < c1 && c0 < table_end && c1 > t->table_slot0) return "the token table is read by a product";
            for (int64_t c = c0; c < c1; ++c) {
                if (seen[c] == q) return "a parameter is read twice at one position";
                seen[c] = q;
            }
        }
    }
    return NULL;
}

/* Every read of the token table at position p is of row tokens[p], each
 * column once, and by an addition or a one-child operation (a product's
 * other child would take its local grad from the row: not followed). */
static const char *check_table_reads(builder_t *b, int32_t *seen) {
    const record_t *r = b->r;
    tape_t *t = b->t;
    int64_t table_end = (int64_t)r->table_slot0 + (int64_t)r->table_rows * r->table_cols;
    for (int32_t k = 0; k < t->n_params; ++k) seen[k] = -1;
    t->n_token_edges = 0;
    for (int32_t q = 0; q < t->n_pos; ++q) {
        int32_t cols = 0;
        const char *why = check_chain_reads(t, q, seen, table_end);
        if (why != NULL) return why;
        for (int64_t k = t->param_start[q]; k < t->param_start[q + 1]; ++k) {
            int64_t e = t->param_edge[k];
            int32_t c = t->child[e];
            if (seen[c] == q) return "a parameter is read twice at one position";
            seen[c] = q;
            if (c < r->table_slot0 || c >= table_end) continue;
            int32_t row = (c - r->table_slot0) / r->table_cols, col = (c - r->table_slot0) % r->table_cols;
            if (row != r->tokens[q]) return "the token table is read at a row other than the token's";
            if (t->op[t->param_parent[k]] == OP_MUL) return "the token table is read by a product";
            t->token_edge[t->n_token_edges] = e;
            t->token_param[t->n_token_edges] = k;
            t->token_pos[t->n_token_edges] = q;
            t->token_col[t->n_token_edges] = col;
            t->n_token_edges++;
            cols++;
        }
        if (cols != r->table_cols) return "a position does not read exactly one row of the token table";
    }
    return NULL;
}

/* token slots: the token table's reads, re-pointed at every replay */
const char *token_slots(builder_t *b) {
    const record_t *r = b->r;
    tape_t *t = b->t;
    int64_t table_end = (int64_t)r->table_slot0 + (int64_t)r->table_rows * r->table_cols, n_tok = 0;
    t->table_slot0 = r->table_slot0;
    t->table_rows = r->table_rows;
    t->table_cols = r->table_cols;
    for (int64_t k = 0; k < b->n_param_edges; ++k) {
        int32_t c = t->child[t->param_edge[k]];
        if (c >= r->table_slot0 && c < table_end) n_tok++;
    }
    int32_t *seen = NULL;
    const char *why = NULL;
    if (!NEW(t->token_edge, n_tok) || !NEW(t->token_param, n_tok) || !NEW(t->token_pos, n_tok)
        || !NEW(t->token_col, n_tok) || !NEW(seen, t->n_params))
        why = "out of memory";
    else
        why = check_table_reads(b, seen);
    free(seen);
    return why;
}
