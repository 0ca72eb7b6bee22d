/* tape_build.c: a tape from a recorded step, checked so that it can be
 * replayed exactly: the step's graph copied out of the arena with local
 * indices, what varies declared (token and target slots, derived numbers),
 * chains fused, the pull lists (none for a chain's inner nodes) sorted into
 * the reference's backward order and that order's rule checked against real
 * depth-first walks for other targets; then tape_pack.c makes the replay's
 * program. */
#include "tape_internal.h"

typedef struct {
    arena_t *a;             /* its walk scratch and target edges are borrowed (and put back) */
    const record_t *r;
    tape_t *t;
    int32_t *rank;          /* local node -> its place in a depth-first post-order, -1: not reached
                             * (t->scratch, once the pull lists are filled) */
    int64_t arena_edge0;    /* the arena's edge index of local edge 0 */
    int64_t *keys;          /* sort_pulls' room for a long list's keys (keys_cap of them) */
    int64_t keys_cap;
} builder_t;

static int32_t local_of(const record_t *r, const int32_t *pmap, int64_t end, node_t i) {
    if (i >= r->rec_start && i < end) return (int32_t)(r->n_params + (i - r->rec_start));
    if (i >= 0 && i < r->rec_start) return pmap[i];
    return -1;
}

/* t->operand is calloc'd: +0.0 (all bits zero, unlike -0.0) is there already.
 * Most nodes are sums and products, whose operand is that: not writing it
 * leaves most of the array's pages untouched. */
static void put_operand(tape_t *t, int32_t L, double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    if (bits != 0) t->operand[L] = v;
}

/* Must pull entry i come before entry j?
 * By rank: the order in which the walk whose ranks are in b->rank added the
 * parents: reverse post-order, so the higher rank first; a parent the walk
 * never reached (dead for these targets: an unchosen candidate and what only
 * it reads) first, as it would be if its target were chosen; two edges of one
 * parent (x * x, x + x) are alike: the local gradient is the same at either,
 * and a pull keeps only its parent.
 * By block (a rotating node's canonical order): the higher logit first. */
static int precedes(const builder_t *b, int by_block, int64_t i, int64_t j) {
    const tape_t *t = b->t;
    if (by_block) return t->npull_block[i] > t->npull_block[j];
    int32_t q1 = t->npull_parent[i], q2 = t->npull_parent[j];
    int64_t r1 = b->rank[q1] < 0 ? INT32_MAX : b->rank[q1];
    int64_t r2 = b->rank[q2] < 0 ? INT32_MAX : b->rank[q2];
    if (r1 != r2) return r1 > r2;
    return q1 > q2;
}

/* Blocks exist only where sorting by block (a rotating node's entries): the
 * rest of npull_block is never touched. */
static void swap_pulls(tape_t *t, int64_t i, int64_t j, int by_block) {
    int32_t q = t->npull_parent[i];
    t->npull_parent[i] = t->npull_parent[j];
    t->npull_parent[j] = q;
    if (by_block) {
        int32_t blk = t->npull_block[i];
        t->npull_block[i] = t->npull_block[j];
        t->npull_block[j] = blk;
    }
}

/* A pull entry's place in the order by rank, as one number: the higher
 * first, so (rank, parent) descending; a parent never reached ranks above
 * every reached one. */
static int64_t rank_key(const builder_t *b, int32_t q) {
    int64_t r = b->rank[q] < 0 ? INT32_MAX : b->rank[q];
    return (r << 31) | q;
}

static int descending(const void *x, const void *y) {
    int64_t a = *(const int64_t *)x, c = *(const int64_t *)y;
    return (a < c) - (a > c);
}

/* Sort a long list by rank: the order is total (rank, then parent), so an
 * unstable sort of the keys gives the one result. 0, or -1 out of memory. */
static int sort_by_rank(builder_t *b, int64_t lo, int64_t hi) {
    tape_t *t = b->t;
    if (hi - lo > b->keys_cap) {
        free(b->keys);
        b->keys_cap = 2 * (hi - lo);
        if (!NEW(b->keys, b->keys_cap)) return -1;
    }
    for (int64_t k = lo; k < hi; ++k) b->keys[k - lo] = rank_key(b, t->npull_parent[k]);
    qsort(b->keys, (size_t)(hi - lo), sizeof *b->keys, descending);
    for (int64_t k = lo; k < hi; ++k) t->npull_parent[k] = (int32_t)(b->keys[k - lo] & INT32_MAX);
    return 0;
}

/* Sort pull entries [lo, hi) stably. By rank, the entries come in creation
 * order, mostly the reverse of the order sought, so they are reversed first
 * and kept if that is the order; a short list is then sorted by insertion, a
 * long one (a vector read by every row of a wide matrix) by its keys. By
 * block, stably by insertion (a rotating node's few parents). 0, or -1 out of
 * memory. */
static int sort_pulls(builder_t *b, int64_t lo, int64_t hi, int by_block) {
    tape_t *t = b->t;
    if (!by_block) {
        for (int64_t i = lo, j = hi - 1; i < j; ++i, --j) swap_pulls(t, i, j, 0);
        int64_t k = lo + 1;
        while (k < hi && precedes(b, 0, k - 1, k)) ++k;
        if (k >= hi) return 0;
        if (hi - lo > 32) return sort_by_rank(b, lo, hi);
    }
    for (int64_t i = lo + 1; i < hi; ++i)
        for (int64_t j = i; j > lo && precedes(b, by_block, j, j - 1); --j)
            swap_pulls(t, j, j - 1, by_block);
    return 0;
}

/* Which logit of its position node q belongs to: the logits' sums are built
 * one after another with the same number of nodes, so logit v's are the nodes
 * (logit[v-1], logit[v]]. -1: none. */
static int32_t block_of(const builder_t *b, int32_t q) {
    const tape_t *t = b->t;
    int32_t p = t->pos[q], V = t->n_cand;
    if (p < 0 || V < 2) return -1;
    const node_t *lg = b->r->logit + (int64_t)p * V;
    int64_t width = (int64_t)lg[1] - lg[0];
    int64_t lo = (int64_t)lg[0] - width + 1, a = q - t->n_params + b->r->rec_start;
    if (width <= 0 || a < lo || a > lg[V - 1]) return -1;
    return (int32_t)((a - lo) / width);
}

/* ranks of every local node in the walk from root as the arena's edges are now */
static void walk(builder_t *b) {
    arena_t *a = b->a;
    tape_t *t = b->t;
    for (int32_t i = 0; i < t->n_nodes; ++i) b->rank[i] = -1;
    int64_t n = arena_topo(a, b->r->root);
    int64_t end = b->r->pos_end[b->r->n_pos - 1];
    for (int64_t k = 0; k < n; ++k) {
        node_t i = a->topo[k];
        if (i >= b->r->rec_start && i < end) b->rank[b->r->n_params + (i - b->r->rec_start)] = (int32_t)k;
    }
}

/* Does the last walk add node c's parents in the order the tape will, with
 * target tgt at c's position? Parents the walk did not reach add zeros and
 * may stand anywhere. */
static int order_holds(const builder_t *b, int32_t c, int32_t tgt) {
    const tape_t *t = b->t;
    int64_t lo = t->npull_start[c], hi = t->npull_start[c + 1];
    int32_t last = INT32_MAX;
    for (int pass = 0; pass < (t->kind[c] == K_ROTATE ? 2 : 1); ++pass) {
        for (int64_t k = lo; k < hi; ++k) {
            if (t->kind[c] == K_ROTATE && ((t->npull_block[k] == tgt) != (pass == 1))) continue;
            int32_t r = b->rank[t->npull_parent[k]];
            if (r < 0) continue;
            if (r > last) return 0;
            last = r;
        }
    }
    return 1;
}

/* Does the last walk, made with the recorded targets shifted by `shift` at
 * every position, follow the tape's rule at every node it reached? (A chain's
 * inner nodes have one parent each: nothing to order.) */
static int rule_holds(const builder_t *b, int32_t shift) {
    const tape_t *t = b->t;
    for (int32_t c = t->n_params; c < t->n_nodes; ++c)
        if ((t->kind[c] == K_OP || t->kind[c] == K_ROTATE || t->kind[c] == K_DOT) && b->rank[c] >= 0
            && !order_holds(b, c, (b->r->tokens[t->pos[c] + 1] + shift) % t->n_cand))
            return 0;
    return 1;
}

/* Point every position's target edge at its target shifted by `shift`. */
static void point_targets(builder_t *b, int32_t shift) {
    const tape_t *t = b->t;
    int32_t V = t->n_cand;
    for (int32_t p = 0; p < t->n_pos; ++p)
        b->a->child[b->arena_edge0 + t->target_edge[p]] =
            b->r->cand[(int64_t)p * V + (b->r->tokens[p + 1] + shift) % V];
}

/* Check the backward rule against a real walk for other targets. */
static const char *verify(builder_t *b, int32_t shift) {
    point_targets(b, shift);
    walk(b);
    int ok = rule_holds(b, shift);
    point_targets(b, 0);  /* the recorded targets back */
    return ok ? NULL : "the backward order for another target does not follow the tape's rule";
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
        while (a + 2 < t->n_nodes && t->pos[a + 2] == t->pos[s] && adds(t, a + 2, a, a + 1)
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

static const char *build(builder_t *b) {
    const arena_t *a = b->a;
    const record_t *r = b->r;
    tape_t *t = b->t;
    int32_t P = r->n_params, N = r->n_pos, V = r->n_cand;
    int64_t end = r->pos_end[N - 1];
    int64_t M = end - r->rec_start;
    if (N < 1 || M < 1 || V < 1 || (int64_t)P + M > INT32_MAX) return "nothing to record";
    t->n_params = P;
    t->n_nodes = (int32_t)(P + M);
    t->n_pos = N;
    t->n_cand = V;
    b->arena_edge0 = a->child_start[r->rec_start];
    t->n_edges = a->child_start[end] - b->arena_edge0;
    if (t->n_edges > INT32_MAX) return "the step is too large to record";

    /* parameters: arena node -> slot */
    int32_t *pmap = NULL;
    if (!NEW(pmap, r->rec_start)) return "out of memory";
    for (int64_t i = 0; i < r->rec_start; ++i) pmap[i] = -1;
    for (int32_t k = 0; k < P; ++k) {
        node_t i = r->params[k];
        if (i < 0 || i >= r->rec_start || pmap[i] >= 0) { free(pmap); return "a parameter is not a node made before recording"; }
        pmap[i] = k;
    }

    int32_t n = t->n_nodes;
    int64_t E = t->n_edges;
    if (!NEW(t->kind, n) || !NEW(t->op, n) || !NEW(t->operand, n) || !NEW(t->child_start, n + 1)
        || !NEW(t->pos, n) || !NEW(t->reached, P)
        || !NEW(t->aux, n) || !NEW(t->dot_at, n) || !NEW(t->child, E) || !NEW(t->npull_start, n + 1) || !NEW(t->pos_end, N)
        || !NEW(t->loss_node, N) || !NEW(t->target_edge, N) || !NEW(t->target_owner, N) || !NEW(t->target_src, N)
        || !NEW(t->cand, (int64_t)N * V) || !NEW(t->scratch, n) || !NEW(t->param_start, N + 1)) {
        free(pmap);
        return "out of memory";
    }

    /* nodes and edges, in creation order */
    const char *why = NULL;
    int32_t p = 0;
    for (int32_t k = 0; k < P; ++k) { t->kind[k] = K_CONST; t->pos[k] = -1; }
    for (int64_t i = r->rec_start; i < end && why == NULL; ++i) {
        int32_t L = (int32_t)(P + (i - r->rec_start));
        while (i >= r->pos_end[p]) ++p;
        t->pos[L] = p;
        t->op[L] = a->op[i];
        t->child_start[L] = (int32_t)(a->child_start[i] - b->arena_edge0);
        if (a->op[i] == OP_CUSTOM) why = "the step has a user-defined node (its local grads were given)";
        else if (a->op[i] == OP_LEAF || a->op[i] == OP_CONST) { t->kind[L] = K_CONST; put_operand(t, L, a->data[i]); }
        else { t->kind[L] = K_OP; put_operand(t, L, a->operand[i]); }
        for (int64_t e = a->child_start[i]; e < a->child_start[i + 1] && why == NULL; ++e) {
            int32_t c = local_of(r, pmap, end, a->child[e]);
            if (c < 0) why = "the step reads a node made before recording that is not a parameter";
            t->child[e - b->arena_edge0] = c;
        }
    }
    for (int32_t L = 0; L < P; ++L) t->child_start[L] = 0;  /* parameters have no edges */
    t->child_start[n] = (int32_t)E;
    for (int32_t q = 0; q < N; ++q) {
        t->pos_end[q] = (int32_t)(P + (r->pos_end[q] - r->rec_start));
        t->loss_node[q] = local_of(r, pmap, end, r->loss_node[q]);
        if (t->loss_node[q] < 0 || t->pos[t->loss_node[q]] != q) why = why ? why : "a position's loss is not in its position";
        else t->kind[t->loss_node[q]] = K_SEED;
    }
    if (why) { free(pmap); return why; }

    /* derived constants */
    t->n_derived = r->n_derived;
    if (!NEW(t->derived_node, r->n_derived) || !NEW(t->src_start, r->n_derived + 1)
        || !NEW(t->src, r->src_start[r->n_derived])) { free(pmap); return "out of memory"; }
    for (int64_t j = 0; j < r->n_derived && why == NULL; ++j) {
        int32_t L = local_of(r, pmap, end, r->derived_node[j]);
        if (L < P || t->kind[L] != K_CONST) { why = "a derived number is not a constant of the step"; break; }
        t->derived_node[j] = L;
        t->kind[L] = K_DERIVED;
        t->operand[L] = r->derived_sign[j];
        t->src_start[j] = r->src_start[j];
        for (int64_t s = r->src_start[j]; s < r->src_start[j + 1]; ++s) {
            int32_t S = local_of(r, pmap, end, r->src[s]);
            if (S < P || S >= L) { why = "a derived number comes from nodes outside the step"; break; }
            t->src[s] = S;
        }
    }
    t->src_start[r->n_derived] = r->src_start[r->n_derived];
    if (why) { free(pmap); return why; }

    /* candidates and the target edges */
    int32_t *cand_of = t->scratch;  /* local node -> p * V + v, or -1 (until the target edges are found) */
    for (int32_t L = 0; L < n; ++L) cand_of[L] = -1;
    for (int64_t j = 0; j < (int64_t)N * V && why == NULL; ++j) {
        int32_t L = local_of(r, pmap, end, r->cand[j]);
        if (L < P || t->pos[L] != j / V || t->kind[L] != K_OP || cand_of[L] >= 0) why = "a candidate is not a node of its position";
        else { t->cand[j] = L; cand_of[L] = (int32_t)j; t->kind[L] = K_CANDIDATE; }
    }
    for (int32_t q = 0; q < N; ++q) t->target_edge[q] = -1;
    for (int32_t L = P; L < n && why == NULL; ++L)
        for (int64_t e = t->child_start[L]; e < t->child_start[L + 1]; ++e) {
            int32_t c = t->child[e], j = c >= 0 ? cand_of[c] : -1;
            if (j < 0) continue;
            int32_t q = j / V;
            if (t->pos[L] != q || t->target_edge[q] >= 0 || j % V != r->tokens[q + 1]) { why = "probs is read other than at the target"; break; }
            t->target_edge[q] = e;
            t->target_owner[q] = L;
        }
    for (int32_t q = 0; q < N && why == NULL; ++q)
        if (t->target_edge[q] < 0) why = "a position's loss does not read probs[target]";
    if (why) { free(pmap); return why; }

    /* the tail: ((losses[0] + 0) + losses[1] + ...) * (1 / N), built just after the last position */
    {
        node_t i = (node_t)end;
        int ok = a->op[i] == OP_CONST && a->data[i] == 0.0;
        node_t s = -1;
        for (int32_t q = 0; q < N && ok; ++q) {
            node_t add = (node_t)(end + 1 + q);
            int64_t e = a->child_start[add];
            ok = a->op[add] == OP_ADD && a->child_start[add + 1] - e == 2
                && a->child[e] == (q == 0 ? r->loss_node[0] : s)
                && a->child[e + 1] == (q == 0 ? i : r->loss_node[q]);
            s = add;
        }
        node_t c = (node_t)(end + 1 + N), root = c + 1;
        ok = ok && root == r->root && a->op[c] == OP_CONST && a->data[c] == 1.0 / N
            && a->op[root] == OP_MUL && a->child[a->child_start[root]] == s
            && a->child[a->child_start[root] + 1] == c;
        if (!ok) why = "the loss is not the mean of the positions' losses";
    }

    /* who reads each node: parameters by position, the rest into pull lists;
     * a node read by several logits rotates (checked further once its pull
     * list is sorted) */
    int32_t *first_block = t->scratch;  /* the logit of a node's first reader (-2: none yet; cand_of is done with) */
    for (int32_t L = 0; L < n; ++L) first_block[L] = -2;
    int64_t n_param_edges = 0;
    for (int32_t L = P; L < n && why == NULL; ++L)
        for (int64_t e = t->child_start[L]; e < t->child_start[L + 1]; ++e) {
            int32_t c = t->child[e];
            if (c < P) { n_param_edges++; t->param_start[t->pos[L] + 1]++; continue; }
            if (t->kind[c] == K_SEED) { why = "a position's loss is read inside the step"; break; }
            if (t->kind[c] == K_CANDIDATE || t->kind[c] == K_CONST || t->kind[c] == K_DERIVED) continue;
            t->npull_start[c + 1]++;
            int32_t blk = block_of(b, L);
            if (first_block[c] == -2) first_block[c] = blk;
            else if (blk != first_block[c]) t->kind[c] = K_ROTATE;
        }
    if (why) { free(pmap); return why; }

    /* chains, before the pull lists are filled: their inner nodes take none
     * (each is read once, by the next node of its chain, and its gradient is
     * the top's) */
    fuse_dots(t);
    for (int32_t L = P; L < n; ++L)
        if (t->kind[L] == K_INTERIOR) t->npull_start[L + 1] = 0;
    for (int32_t q = 0; q < N; ++q) t->param_start[q + 1] += t->param_start[q];
    for (int32_t L = 0; L < n; ++L) t->npull_start[L + 1] += t->npull_start[L];
    int64_t n_pulls = t->npull_start[n];
    if (!NEW(t->npull_parent, n_pulls) || !NEW(t->npull_block, n_pulls)
        || !NEW(t->param_edge, n_param_edges) || !NEW(t->param_parent, n_param_edges)
        || !NEW(t->param_child, n_param_edges) || !NEW(t->param_src, n_param_edges)) { free(pmap); return "out of memory"; }
    {
        int32_t *fill = t->scratch;  /* fuse_dots is done with it */
        int64_t *pfill = NULL;
        if (!NEW(pfill, N)) { free(pmap); return "out of memory"; }
        for (int32_t L = 0; L < n; ++L) fill[L] = t->npull_start[L];
        for (int32_t q = 0; q < N; ++q) pfill[q] = t->param_start[q];
        for (int32_t L = P; L < n; ++L)
            for (int64_t e = t->child_start[L]; e < t->child_start[L + 1]; ++e) {
                int32_t c = t->child[e];
                if (c < P) {
                    int64_t k = pfill[t->pos[L]]++;
                    t->param_edge[k] = (int32_t)e;
                    t->param_parent[k] = L;
                } else if (t->npull_start[c + 1] > t->npull_start[c] && t->kind[c] != K_SEED) {
                    t->npull_parent[fill[c]++] = L;
                }
            }
        free(pfill);
    }

    /* token slots: every read of the token table at position p is row tokens[p], each column once */
    int32_t *seen = NULL;
    if (!NEW(seen, P)) { free(pmap); return "out of memory"; }
    for (int32_t k = 0; k < P; ++k) seen[k] = -1;
    int64_t table_end = (int64_t)r->table_slot0 + (int64_t)r->table_rows * r->table_cols;
    t->table_slot0 = r->table_slot0;
    t->table_rows = r->table_rows;
    t->table_cols = r->table_cols;
    int64_t n_tok = 0;
    for (int64_t k = 0; k < n_param_edges; ++k) {
        int32_t c = t->child[t->param_edge[k]];
        if (c >= r->table_slot0 && c < table_end) n_tok++;
    }
    if (!NEW(t->token_edge, n_tok) || !NEW(t->token_param, n_tok) || !NEW(t->token_pos, n_tok)
        || !NEW(t->token_col, n_tok)) { free(seen); free(pmap); return "out of memory"; }
    t->n_token_edges = 0;
    for (int32_t q = 0; q < N && why == NULL; ++q) {
        int32_t cols = 0;
        for (int64_t k = t->param_start[q]; k < t->param_start[q + 1]; ++k) {
            int64_t e = t->param_edge[k];
            int32_t c = t->child[e];
            if (seen[c] == q) { why = "a parameter is read twice at one position"; break; }
            seen[c] = q;
            if (c < r->table_slot0 || c >= table_end) continue;
            int32_t row = (c - r->table_slot0) / r->table_cols, col = (c - r->table_slot0) % r->table_cols;
            if (row != r->tokens[q]) { why = "the token table is read at a row other than the token's"; break; }
            /* a product's other child would take its local grad from the row: not followed */
            if (t->op[t->param_parent[k]] == OP_MUL) { why = "the token table is read by a product"; break; }
            t->token_edge[t->n_token_edges] = e;
            t->token_param[t->n_token_edges] = k;
            t->token_pos[t->n_token_edges] = q;
            t->token_col[t->n_token_edges] = col;
            t->n_token_edges++;
            cols++;
        }
        if (why == NULL && cols != r->table_cols) why = "a position does not read exactly one row of the token table";
    }
    free(seen);
    free(pmap);
    if (why) return why;

    /* the backward order of the recorded targets; rotating nodes */
    b->rank = t->scratch;  /* fill is done with */
    walk(b);
    for (int32_t c = P; c < n; ++c) {
        int64_t lo = t->npull_start[c], hi = t->npull_start[c + 1];
        if (hi - lo < 1) continue;
        if (sort_pulls(b, lo, hi, 0) < 0) return "out of memory";
        if (t->kind[c] != K_ROTATE) continue;  /* its blocks are never read: not written (most of the pulls) */
        for (int64_t k = lo; k < hi; ++k) {
            t->npull_block[k] = block_of(b, t->npull_parent[k]);
            if (t->npull_block[k] < 0) return "a node is read by several logits and by something else";
        }
        sort_pulls(b, lo, hi, 1);  /* the canonical order: by logit, highest first */
        for (int64_t k = lo; k < hi; ++k)
            if (t->pos[t->npull_parent[k]] != t->pos[c]) return "a node is read by logits of another position";
    }
    if (!rule_holds(b, 0))
        return "the backward order of the recorded step does not follow the tape's rule";

    /* the same rule for other targets, against real walks */
    int32_t shifts = r->verify_shifts < 0 ? 0  /* a forward-only tape: its backward is never run */
        : r->verify_shifts == 0 || r->verify_shifts >= V ? V - 1 : r->verify_shifts;
    for (int32_t k = 1; k <= shifts; ++k) {
        int32_t shift = shifts == V - 1 ? k : (int32_t)(((int64_t)k * (V - 1)) / shifts);
        if (shift < 1) shift = 1;
        if ((why = verify(b, shift)) != NULL) return why;
    }
    return tape_pack(t);
}

tape_t *tape_build(arena_t *a, const record_t *r, const char **why) {
    tape_t *t = calloc(1, sizeof *t);
    if (t == NULL) { *why = "out of memory"; return NULL; }
    t->params_at = -1;
    builder_t b = {a, r, t, NULL, 0, NULL, 0};
    *why = build(&b);
    free(b.keys);
    if (*why != NULL) { tape_free(t); return NULL; }
    return t;
}

