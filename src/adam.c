/* adam.c: Adam over parameter nodes, with the reference's arithmetic. */
#include "arena.h"

#include <string.h>

/* The reference computes g ** 2 and v_hat ** 0.5 with pow, which glibc does
 * not always round correctly; g * g and sqrt are correctly rounded. glibc
 * documents pow's error as below 0.54 ulp (round to nearest), so where the
 * exact result lies within 0.46 ulp of the correctly rounded double r, pow can
 * return nothing but r (every other double is more than 0.54 ulp away). The
 * fma residual says how far the exact result is; elsewhere pow is called. */
#define SURE_ULP 0.46

/* the spacing of doubles just below a positive normal x (the smaller of its two) */
static inline double spacing_below(double x) {
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits -= 1;
    double below;
    memcpy(&below, &bits, sizeof below);
    return x - below;
}

/* inline: the fast paths are most of Adam's time, so they are compiled into
 * its loop (twice: see adam_loop below) rather than called */
static inline double square_of(double g) {
    double p = g * g;
    if (!(p >= 0x1p-900 && p <= 0x1p+1000)) return pow(g, 2.0);  /* zero, tiny, huge, inf, nan */
    double r = fma(g, g, -p);  /* g*g - p, exactly */
    if (fabs(r) <= SURE_ULP * spacing_below(p)) return p;
    return pow(g, 2.0);
}

static inline double sqrt_of(double x) {
    if (!(x >= 0x1p-900 && x <= 0x1p+1000)) return pow(x, 0.5);
    double s = sqrt(x);
    /* exact root - s = (x - s*s) / (s + exact root); |.| <= |x - s*s| / (2 s) * (1 + 2**-52) */
    double err = fabs(fma(-s, s, x)) / (2.0 * s) * (1.0 + 0x1p-50);
    if (err <= SURE_ULP * spacing_below(s)) return s;
    return pow(x, 0.5);
}

double adam_square(double g) { return square_of(g); }
double adam_sqrt(double x) { return sqrt_of(x); }

/* The update of parameters [0, n): the same expressions as the reference,
 * evaluated in the same order. pow(g, 2.0) must stay a call to pow (setup.py
 * builds with -fno-builtin-pow): Python's g ** 2 calls pow, and pow is not
 * always correctly rounded; the fast paths above return pow's own double. */
#define ADAM_LOOP_BODY                                                              \
    for (int64_t i = 0; i < n; ++i) {                                               \
        node_t p = idx[i];                                                          \
        assert(p >= 0 && p < a->n_nodes);                                           \
        double g = grad[p];                                                         \
        m[i] = beta1 * m[i] + (1 - beta1) * g;                                      \
        double g2 = square_of(g);  /* = pow(g, 2.0) */                              \
        /* where Python's arithmetic raises, stop at the same point it would */     \
        if (isinf(g2) && isfinite(g)) { *status = OP_RANGE; return i; }             \
        v[i] = beta2 * v[i] + (1 - beta2) * g2;                                     \
        if (bias1 == 0.0 || bias2 == 0.0) { *status = OP_ZERODIV; return i; }       \
        double m_hat = m[i] / bias1;                                                \
        double v_hat = v[i] / bias2;                                                \
        double denom = sqrt_of(v_hat) + eps;  /* = pow(v_hat, 0.5) + eps */         \
        if (denom == 0.0) { *status = OP_ZERODIV; return i; }                       \
        data[p] -= lr_t * m_hat / denom;                                            \
        grad[p] = 0.0;                                                              \
        tag[p] = (uint8_t)((tag[p] & ~TAG_DATA_INT) | TAG_GRAD_INT);  /* p.grad = 0 */ \
    }                                                                               \
    return n;

#define ADAM_LOOP_ARGS arena_t *a, const node_t *idx, int64_t n, double *m, double *v,  \
    double lr_t, double beta1, double beta2, double eps, double bias1, double bias2,    \
    double *data, double *grad, uint8_t *tag, status_t *status

static int64_t adam_loop(ADAM_LOOP_ARGS) { ADAM_LOOP_BODY }

/* The same loop where the processor has fused multiply-add: fma() is then one
 * instruction, not a library call (the arithmetic is the same: fma is exact
 * either way, and nothing else is contracted, -ffp-contract=off). */
#if defined(__GNUC__) && defined(__x86_64__)
#define HAVE_FMA_LOOP 1
__attribute__((target("fma"))) static int64_t adam_loop_fma(ADAM_LOOP_ARGS) { ADAM_LOOP_BODY }
#endif

int64_t arena_adam(arena_t *a, const node_t *idx, int64_t n, double *m, double *v,
                   double lr_t, double beta1, double beta2, double eps, int64_t step,
                   status_t *status) {
    double bias1 = 1 - pow(beta1, (double)step + 1.0);  /* = step + 1 exactly below 2**53 */
    double bias2 = 1 - pow(beta2, (double)step + 1.0);
    *status = OP_OK;
#ifdef HAVE_FMA_LOOP
    if (__builtin_cpu_supports("fma"))
        return adam_loop_fma(a, idx, n, m, v, lr_t, beta1, beta2, eps, bias1, bias2,
                             a->data, a->grad, a->tag, status);
#endif
    return adam_loop(a, idx, n, m, v, lr_t, beta1, beta2, eps, bias1, bias2,
                     a->data, a->grad, a->tag, status);
}
