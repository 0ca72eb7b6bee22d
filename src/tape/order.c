/* order.c: the backward's order. Each node's pull list (the parents whose
 * gradients it adds) sorted into the order the reference's depth-first walk
 * adds them; the rotating nodes' rule (the target's logit last) checked
 * against that walk and against walks for other targets (the walk itself:
 * walk.c). */
#include "builder.h"

/* The last walk's rank of pull entry k's parent (-1: not reached): of a
 * compact chain, the rank of its product that reads the node. */
static inline int32_t pull_rank_at(const builder_t *b, int64_t k, int32_t shift) {
    const tape_t *t = b->t;
    int32_t q = t->npull_parent[k], r = b->rank[q];
    if (r < 0 || !is_compact(t, q)) return r;
    int32_t j = operand_of_edge(t, q, t->npull_edge[k] + shift) >> 1;
    if (b->irregular[q]) return b->pair_rank[b->pair_base[q] + j];
    return r + j;  /* (a chain's rank is its first product's) */
}

/* ... of pull entry k as the list of a vector's entry `shift` on reads it
 * (reads.c share_vector_reads: the edge that many on) */
static inline int32_t pull_rank(const builder_t *b, int64_t k) {
    return pull_rank_at(b, k, 0);
}

/* Must pull entry i come before entry j?
 * By rank: the order in which the walk whose ranks are in b->rank added the
 * parents: reverse post-order, so the higher rank first; a parent the walk
 * never reached (dead for these targets: an unchosen candidate and what only
 * it reads) first, as it would be if its target were chosen; two edges of one
 * parent by edge (x * x, x + x: alike, the local gradient is the same at
 * either; a compact chain's two products: the later first, as the walk adds
 * the later product's term first).
 * By block (a rotating node's canonical order): the higher logit first. */
static int precedes_at(const builder_t *b, int by_block, int64_t i, int64_t j, int32_t shift) {
    const tape_t *t = b->t;
    if (by_block) return t->npull_block[i] > t->npull_block[j];
    int32_t q1 = t->npull_parent[i], q2 = t->npull_parent[j];
    int64_t r1 = pull_rank_at(b, i, shift), r2 = pull_rank_at(b, j, shift);
    r1 = r1 < 0 ? INT32_MAX : r1;
    r2 = r2 < 0 ? INT32_MAX : r2;
    if (r1 != r2) return r1 > r2;
    if (q1 != q2) return q1 > q2;
    return t->npull_edge[i] > t->npull_edge[j];  /* a compact chain's later product first, as its node would be */
}

static int precedes(const builder_t *b, int by_block, int64_t i, int64_t j) {
    return precedes_at(b, by_block, i, j, 0);
}

/* Pull entry k's place in the order by rank, as one number: the higher
 * first, so (rank, parent) descending; a parent never reached ranks above
 * every reached one. (precedes_at is this, then the edge.) */
static int64_t rank_key_at(const builder_t *b, int64_t k, int32_t shift) {
    int64_t r = pull_rank_at(b, k, shift);
    return ((r < 0 ? INT32_MAX : r) << 31) | b->t->npull_parent[k];
}

static int64_t rank_key(const builder_t *b, int64_t k) {
    return rank_key_at(b, k, 0);
}

/* Is the list node c shares (reads.c share_vector_reads) in its order for c
 * too? Its entries' parents are rows, each a product further on. */
static int shared_order_holds(const builder_t *b, int32_t c) {
    const tape_t *t = b->t;
    int32_t base = t->alias_base[c], shift = t->alias_shift[c];
    int64_t lo = t->npull_start[base], hi = t->npull_start[base + 1];
    for (int64_t k = lo + 1, before = lo < hi ? rank_key_at(b, lo, shift) : 0; k < hi; ++k) {
        int64_t key = rank_key_at(b, k, shift);  /* (each entry's rank found once) */
        if (key > before || (key == before && t->npull_edge[k] > t->npull_edge[k - 1])) return 0;
        before = key;
    }
    return 1;
}

/* Blocks exist only where sorting by block (a rotating node's entries): the
 * rest of npull_block is never touched. */
static void swap_pulls(tape_t *t, int64_t i, int64_t j, int by_block) {
    int32_t q = t->npull_parent[i], e = t->npull_edge[i];
    t->npull_parent[i] = t->npull_parent[j];
    t->npull_parent[j] = q;
    t->npull_edge[i] = t->npull_edge[j];
    t->npull_edge[j] = e;
    if (by_block) {
        int32_t blk = t->npull_block[i];
        t->npull_block[i] = t->npull_block[j];
        t->npull_block[j] = blk;
    }
}


static int descending(const void *x, const void *y) {
    const pull_key_t *a = x, *c = y;
    if (a->key != c->key) return (a->key < c->key) - (a->key > c->key);
    return (a->edge < c->edge) - (a->edge > c->edge);
}

/* Sort a long list by rank: the order is total (rank, parent, then edge), so
 * an unstable sort of the keys gives the one result. 0, or -1 out of memory. */
static int sort_by_rank(builder_t *b, int64_t lo, int64_t hi) {
    tape_t *t = b->t;
    if (hi - lo > b->keys_cap) {
        free(b->keys);
        b->keys_cap = 2 * (hi - lo);
        if (!NEW(b->keys, b->keys_cap)) return -1;
    }
    for (int64_t k = lo; k < hi; ++k) {
        b->keys[k - lo].key = rank_key(b, k);
        b->keys[k - lo].edge = t->npull_edge[k];
    }
    qsort(b->keys, (size_t)(hi - lo), sizeof *b->keys, descending);
    for (int64_t k = lo; k < hi; ++k) {
        t->npull_parent[k] = (int32_t)(b->keys[k - lo].key & INT32_MAX);
        t->npull_edge[k] = b->keys[k - lo].edge;
    }
    return 0;
}

/* Sort pull entries [lo, hi) stably. By rank, the entries come in the
 * reverse of creation order (reads.c fill_reads), mostly the order sought,
 * and are kept if that is the order; a short list is then sorted by
 * insertion, a long one (a vector read by every row of a wide matrix) by its
 * keys. By block, stably by insertion (a rotating node's few parents). 0, or
 * -1 out of memory. */
static int sort_pulls(builder_t *b, int64_t lo, int64_t hi, int by_block) {
    tape_t *t = b->t;
    if (!by_block) {
        int64_t k = lo + 1, before = rank_key(b, lo);  /* (each entry's rank found once) */
        for (int64_t key; k < hi && ((key = rank_key(b, k)) < before
                                     || (key == before && t->npull_edge[k - 1] > t->npull_edge[k])); ++k)
            before = key;
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
int32_t block_of(const builder_t *b, int32_t q) {
    return block_at(b, q, pos_of(b->t, q));
}

/* ... node q of position p */
int32_t block_at(const builder_t *b, int32_t q, int32_t p) {
    const tape_t *t = b->t;
    int32_t V = t->n_cand;
    if (p < 0 || V < 2) return -1;
    const node_t *lg = b->r->logit + (int64_t)p * V;
    int64_t width = (int64_t)lg[1] - lg[0];
    int64_t lo = (int64_t)lg[0] - width + 1, a = q - t->n_params + b->r->rec_start;
    if (width <= 0 || a < lo || a > lg[V - 1]) return -1;
    return (int32_t)((a - lo) / width);
}

/* Does the last walk add node c's parents in the order the tape will, with
 * target tgt at c's position? Parents the walk did not reach add zeros and
 * may stand anywhere. */
static int order_holds(const builder_t *b, int32_t c, int32_t tgt) {
    const tape_t *t = b->t;
    int32_t list = t->alias_base[c] ? t->alias_base[c] : c, shift = t->alias_shift[c];  /* (a shared list) */
    int64_t lo = t->npull_start[list], hi = t->npull_start[list + 1];
    int32_t last = INT32_MAX;
    if (hi - lo < 2) return 1;  /* (one parent: nothing to order) */
    for (int pass = 0; pass < (t->kind[c] == K_ROTATE ? 2 : 1); ++pass) {
        for (int64_t k = lo; k < hi; ++k) {
            if (t->kind[c] == K_ROTATE && ((t->npull_block[k] == tgt) != (pass == 1))) continue;
            int32_t r = pull_rank_at(b, k, shift);
            if (r < 0) continue;
            if (r > last) return 0;
            last = r;
        }
    }
    return 1;
}

/* Does the last walk, made with the recorded targets shifted by `shift` at
 * every position, follow the tape's rule at every node it reached? (A chain's
 * inner nodes have one parent each: nothing to order.) With `rotating` only
 * the rotating nodes' (the recorded walk's: every other list was sorted by
 * its ranks, or checked so by shared_order_holds). */
static int rule_holds(const builder_t *b, int32_t shift, int rotating) {
    const tape_t *t = b->t;
    for (int32_t c = t->n_params, p = 0; c < t->n_nodes; ++c) {
        while (c >= t->pos_end[p]) ++p;  /* c's position */
        uint8_t k = t->kind[c];
        if (!((k == K_ROTATE || (!rotating && (k == K_OP || k == K_DOT))) && b->rank[c] >= 0)) continue;
        int32_t tgt = k == K_ROTATE ? (b->r->tokens[p + 1] + shift) % t->n_cand : -1;  /* (only theirs reads it) */
        if (!order_holds(b, c, tgt)) return 0;
    }
    return 1;
}

/* Point every position's target edge at its target shifted by `shift`. */
static void point_targets(builder_t *b, int32_t shift) {
    tape_t *t = b->t;
    int32_t V = t->n_cand;
    for (int32_t p = 0; p < t->n_pos; ++p)
        t->child[t->target_edge[p]] = t->cand[(int64_t)p * V + (b->r->tokens[p + 1] + shift) % V];
}

/* Check the backward rule against a real walk for other targets. */
static const char *verify(builder_t *b, int32_t shift) {
    point_targets(b, shift);
    int walked = order_walk(b);
    int ok = walked == 0 && rule_holds(b, shift, 0);
    point_targets(b, 0);  /* the recorded targets back */
    if (walked < 0) return "out of memory";
    return ok ? NULL : "the backward order for another target does not follow the tape's rule";
}

/* The backward order of the recorded targets: every pull list sorted by the
 * walk's ranks; a rotating node's then by logit (the canonical order); and
 * the rule checked against the recorded walk. None for a forward-only tape
 * (verify_shifts < 0): its backward is never run, and the forward does not
 * read the pull lists' order (a sixth of a sampler's recording at n_layer 4,
 * n_embd 64, block 64). */
const char *order_pulls(builder_t *b) {
    tape_t *t = b->t;
    if (b->r->verify_shifts < 0) return NULL;
    b->rank = t->scratch;  /* the builder's fill is done with */
    if (!NEW(b->pair_rank, b->n_dot_pairs) || !NEW(b->irregular, t->n_nodes)) return "out of memory";
    if (order_walk(b) < 0) return "out of memory";
    for (int32_t c = t->n_params; c < t->n_nodes; ++c) {
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
            if (pos_of(t, t->npull_parent[k]) != pos_of(t, c)) return "a node is read by logits of another position";
    }
    for (int32_t c = t->n_params; c < t->n_nodes; ++c)
        if (t->alias_base[c] && !shared_order_holds(b, c))
            return "a vector's entries are read by a matrix's rows in different orders";
    if (!rule_holds(b, 0, 1))
        return "the backward order of the recorded step does not follow the tape's rule";
    return NULL;
}

/* The same rule for other targets, against real walks: every other target,
 * or r->verify_shifts of them spread over the vocabulary, or none (a
 * forward-only tape: its backward is never run). */
const char *verify_targets(builder_t *b) {
    const record_t *r = b->r;
    int32_t V = b->t->n_cand;
    int32_t shifts = r->verify_shifts < 0 ? 0
        : r->verify_shifts == 0 || r->verify_shifts >= V ? V - 1 : r->verify_shifts;
    for (int32_t k = 1; k <= shifts; ++k) {
        int32_t shift = shifts == V - 1 ? k : (int32_t)(((int64_t)k * (V - 1)) / shifts);
        if (shift < 1) shift = 1;
        const char *why = verify(b, shift);
        if (why != NULL) return why;
    }
    return NULL;
}
