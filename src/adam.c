/* adam.c: Adam over parameter nodes, with the reference's arithmetic. */
#include "adam.h"
#include "tape/lanes.h"

double adam_square(double g) { return square_of(g); }
double adam_sqrt(double x) { return sqrt_of(x); }

/* The update of parameters [0, n), one at a time: the same expressions as the
 * reference, evaluated in the same order, stopping where Python would raise.
 * pow(g, 2.0) must stay a call to pow (setup.py builds with -fno-builtin-pow):
 * Python's g ** 2 calls pow, and pow is not always correctly rounded; the fast
 * paths above return pow's own double. */
INLINE int64_t adam_loop(const node_t *idx, int64_t n, double *m, double *v,
                                double lr_t, double beta1, double beta2, double eps,
                                double bias1, double bias2, double *data, double *grad,
                                uint8_t *tag, status_t *status) {
    for (int64_t i = 0; i < n; ++i) {
        node_t p = idx[i];
        double g = grad[p];
        m[i] = beta1 * m[i] + (1 - beta1) * g;
        double g2 = square_for(g, v[i], beta2, tag[p]);  /* = pow(g, 2.0), as far as v can tell */
        /* where Python's arithmetic raises, stop at the same point it would */
        if (isinf(g2) && isfinite(g)) { *status = OP_POW_RANGE; return i; }
        v[i] = beta2 * v[i] + (1 - beta2) * g2;
        if (bias1 == 0.0 || bias2 == 0.0) { *status = OP_ZERODIV; return i; }
        double m_hat = m[i] / bias1;
        double v_hat = v[i] / bias2;
        double denom = root_for(v_hat, m[i], data[p], lr_t, bias1, eps) + eps;  /* = pow(v_hat, 0.5) + eps, as far as data[p] can tell */
        if (denom == 0.0) { *status = OP_ZERODIV; return i; }
        data[p] -= lr_t * m_hat / denom;
        grad[p] = 0.0;
        tag[p] = ADAM_TAG(tag[p]);  /* a float; p.grad = 0 */
    }
    return n;
}

/* The same update for a block of at most BLOCK parameters, in passes over
 * arrays so that the compiler can run several parameters per instruction:
 * every number is the same expression as in adam_loop (a vector division,
 * square root or fma rounds each lane as the scalar one does), the few that
 * need pow get it in a pass of their own. Nothing is written until the block
 * is known not to raise; returns 0 then, or -1 having written nothing (the
 * caller runs adam_loop, which stops where Python would). */
#define BLOCK 128
INLINE int adam_block(const node_t *idx, int one_block, int64_t n, double *m, double *v,
                             double lr_t, double beta1, double beta2, double eps,
                             double bias1, double bias2, double *data, double *grad, uint8_t *tag) {
    double g[BLOCK], mi[BLOCK], vi[BLOCK], g2[BLOCK], vh[BLOCK], sq[BLOCK], step[BLOCK];
    unsigned char slow[BLOCK];
    int any = 0;
    if (bias1 == 0.0 || bias2 == 0.0) return -1;
    if (one_block) memcpy(g, grad + idx[0], (size_t)n * sizeof *g);
    else for (int64_t i = 0; i < n; ++i) g[i] = grad[idx[i]];
    for (int64_t i = 0; i < n; ++i) {
        mi[i] = beta1 * m[i] + (1 - beta1) * g[i];
        g2[i] = g[i] * g[i];
        slow[i] = !square_sure(g[i], g2[i]);
    }
    for (int64_t i = 0; i < n; ++i)
        if (slow[i]) {
            g2[i] = square_for(g[i], v[i], beta2, tag[idx[i]]);
            any |= isinf(g2[i]) && isfinite(g[i]);
        }
    if (any) return -1;
    for (int64_t i = 0; i < n; ++i) {
        vi[i] = beta2 * v[i] + (1 - beta2) * g2[i];
        vh[i] = vi[i] / bias2;
        sq[i] = sqrt(vh[i]) + 0.0;  /* + 0.0: pow(+-0, 0.5) is +0, sqrt(-0) -0 */
        slow[i] = !sqrt_sure(vh[i], sq[i]) & (vh[i] != 0.0);
    }
    for (int64_t i = 0; i < n; ++i)
        if (slow[i]) sq[i] = root_for(vh[i], mi[i], data[idx[i]], lr_t, bias1, eps);
    for (int64_t i = 0; i < n; ++i) {
        double denom = sq[i] + eps;
        any |= denom == 0.0;
        step[i] = lr_t * (mi[i] / bias1) / denom;
    }
    if (any) return -1;
    memcpy(m, mi, (size_t)n * sizeof *m);
    memcpy(v, vi, (size_t)n * sizeof *v);
    if (one_block) {  /* consecutive nodes: the same stores, a block at a time */
        double *d = data + idx[0];
        uint8_t *tg = tag + idx[0];
        for (int64_t i = 0; i < n; ++i) d[i] -= step[i];
        memset(grad + idx[0], 0, (size_t)n * sizeof *grad);  /* all bits 0: +0.0 */
        for (int64_t i = 0; i < n; ++i) tg[i] = ADAM_TAG(tg[i]);
        return 0;
    }
    for (int64_t i = 0; i < n; ++i) {
        node_t p = idx[i];
        data[p] -= step[i];
        grad[p] = 0.0;
        tag[p] = ADAM_TAG(tag[p]);
    }
    return 0;
}

#define ADAM_ARGS const node_t *idx, int one_block, int64_t n, double *m, double *v, double lr_t,          \
    double beta1, double beta2, double eps, double bias1, double bias2, double *data,       \
    double *grad, uint8_t *tag, status_t *status
#define ADAM_BODY                                                                           \
    for (int64_t i0 = 0; i0 < n; i0 += BLOCK) {                                             \
        int64_t k = n - i0 < BLOCK ? n - i0 : BLOCK;                                        \
        if (adam_block(idx + i0, one_block, k, m + i0, v + i0, lr_t, beta1, beta2, eps, bias1, \
                       bias2,                                                               \
                       data, grad, tag) < 0)                                                \
            return i0 + adam_loop(idx + i0, n - i0, m + i0, v + i0, lr_t, beta1, beta2, eps, \
                                  bias1, bias2, data, grad, tag, status);                   \
    }                                                                                       \
    return n;

static int64_t adam_all(ADAM_ARGS) { ADAM_BODY }

/* The same, compiled for processors with AVX2 and fused multiply-add: fma() is
 * one instruction there (not a library call), and four lanes go at once. The
 * arithmetic is the same: fma is exact either way, and nothing else is fused
 * (-ffp-contract=off). */
#if defined(__GNUC__) && defined(__x86_64__)
#define HAVE_AVX2_FMA 1
__attribute__((target("avx2,fma"))) static int64_t adam_all_avx2(ADAM_ARGS) { ADAM_BODY }
#endif

/* The widest lanes Adam takes: the processor's as lanes.h reads them (so
 * MICROGPT_SIMD=avx2|plain narrows Adam as it does the tape's kernels), or
 * fewer where a test capped them (adam_lanes). */
static int lanes_cap = LANES_AVX512;

int adam_lanes(int cap) {
    if (cap >= 0) lanes_cap = cap;
    int level = lanes_level();
#ifdef HAVE_AVX2_FMA
    if (level >= LANES_AVX2 && !__builtin_cpu_supports("fma")) level = LANES_PLAIN;
#endif
    return level < lanes_cap ? level : lanes_cap;
}

int64_t arena_adam(arena_t *a, const node_t *idx, int one_block, int64_t n, double *m, double *v,
                   double lr_t, double beta1, double beta2, double eps, double t,
                   status_t *status) {
    double bias1 = 1 - pow(beta1, t);
    double bias2 = 1 - pow(beta2, t);
    *status = OP_OK;
    for (int64_t i = 0; i < n; ++i) {
        assert(idx[i] >= 0 && idx[i] < a->n_nodes);
        assert(!one_block || idx[i] == idx[0] + i);
    }
    int level = adam_lanes(-1);
#ifdef HAVE_AVX2_FMA
    if (level >= LANES_AVX512 && one_block && n > 0) {  /* eight at a time, the rest one by one */
        int64_t done = adam_wide(idx[0], n, m, v, lr_t, beta1, beta2, eps, bias1, bias2, a->data, a->grad, a->tag);
        return done + adam_loop(idx + done, n - done, m + done, v + done, lr_t, beta1, beta2, eps, bias1, bias2,
                                a->data, a->grad, a->tag, status);
    }
    if (level >= LANES_AVX2)
        return adam_all_avx2(idx, one_block, n, m, v, lr_t, beta1, beta2, eps, bias1, bias2,
                             a->data, a->grad, a->tag, status);
#endif
    return adam_all(idx, one_block, n, m, v, lr_t, beta1, beta2, eps, bias1, bias2, a->data, a->grad, a->tag, status);
}
