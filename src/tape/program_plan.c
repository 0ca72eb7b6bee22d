/* program_plan.c: the forward's program (program.c) written from the
 * instructions, level by level, each level's positions in order; each
 * record checked against the instructions it stands for as it is written. */
#include "program.h"

/* Where program_plan writes (out NULL: it counts); taken: instructions a record
 * before them does (a P_SCALED16's products). */
typedef struct {
    prog_t *out;
    int32_t *list;
    int64_t k, n_list;
    uint8_t *taken;
} emit_t;

/* A chain's list as constant steps (a, da, b, db in s), if it has them. */
static int chain_steps(const tape_t *t, const int32_t *A, run_slot_t *s) {
    const int32_t *p = t->dot_pair + A[0];
    int32_t len = A[2] / 2;
    if (len < 2) return 0;
    s->a = p[0]; s->b = p[1]; s->da = p[2] - p[0]; s->db = p[3] - p[1];
    for (int32_t j = 2; j < len; ++j)
        if (p[2 * j] != p[0] + j * s->da || p[2 * j + 1] != p[1] + j * s->db) return 0;
    return 1;
}

/* The first n sums' nodes out[] and starting numbers' nodes init[]: as one first
 * node and step (s->L, s->dL) and one node (s->b), if they are so. */
static int sums_alike(const int32_t *out, const int32_t *init, int n, run_slot_t *s) {
    s->L = out[0]; s->dL = out[1] - out[0]; s->b = init[0];
    for (int k = 0; k < n; ++k)
        if (out[k] != s->L + k * s->dL || init[k] != s->b) return 0;
    return 1;
}

/* Four F_SHIFT4 groups at i (shifted.c) as one record with its list, if their
 * sums are consecutive nodes that start from one node. */
static int shift16_record(const tape_t *t, int64_t i, prog_t *r, emit_t *e) {
    const int32_t *A = t->fwd_arg + 3 * i;
    int32_t init[SIDE * SIDE];
    for (int k = 0; k < SIDE * SIDE; ++k) init[k] = A[3 * k + 1];
    if (!sums_alike(t->fwd + i, init, SIDE * SIDE, &r->s) || r->s.dL != 1) return 0;
    r->kind = P_SHIFT16; r->n = A[2]; r->ins = e->n_list; r->period = SIDE;
    if (e->out != NULL) memcpy(e->list + e->n_list, t->dot_pair + A[0], (size_t)A[2] * sizeof *e->list);
    e->n_list += A[2];
    return 1;
}

/* Four F_STRIDED4 groups from i (strided.c), or one, as one record with its second operands. */
static int strided16_record(const tape_t *t, int64_t i, prog_t *r, emit_t *e) {
    int32_t b[SIDE * SIDE], init[SIDE * SIDE], out[SIDE * SIDE];
    run_slot_t s;
    int groups;
    int32_t len = strided16_parts(t, i, &s, b, init, out, &groups);
    if (len == 0 || !sums_alike(out, init, SIDE * groups, &r->s)) return 0;
    r->s.a = s.a; r->s.da = s.da; r->s.db = s.db;
    r->kind = P_STRIDED16; r->n = len; r->ins = e->n_list; r->period = (uint8_t)groups;
    if (e->out != NULL) memcpy(e->list + e->n_list, b, SIDE * groups * sizeof *b);
    e->n_list += SIDE * groups;
    return 1;
}

/* Instruction u's own code (under F_RUN, its run's first: elementwise.c). */
static uint8_t own_code(const tape_t *t, int64_t u) {
    return t->fwd_code[u] == F_RUN ? elementwise_code(t, u) : t->fwd_code[u];
}

/* After the P_STRIDED16 record r at instruction i, before i1: are the next
 * instructions but its groups' own the products x[sum k] * x[scale] for k = 0,
 * 1, .. (every sum, in order; lone, or whole runs of such products), into nodes
 * m0 + k dm? Then they are the record's (P_SCALED16): scale, m0, dm appended
 * to its list, the products marked taken. The program runs the same numbers
 * in the same order as before: its record makes all the sums first (the
 * groups' other instructions are done with it), then the products come, one
 * by one, with nothing between. */
static int scaled_record(const tape_t *t, int64_t i, int64_t i1, prog_t *r, const uint8_t *fixed, emit_t *e) {
    int32_t n = SIDE * r->period, got = 0, scale = -1, m0 = -1, dm = 0;
    int64_t D = r->period > 1 ? -t->fwd_arg[3 * i + 3] : SIDE, j = i;
    int64_t groups_end = i + D * (r->period - 1) + SIDE;
    while (got < n) {
        int64_t q = (j - i) / D;
        if (j < groups_end && q < r->period && j - i - q * D < SIDE) { ++j; continue; }  /* a group's own */
        if (j >= i1) return 0;
        int64_t len = t->fwd_code[j] == F_RUN ? elementwise_len(t, j) : 1;
        if (j + len > i1 || got + len > n) return 0;
        for (int64_t u = j; u < j + len; ++u, ++got) {
            const int32_t *A = t->fwd_arg + 3 * u;
            if (own_code(t, u) != F_MUL || fixed[u] || A[0] != r->s.L + got * r->s.dL) return 0;
            if (got == 0) { scale = A[1]; m0 = t->fwd[u]; }
            if (got == 1) dm = t->fwd[u] - m0;
            if (A[1] != scale || t->fwd[u] != m0 + got * dm) return 0;
        }
        j += len;
    }
    if (j < groups_end) return 0;
    r->kind = P_SCALED16;
    if (e->out != NULL) {
        int32_t *tail = e->list + e->n_list;
        tail[0] = scale; tail[1] = m0; tail[2] = dm;
    }
    e->n_list += 3;
    for (int64_t u = i; u < j; ++u) e->taken[u] = 1;  /* (the groups' own are skipped anyway) */
    return 1;
}

/* The record(s) of the unit at instruction i (e->out NULL: only counted); how
 * many, and in *width the instructions they cover. fixed: instructions whose
 * operand a replay re-points (token and target slots). */
static int unit_records(const tape_t *t, int64_t i, int64_t i1, const uint8_t *fixed, emit_t *e, int64_t *width) {
    const int32_t *A = t->fwd_arg + 3 * i;
    uint8_t c = t->fwd_code[i];
    int32_t L = t->fwd[i];
    prog_t r;
    memset(&r, 0, sizeof r);
    r.ins = i;
    r.kind = P_RANGE;
    r.n = 1;
    *width = 1;
    switch (c) {
    case F_RUN: {
        int period;
        int32_t reps;
        const run_slot_t *s = elementwise_slots(t, i, &period, &reps);
        *width = (int64_t)period * reps;
        for (int k = 0; k < period && e->out != NULL; ++k) {
            prog_t *o = e->out + e->k + k;
            memset(o, 0, sizeof *o);
            o->kind = P_SLOT; o->s = s[k]; o->n = reps; o->ins = i + k; o->period = (uint8_t)period;
        }
        return period;
    }
    case F_ADD: case F_MUL: case F_ONE_CHILD: case F_COPY:
        if (fixed[i]) break;
        r.kind = P_SLOT;
        r.period = 1;
        r.s.code = c; r.s.L = L; r.s.a = A[0]; r.s.b = c == F_ADD || c == F_MUL ? A[1] : 0;
        r.s.op = t->op[L];
        r.s.k = c == F_ONE_CHILD ? t->operand[L] : 0.0;
        break;
    case F_DOT:
        if (fixed[i] || !chain_steps(t, A, &r.s)) break;
        r.kind = P_SDOT;
        r.s.L = L; r.s.dL = A[1]; r.n = A[2] / 2;
        break;
    case F_DOT4:
        r.n = SIDE;
        *width = SIDE;
        break;
    case F_STRIDED4:
        *width = SIDE;
        if (t->fwd_arg[3 * i + 3] == -1) return 0;  /* (done with the first of its four) */
        if (!strided16_record(t, i, &r, e)) r.kind = P_STRIDED;
        else scaled_record(t, i, i1, &r, fixed, e);
        break;
    case F_SHIFT4:
        *width = t->fwd_arg[3 * i + 3] == -1 ? SIDE * SIDE : SIDE;
        if (*width == SIDE || !shift16_record(t, i, &r, e)) r.kind = P_SHIFT;
        break;
    case F_MV4:
        return -1;  /* (a matrix between a level's other work: no program) */
    default:  /* F_DERIVED */
        break;
    }
    if (e->out != NULL) e->out[e->k] = r;
    return 1;
}

/* The records of instructions [i0, i1) (e->out NULL: counted); 0, or -1. */
static int piece_records(const tape_t *t, int64_t i0, int64_t i1, const uint8_t *fixed, emit_t *e) {
    int64_t w;
    for (int64_t i = i0; i < i1; i += w) {
        if (e->taken[i]) { w = 1; continue; }  /* (done by a record before it) */
        int got = unit_records(t, i, i1, fixed, e, &w);
        if (got < 0) return -1;
        prog_t *o = e->out != NULL ? e->out + e->k : NULL;
        if (got == 1 && o != NULL && o->kind == P_RANGE && e->k > 0 && o[-1].kind == P_RANGE
            && o[-1].ins + o[-1].n == i) {
            o[-1].n += o->n;  /* one range with the one before */
            continue;
        }
        e->k += got;
    }
    return 0;
}

/* The skipped matrix groups at the start of level s (the same at every position). */
static int64_t matrix_skip(const tape_t *t, int32_t s) {
    int64_t i = t->level_at[s], e = t->level_at[s + 1];
    while (i < e && t->fwd_code[i] == F_MV4) i += SIDE * (int64_t)t->mv[t->fwd_arg[3 * i]].run;
    return i - t->level_at[s];
}

int program_plan(tape_t *t) {
    int32_t nl = t->n_levels, N = t->n_pos;
    if (nl == 0) return 0;
    int64_t nf = t->fwd_end[N - 1];
    uint8_t *fixed = NULL, *taken = NULL;
    if (!NEW(fixed, nf) || !NEW(taken, nf) || !NEW(t->prog_at, (int64_t)nl * N + 1)) {
        free(fixed);
        free(taken);
        return -1;
    }
    for (int64_t j = 0; j < t->n_token_edges; ++j) fixed[t->token_arg[j] / 3] = 1;
    for (int32_t p = 0; p < N; ++p) fixed[t->target_arg[p] / 3] = 1;
    int rc = 0;
    emit_t e = {NULL, NULL, 0, 0, taken};
    for (int pass = 0; pass < 2 && rc == 0; ++pass) {  /* count (an upper bound), then write */
        e.k = e.n_list = 0;
        memset(taken, 0, (size_t)nf);
        for (int32_t s = 0; s < nl && rc == 0; ++s) {
            int64_t skip = matrix_skip(t, s);
            for (int32_t p = 0; p < N && rc == 0; ++p) {
                const int32_t *ap = t->level_at + (int64_t)p * (nl + 1) + s;
                t->prog_at[(int64_t)s * N + p] = e.k;
                rc = piece_records(t, ap[0] + skip, ap[1], fixed, &e) < 0;
            }
        }
        t->prog_at[(int64_t)nl * N] = e.k;
        t->n_prog = e.k;
        if (pass == 0 && rc == 0 && (!NEW(t->prog, e.k) || !NEW(t->prog_list, e.n_list))) rc = -1;
        e.out = t->prog;
        e.list = t->prog_list;
    }
    free(fixed);
    free(taken);
    if (rc != 0) {  /* no program: the instruction path */
        free(t->prog); free(t->prog_at); free(t->prog_list);
        t->prog = NULL; t->prog_at = NULL; t->prog_list = NULL; t->n_prog = 0;
    }
    t->n_prog_list = e.n_list;
    return rc < 0 ? -1 : 0;
}

