/* program.c: the forward's work between the matrices (levels.c) as one array
 * of records, in the order level_forward meets it: level by level, each
 * level's positions in order. A record holds what it reads (its nodes, their
 * steps, its operation and exponent), so that a replay reads its program front
 * to back as one stream instead of, for each instruction, the instruction
 * arrays (fwd, fwd_code, fwd_arg: 17 bytes an instruction, scattered between
 * runs), then a run's or a chain's record elsewhere, then the node-indexed
 * op and operand: at a step's size (tens of MiB) each of those is a miss.
 *
 * The records, each computing what its instructions compute, in their order:
 *   P_SLOT    one slot of an elementwise run over its repetitions, or a lone
 *             addition, product, one-child operation or copy (one repetition);
 *   P_SDOT    a chain whose products' operands step by constants (a norm's
 *             sum of squares, an attention logit): sum x[a + j da] * x[b + j db]
 *             from x[init], each product and addition in the chain's order;
 *   P_SHIFT16, P_STRIDED16  four groups of shifted.c or strided.c (or one
 *             group of strided.c) whose sums are nodes a constant step apart,
 *             each starting from one node: their list (products' operands, or
 *             second operands) copied into prog_list in the program's order;
 *   P_STRIDED, P_SHIFT  the other groups of strided.c and shifted.c, as they run;
 *   P_RANGE   anything else, instructions [ins, ins + n) as run_forward does
 *             (an operand re-pointed at each replay, a derived number, a chain
 *             whose list has no constant steps, a group of four chains).
 * program_plan checks each record against its instructions as it writes it;
 * an instruction it cannot place keeps the instruction path (P_RANGE), and a
 * tape without levels has no program. A failed operation stops the program;
 * tape_forward then runs the step again in order, as it did. */
#include "internal.h"

enum { P_SLOT, P_SDOT, P_SHIFT16, P_STRIDED16, P_STRIDED, P_SHIFT, P_RANGE };

typedef struct prog {
    run_slot_t s;       /* P_SLOT: the slot; P_SDOT: L, a, da, b, db, and dL the number it starts
                         * from; P_SHIFT16, P_STRIDED16: L, dL its sums' first node and step, b the
                         * number every sum starts from (P_STRIDED16: a, da, db the shared operand
                         * and the steps) */
    int64_t ins;        /* the first instruction it does (P_SHIFT16, P_STRIDED16: its list in prog_list) */
    int32_t n;          /* P_SLOT: repetitions; P_SDOT, P_STRIDED16: products; P_SHIFT16: its list's
                         * length (two a product); P_RANGE: instructions */
    uint8_t kind, period;  /* (P_SHIFT16, P_STRIDED16: its groups of four sums, 4 or 1) */
} prog_t;

/* Where program_plan writes (out NULL: it counts). */
typedef struct {
    prog_t *out;
    int32_t *list;
    int64_t k, n_list;
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

/* The record(s) of the unit at instruction i (e->out NULL: only counted); how
 * many, and in *width the instructions they cover. fixed: instructions whose
 * operand a replay re-points (token and target slots). */
static int unit_records(const tape_t *t, int64_t i, const uint8_t *fixed, emit_t *e, int64_t *width) {
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
        int got = unit_records(t, i, fixed, e, &w);
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
    uint8_t *fixed = NULL;
    if (!NEW(fixed, nf) || !NEW(t->prog_at, (int64_t)nl * N + 1)) {
        free(fixed);
        return -1;
    }
    for (int64_t j = 0; j < t->n_token_edges; ++j) fixed[t->token_arg[j] / 3] = 1;
    for (int32_t p = 0; p < N; ++p) fixed[t->target_arg[p] / 3] = 1;
    int rc = 0;
    emit_t e = {NULL, NULL, 0, 0};
    for (int pass = 0; pass < 2 && rc == 0; ++pass) {  /* count (an upper bound), then write */
        e.k = e.n_list = 0;
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
    if (rc != 0) {  /* no program: the instruction path */
        free(t->prog); free(t->prog_at); free(t->prog_list);
        t->prog = NULL; t->prog_at = NULL; t->prog_list = NULL; t->n_prog = 0;
    }
    t->n_prog_list = e.n_list;
    return rc < 0 ? -1 : 0;
}

size_t program_bytes(const tape_t *t) {
    if (t->prog == NULL) return 0;
    return (size_t)t->n_prog * sizeof *t->prog + ((size_t)t->n_levels * t->n_pos + 1) * sizeof *t->prog_at
        + (size_t)t->n_prog_list * sizeof *t->prog_list;
}

void program_counts(const tape_t *t, int32_t n, int64_t *records, int64_t *by_steps) {
    *records = *by_steps = 0;
    for (int32_t s = 0; s < t->n_levels && t->prog != NULL; ++s)
        for (int64_t k = t->prog_at[(int64_t)s * t->n_pos]; k < t->prog_at[(int64_t)s * t->n_pos + n]; ++k) {
            uint8_t kind = t->prog[k].kind;
            *records += 1;
            *by_steps += kind == P_SDOT || kind == P_SHIFT16 || kind == P_STRIDED16;
        }
}

/* m0 + init, then + m_j: the chain's own additions, in its order (replay.c's F_DOT). */
static inline void strided_dot(double *x, const prog_t *r) {
    const run_slot_t *s = &r->s;
    const double *a = x + s->a, *b = x + s->b;
    int64_t da = s->da, db = s->db;
    double acc = a[0] * b[0] + x[s->dL];
    for (int64_t j = 1; j < r->n; ++j) acc = acc + a[j * da] * b[j * db];
    x[s->L] = acc;
}

/* Sixteen sums from one node into nodes L + k dL (P_SHIFT16, P_STRIDED16); a single
 * group (period 1) as four alike, each lane's sum the same as its group's: the same
 * number written four times. */
static void sixteen(double *x, const prog_t *r, const int32_t *list) {
    double init[SIDE * SIDE];
    int32_t out[SIDE * SIDE], b[SIDE * SIDE];
    int n = SIDE * r->period;
    for (int k = 0; k < SIDE * SIDE; ++k) {
        init[k] = x[r->s.b];
        out[k] = r->s.L + k % n * r->s.dL;
        b[k] = r->kind == P_STRIDED16 ? list[k % n] : 0;
    }
    if (r->kind == P_SHIFT16) shift16(x, list, r->n, init, out);
    else strided16(x, r->s.a, r->s.da, r->s.db, r->n, b, init, out);
}

/* Level s's work outside its matrices at position p (level_forward). */
status_t program_run(tape_t *t, int32_t s, int32_t p) {
    int64_t at = (int64_t)s * t->n_pos + p;
    double m = 0.0;  /* the last derived number's max (a piece is one call of run_forward) */
    for (const prog_t *r = t->prog + t->prog_at[at], *end = t->prog + t->prog_at[at + 1]; r < end; ++r) {
        status_t st = OP_OK;
        switch (r->kind) {
        case P_SLOT: st = elementwise_slot(t, &r->s, r->n, r->ins, r->period, &m); break;
        case P_SDOT: strided_dot(t->x, r); break;
        case P_SHIFT16: case P_STRIDED16: sixteen(t->x, r, t->prog_list + r->ins); break;
        case P_STRIDED: strided_dots(t, r->ins); break;
        case P_SHIFT: shifted_dots(t, r->ins); break;
        default: st = forward_range(t, r->ins, r->ins + r->n, &m);
        }
        if (st != OP_OK) return st;
    }
    return OP_OK;
}

/* Positions [from, n) one after another (the sampler's), each level's matrix
 * groups (matrix.c: the transposed weights) then its records: each position's
 * instructions in their order, as run_forward does them. */
status_t program_positions(tape_t *t, int32_t from, int32_t n) {
    for (int32_t p = from; p < n; ++p)
        for (int32_t s = 0; s < t->n_levels; ++s) {
            for (int32_t u = t->level_units[s]; u < t->level_units[s + 1]; ++u)
                matrix_forward(t, t->mv + t->level_mv[(int64_t)u * t->n_pos + p], NULL);
            status_t st = program_run(t, s, p);
            if (st != OP_OK) return st;
        }
    return OP_OK;
}
