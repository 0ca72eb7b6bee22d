/* adam.h: what Adam's files share (adam.c: the update one parameter at a time
 * and in blocks; adam_wide.c: eight at a time with AVX-512): the tests that
 * say where g * g and sqrt are certainly pow's own doubles. */
#ifndef MICROGPT_ADAM_H
#define MICROGPT_ADAM_H

#include "arena.h"

#include <string.h>

/* The reference computes g ** 2 and v_hat ** 0.5 with pow, which glibc does
 * not always round correctly; g * g and sqrt are correctly rounded. glibc
 * documents pow's error as below 0.54 ulp (round to nearest), so where the
 * exact result lies within 0.46 ulp of the correctly rounded double r, pow can
 * return nothing but r (every other double is more than 0.54 ulp away). The
 * fma residual says how far the exact result is; elsewhere pow is called.
 *
 * That 0.54 is the sum of exp's error, at most 0.511 ulp, and log's relative
 * error (at most 1.5 * 2**-68) carried through y * log(x) = log(result): at
 * most |log(result)| * 1.5 * 2**-15 ulp, 0.03 ulp only for results near the
 * ends of the double range. For results in [2**-60, 2**60], |log(result)| <
 * 42 and the error is below 0.513 ulp, so 0.485 is as sure there. */
#define SURE_ULP 0.46
#define SURE_ULP_MID 0.485
#define SURE(r) (((r) >= 0x1p-60) & ((r) <= 0x1p60) ? SURE_ULP_MID : SURE_ULP)

#define INLINE static inline __attribute__((always_inline))

/* the spacing of doubles just below a positive normal x (the smaller of its two) */
INLINE double spacing_below(double x) {
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits -= 1;
    double below;
    memcpy(&below, &bits, sizeof below);
    return x - below;
}

/* Is p = fl(g * g) certainly pow(g, 2.0)? (see above; zero, tiny, huge, inf
 * and nan are left to pow; a zero has the exact square +0, which pow gives) */
INLINE int square_sure(double g, double p) {
    int usual = (p >= 0x1p-900) & (p <= 0x1p+1000) & (fabs(fma(g, g, -p)) <= SURE(p) * spacing_below(p));
    return usual | (g == 0.0);  /* pow(+-0, 2.0) is +0 */
}

/* Is s = sqrt(x) certainly pow(x, 0.5)? exact root - s = (x - s*s) / (s + exact
 * root), so |exact root - s| <= |x - s*s| / (2 s) * (1 + 2**-52): it is enough
 * that |x - s*s| (1 + 2**-52) <= SURE(s) spacing 2 s. The residual is exact
 * (fma); the products below round by at most 2**-53 each, which the factors
 * (1 + 2**-50) and (1 - 2**-50) more than cover, so no division is needed.
 * (A zero x is not sure here: sqrt(-0) is -0 where pow(-0, 0.5) is +0; the
 * callers take +0 for it, as pow does, without calling pow.) */
INLINE int sqrt_sure(double x, double s) {
    return (x >= 0x1p-900) & (x <= 0x1p+1000)
        & (fabs(fma(-s, s, x)) * (1.0 + 0x1p-50) <= (SURE(s) * (1.0 - 0x1p-50)) * spacing_below(s) * (2.0 * s));
}

static inline double square_of(double g) {
    double p = g * g;
    return square_sure(g, p) ? p : pow(g, 2.0);
}

/* pow(x, 0.5): pow(+-0, 0.5) is +0 (C99 F.9.4.4), the parameters whose
 * gradient was always 0 (v_hat == 0) take it without a call */
static inline double sqrt_of(double x) {
    double s = sqrt(x);
    return sqrt_sure(x, s) ? s : x == 0.0 ? 0.0 : pow(x, 0.5);
}

/* Where g * g and sqrt are not proven pow's doubles, the exact result lies
 * more than 0.23 of the smaller spacing from the rounded one r, so pow, within
 * 0.54 ulp of it, returns r or r's neighbour on the exact result's side (every
 * other double is further); where the two give the same number downstream
 * (the second moment; the parameter's new value), pow need not say which. */
static inline double toward(double r, double exact_minus_r) {  /* r > 0 normal */
    uint64_t bits;
    memcpy(&bits, &r, sizeof bits);
    bits += exact_minus_r > 0 ? 1 : -1;
    memcpy(&r, &bits, sizeof r);
    return r;
}

static inline int same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

/* pow(g, 2.0), or g * g where beta2 v + (1 - beta2) g ** 2, all the square is
 * for, is the same. An int gradient (TAG_GRAD_INT in `tag`: p * 94906297's
 * backward leaves one) is squared as an int, exactly, and rounded once where
 * Python turns it into a float to multiply: that is g * g, correctly rounded,
 * not pow, which does not always round so. */
static inline double square_for(double g, double v, double beta2, uint8_t tag) {
    double r = g * g;
    if (square_sure(g, r) || (tag & TAG_GRAD_INT)) return r;
    if (r >= 0x1p-900 && r <= 0x1p+1000
        && same_bits(beta2 * v + (1 - beta2) * r, beta2 * v + (1 - beta2) * toward(r, fma(g, g, -r))))
        return r;
    return pow(g, 2.0);
}

/* pow(x, 0.5), or sqrt(x) where the parameter d's update by lr_t * (m / bias1)
 * / (root + eps), all the root is for, is the same */
static inline double root_for(double x, double m, double d, double lr_t, double bias1, double eps) {
    double s = sqrt(x);
    if (sqrt_sure(x, s)) return s;
    if (x >= 0x1p-900 && x <= 0x1p+1000) {
        double t = toward(s, fma(-s, s, x)), m_hat = m / bias1, ds = s + eps, dt = t + eps;
        if (ds != 0.0 && dt != 0.0 && same_bits(d - lr_t * m_hat / ds, d - lr_t * m_hat / dt)) return s;
    }
    return x == 0.0 ? 0.0 : pow(x, 0.5);
}

/* the tag of a parameter after the update: a float, and p.grad = 0 (an int) */
#define ADAM_TAG(t) ((uint8_t)(((t) & ~TAG_DATA_INT) | TAG_GRAD_INT))

/* Parameters [0, n) of one block of consecutive nodes from `first`, eight at a
 * time with AVX-512 (adam_wide.c): returns how many it updated, a multiple of
 * eight, stopping before any eight of which one would raise or need what it
 * does not do (the caller goes on one at a time from there). */
int64_t adam_wide(int64_t first, int64_t n, double *m, double *v, double lr_t, double beta1,
                  double beta2, double eps, double bias1, double bias2, double *data, double *grad,
                  uint8_t *tag);

#endif
