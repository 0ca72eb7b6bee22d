/* adam_wide.c: Adam's update eight parameters at a time (AVX-512), where they
 * are consecutive nodes: the same doubles as adam_loop (adam.c). Measured at
 * 6/128/128 (1.2 M parameters) inside training steps: about half the AVX2
 * blocks' time (4.4 against 8.4 ms a step).
 *
 * Where the time went: pow (called for the ~3% of squares and of roots that
 * adam.h cannot prove), the calls inside the loop (every register spilled
 * around them), the divider, and lines fetched late. So: one pass computes
 * the moments and roots with no calls, the few lanes left go one by one, most
 * of them still without pow (square_for, root_for in adam.h); a last pass divides
 * and stores. The two divisions by constants (bias1, bias2) skip the divider:
 * x / c is x times the reciprocal of c, refined once with the fma residual,
 * then proven: q is the double nearest x / c when |x - q c| < |c| s / 2, s the
 * spacing of doubles below |q| (the smaller of its two; a quotient is never
 * halfway). fma rounds x - q c once, and |c| s / 2 is a double (a power of
 * two times c, which the ranges checked keep normal), so the comparison of
 * the rounded residual says what the exact one's would; a lane that fails
 * divides. Eight of which one would raise are left, unwritten, to the caller. */
#include "adam.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

#define TARGET __attribute__((target("avx512f,avx512dq,fma")))
#define WIDE static inline TARGET __attribute__((always_inline))
typedef __m512d vd;  /* eight doubles */
#define SET(x) _mm512_set1_pd(x)
#define LT(a, b) _mm512_cmp_pd_mask((a), (b), _CMP_LT_OQ)
#define LE(a, b) _mm512_cmp_pd_mask((a), (b), _CMP_LE_OQ)
#define EQ(a, b) _mm512_cmp_pd_mask((a), (b), _CMP_EQ_OQ)
#define ALL 0xff

WIDE vd spacing_below8(vd x) {  /* spacing_below, each lane */
    __m512i below = _mm512_sub_epi64(_mm512_castpd_si512(x), _mm512_set1_epi64(1));
    return x - _mm512_castsi512_pd(below);
}

/* lanes where lo <= x <= hi (a nan is in no range) */
WIDE __mmask8 within8(vd x, double lo, double hi) { return LE(SET(lo), x) & LE(x, SET(hi)); }

WIDE vd sure8(vd r) { return _mm512_mask_blend_pd(within8(r, 0x1p-60, 0x1p60), SET(SURE_ULP), SET(SURE_ULP_MID)); }

/* square_sure and sqrt_sure (adam.h), the same comparisons in each lane */
WIDE __mmask8 square_sure8(vd g, vd p) {
    vd err = _mm512_abs_pd(_mm512_fmsub_pd(g, g, p));
    return (within8(p, 0x1p-900, 0x1p+1000) & LE(err, sure8(p) * spacing_below8(p))) | EQ(g, SET(0.0));
}

WIDE __mmask8 sqrt_sure8(vd x, vd s) {
    vd err = _mm512_abs_pd(_mm512_fnmadd_pd(s, s, x)) * SET(1.0 + 0x1p-50);
    return within8(x, 0x1p-900, 0x1p+1000) & LE(err, sure8(s) * SET(1.0 - 0x1p-50) * spacing_below8(s) * (SET(2.0) * s));
}

/* x / c, given rc, the reciprocal of c (see the top; |q| and h in the ranges
 * checked keep h = |c| s / 2 a normal double, so exact) */
WIDE vd div8(vd x, vd c, vd rc) {
    vd q = x * rc;
    q = _mm512_fmadd_pd(_mm512_fnmadd_pd(q, c, x), rc, q);
    vd r = _mm512_abs_pd(_mm512_fnmadd_pd(q, c, x));
    vd q_abs = _mm512_abs_pd(q);
    vd h = _mm512_abs_pd(c) * (spacing_below8(q_abs) * SET(0.5));
    __mmask8 ok = within8(q_abs, 0x1p-1000, 0x1p1000) & within8(h, 0x1p-1022, 0x1p1000) & LT(r, h);
    /* 0 / c is +-0, the sign x's xor c's (for c neither 0 nor nan) */
    __mmask8 zero = EQ(x, SET(0.0)) & _mm512_cmp_pd_mask(c, SET(0.0), _CMP_NEQ_OQ);
    q = _mm512_mask_xor_pd(q, zero, x, _mm512_and_pd(c, SET(-0.0)));
    ok |= zero;
    return ok == ALL ? q : _mm512_mask_div_pd(q, (__mmask8)~ok, x, c);
}

/* sqrt in each lane (the divider's, correctly rounded); *sure: the lanes where
 * it is pow(x, 0.5) (+0 for +-0, as pow's) */
WIDE vd root8(vd x, __mmask8 *sure) {
    vd s = _mm512_sqrt_pd(x);
    __mmask8 zero = EQ(x, SET(0.0));
    *sure = sqrt_sure8(x, s) | zero;
    return _mm512_mask_mov_pd(s, zero, SET(0.0));
}

/* the tags of eight parameters, as adam_loop leaves each (ADAM_TAG) */
WIDE void tags8(uint8_t *tag) {
    const uint64_t ones = 0x0101010101010101u;
    uint64_t t, u;
    memcpy(&t, tag, sizeof t);
    u = (t & ~(ones * TAG_DATA_INT)) | ones * TAG_GRAD_INT;
    if (u != t) memcpy(tag, &u, sizeof u);  /* a line left clean where they are already so */
}

typedef struct {
    double beta1, beta2, eps, lr_t, bias1, bias2;
} consts_t;

/* Parameters [0, n) (n a multiple of eight, at most WBLOCK) in three passes:
 * the moments and the roots eight at a time, assuming g * g and the root are
 * pow's (no calls: everything stays in registers); the lanes where they are
 * not, one by one (pow only where it decides: square_for, root_for); then the
 * steps, eight at a time, and every store.
 * Returns -1 having written nothing where one of them would raise. */
#define WBLOCK 128
#define PREFETCH 128  /* parameters ahead: 1 KiB of each array */
TARGET static int block8(int64_t n, double *m, double *v, const consts_t *k, double *d, double *gr,
                         uint8_t *tg) {
    double mi[WBLOCK], vi[WBLOCK], sq[WBLOCK];
    __mmask8 slow_sq[WBLOCK / 8], slow_rt[WBLOCK / 8];
    int any = 0;
    const vd b1 = SET(k->beta1), c1 = SET(1 - k->beta1), b2 = SET(k->beta2), c2 = SET(1 - k->beta2);
    const vd by2 = SET(k->bias2), r2 = SET(1.0 / k->bias2);
    for (int64_t i = 0; i < n; i += 8) {
        __builtin_prefetch(gr + i + PREFETCH, 1, 3);  /* lines the hardware would fetch late */
        __builtin_prefetch(m + i + PREFETCH, 1, 3);
        __builtin_prefetch(v + i + PREFETCH, 1, 3);
        __builtin_prefetch(d + i + PREFETCH, 1, 3);
        vd g = _mm512_loadu_pd(gr + i);
        vd x = _mm512_loadu_pd(v + i);
        _mm512_storeu_pd(mi + i, b1 * _mm512_loadu_pd(m + i) + c1 * g);
        vd g2 = g * g;  /* = pow(g, 2.0) where square_sure8 */
        __mmask8 s1 = square_sure8(g, g2), s2;
        x = b2 * x + c2 * g2;
        _mm512_storeu_pd(vi + i, x);
        _mm512_storeu_pd(sq + i, root8(div8(x, by2, r2), &s2));
        slow_sq[i / 8] = (__mmask8)~s1;
        slow_rt[i / 8] = (__mmask8)~s2;
        any |= (__mmask8)~(s1 & s2);
    }
    if (any)
        for (int64_t c = 0; c < n / 8; ++c)
            for (unsigned lanes = slow_sq[c] | slow_rt[c]; lanes; lanes &= lanes - 1) {
                int64_t i = c * 8 + __builtin_ctz(lanes);
                if (slow_sq[c] >> (i % 8) & 1) {
                    double g2 = square_for(gr[i], v[i], k->beta2, tg[i]);
                    if (isinf(g2) && isfinite(gr[i])) return -1;  /* OverflowError */
                    vi[i] = k->beta2 * v[i] + (1 - k->beta2) * g2;
                }
                sq[i] = root_for(vi[i] / k->bias2, mi[i], d[i], k->lr_t, k->bias1, k->eps);
            }
    if (!(k->eps > 0.0))  /* a root is >= 0 (or nan): only then can root + eps be 0 */
        for (int64_t i = 0; i < n; ++i)
            if (sq[i] + k->eps == 0.0) return -1;  /* ZeroDivisionError */
    const vd by1 = SET(k->bias1), r1 = SET(1.0 / k->bias1), eps = SET(k->eps), lr = SET(k->lr_t);
    for (int64_t i = 0; i < n; i += 8) {
        vd x = _mm512_loadu_pd(mi + i);
        vd denom = _mm512_loadu_pd(sq + i) + eps;
        vd step = _mm512_div_pd(lr * div8(x, by1, r1), denom);
        _mm512_storeu_pd(m + i, x);
        _mm512_storeu_pd(v + i, _mm512_loadu_pd(vi + i));
        _mm512_storeu_pd(d + i, _mm512_loadu_pd(d + i) - step);
        _mm512_storeu_pd(gr + i, SET(0.0));
        tags8(tg + i);
    }
    return 0;
}

TARGET int64_t adam_wide(int64_t first, int64_t n, double *m, double *v, double lr_t, double beta1,
                         double beta2, double eps, double bias1, double bias2, double *data, double *grad,
                         uint8_t *tag) {
    if (bias1 == 0.0 || bias2 == 0.0) return 0;  /* m[i] / bias1 raises: adam_loop says where */
    consts_t k = {beta1, beta2, eps, lr_t, bias1, bias2};
    int64_t i = 0;
    while (n - i >= 8) {
        int64_t len = n - i < WBLOCK ? (n - i) / 8 * 8 : WBLOCK;
        if (block8(len, m + i, v + i, &k, data + first + i, grad + first + i, tag + first + i) < 0) break;
        i += len;
    }
    return i;
}
#endif
