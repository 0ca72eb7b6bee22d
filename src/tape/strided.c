/* strided.c: four chains whose products' operands step by constants (an
 * attention head's logits: q_h[j] * k_t[j] for j = 0..15, q_h the same
 * consecutive nodes for the four chains, each k_t its own), run from their
 * first operands and the steps (F_STRIDED4) instead of reading two indices
 * a product from dot_pair. The same products and additions, each chain in
 * its own order (internal.h, SIDE); strided_plan checks every product's
 * operands against the steps. */
#include "internal.h"
#include "lanes.h"

static void strided4(tape_t *t, int64_t i);

typedef struct strided4 {
    int32_t a[SIDE], b[SIDE];   /* chain c's product j: x[a[c] + j sa] * x[b[c] + j sb] */
    int32_t sa, sb, len;
    int32_t init[SIDE];         /* the numbers each chain starts from */
} strided4_t;

/* The steps of an F_DOT4 group's four chains (A: its operands), or 0 if they have none in common. */
static int steps_of(const tape_t *t, const int32_t *A, strided4_t *s) {
    const int32_t *p0 = t->dot_pair + A[0];
    if (A[2] < 4) return 0;
    s->sa = p0[2] - p0[0];
    s->sb = p0[3] - p0[1];
    s->len = A[2] / 2;
    for (int c = 0; c < SIDE; ++c) {
        const int32_t *pc = t->dot_pair + A[3 * c];
        s->a[c] = pc[0];
        s->b[c] = pc[1];
        s->init[c] = A[3 * c + 1];
        for (int32_t j = 0; j < s->len; ++j)
            if (pc[2 * j] != pc[0] + j * s->sa || pc[2 * j + 1] != pc[1] + j * s->sb) return 0;
    }
    return 1;
}

/* Four F_STRIDED4 groups D = 4 or 8 instructions apart (one head's logits at
 * one position, sixteen keys; between them, what reads the logits) whose
 * chains all read the same first operands (the query): run at once when the
 * first is met (strided_dots), if nothing from the first to the last makes
 * what they read and none is a matrix's (a level's start). The second
 * instruction's first operand (unread by an F_STRIDED4) says so: -D at the
 * first, -1 at the three others (already done). */
static int strided_fits(const tape_t *t, int64_t i, int D, uint8_t *made) {
    const strided4_t *s = t->strided + t->fwd_arg[3 * i];
    int64_t span = (int64_t)D * (SIDE - 1) + SIDE;
    int ok = i + span <= t->fwd_end[t->n_pos - 1] && t->pos[t->fwd[i]] == t->pos[t->fwd[i + span - 1]];
    for (int q = 0; q < SIDE && ok; ++q) {
        const strided4_t *r = s + q;
        ok = t->fwd_code[i + D * q] == F_STRIDED4 && t->fwd_arg[3 * (i + D * q)] == t->fwd_arg[3 * i] + q
            && r->sa == s->sa && r->sb == s->sb && r->len == s->len;
        for (int c = 0; c < SIDE && ok; ++c) ok = r->a[c] == s->a[0];
    }
    for (int64_t k = 0; k < span && ok; ++k) {
        ok = t->fwd_code[i + k] != F_MV4;
        made[t->fwd[i + k]] = 1;
    }
    for (int q = 0; q < SIDE && ok; ++q)
        for (int c = 0; c < SIDE && ok; ++c) {
            const strided4_t *r = s + q;
            ok = !made[r->init[c]];
            for (int32_t j = 0; j < r->len && ok; ++j) ok = !made[r->a[c] + j * r->sa] && !made[r->b[c] + j * r->sb];
        }
    for (int64_t k = 0; k < span && i + k < t->fwd_end[t->n_pos - 1]; ++k) made[t->fwd[i + k]] = 0;
    return ok;
}

static int strided_runs(tape_t *t) {
    int64_t nf = t->fwd_end[t->n_pos - 1];
    uint8_t *made = NULL;
    if (!NEW(made, t->n_nodes)) return -1;
    for (int64_t i = 0; i < nf; ++i) {
        if (t->fwd_code[i] != F_STRIDED4 || t->fwd_arg[3 * i + 3] == -1) continue;
        for (int D = SIDE; D <= 2 * SIDE; D += SIDE)
            if (strided_fits(t, i, D, made)) {
                for (int q = 1; q < SIDE; ++q) t->fwd_arg[3 * (i + D * q) + 3] = -1;
                t->fwd_arg[3 * i + 3] = -D;
                break;
            }
        i += SIDE - 1;
    }
    free(made);
    return 0;
}

/* 0, or -1 out of memory. In the replay's numbering, after every other plan. */
int strided_plan(tape_t *t) {
    int64_t nf = t->fwd_end[t->n_pos - 1];
    int32_t n = 0;
    for (int pass = 0; pass < 2; ++pass) {
        n = 0;
        for (int64_t i = 0; i + SIDE <= nf; ++i) {
            if (t->fwd_code[i] != F_DOT4) continue;
            strided4_t s;
            if (steps_of(t, t->fwd_arg + 3 * i, &s)) {
                if (pass == 1) {
                    t->strided[n] = s;
                    t->fwd_code[i] = F_STRIDED4;
                    t->fwd_arg[3 * i] = n;  /* (its list is not read: the record has all) */
                }
                n++;
            }
            i += SIDE - 1;
        }
        if (pass == 0 && !NEW(t->strided, n)) return -1;
    }
    t->n_strided = n;
    return strided_runs(t);
}

/* Four groups from instruction i, D apart (strided_runs): sixteen sums, m0 + init, then
 * + m_j, four registers side by side, the shared first operand x[a0 + j sa] times
 * the second operands x[b[k] + j sb] of sixteen chains (k = 4 q + c), from
 * init[k] into node out[k]. */
#define STRIDED16_BODY                                                                    \
    const double *a = x + a0;                                                             \
    v4 acc[SIDE];                                                                         \
    for (int q = 0; q < SIDE; ++q) {                                                      \
        const int32_t *bb = b + SIDE * q;                                                 \
        v4 bq = {x[bb[0]], x[bb[1]], x[bb[2]], x[bb[3]]};                                 \
        acc[q] = a[0] * bq + load4(init + SIDE * q);                                      \
    }                                                                                     \
    for (int64_t j = 1; j < len; ++j) {                                                   \
        double aj = a[j * sa];                                                            \
        for (int q = 0; q < SIDE; ++q) {                                                  \
            const int32_t *bb = b + SIDE * q;                                             \
            v4 bq = {x[bb[0] + j * sb], x[bb[1] + j * sb], x[bb[2] + j * sb], x[bb[3] + j * sb]}; \
            acc[q] = acc[q] + aj * bq;                                                    \
        }                                                                                 \
    }                                                                                     \
    for (int q = 0; q < SIDE; ++q)                                                        \
        for (int c = 0; c < SIDE; ++c) x[out[SIDE * q + c]] = acc[q][c];
#define STRIDED16_ARGS double *x, int32_t a0, int64_t sa, int64_t sb, int32_t len, const int32_t *b, \
                       const double *init, const int32_t *out
KERNELS(strided16, (STRIDED16_ARGS), STRIDED16_BODY)

void strided16(double *x, int32_t a0, int64_t sa, int64_t sb, int32_t len, const int32_t *b,
               const double *init, const int32_t *out) {
    KERNEL(strided16)(x, a0, sa, sb, len, b, init, out);
}

/* The chains of the four groups from instruction i (strided_runs), or of the
 * group alone there (*groups 1) if its chains share their first operand: that
 * operand, the steps and length in s (a, da, db; the return: len), their second
 * operands, starting numbers' nodes and nodes in b, init, out (chain 4 q + c); 0
 * if instruction i begins neither (or is done with the first of its four). */
int32_t strided16_parts(const tape_t *t, int64_t i, run_slot_t *rs, int32_t *b, int32_t *init, int32_t *out,
                        int *groups) {
    if (t->fwd_code[i] != F_STRIDED4 || t->fwd_arg[3 * i + 3] == -1) return 0;
    const strided4_t *s = t->strided + t->fwd_arg[3 * i];
    int64_t D = -t->fwd_arg[3 * i + 3];
    *groups = D > 1 ? SIDE : 1;
    for (int c = 0; c < SIDE; ++c)
        if (s->a[c] != s->a[0]) return 0;
    rs->a = s->a[0]; rs->da = s->sa; rs->db = s->sb;
    for (int q = 0; q < *groups; ++q)
        for (int c = 0; c < SIDE; ++c) {
            b[SIDE * q + c] = s[q].b[c];
            init[SIDE * q + c] = s[q].init[c];
            out[SIDE * q + c] = t->fwd[i + D * q + c];
        }
    return s->len;
}

/* The group at instruction i, or the four from it, or none (done with the
 * first of its four: strided_runs). */
void strided_dots(tape_t *t, int64_t i) {
    int32_t run = t->fwd_arg[3 * i + 3];
    if (run < -1) {
        run_slot_t s;
        int32_t b[SIDE * SIDE], node[SIDE * SIDE], out[SIDE * SIDE];
        int groups;
        int32_t len = strided16_parts(t, i, &s, b, node, out, &groups);
        double init[SIDE * SIDE];
        for (int k = 0; k < SIDE * SIDE; ++k) init[k] = t->x[node[k]];
        strided16(t->x, s.a, s.da, s.db, len, b, init, out);
    } else if (run != -1) strided4(t, i);
}

/* The group at instruction i: four sums, m0 + init, then + m_j, in lanes of plain registers. */
static void strided4(tape_t *t, int64_t i) {
    const strided4_t *s = t->strided + t->fwd_arg[3 * i];
    double *x = t->x;
    const double *a0 = x + s->a[0], *a1 = x + s->a[1], *a2 = x + s->a[2], *a3 = x + s->a[3];
    const double *b0 = x + s->b[0], *b1 = x + s->b[1], *b2 = x + s->b[2], *b3 = x + s->b[3];
    int64_t sa = s->sa, sb = s->sb;
    double r0 = a0[0] * b0[0] + x[s->init[0]];
    double r1 = a1[0] * b1[0] + x[s->init[1]];
    double r2 = a2[0] * b2[0] + x[s->init[2]];
    double r3 = a3[0] * b3[0] + x[s->init[3]];
    for (int64_t j = 1; j < s->len; ++j) {
        r0 = r0 + a0[j * sa] * b0[j * sb];
        r1 = r1 + a1[j * sa] * b1[j * sb];
        r2 = r2 + a2[j * sa] * b2[j * sb];
        r3 = r3 + a3[j * sa] * b3[j * sb];
    }
    x[t->fwd[i]] = r0;
    x[t->fwd[i + 1]] = r1;
    x[t->fwd[i + 2]] = r2;
    x[t->fwd[i + 3]] = r3;
}

/* The bytes of the vector instructions' records: the runs', the lanes', the strided groups',
 * the forward's program and panels (program.c, panels.c), and the softmax rows' (attention.c). */
size_t vector_bytes(const tape_t *t) {
    return (size_t)t->n_strided * sizeof *t->strided + strided_pulls_bytes(t) + elementwise_bytes(t) + lane_bytes(t)
        + program_bytes(t) + panel_bytes(t) + attention_bytes(t);
}
