/* tape.c: build a tape from a recorded step (checking that it can be replayed
 * exactly), and replay it: forward, backward. See tape.h for the layout.
 *
 * One job, one file (~580 lines): the builder's checks and the replay are two
 * halves of one contract over one layout (what the builder proves, the replay
 * relies on), so they are read and changed together. */
#include "tape.h"

#include <limits.h>
#include <string.h>

#define NEW(p, n) ((p) = calloc((size_t)((n) > 0 ? (n) : 1), sizeof *(p)))

void tape_free(tape_t *t) {
    if (t == NULL) return;
    free(t->kind); free(t->op); free(t->operand); free(t->child_start); free(t->pos);
    free(t->aux); free(t->dot_at); free(t->x); free(t->grad); free(t->reached); free(t->child);
    free(t->fwd); free(t->fwd_code); free(t->mv); free(t->mv_end); free(t->fwd_arg); free(t->bwd_kind); free(t->first_pos); free(t->target_arg); free(t->token_arg); free(t->fwd_end); free(t->dot_pair);
    free(t->bwd); free(t->bwd_end); free(t->bwd_group); free(t->bwd_lanes); free(t->pull_start); free(t->pull_parent); free(t->pull_src);
    free(t->pull_block);
    free(t->param_start); free(t->param_child); free(t->param_parent); free(t->param_src);
    free(t->pos_end); free(t->loss_node); free(t->target_edge); free(t->target_owner);
    free(t->target_src); free(t->cand);
    free(t->token_edge); free(t->token_param); free(t->token_pos); free(t->token_col);
    free(t->derived_node); free(t->src_start); free(t->src);
    free(t->npull_start); free(t->npull_parent); free(t->npull_edge); free(t->npull_block);
    free(t->param_edge); free(t->graph_end);
    free(t);
}

/* the built tape's sizes: every count below is set once build() has succeeded */
typedef struct {
    int64_t n_fwd, n_bwd, n_pulls, n_param_reads;
} counts_t;

static counts_t counts_of(const tape_t *t) {
    counts_t c;
    c.n_fwd = t->fwd_end[t->n_pos - 1];
    c.n_bwd = t->bwd_end[t->n_pos - 1];
    c.n_pulls = t->pull_start[c.n_bwd];
    c.n_param_reads = t->param_start[t->n_pos];
    return c;
}

size_t tape_bytes(const tape_t *t) {
    size_t n = (size_t)t->n_nodes, N = (size_t)t->n_pos;
    counts_t c = counts_of(t);
    size_t derived = (size_t)t->n_derived, sources = (size_t)t->src_start[derived];
    return n * (sizeof *t->op + sizeof *t->operand + sizeof *t->pos + 2 * sizeof *t->x + sizeof *t->grad)
        + sizeof *t->x + (size_t)t->n_params * (sizeof *t->reached + sizeof *t->first_pos)
        + (size_t)c.n_fwd * (sizeof *t->fwd + sizeof *t->fwd_code + 3 * sizeof *t->fwd_arg)
        + (size_t)t->n_pairs * sizeof *t->dot_pair
        + (size_t)c.n_bwd * (sizeof *t->bwd + sizeof *t->bwd_kind + sizeof *t->bwd_group + sizeof *t->bwd_lanes + sizeof *t->pull_start)
        + sizeof *t->pull_start
        + (size_t)c.n_pulls * (sizeof *t->pull_parent + sizeof *t->pull_src + sizeof *t->pull_block)
        + (size_t)c.n_param_reads * (sizeof *t->param_child + sizeof *t->param_parent + sizeof *t->param_src)
        + (N + 1) * sizeof *t->param_start
        + (size_t)t->mv_end[N - 1] * sizeof *t->mv
        + N * (sizeof *t->mv_end + sizeof *t->fwd_end + sizeof *t->bwd_end + sizeof *t->pos_end
               + sizeof *t->graph_end + sizeof *t->loss_node + sizeof *t->target_edge
               + sizeof *t->target_owner + sizeof *t->target_src + sizeof *t->target_arg)
        + N * (size_t)t->n_cand * sizeof *t->cand
        + (size_t)t->n_token_edges * (sizeof *t->token_edge + sizeof *t->token_arg + sizeof *t->token_param
                                      + sizeof *t->token_pos + sizeof *t->token_col)
        + derived * sizeof *t->derived_node + (derived + 1) * sizeof *t->src_start + sources * sizeof *t->src;
}

/* ---------------------------------------------------------------- building */

typedef struct {
    arena_t *a;             /* its walk scratch and target edges are borrowed (and put back) */
    const record_t *r;
    tape_t *t;
    int32_t *rank;          /* local node -> its place in a depth-first post-order, -1: not reached */
    int64_t arena_edge0;    /* the arena's edge index of local edge 0 */
} builder_t;

static int32_t local_of(const record_t *r, const int32_t *pmap, int64_t end, node_t i) {
    if (i >= r->rec_start && i < end) return (int32_t)(r->n_params + (i - r->rec_start));
    if (i >= 0 && i < r->rec_start) return pmap[i];
    return -1;
}

/* Must pull entry i come before entry j?
 * By rank: the order in which the walk whose ranks are in b->rank added the
 * parents: reverse post-order, so the higher rank first; a parent the walk
 * never reached (dead for these targets: an unchosen candidate and what only
 * it reads) first, as it would be if its target were chosen; two edges of one
 * parent in edge order.
 * By block (a rotating node's canonical order): the higher logit first. */
static int precedes(const builder_t *b, int by_block, int64_t i, int64_t j) {
    const tape_t *t = b->t;
    if (by_block) return t->npull_block[i] > t->npull_block[j];
    int32_t q1 = t->npull_parent[i], q2 = t->npull_parent[j];
    int64_t r1 = b->rank[q1] < 0 ? INT32_MAX : b->rank[q1];
    int64_t r2 = b->rank[q2] < 0 ? INT32_MAX : b->rank[q2];
    if (r1 != r2) return r1 > r2;
    if (q1 != q2) return q1 > q2;
    return t->npull_edge[i] < t->npull_edge[j];
}

static void swap_pulls(tape_t *t, int64_t i, int64_t j) {
    int32_t q = t->npull_parent[i], blk = t->npull_block[i];
    int64_t e = t->npull_edge[i];
    t->npull_parent[i] = t->npull_parent[j];
    t->npull_edge[i] = t->npull_edge[j];
    t->npull_block[i] = t->npull_block[j];
    t->npull_parent[j] = q;
    t->npull_edge[j] = e;
    t->npull_block[j] = blk;
}

/* Sort pull entries [lo, hi) stably (insertion sort). By rank, the entries
 * come in creation order, mostly the reverse of the order sought, so they are
 * reversed first (the order by rank is total: the result is the same) and the
 * sort has little left to do; a long list (a vector read by every row of a
 * wide matrix) then costs no more than a short one. */
static void sort_pulls(builder_t *b, int64_t lo, int64_t hi, int by_block) {
    tape_t *t = b->t;
    if (!by_block)
        for (int64_t i = lo, j = hi - 1; i < j; ++i, --j) swap_pulls(t, i, j);
    for (int64_t i = lo + 1; i < hi; ++i)
        for (int64_t j = i; j > lo && precedes(b, by_block, j, j - 1); --j)
            swap_pulls(t, j, j - 1);
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
 * every position, follow the tape's rule at every node it reached? */
static int rule_holds(const builder_t *b, int32_t shift) {
    const tape_t *t = b->t;
    for (int32_t c = t->n_params; c < t->n_nodes; ++c)
        if ((t->kind[c] == K_OP || t->kind[c] == K_ROTATE) && b->rank[c] >= 0
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

/* Is node m a product read only by node reader? */
static int product_for(const tape_t *t, int32_t m, int32_t reader) {
    return t->kind[m] == K_OP && t->op[m] == OP_MUL && t->npull_start[m + 1] - t->npull_start[m] == 1
        && t->npull_parent[t->npull_start[m]] == reader;
}

/* Is node a the addition (x, y) of two children? */
static int adds(const tape_t *t, int32_t a, int32_t x, int32_t y) {
    int64_t e = t->child_start[a];
    return t->kind[a] == K_OP && t->op[a] == OP_ADD && t->child_start[a + 1] - e == 2
        && t->child[e] == x && t->child[e + 1] == y;
}

/* Find the chains sum(w * x ...) builds: m0, const 0, a0 = m0 + 0, then
 * (m_k, a_k = a_(k-1) + m_k) pairs, every inner node read once, by the next.
 * Nothing that something else refers to (a derived number's source) is inner. */
static void fuse_dots(tape_t *t) {
    uint8_t *source = calloc((size_t)t->n_nodes, 1);
    if (source == NULL) return;  /* no fusion: the plain instructions are as exact */
    for (int64_t s = 0; s < t->src_start[t->n_derived]; ++s) source[t->src[s]] = 1;
    for (int32_t s = t->n_params; s + 2 < t->n_nodes; ++s) {
        int32_t c0 = s + 1, a = s + 2;
        if (!(t->kind[c0] == K_CONST && t->operand[c0] == 0.0 && adds(t, a, s, c0)
              && product_for(t, s, a) && !source[s]))
            continue;
        while (a + 2 < t->n_nodes && t->pos[a + 2] == t->pos[s] && adds(t, a + 2, a, a + 1)
               && product_for(t, a + 1, a + 2) && !source[a] && !source[a + 1]
               && t->npull_start[a + 1] - t->npull_start[a] == 1)
            a += 2;
        t->kind[a] = K_DOT;
        t->aux[a] = s;
        t->kind[s] = K_INTERIOR;
        for (int32_t i = s + 2; i < a; ++i) t->kind[i] = K_INTERIOR;
        s = a;
    }
    free(source);
}

/* How the forward computes a node. */
enum { F_ADD, F_MUL, F_ONE_CHILD, F_DOT, F_DERIVED, F_COPY, F_DOT4, F_MV4 };

/* Side by side. A sum in a register waits for its last addition (a few cycles)
 * before the next; four independent sums of the same length, each added in
 * its own order, fill those cycles. The forward runs four chains of one
 * length at once (the rows of one matrix) where none reads another's result;
 * the backward sums four nodes' pulls at once where none is a parent of
 * another. Each sum is the same sequence of additions as alone. */
#define SIDE 4
#define MAX_LANES 1024  /* the longest vector summed as a run (its sums live on the stack) */

static void group_dots(tape_t *t, int64_t nf) {
    for (int64_t i = 0; i + SIDE <= nf; ++i) {
        int ok = 1;
        int32_t L0 = t->fwd[i];
        for (int k = 0; k < SIDE && ok; ++k) {
            int32_t L = t->fwd[i + k];
            ok = t->fwd_code[i + k] == F_DOT && L - t->aux[L] == L0 - t->aux[L0] && t->pos[L] == t->pos[L0];
            if (!ok) break;
            const int32_t *pr = t->dot_pair + t->dot_at[L];
            for (int32_t j = 0; j < L - t->aux[L] && ok; ++j)  /* reads no top of the group */
                for (int m = 0; m < k && ok; ++m) ok = pr[j] != t->fwd[i + m];
        }
        if (!ok) continue;
        t->fwd_code[i] = F_DOT4;
        i += SIDE - 1;
    }
}

/* A group of four chains that are four rows of one matrix times one vector:
 * chain c's k-th product is w_c[k] * v[k], with w_c[k] the parameter w_c[0] + k
 * and v[k] the same node for the four. The same products and sums, read
 * through a row's first parameter and one list of the vector. Returns how
 * many groups were found. */
static int64_t mark_matvecs(tape_t *t, int64_t nf) {
    int64_t found = 0;
    for (int64_t i = 0; i + SIDE <= nf; ++i) {
        if (t->fwd_code[i] != F_DOT4) continue;
        const int32_t *A = t->fwd_arg + 3 * i, *p0 = t->dot_pair + A[0];
        int ok = 1;
        for (int c = 0; c < SIDE && ok; ++c) {
            const int32_t *pc = t->dot_pair + A[3 * c];
            for (int32_t j = 0; j < A[2] && ok; j += 2)
                ok = pc[j] == pc[0] + j / 2 && pc[0] + A[2] / 2 <= t->n_params
                    && pc[j + 1] == p0[j + 1] && pc[j + 1] >= t->n_params;
        }
        if (ok) { t->fwd_code[i] = F_MV4; found++; }
        i += SIDE - 1;
    }
    return found;
}

static void group_pulls(tape_t *t, int64_t nb) {
    for (int64_t b = nb - 1; b >= SIDE - 1; --b) {
        int ok = 1;
        int64_t count = t->pull_start[b + 1] - t->pull_start[b];
        for (int k = 0; k < SIDE && ok; ++k) {
            int64_t e = b - k;
            int32_t L = t->bwd[e];
            ok = (t->kind[L] == K_OP || t->kind[L] == K_DOT) && count > 1
                && t->pull_start[e + 1] - t->pull_start[e] == count;
            for (int64_t j = t->pull_start[e]; j < t->pull_start[e + 1] && ok; ++j)  /* no parent in the group */
                for (int m = 0; m < k && ok; ++m) ok = t->pull_parent[j] != t->bwd[b - m];
        }
        if (!ok) continue;
        t->bwd_group[b] = 1;
        /* four entries of one vector read by the rows of one matrix: the same
         * parents, and each row's weights side by side (see the backward) */
        int64_t k0 = t->pull_start[b];
        int mv = 1;
        for (int k = 1; k < SIDE && mv; ++k) {
            int64_t kk = t->pull_start[b - k];
            for (int64_t j = 0; j < count && mv; ++j)
                mv = t->pull_parent[kk + j] == t->pull_parent[k0 + j]
                    && t->pull_src[kk + j] == t->pull_src[k0 + j] - k && t->pull_src[k0 + j] - k >= 0;
        }
        if (mv) t->bwd_group[b] = 2;
        b -= SIDE - 1;
    }
    /* runs of such groups, one after another, over the same parents with their
     * weights still side by side: a whole vector read by a matrix's rows */
    for (int64_t b = nb - 1; b >= SIDE - 1; --b) {
        if (t->bwd_group[b] != 2) continue;
        int64_t k0 = t->pull_start[b], count = t->pull_start[b + 1] - k0, e = b;
        while (e - SIDE >= SIDE - 1 && b - (e - SIDE) + 1 <= MAX_LANES && t->bwd_group[e - SIDE] == 2
               && t->pull_start[e - SIDE + 1] - t->pull_start[e - SIDE] == count) {
            int64_t kk = t->pull_start[e - SIDE];
            int32_t shift = (int32_t)(b - (e - SIDE));
            int ok = 1;
            for (int64_t j = 0; j < count && ok; ++j)
                ok = t->pull_parent[kk + j] == t->pull_parent[k0 + j]
                    && t->pull_src[kk + j] == t->pull_src[k0 + j] - shift && t->pull_src[k0 + j] - shift - (SIDE - 1) >= 0;
            if (!ok) break;
            e -= SIDE;
        }
        if (e < b) {
            t->bwd_group[b] = 3;
            t->bwd_lanes[b] = (int32_t)(b - e + SIDE);
        }
        b = e - (SIDE - 1);
    }
}

/* Where the local gradient of node L's edge e is when the backward runs:
 * the other factor's value, L's own slot, or the 1.0; -1 for none. */
static int32_t lg_src(const tape_t *t, int32_t L, int64_t e) {
    int64_t e0 = t->child_start[L];
    switch (t->op[L]) {
    case OP_ADD: return 2 * t->n_nodes;
    case OP_MUL: return t->child[e == e0 ? e0 + 1 : e0];
    case OP_POW: case OP_LOG: case OP_EXP: case OP_RELU: return t->n_nodes + L;
    default: return -1;
    }
}

/* After packing, nothing refers to a chain's inner nodes (their gradients are
 * the top's, their values are never kept), and they are most of a step's
 * nodes. Number the rest 0.. in the same order (parameters first, as they
 * were), rewrite every reference, and keep per node only what a replay reads:
 * op, operand, position, value, local grad slot, gradient. The edge lists and
 * node kinds the builder needed go. */
#define RENUM(v) do { int32_t r_ = nw[(v)]; if (r_ < 0) goto inner; (v) = r_; } while (0)
static const char *renumber(tape_t *t) {
    int32_t n = t->n_nodes, N = t->n_pos, m = 0;
    int32_t *nw = NULL;
    if (!NEW(nw, n)) return "out of memory";
    for (int32_t L = 0; L < n; ++L) nw[L] = t->kind[L] == K_INTERIOR ? -1 : m++;
    int64_t n_fwd = t->fwd_end[N - 1], n_bwd = t->bwd_end[N - 1];
    uint8_t *op = NULL;
    double *operand = NULL, *x = NULL, *grad = NULL;
    int32_t *pos = NULL;
    if (!NEW(op, m) || !NEW(operand, m) || !NEW(pos, m) || !NEW(x, 2 * (int64_t)m + 1) || !NEW(grad, m)
        || !NEW(t->graph_end, N)) {
        free(op); free(operand); free(pos); free(x); free(grad); free(nw);
        return "out of memory";
    }
    /* a local gradient's place: a node's value, a one-child node's slot, or the 1.0 */
#define SRC(v) do { int32_t s_ = (v), r_ = s_ == 2 * n ? 2 * m : s_ >= n ? nw[s_ - n] : nw[s_]; \
                     if (r_ < 0) goto inner;                                                  \
                     (v) = s_ == 2 * n ? r_ : s_ >= n ? m + r_ : r_; } while (0)
    for (int32_t L = 0; L < n; ++L) {
        if (nw[L] < 0) continue;
        op[nw[L]] = t->op[L];
        operand[nw[L]] = t->operand[L];
        pos[nw[L]] = t->pos[L];
        if (L >= t->n_params && t->kind[L] == K_CONST) x[nw[L]] = t->operand[L];  /* constants never change */
    }
    x[2 * (int64_t)m] = 1.0;
    for (int32_t p = 0; p < N; ++p) {
        t->graph_end[p] = t->pos_end[p];
        int32_t e = t->pos_end[p];
        while (e < n && nw[e] < 0) ++e;  /* the first kept node past position p */
        t->pos_end[p] = e < n ? nw[e] : m;
        RENUM(t->loss_node[p]);
        RENUM(t->target_owner[p]);
        SRC(t->target_src[p]);
    }
    for (int64_t j = 0; j < (int64_t)N * t->n_cand; ++j) RENUM(t->cand[j]);
    for (int64_t j = 0; j < t->n_derived; ++j) RENUM(t->derived_node[j]);
    for (int64_t j = 0; j < t->src_start[t->n_derived]; ++j) RENUM(t->src[j]);
    for (int64_t i = 0; i < n_fwd; ++i) {
        int32_t *A = t->fwd_arg + 3 * i;
        switch (t->fwd_code[i]) {
        case F_ADD: case F_MUL: RENUM(A[0]); RENUM(A[1]); break;
        case F_ONE_CHILD: case F_COPY: RENUM(A[0]); break;
        case F_DOT: case F_DOT4: case F_MV4: RENUM(A[1]); break;  /* a group's members are F_DOT or F_DOT4 too */
        default: break;  /* F_DERIVED: an index of the derived list */
        }
        RENUM(t->fwd[i]);
    }
    for (int64_t j = 0; j < t->n_pairs; ++j) RENUM(t->dot_pair[j]);
    for (int64_t b = 0; b < n_bwd; ++b) RENUM(t->bwd[b]);
    for (int64_t k = 0; k < t->pull_start[n_bwd]; ++k) {
        RENUM(t->pull_parent[k]);
        SRC(t->pull_src[k]);
    }
    for (int64_t k = 0; k < t->param_start[N]; ++k) {
        RENUM(t->param_parent[k]);
        SRC(t->param_src[k]);
    }
#undef SRC
    free(nw);
    free(t->op); free(t->operand); free(t->pos); free(t->x); free(t->grad);
    t->op = op; t->operand = operand; t->pos = pos; t->x = x; t->grad = grad;
    free(t->kind); free(t->aux); free(t->dot_at); free(t->child_start); free(t->child);
    t->kind = NULL; t->aux = NULL; t->dot_at = NULL; t->child_start = NULL; t->child = NULL;
    t->n_edges = 0;
    t->n_nodes = m;
    return NULL;
inner:
    free(nw); free(op); free(operand); free(pos); free(x); free(grad);
    return "a chain's inner node is read from outside it";
}
#undef RENUM

/* The replay's program from the checked node lists: the forward's and the
 * backward's instruction lists, the pulls with their local gradients' places,
 * a chain's inner products replaced by its top wherever their gradient is
 * read; then the builder's node-indexed lists are freed. */
static const char *pack(tape_t *t) {
    int32_t n = t->n_nodes, P = t->n_params, N = t->n_pos;
    int32_t *top = NULL, *last_pow = NULL;
    if (!NEW(top, n) || !NEW(last_pow, n) || !NEW(t->fwd, n) || !NEW(t->fwd_code, n) || !NEW(t->fwd_end, N)
        || !NEW(t->bwd, n) || !NEW(t->bwd_end, N) || !NEW(t->pull_start, n + 1)) {
        free(top); free(last_pow);
        return "out of memory";
    }
    for (int32_t L = 0; L < n; ++L) { top[L] = L; last_pow[L] = -1; }
    int64_t n_pairs = 0;
    for (int32_t L = P; L < n; ++L)
        if (t->kind[L] == K_DOT) {
            int32_t s = t->aux[L];
            top[s] = L;
            for (int32_t m = s + 3; m < L; m += 2) top[m] = L;
            n_pairs += L - s;
        }
    if (!NEW(t->dot_pair, n_pairs)) { free(top); free(last_pow); return "out of memory"; }
    t->n_pairs = n_pairs;

    /* the forward */
    int64_t nf = 0, pair = 0;
    int32_t q = 0;
    for (int32_t L = P; L < n; ++L) {
        while (L >= t->pos_end[q]) t->fwd_end[q++] = (int32_t)nf;
        uint8_t code;
        switch (t->kind[L]) {
        case K_CONST: continue;
        case K_INTERIOR: continue;
        case K_DERIVED: code = F_DERIVED; break;
        case K_DOT: {
            int32_t s = t->aux[L];
            t->dot_at[L] = (int32_t)pair;
            for (int32_t m = s; m < L; m += (m == s ? 3 : 2)) {
                t->dot_pair[pair++] = t->child[t->child_start[m]];
                t->dot_pair[pair++] = t->child[t->child_start[m] + 1];
            }
            code = F_DOT;
            break;
        }
        default: {
            int64_t edges = t->child_start[L + 1] - t->child_start[L];
            if (t->op[L] == OP_ADD || t->op[L] == OP_MUL) {
                if (edges != 2) { free(top); free(last_pow); return "an operation with an unexpected number of children"; }
                code = t->op[L] == OP_ADD ? F_ADD : F_MUL;
            } else if (lg_src(t, L, t->child_start[L]) >= 0 && edges == 1) {
                code = F_ONE_CHILD;
                if (t->op[L] == OP_POW) {  /* the same pow of the same node as the last: copy it */
                    int32_t c = t->child[t->child_start[L]], k = last_pow[c];
                    if (k >= 0 && memcmp(&t->operand[k], &t->operand[L], sizeof(double)) == 0) {
                        code = F_COPY;
                        t->aux[L] = k;
                    } else {
                        last_pow[c] = L;
                    }
                }
            } else {
                free(top); free(last_pow);
                return "an operation the replay does not know";
            }
        }
        }
        t->fwd[nf] = L;
        t->fwd_code[nf++] = code;
    }
    while (q < N) t->fwd_end[q++] = (int32_t)nf;
    free(last_pow);

    /* each instruction's operands, and where the slots are among them */
    int32_t *ins_of = NULL;
    if (!NEW(t->fwd_arg, 3 * nf) || !NEW(ins_of, n) || !NEW(t->target_arg, N)
        || !NEW(t->token_arg, t->n_token_edges) || !NEW(t->first_pos, P)) {
        free(top); free(ins_of);
        return "out of memory";
    }
    for (int64_t i = 0; i < nf; ++i) {
        int32_t L = t->fwd[i], *A = t->fwd_arg + 3 * i;
        int64_t e = t->child_start[L];
        ins_of[L] = (int32_t)i;
        switch (t->fwd_code[i]) {
        case F_ADD: case F_MUL: A[0] = t->child[e]; A[1] = t->child[e + 1]; break;
        case F_ONE_CHILD: A[0] = t->child[e]; break;
        case F_COPY: A[0] = t->aux[L]; break;
        case F_DOT: A[0] = t->dot_at[L]; A[1] = t->aux[L] + 1; A[2] = L - t->aux[L]; break;
        default: break;  /* F_DERIVED: below */
        }
    }
    for (int64_t j = 0; j < t->n_derived; ++j) t->fwd_arg[3 * (int64_t)ins_of[t->derived_node[j]]] = (int32_t)j;
    for (int32_t p = 0; p < N; ++p) {
        int32_t owner = t->target_owner[p];
        t->target_arg[p] = 3 * (int64_t)ins_of[owner] + (t->target_edge[p] - t->child_start[owner]);
    }
    for (int64_t j = 0; j < t->n_token_edges; ++j) {
        int32_t owner = t->param_parent[t->token_param[j]];  /* an addition or one-child operation */
        t->token_arg[j] = 3 * (int64_t)ins_of[owner] + (t->token_edge[j] - t->child_start[owner]);
    }
    free(ins_of);
    for (int32_t k = 0; k < P; ++k) t->first_pos[k] = INT32_MAX;
    for (int32_t p = N - 1; p >= 0; --p)
        for (int64_t j = t->param_start[p]; j < t->param_start[p + 1]; ++j) {
            int32_t c = t->child[t->param_edge[j]];
            if (c < t->table_slot0 || c >= t->table_slot0 + t->table_rows * t->table_cols) t->first_pos[c] = p;
        }
    group_dots(t, nf);
    int64_t n_mv = mark_matvecs(t, nf);
    uint8_t *in_mv = NULL;  /* the tops of the chains in those groups */
    if (!NEW(t->mv, n_mv) || !NEW(t->mv_end, N) || !NEW(in_mv, n)) { free(top); free(in_mv); return "out of memory"; }
    {
        int32_t k = 0, p = 0;
        for (int32_t i = 0; i < (int32_t)nf; ++i) {
            while (i >= t->fwd_end[p]) t->mv_end[p++] = k;
            if (t->fwd_code[i] != F_MV4) continue;
            t->mv[k++] = i;
            for (int c = 0; c < SIDE; ++c) in_mv[t->fwd[i + c]] = 1;
        }
        while (p < N) t->mv_end[p++] = k;
    }

    /* the backward: every node that takes a gradient */
    int64_t nb = 0, n_pulls = 0;
    for (int32_t L = P; L < n; ++L) {
        uint8_t k = t->kind[L];
        if (k == K_OP || k == K_ROTATE || k == K_DOT) n_pulls += t->npull_start[L + 1] - t->npull_start[L];
    }
    if (!NEW(t->pull_parent, n_pulls) || !NEW(t->pull_src, n_pulls) || !NEW(t->pull_block, n_pulls)) {
        free(top);
        return "out of memory";
    }
    q = 0;
    int64_t k_out = 0;
    for (int32_t L = P; L < n; ++L) {
        while (L >= t->pos_end[q]) t->bwd_end[q++] = (int32_t)nb;
        uint8_t k = t->kind[L];
        if (k == K_CONST || k == K_DERIVED || k == K_INTERIOR) continue;
        t->bwd[nb] = L;
        t->pull_start[nb++] = k_out;
        if (k == K_SEED || k == K_CANDIDATE) continue;  /* their gradient comes from a slot */
        for (int64_t j = t->npull_start[L]; j < t->npull_start[L + 1]; ++j, ++k_out) {
            int32_t parent = t->npull_parent[j];
            t->pull_parent[k_out] = top[parent];
            t->pull_src[k_out] = lg_src(t, parent, t->npull_edge[j]);
            t->pull_block[k_out] = t->npull_block[j];
        }
    }
    while (q < N) t->bwd_end[q++] = (int32_t)nb;
    t->pull_start[nb] = k_out;
    if (!NEW(t->bwd_group, nb) || !NEW(t->bwd_kind, nb) || !NEW(t->bwd_lanes, nb)) { free(top); return "out of memory"; }
    for (int64_t b = 0; b < nb; ++b) t->bwd_kind[b] = t->kind[t->bwd[b]];
    group_pulls(t, nb);

    /* parameter reads: a matrix row's are made by the backward from the
     * group's own lists (each parameter is read once a position, so a
     * position's reads may go in any order); the rest are kept, in order */
    int64_t *moved_to = NULL;
    if (!NEW(moved_to, t->param_start[N])) { free(top); free(in_mv); return "out of memory"; }
    int64_t kept = 0;
    for (int32_t p = 0; p < N; ++p) {
        int64_t from = t->param_start[p];
        t->param_start[p] = kept;
        for (int64_t j = from; j < t->param_start[p + 1]; ++j) {
            int32_t parent = t->param_parent[j];
            moved_to[j] = -1;
            if (t->kind[parent] == K_INTERIOR && t->op[parent] == OP_MUL && in_mv[top[parent]]) continue;
            moved_to[j] = kept;
            t->param_child[kept] = t->child[t->param_edge[j]];
            t->param_src[kept] = lg_src(t, parent, t->param_edge[j]);
            t->param_parent[kept++] = top[parent];
        }
    }
    t->param_start[N] = kept;
    for (int64_t j = 0; j < t->n_token_edges; ++j) t->token_param[j] = moved_to[t->token_param[j]];
    free(moved_to);
    free(in_mv);
    for (int32_t p = 0; p < N; ++p) {  /* a product's other child would take its grad from the slot */
        if (t->op[t->target_owner[p]] == OP_MUL) { free(top); return "probs[target] is read by a product"; }
        t->target_src[p] = lg_src(t, t->target_owner[p], t->target_edge[p]);
    }
    free(top);
    free(t->npull_start); free(t->npull_parent); free(t->npull_edge); free(t->npull_block); free(t->param_edge);
    t->npull_start = NULL; t->npull_parent = NULL; t->npull_block = NULL; t->npull_edge = NULL; t->param_edge = NULL;
    return renumber(t);
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
        || !NEW(t->cand, (int64_t)N * V) || !NEW(b->rank, n) || !NEW(t->param_start, N + 1)) {
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
        t->child_start[L] = a->child_start[i] - b->arena_edge0;
        if (a->op[i] == OP_CUSTOM) why = "the step has a user-defined node (its local grads were given)";
        else if (a->op[i] == OP_LEAF || a->op[i] == OP_CONST) { t->kind[L] = K_CONST; t->operand[L] = a->data[i]; }
        else { t->kind[L] = K_OP; t->operand[L] = a->operand[i]; }
        for (int64_t e = a->child_start[i]; e < a->child_start[i + 1] && why == NULL; ++e) {
            int32_t c = local_of(r, pmap, end, a->child[e]);
            if (c < 0) why = "the step reads a node made before recording that is not a parameter";
            t->child[e - b->arena_edge0] = c;
        }
    }
    for (int32_t L = 0; L < P; ++L) t->child_start[L] = 0;  /* parameters have no edges */
    t->child_start[n] = E;
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
    int32_t *cand_of = NULL;  /* local node -> p * V + v, or -1 */
    if (!NEW(cand_of, n)) { free(pmap); return "out of memory"; }
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
    if (why) { free(pmap); free(cand_of); return why; }

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

    /* who reads each node: parameters by position, the rest into pull lists */
    int64_t n_param_edges = 0;
    for (int32_t L = P; L < n && why == NULL; ++L)
        for (int64_t e = t->child_start[L]; e < t->child_start[L + 1]; ++e) {
            int32_t c = t->child[e];
            if (c < P) { n_param_edges++; t->param_start[t->pos[L] + 1]++; continue; }
            if (t->kind[c] == K_SEED) { why = "a position's loss is read inside the step"; break; }
            if (cand_of[c] >= 0 || t->kind[c] == K_CONST || t->kind[c] == K_DERIVED) continue;
            t->npull_start[c + 1]++;
        }
    free(cand_of);
    if (why) { free(pmap); return why; }
    for (int32_t q = 0; q < N; ++q) t->param_start[q + 1] += t->param_start[q];
    for (int32_t L = 0; L < n; ++L) t->npull_start[L + 1] += t->npull_start[L];
    int64_t n_pulls = t->npull_start[n];
    if (!NEW(t->npull_parent, n_pulls) || !NEW(t->npull_edge, n_pulls) || !NEW(t->npull_block, n_pulls)
        || !NEW(t->param_edge, n_param_edges) || !NEW(t->param_parent, n_param_edges)
        || !NEW(t->param_child, n_param_edges) || !NEW(t->param_src, n_param_edges)) { free(pmap); return "out of memory"; }
    {
        int64_t *fill = NULL, *pfill = NULL;
        if (!NEW(fill, n) || !NEW(pfill, N)) { free(fill); free(pfill); free(pmap); return "out of memory"; }
        for (int32_t L = 0; L < n; ++L) fill[L] = t->npull_start[L];
        for (int32_t q = 0; q < N; ++q) pfill[q] = t->param_start[q];
        for (int32_t L = P; L < n; ++L)
            for (int64_t e = t->child_start[L]; e < t->child_start[L + 1]; ++e) {
                int32_t c = t->child[e];
                if (c < P) {
                    int64_t k = pfill[t->pos[L]]++;
                    t->param_edge[k] = e;
                    t->param_parent[k] = L;
                } else if (t->npull_start[c + 1] > t->npull_start[c] && t->kind[c] != K_SEED) {
                    int64_t k = fill[c]++;
                    t->npull_parent[k] = L;
                    t->npull_edge[k] = e;
                }
            }
        free(fill);
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
    walk(b);
    for (int32_t c = P; c < n; ++c) {
        int64_t lo = t->npull_start[c], hi = t->npull_start[c + 1];
        if (hi - lo < 1) continue;
        sort_pulls(b, lo, hi, 0);
        int32_t first = -2, mixed = 0, none = 0;
        for (int64_t k = lo; k < hi; ++k) {
            int32_t blk = block_of(b, t->npull_parent[k]);
            t->npull_block[k] = blk;
            if (blk < 0) none = 1;
            if (first == -2) first = blk;
            else if (blk != first) mixed = 1;
        }
        if (!mixed) { for (int64_t k = lo; k < hi; ++k) t->npull_block[k] = -1; continue; }
        if (none) return "a node is read by several logits and by something else";
        sort_pulls(b, lo, hi, 1);  /* the canonical order: by logit, highest first */
        t->kind[c] = K_ROTATE;
        for (int64_t k = lo; k < hi; ++k)
            if (t->pos[t->npull_parent[k]] != t->pos[c]) return "a node is read by logits of another position";
    }
    if (!rule_holds(b, 0))
        return "the backward order of the recorded step does not follow the tape's rule";

    /* the same rule for other targets, against real walks */
    int32_t shifts = r->verify_shifts <= 0 || r->verify_shifts >= V ? V - 1 : r->verify_shifts;
    for (int32_t k = 1; k <= shifts; ++k) {
        int32_t shift = shifts == V - 1 ? k : (int32_t)(((int64_t)k * (V - 1)) / shifts);
        if (shift < 1) shift = 1;
        if ((why = verify(b, shift)) != NULL) return why;
    }
    fuse_dots(t);
    return pack(t);
}

tape_t *tape_build(arena_t *a, const record_t *r, const char **why) {
    tape_t *t = calloc(1, sizeof *t);
    if (t == NULL) { *why = "out of memory"; return NULL; }
    t->params_at = -1;
    builder_t b = {a, r, t, NULL, 0};
    *why = build(&b);
    free(b.rank);
    if (*why != NULL) { tape_free(t); return NULL; }
    return t;
}

/* ---------------------------------------------------------------- replaying */

status_t tape_forward(tape_t *t, const arena_t *a, const node_t *params,
                      const int32_t *tokens, int32_t n) {
    double *x = t->x, *x_lg = t->x + t->n_nodes;
    int32_t *arg = t->fwd_arg;
    const int32_t *fwd = t->fwd, *pair = t->dot_pair;
    const uint8_t *code = t->fwd_code;
    if (t->params_at >= 0) memcpy(x, a->data + t->params_at, (size_t)t->n_params * sizeof *x);
    else for (int32_t k = 0; k < t->n_params; ++k) x[k] = a->data[params[k]];
    for (int64_t j = 0; j < t->n_token_edges; ++j) {
        int32_t q = t->token_pos[j];
        if (q < n) {
            int32_t slot = t->table_slot0 + tokens[q] * t->table_cols + t->token_col[j];
            arg[t->token_arg[j]] = slot;
            t->param_child[t->token_param[j]] = slot;
        }
    }
    for (int32_t q = 0; q < n; ++q)
        arg[t->target_arg[q]] = t->cand[(int64_t)q * t->n_cand + tokens[q + 1]];

    int32_t n_fwd = t->fwd_end[n - 1];
    for (int32_t i = 0; i < n_fwd; ++i) {
        int32_t L = fwd[i];
        const int32_t *A = arg + 3 * (int64_t)i;
        switch (code[i]) {
        case F_ADD:
            x[L] = x[A[0]] + x[A[1]];
            break;
        case F_MUL:
            x[L] = x[A[0]] * x[A[1]];
            break;
        case F_DOT: {
            /* m0 + 0, then + m_k: the chain's own additions, in its order */
            const int32_t *pr = pair + A[0], *pr_end = pr + A[2];
            double acc = x[pr[0]] * x[pr[1]] + x[A[1]];
            for (pr += 2; pr < pr_end; pr += 2)
                acc = acc + x[pr[0]] * x[pr[1]];
            x[L] = acc;
            break;
        }
        case F_DOT4: {
            const int32_t *p0 = pair + A[0], *p1 = pair + A[3], *p2 = pair + A[6], *p3 = pair + A[9];
            double a0 = x[p0[0]] * x[p0[1]] + x[A[1]];
            double a1 = x[p1[0]] * x[p1[1]] + x[A[4]];
            double a2 = x[p2[0]] * x[p2[1]] + x[A[7]];
            double a3 = x[p3[0]] * x[p3[1]] + x[A[10]];
            for (int32_t j = 2; j < A[2]; j += 2) {
                a0 = a0 + x[p0[j]] * x[p0[j + 1]];
                a1 = a1 + x[p1[j]] * x[p1[j + 1]];
                a2 = a2 + x[p2[j]] * x[p2[j + 1]];
                a3 = a3 + x[p3[j]] * x[p3[j + 1]];
            }
            x[L] = a0;
            x[fwd[i + 1]] = a1;
            x[fwd[i + 2]] = a2;
            x[fwd[i + 3]] = a3;
            i += SIDE - 1;
            break;
        }
        case F_MV4: {
            const int32_t *v = pair + A[0] + 1;  /* the vector: every other entry of row 0's list */
            const double *w0 = x + pair[A[0]], *w1 = x + pair[A[3]], *w2 = x + pair[A[6]], *w3 = x + pair[A[9]];
            double xv = x[v[0]];
            double a0 = w0[0] * xv + x[A[1]];
            double a1 = w1[0] * xv + x[A[4]];
            double a2 = w2[0] * xv + x[A[7]];
            double a3 = w3[0] * xv + x[A[10]];
            for (int32_t j = 1; j < A[2] / 2; ++j) {
                xv = x[v[2 * j]];
                a0 = a0 + w0[j] * xv;
                a1 = a1 + w1[j] * xv;
                a2 = a2 + w2[j] * xv;
                a3 = a3 + w3[j] * xv;
            }
            x[L] = a0;
            x[fwd[i + 1]] = a1;
            x[fwd[i + 2]] = a2;
            x[fwd[i + 3]] = a3;
            i += SIDE - 1;
            break;
        }
        case F_COPY:
            x[L] = x[A[0]];
            x_lg[L] = x_lg[A[0]];
            break;
        case F_DERIVED: {
            int64_t s = t->src_start[A[0]], s_end = t->src_start[A[0] + 1];
            double m = x[t->src[s]];
            for (++s; s < s_end; ++s)  /* Python's max: a later item replaces only if greater */
                if (x[t->src[s]] > m) m = x[t->src[s]];
            x[L] = t->operand[L] < 0 ? -m : m;
            break;
        }
        default: {  /* F_ONE_CHILD */
            status_t st = op_apply(t->op[L], &x[A[0]], t->operand[L], t->operand[L] - 1.0, &x[L], &x_lg[L]);
            if (st != OP_OK) return st;
        }
        }
    }
    /* the mean, as sum() and (1 / n) * builds it */
    double s = x[t->loss_node[0]] + 0.0;
    for (int32_t q = 1; q < n; ++q) s = s + x[t->loss_node[q]];
    t->loss = s * (1.0 / n);
    t->n_used = n;
    return OP_OK;
}

/* acc[i] += w[i] * gt, each lane its own sum (the compiler may run several lanes per instruction) */
static void add_row(double *restrict acc, const double *restrict w, double gt, int32_t lanes) {
    for (int32_t i = 0; i < lanes; ++i) acc[i] = acc[i] + w[i] * gt;
}

/* Four rows of one matrix: parameter w_c[j] adds v[j] * g_c (its product's
 * local grad is the vector's entry, the product's gradient its row's). The
 * rows are distinct parameters, the vector other nodes: nothing here aliases. */
static void rows_grads(double *restrict g0, double *restrict g1, double *restrict g2, double *restrict g3,
                       double t0, double t1, double t2, double t3,
                       const double *restrict x, const int32_t *restrict v, int32_t len) {
    for (int32_t j = 0; j < len; ++j) {
        double xv = x[v[2 * j]];
        g0[j] += xv * t0;
        g1[j] += xv * t1;
        g2[j] += xv * t2;
        g3[j] += xv * t3;
    }
}

int tape_backward(tape_t *t, arena_t *a, const node_t *params, const int32_t *tokens) {
    int32_t n = t->n_used, end = t->pos_end[n - 1], P = t->n_params, V = t->n_cand;
    double *g = t->grad;
    const double *x = t->x;
    const int32_t *pp = t->pull_parent, *src = t->pull_src, *pb = t->pull_block;
    const int64_t *ps = t->pull_start;

    /* the tail: loss = s * (1/n) with grad 1, then the chain of adds: each loss gets this */
    double g_s = 0.0 + (1.0 / n) * 1.0;
    double g_loss = 0.0 + 1.0 * (0.0 + 1.0 * g_s);

    for (int32_t b = t->bwd_end[n - 1] - 1; b >= 0; --b) {
        int32_t L = t->bwd[b];
        if (t->bwd_group[b] == 3) {  /* a whole vector read by a matrix's rows: a row at a time */
            int32_t lanes = t->bwd_lanes[b];
            const int32_t *p0 = pp + ps[b], *s0 = src + ps[b];
            int64_t count = ps[b + 1] - ps[b];
            double acc[MAX_LANES];  /* acc[i]: entry b - (lanes - 1 - i), whose weight is w[i] */
            for (int32_t i = 0; i < lanes; ++i) acc[i] = 0.0;
            for (int64_t j = 0; j < count; ++j)
                if (p0[j] < end) add_row(acc, x + s0[j] - (lanes - 1), g[p0[j]], lanes);
            for (int32_t i = 0; i < lanes; ++i) g[t->bwd[b - (lanes - 1 - i)]] = acc[i];
            b -= lanes - 1;
            continue;
        }
        if (t->bwd_group[b] == 2 && b >= SIDE - 1) {  /* the same, for a vector read by a matrix's rows */
            const int32_t *p0 = pp + ps[b], *s0 = src + ps[b];
            int64_t count = ps[b + 1] - ps[b];
            double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
            for (int64_t j = 0; j < count; ++j) {
                if (p0[j] >= end) continue;
                double gt = g[p0[j]];
                const double *w = x + s0[j];
                a0 = a0 + w[0] * gt;
                a1 = a1 + w[-1] * gt;
                a2 = a2 + w[-2] * gt;
                a3 = a3 + w[-3] * gt;
            }
            g[L] = a0;
            g[t->bwd[b - 1]] = a1;
            g[t->bwd[b - 2]] = a2;
            g[t->bwd[b - 3]] = a3;
            b -= SIDE - 1;
            continue;
        }
        if (t->bwd_group[b] && b >= SIDE - 1) {  /* b, b-1, b-2, b-3 side by side (a parent past end adds nothing) */
            int64_t k0 = ps[b], k1 = ps[b - 1], k2 = ps[b - 2], k3 = ps[b - 3], count = ps[b + 1] - k0;
            double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
            for (int64_t j = 0; j < count; ++j) {
                double t0 = x[src[k0 + j]] * g[pp[k0 + j]], t1 = x[src[k1 + j]] * g[pp[k1 + j]];
                double t2 = x[src[k2 + j]] * g[pp[k2 + j]], t3 = x[src[k3 + j]] * g[pp[k3 + j]];
                a0 = pp[k0 + j] < end ? a0 + t0 : a0;
                a1 = pp[k1 + j] < end ? a1 + t1 : a1;
                a2 = pp[k2 + j] < end ? a2 + t2 : a2;
                a3 = pp[k3 + j] < end ? a3 + t3 : a3;
            }
            g[L] = a0;
            g[t->bwd[b - 1]] = a1;
            g[t->bwd[b - 2]] = a2;
            g[t->bwd[b - 3]] = a3;
            b -= SIDE - 1;
            continue;
        }
        double acc = 0.0;
        switch (t->bwd_kind[b]) {
        case K_SEED:
            acc = g_loss;
            break;
        case K_CANDIDATE: {
            int32_t q = t->pos[L];
            if (t->cand[(int64_t)q * V + tokens[q + 1]] == L)
                acc += x[t->target_src[q]] * g[t->target_owner[q]];
            break;
        }
        case K_ROTATE: {
            int32_t tgt = tokens[t->pos[L] + 1];
            for (int64_t k = ps[b]; k < ps[b + 1]; ++k)
                if (pb[k] != tgt && pp[k] < end) acc += x[src[k]] * g[pp[k]];
            for (int64_t k = ps[b]; k < ps[b + 1]; ++k)
                if (pb[k] == tgt && pp[k] < end) acc += x[src[k]] * g[pp[k]];
            break;
        }
        default:  /* K_OP, K_DOT */
            for (int64_t k = ps[b]; k < ps[b + 1]; ++k)
                if (pp[k] < end) acc += x[src[k]] * g[pp[k]];
        }
        g[L] = acc;
    }
    /* parameters: each is read at most once a position; positions last to first */
    if (t->params_at >= 0) memcpy(g, a->grad + t->params_at, (size_t)P * sizeof *g);
    else for (int32_t k = 0; k < P; ++k) g[k] = a->grad[params[k]];
    const int32_t *pc = t->param_child, *ppar = t->param_parent, *psrc = t->param_src;
    const int64_t *pstart = t->param_start;
    const int32_t *arg = t->fwd_arg, *pair = t->dot_pair;
    for (int32_t q = n - 1; q >= 0; --q) {
        for (int32_t m = q > 0 ? t->mv_end[q - 1] : 0; m < t->mv_end[q]; ++m) {  /* matrix rows */
            const int32_t *A = arg + 3 * (int64_t)t->mv[m], *top4 = t->fwd + t->mv[m];
            rows_grads(g + pair[A[0]], g + pair[A[3]], g + pair[A[6]], g + pair[A[9]],
                       g[top4[0]], g[top4[1]], g[top4[2]], g[top4[3]], x, pair + A[0] + 1, A[2] / 2);
        }
        for (int64_t k = pstart[q]; k < pstart[q + 1]; ++k)
            g[pc[k]] += x[psrc[k]] * g[ppar[k]];
    }
    uint8_t *reached = t->reached;
    for (int32_t k = 0; k < P; ++k) reached[k] = t->first_pos[k] < n;
    for (int32_t q = 0; q < n; ++q)
        for (int32_t c = 0; c < t->table_cols; ++c)
            reached[t->table_slot0 + tokens[q] * t->table_cols + c] = 1;
    int finite = 1;
    for (int32_t k = 0; k < P; ++k) finite &= isfinite(g[k]) != 0;
    if (!finite) return 0;
    if (t->params_at >= 0) {
        memcpy(a->grad + t->params_at, g, (size_t)P * sizeof *g);
        uint8_t *tag = a->tag + t->params_at;
        for (int32_t k = 0; k < P; ++k) tag[k] &= (uint8_t)(reached[k] ? ~TAG_GRAD_INT : 0xff);
    } else {
        for (int32_t k = 0; k < P; ++k) {
            a->grad[params[k]] = g[k];
            if (reached[k]) a->tag[params[k]] &= (uint8_t)~TAG_GRAD_INT;
        }
    }
    return 1;
}
