/* adam.c: Adam over parameter nodes, with the reference's arithmetic. */
#include "arena.h"

int64_t arena_adam(arena_t *a, const node_t *idx, int64_t n, double *m, double *v,
                   double lr_t, double beta1, double beta2, double eps, int64_t step,
                   status_t *status) {
    double *data = a->data, *grad = a->grad;
    /* The same expressions as the reference, evaluated in the same order.
     * pow(g, 2.0) must stay a call to pow (setup.py builds with -fno-builtin-pow):
     * Python's g ** 2 calls pow, and pow is not always correctly rounded. */
    double bias1 = 1 - pow(beta1, (double)step + 1.0);  /* = step + 1 exactly below 2**53 */
    double bias2 = 1 - pow(beta2, (double)step + 1.0);
    *status = OP_OK;
    for (int64_t i = 0; i < n; ++i) {
        node_t p = idx[i];
        assert(p >= 0 && p < a->n_nodes);
        double g = grad[p];
        m[i] = beta1 * m[i] + (1 - beta1) * g;
        double g2 = pow(g, 2.0);
        /* where Python's arithmetic raises, stop at the same point it would */
        if (isinf(g2) && isfinite(g)) { *status = OP_RANGE; return i; }
        v[i] = beta2 * v[i] + (1 - beta2) * g2;
        if (bias1 == 0.0 || bias2 == 0.0) { *status = OP_ZERODIV; return i; }
        double m_hat = m[i] / bias1;
        double v_hat = v[i] / bias2;
        double denom = pow(v_hat, 0.5) + eps;
        if (denom == 0.0) { *status = OP_ZERODIV; return i; }
        data[p] -= lr_t * m_hat / denom;
        grad[p] = 0.0;
    }
    return n;
}
