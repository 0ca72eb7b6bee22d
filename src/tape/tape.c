/* tape.c: a tape's sizes, counts and accessors, and freeing it (and memory
 * given back to the system while it is built, or asked for in huge pages). */
#define _DEFAULT_SOURCE  /* madvise (discard_pages, huge_pages), hidden by -std=c99 */
#include "internal.h"
#include "lanes.h"

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

/* madvise over the whole pages inside [p, p + bytes) (advice -1: none here). */
static void advise(void *p, size_t bytes, int advice) {
#if defined(__linux__)
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), lo = ((uintptr_t)p + page - 1) / page * page;
    uintptr_t hi = ((uintptr_t)p + bytes) / page * page;
    if (hi > lo && advice >= 0) madvise((void *)lo, hi - lo, advice);
#else
    (void)p; (void)bytes; (void)advice;
#endif
}

#if defined(__linux__) && defined(MADV_DONTNEED)
void discard_pages(void *p, size_t bytes) { advise(p, bytes, MADV_DONTNEED); }
#else
void discard_pages(void *p, size_t bytes) { advise(p, bytes, -1); }
#endif
#if defined(__linux__) && defined(MADV_HUGEPAGE)
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  /* (Linux 6.1 on; an older kernel refuses it, and nothing changes) */
#endif
/* Pages touched from now on huge (MADV_HUGEPAGE), and those already there
 * gathered into huge ones now (MADV_COLLAPSE; a range never touched is refused). */
void huge_pages(void *p, size_t bytes) {
    advise(p, bytes, MADV_HUGEPAGE);
    advise(p, bytes, MADV_COLLAPSE);
}
#else
void huge_pages(void *p, size_t bytes) { advise(p, bytes, -1); }
#endif

#define HUGE_PAGE ((size_t)2 << 20)
void *huge_copy(void *p, size_t bytes) {
    void *q = NULL;
#if defined(__linux__)
    if (bytes < HUGE_PAGE || posix_memalign(&q, HUGE_PAGE, (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE) != 0)
        return p;
    huge_pages(q, bytes);
    memcpy(q, p, bytes);
    free(p);
#endif
    return q != NULL ? q : p;
}

void tape_free(tape_t *t) {
    if (t == NULL) return;
    free(t->kind); free(t->op); free(t->operand); free(t->child_start); free(t->pos);
    free(t->aux); free(t->dot_at); free(t->x); free(t->grad); free_child(t);
    free(t->fwd); free(t->fwd_code); free(t->mv); free(t->mv_end); free(t->fwd_arg); free(t->bwd_kind); free(t->first_pos); free(t->target_arg); free(t->token_arg); free(t->fwd_end); free(t->dot_pair);
    free(t->bwd); free(t->bwd_end); free(t->bwd_group); free(t->bwd_lanes); free(t->share_b); free(t->share_n); free(t->pull_start); free(t->pull_parent); free(t->pull_src);
    free(t->pull_block);
    free(t->param_start); free(t->param_child); free(t->param_parent); free(t->param_src);
    free(t->pos_end); free(t->loss_node); free(t->target_edge); free(t->target_owner);
    free(t->target_src); free(t->cand); free(t->logit);
    free(t->token_edge); free(t->token_param); free(t->token_pos); free(t->token_col);
    free(t->derived_node); free(t->src_start); free(t->src);
    free(t->npull_start); free(t->npull_parent); free(t->npull_edge); free(t->npull_block);
    free(t->param_edge); free(t->scratch); free(t->graph_end); free(t->alias_base); free(t->alias_shift);
    free(t->block_w0); free(t->block_len); free(t->block_start); free(t->block_mv); free(t->wt);
    free(t->block_x); free(t->block_d); free(t->block_ahead); free(t->block_same); free(t->block_in_place); free(t->block_gt); free(t->block_top);
    free(t->mv_read); free(t->block_pos); free(t->block_vec); free(t->level_at); free(t->bwd_level_at);
    free(t->level_units); free(t->level_mv);
    free(t->runs); free(t->run_slots); free(t->lane_runs); free(t->lane_stride); free(t->strided); free(t->strided_pulls); free(t->first_lanes); free(t->paired); free(t->first_groups);
    attention_free(t);
    free(t->steps); free(t->step_piece);
    free(t->prog); free(t->prog_at); free(t->prog_list); free(t->panel_units); free(t->panel_reads); free(t->panel_buf);
    free(t->params_outside);
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

int tape_lanes(void) { return lanes_level(); }

size_t tape_bytes(const tape_t *t) {
    size_t n = (size_t)t->n_nodes, N = (size_t)t->n_pos;
    counts_t c = counts_of(t);
    size_t derived = (size_t)t->n_derived, sources = (size_t)t->src_start[derived];
    return n * (sizeof *t->op + sizeof *t->operand + sizeof *t->pos + 2 * sizeof *t->x + sizeof *t->grad)
        + sizeof *t->x + (2 * (size_t)t->n_first_runs + 1) * sizeof *t->first_pos
        + (size_t)c.n_fwd * (sizeof *t->fwd + sizeof *t->fwd_code + 3 * sizeof *t->fwd_arg)
        + (size_t)t->n_pairs * sizeof *t->dot_pair
        + (size_t)c.n_bwd * (sizeof *t->bwd + sizeof *t->bwd_kind + sizeof *t->bwd_group + sizeof *t->bwd_lanes + sizeof *t->pull_start)
        + (size_t)t->n_share * (sizeof *t->share_b + sizeof *t->share_n)
        + sizeof *t->pull_start
        + (size_t)c.n_pulls * (sizeof *t->pull_parent + sizeof *t->pull_src + sizeof *t->pull_block)
        + (size_t)c.n_param_reads * (sizeof *t->param_child + sizeof *t->param_parent + sizeof *t->param_src)
        + (N + 1) * sizeof *t->param_start
        + (size_t)t->mv_end[N - 1] * sizeof *t->mv
        + N * (sizeof *t->mv_end + sizeof *t->fwd_end + sizeof *t->bwd_end + sizeof *t->pos_end
               + sizeof *t->graph_end + sizeof *t->loss_node + sizeof *t->target_edge
               + sizeof *t->target_owner + sizeof *t->target_src + sizeof *t->target_arg)
        + N * (size_t)t->n_cand * (sizeof *t->cand + sizeof *t->logit)
        + (size_t)t->n_token_edges * (sizeof *t->token_edge + sizeof *t->token_arg + sizeof *t->token_param
                                      + sizeof *t->token_pos + sizeof *t->token_col)
        + (size_t)t->mv_end[N - 1] * (sizeof *t->block_w0 + sizeof *t->block_len + sizeof *t->block_start
                                      + sizeof *t->block_mv + sizeof *t->mv_read + sizeof *t->block_pos
                                      + sizeof *t->block_vec)
        + (size_t)t->n_params * sizeof *t->wt
        + (t->level_at != NULL ? N * (size_t)(t->n_levels + 1) * sizeof *t->level_at : 0)
        + (t->bwd_level_at != NULL ? N * (size_t)(t->n_levels + 1) * sizeof *t->bwd_level_at : 0)
        + (t->level_mv != NULL ? (size_t)(t->n_levels + 1) * sizeof *t->level_units
                                 + N * (size_t)t->level_units[t->n_levels] * sizeof *t->level_mv : 0)
        + (t->block_x != NULL ? weight_grads_bytes(t) + 2 * (size_t)t->n_blocks + (size_t)t->mv_end[N - 1]
                                 * (t->block_top != NULL ? sizeof *t->block_top : SIDE * sizeof *t->block_gt) : 0)
        + derived * sizeof *t->derived_node + (derived + 1) * sizeof *t->src_start + sources * sizeof *t->src
        + strided_bytes(t) + strided_pulls_bytes(t) + elementwise_bytes(t) + lane_bytes(t)
        + program_bytes(t) + panel_bytes(t) + params_outside_bytes(t) + attention_bytes(t) + step_bytes(t)  /* the vector instructions' records */
        + (t->first_lanes != NULL ? N * (size_t)t->n_levels * (sizeof *t->first_lanes + sizeof *t->paired
                                                                    + sizeof *t->first_groups) : 0);
}

int32_t tape_positions(const tape_t *t) { return t->n_pos; }
int32_t tape_computed(const tape_t *t) { return t->n_used; }
int32_t tape_token_limit(const tape_t *t) { return t->table_rows < t->n_cand ? t->table_rows : t->n_cand; }
double tape_loss(const tape_t *t) { return t->loss; }
void tape_set_params_at(tape_t *t, int64_t at) { t->params_at = at; }
int tape_params_in_one_block(const tape_t *t) { return t->params_at >= 0; }

double tape_prob(const tape_t *t, int32_t p, int32_t v) {
    return t->x[t->cand[(int64_t)p * t->n_cand + v]];
}

int tape_logits_kept(const tape_t *t, int32_t p) {
    for (int64_t j = (int64_t)p * t->n_cand; j < (int64_t)(p + 1) * t->n_cand; ++j)
        if (t->logit[j] < 0) return 0;
    return 1;
}

/* The sampler's probabilities from a forward's logits: model.reader's
 * softmax([l / temperature for l in logits]) operation by operation, with
 * ops.h's arithmetic (so the same floats, and the same failures): each
 * l / temperature is l * k (k = temperature ** -1, a constant); Python's max
 * of their values (a later one replaces only if greater); each (s - m).exp()
 * is s + (-m), then exp; sum() is 0 + e0, then + e1, ... left to right; each
 * e / total is e * total ** -1. */
status_t tape_tempered_probs(const tape_t *t, int32_t p, double k, double *out) {
    const int32_t *logit = t->logit + (int64_t)p * t->n_cand;
    int32_t V = t->n_cand;
    double lg[2], m = 0.0, total, inv;
    status_t st = OP_OK;
    for (int32_t v = 0; v < V; ++v) {
        op_mul(t->x[logit[v]], k, &out[v], lg);
        if (v == 0 || out[v] > m) m = out[v];
    }
    for (int32_t v = 0; v < V && st == OP_OK; ++v) {
        op_add(out[v], -m, &out[v], lg);
        st = op_exp(out[v], &out[v], lg);
    }
    if (st != OP_OK) return st;
    op_add(out[0], 0.0, &total, lg);
    for (int32_t v = 1; v < V; ++v) op_add(total, out[v], &total, lg);
    st = op_pow(total, -1.0, -2.0, &inv, lg);
    if (st != OP_OK) return st;
    for (int32_t v = 0; v < V; ++v) op_mul(out[v], inv, &out[v], lg);
    return OP_OK;
}

/* Backward groups are counted as the backward meets them: a group's top
 * entry says how many entries it spans (a run of a vector's lanes, whole). */
tape_counts_t tape_counts(const tape_t *t, int32_t n) {
    tape_counts_t c = {0};
    int32_t b = t->bwd_end[n - 1], i = b - 1;
    while (i >= 0) {
        int32_t width = bwd_width(t, i);
        int64_t pulls = t->bwd_group[i] >= 2 && t->bwd_group[i] != 7 && width > 1  /* one list, read for every lane */
            ? pull_count(t, i) * width
            : t->pull_start[i + 1] - t->pull_start[i - width + 1];
        c.pulls += pulls;
        if (width > 1) c.pulls_side_by_side += pulls;
        if (t->bwd_group[i] == 2 || t->bwd_group[i] == 3) c.pulls_by_matrix_rows += pulls;
        if (t->bwd_group[i] == 5) c.pulls_in_lanes += pulls;
        if (t->bwd_group[i] == 6) c.pulls_strided += pulls;
        c.pulls_single_runs += single_in_run(t, i, b);
        c.pulls_single_chained += single_chained(t, i, b);
        c.shifted_in_runs += t->bwd_group[i] == 4 && t->bwd_lanes[i] != 0 ? SIDE : 0;
        i -= width;
    }
    c.nodes = t->graph_end[n - 1] - t->n_params;
    c.kept_nodes = t->n_nodes;
    c.forward = t->fwd_end[n - 1];
    for (int32_t k = 0; k < c.forward; ++k) {
        uint8_t f = t->fwd_code[k];
        c.forward_side_by_side += f == F_DOT4 || f == F_MV4 || f == F_SHIFT4 || f == F_STRIDED4;
        c.forward_strided += f == F_STRIDED4;
        if (f == F_RUN) {
            c.forward_runs += 1;
            c.forward_in_runs += elementwise_len(t, k);
            k += (int32_t)elementwise_len(t, k) - 1;
        }
    }
    c.backward = b;
    for (int32_t s = 0; s < t->n_levels && t->paired != NULL; ++s)  /* (as level_backward groups them) */
        for (int32_t p = n - 1; p >= 0; --p) {
            int k = paired_width(t, p, s);
            c.vectors_paired += k > 1 ? k : 0;
            c.vectors_by_eight += k == 8 ? k : 0;
            p -= k > 1 ? k - 1 : 0;
        }
    c.other_param_reads = t->param_start[n];
    program_counts(t, n, &c.forward_records, &c.forward_by_steps, &c.forward_scaled);
    c.matrix_panels = panel_count(t, n);
    c.weight_blocks_paired = t->blocks_paired;
    c.weight_vectors_reused = t->vectors_reused;
    c.short_vectors = t->short_vectors;
    c.vectors_shared_list = t->vectors_shared_list;
    c.vectors_side_by_side = t->vectors_side_by_side;
    c.attention_rows = attention_count(t, n, 0);
    c.attention_rows_lean = attention_count(t, n, 1);
    c.attention_rows_stepped = attention_count(t, n, 2);
    c.values_from_rows = attention_values_count(t, b);
    c.keys_from_rows = attention_keys_count(t, b);
    c.logits_unwritten = attention_count(t, n, 3);
    step_counts(t, n, &c.backward_steps, &c.pulls_stepped);
    return c;
}
