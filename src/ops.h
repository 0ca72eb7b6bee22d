/* ops.h: the one definition of each operation's arithmetic.
 *
 * Every engine path that computes a node calls these: the per-operation path
 * (a Value operator in _engine.pyx), Arena.replay, and a tape's replay
 * (tape.c). So the three cannot disagree about a value or a local gradient.
 *
 * Each function takes the children's values (and the operation's constant),
 * writes the node's value and its local gradients (d node / d child, in the
 * children's order), and returns a status: OP_OK, or the error Python's own
 * arithmetic raises at the same point (the pure engine is the specification).
 * Nothing here allocates or touches a graph.
 */
#ifndef MICROGPT_OPS_H
#define MICROGPT_OPS_H

#include <math.h>

/* What made a node. A node's children and local gradients are in its edges. */
typedef enum {
    OP_LEAF = 0,   /* Value(x) made by the user: a parameter or an input */
    OP_CONST = 1,  /* a plain number an operation wrapped as a leaf */
    OP_ADD = 2,    /* a + b     children (a, b)  local grads (1, 1) */
    OP_MUL = 3,    /* a * b     children (a, b)  local grads (b, a) */
    OP_POW = 4,    /* a ** k    children (a,)    local grad k * a ** (k - 1); operand k */
    OP_LOG = 5,    /* log(a)    children (a,)    local grad 1 / a */
    OP_EXP = 6,    /* exp(a)    children (a,)    local grad exp(a) */
    OP_RELU = 7,   /* max(0, a) children (a,)    local grad 1.0 if a > 0 else 0.0 */
    OP_CUSTOM = 8, /* local grads given by the caller, or an exponent whose k - 1 a double
                      cannot say: computed once, never recomputed by a replay */
    OP_DOT = 9     /* sum(w_k * x_k) made while a step is recorded, compactly: children
                      (w0, x0, w1, x1, ...), value ((w0 * x0 + 0) + w1 * x1) + ... ; the
                      chain's inner nodes are not made (arena.h arena_push_dot) */
} op_t;

/* Status of an operation (and of the arena functions); the glue raises the
 * matching Python exception. */
typedef enum {
    OP_OK = 0,
    OP_NOMEM = 1,     /* MemoryError */
    OP_ZERODIV = 2,   /* ZeroDivisionError: 0 ** negative */
    OP_DOMAIN = 3,    /* ValueError: log of x <= 0, negative ** fractional */
    OP_RANGE = 4,     /* OverflowError: exp overflows */
    OP_TOO_LARGE = 5, /* MemoryError: more nodes than an int32 index holds */
    OP_POW_RANGE = 6  /* OverflowError: a float power overflows (Python says it with errno
                         ERANGE, where math.exp says "math range error") */
} status_t;

/* Python's float ** float where the result is real. Python answers an
 * infinite or nan operand before anything else, with C99's pow (Annex F).
 * (Python returns a nan base as it is, sign included, where pow gives a nan of
 * its own: not followed, as a nan's sign is not the same from engine to engine
 * anyway: which of two nans a sum or a product keeps is the compiler's choice.) */
static inline status_t op_pow_value(double x, double k, double *out) {
    if (!isfinite(x) || !isfinite(k)) {
        *out = pow(x, k);
        return OP_OK;
    }
    if (x == 0.0 && k < 0.0) return OP_ZERODIV;
    if (x < 0.0 && k != floor(k)) return OP_DOMAIN;  /* would be complex */
    double r = pow(x, k);
    if (isinf(r)) return OP_POW_RANGE;
    *out = r;
    return OP_OK;
}

static inline status_t op_add(double a, double b, double *out, double *lg) {
    *out = a + b;
    lg[0] = 1.0;
    lg[1] = 1.0;
    return OP_OK;
}

static inline status_t op_mul(double a, double b, double *out, double *lg) {
    *out = a * b;
    lg[0] = b;
    lg[1] = a;
    return OP_OK;
}

/* a ** k with local grad k * a ** km1, where km1 is k - 1 as Python computed it
 * on the exponent it was given (for an int beyond 2**53 that is not the double
 * k minus 1; such a node is OP_CUSTOM, see arena.h). */
static inline status_t op_pow(double a, double k, double km1, double *out, double *lg) {
    double r, g;
    status_t s = op_pow_value(a, k, &r);
    if (s == OP_OK) s = op_pow_value(a, km1, &g);
    if (s != OP_OK) return s;
    *out = r;
    lg[0] = k * g;
    return OP_OK;
}

static inline status_t op_log(double a, double *out, double *lg) {
    if (a <= 0.0) return OP_DOMAIN;  /* nan passes, as math.log(nan) is nan */
    *out = log(a);
    lg[0] = 1.0 / a;
    return OP_OK;
}

static inline status_t op_exp(double a, double *out, double *lg) {
    double y = exp(a);
    if (isinf(y) && isfinite(a)) return OP_RANGE;
    *out = y;
    lg[0] = y;
    return OP_OK;
}

static inline status_t op_relu(double a, double *out, double *lg) {
    *out = a > 0 ? a : 0.0;
    lg[0] = a > 0 ? 1.0 : 0.0;
    return OP_OK;
}

/* Recompute a node of op (children's values in x, constant k and k - 1): the
 * value into *out, the local grads into lg. Leaves, constants and custom nodes
 * are not recomputed (OP_OK, nothing written). */
static inline status_t op_apply(int op, const double *x, double k, double km1,
                                double *out, double *lg) {
    switch (op) {
    case OP_ADD: return op_add(x[0], x[1], out, lg);
    case OP_MUL: return op_mul(x[0], x[1], out, lg);
    case OP_POW: return op_pow(x[0], k, km1, out, lg);
    case OP_LOG: return op_log(x[0], out, lg);
    case OP_EXP: return op_exp(x[0], out, lg);
    case OP_RELU: return op_relu(x[0], out, lg);
    default: return OP_OK;
    }
}

#endif
