/* forward.c: forward instructions one by one, in order: every instruction
 * the tape has, and what levels and the forward's program (program.c) hand
 * back for what they do not take themselves (a failed operation run again
 * in order, to stop where the reference stops). */
#include "internal.h"

/* the four sums of a side-by-side group, to its four nodes */
static inline void put_side(double *x, const int32_t *nodes, double a0, double a1, double a2, double a3) {
    x[nodes[0]] = a0;
    x[nodes[1]] = a1;
    x[nodes[2]] = a2;
    x[nodes[3]] = a3;
}

/* An F_MV4 group's four sums: m0 + 0, then + m_j, each row in its own order
 * (tape.h, matvec_t); v is the group's vector (matvec_vector). */
static inline void matvec_forward(double *x, const double *v, const matvec_t *g) {
    const double *w0 = x + g->w[0], *w1 = x + g->w[1], *w2 = x + g->w[2], *w3 = x + g->w[3];
    double a0 = w0[0] * v[0] + x[g->init[0]];
    double a1 = w1[0] * v[0] + x[g->init[1]];
    double a2 = w2[0] * v[0] + x[g->init[2]];
    double a3 = w3[0] * v[0] + x[g->init[3]];
    for (int32_t j = 1; j < g->len; ++j) {
        a0 = a0 + w0[j] * v[j];
        a1 = a1 + w1[j] * v[j];
        a2 = a2 + w2[j] * v[j];
        a3 = a3 + w3[j] * v[j];
    }
    x[g->top[0]] = a0;
    x[g->top[1]] = a1;
    x[g->top[2]] = a2;
    x[g->top[3]] = a3;
}

/* Forward instructions [i0, i1) of one position, in order; *m: the last derived number's max. */
status_t forward_range(tape_t *t, int64_t i0, int64_t i1, double *mp) {
    double *x = t->x, *x_lg = t->x + t->n_nodes;
    const int32_t *fwd = t->fwd, *pair = t->dot_pair;
    const uint8_t *code = t->fwd_code;
    double m = *mp;
    for (int64_t i = i0; i < i1; ++i) {
        int32_t L = fwd[i];
        const int32_t *A = t->fwd_arg + 3 * i;
        uint8_t c = code[i];
        double m_before = m;
        if (c == F_RUN && elementwise_run(t, i, &m) == OP_OK) {  /* a run of elementwise work (elementwise.c) */
            i += elementwise_len(t, i) - 1;
            continue;
        }
        if (c == F_RUN) {  /* an operation failed: the run again in order, to stop where the reference stops */
            m = m_before;
            c = elementwise_code(t, i);
        }
        switch (c) {
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
            put_side(x, fwd + i, a0, a1, a2, a3);
            i += SIDE - 1;
            break;
        }
        case F_SHIFT4: case F_STRIDED4:  /* four chains: the same factor times consecutive nodes
                                          * (shifted.c), or operands at constant steps (strided.c) */
            i += (c == F_SHIFT4 ? shifted_dots(t, i) : (strided_dots(t, i), SIDE)) - 1;
            break;
        case F_MV4: {
            const matvec_t *g = t->mv + A[0];
            if (t->n_blocks > 0) {  /* its rows side by side (and the next three groups': run) */
                matrix_forward(t, g, NULL);
                i += SIDE * g->run - 1;
                break;
            }
            double buf[MAX_LANES];
            matvec_forward(x, matvec_vector(x, pair, g, buf), g);
            i += SIDE - 1;
            break;
        }
        case F_COPY:
            x[L] = x[A[0]];
            x_lg[L] = x_lg[A[0]];
            break;
        case F_DERIVED: {
            if (!A[1]) {  /* (1: the max of the derived number before it, group.c share_derived) */
                int64_t s = t->src_start[A[0]], s_end = t->src_start[A[0] + 1];
                m = x[t->src[s]];
                for (++s; s < s_end; ++s)  /* Python's max: a later item replaces only if greater */
                    if (x[t->src[s]] > m) m = x[t->src[s]];
            }
            x[L] = t->operand[L] < 0 ? -m : m;
            break;
        }
        default: {  /* F_ONE_CHILD */
            status_t st = op_apply(t->op[L], &x[A[0]], t->operand[L], t->operand[L] - 1.0, &x[L], &x_lg[L]);
            if (st != OP_OK) return st;
        }
        }
    }
    *mp = m;
    return OP_OK;
}
